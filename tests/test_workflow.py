"""The Snakemake workflow: dry run of the default config, lint, config errors, and one tiny end-to-end run."""

import json
from pathlib import Path

import pytest
import yaml
from snakemake_helpers import copy_run, job_counts, snakemake
from test_params import reordered

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def test_dry_run_default_config(tmp_path):
    proc = snakemake("-n", "--cores", "2", "--directory", str(tmp_path), "--configfile", str(ROOT / "config.yaml"))
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["collect_run"] >= 4  # >= 2 zoos x >= 2 runs
    for rule in ("tokenize", "train_generator", "evaluate", "report", "all"):
        assert rule in counts


def test_lint_is_clean():
    proc = snakemake("--lint", "--configfile", str(TINY))
    assert "Congratulations" in proc.stdout + proc.stderr


def test_bad_config_names_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("sampler: ddim", "sampler: euler"))
    proc = snakemake("-n", "--configfile", str(bad), "--directory", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert "generate.sampler" in proc.stderr + proc.stdout and "allowed values" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_tiny_end_to_end(tiny_run, tmp_path):
    res = tiny_run / "results"  # the session's finished run of the tiny config (conftest.py)
    exp = "tiny"
    zoo_dirs = sorted(p.name for p in (res / exp / "evaluation").iterdir())
    assert zoo_dirs
    for zoo in zoo_dirs:
        summary = json.loads((res / exp / "evaluation" / zoo / "summary.json").read_text())
        for key in ("original", "generated", "generated_diversity", "resolution", "novelty", "frontiers", "dominance"):
            assert key in summary, key
        assert summary["split"] == "test" and summary["original"]["n"] == summary["generated"]["n"] == 2
        assert set(summary["frontiers"]) == {"generated", "noise", "interpolation", "gaussian", "applicable"}
        for family in ("noise", "interpolation", "gaussian"):  # a verdict, or why none was made
            verdict = summary["checks"][f"generated_beats_{family}_at_equal_similarity"]
            assert verdict in ("pass", "fail", "undecided", "not covered", "not applicable", "no resolution"), verdict
        assert summary["num_models"]["gaussian"] >= 2 and summary["dominance"]["n"] == 2
        # the tiny recipe makes working models: well above chance (0.1) on the test split
        assert summary["original"]["score"]["mean"] > 0.3
        assert summary["generated"]["score"]["mean"] > 0.25, summary["generated"]["score"]
        for png in ("accuracy_vs_similarity.png", "loss.png", "distances.png"):
            assert (res / exp / "evaluation" / zoo / png).stat().st_size > 1000
        # every stage logged to its own file
        for stage in ("collect", "tokenize", "train", "generate", "evaluate"):
            assert any((res / exp / "logs" / stage).rglob("*.log")), stage
        # generated models load strict=True into the target architecture and classify
        import torch

        from rpg.zoo.checkpoint import load_checkpoint
        from rpg.zoo.models import build_model

        generated = sorted((res / exp / "generated" / zoo).rglob("model_*.safetensors"))
        assert len(generated) == 2
        for path in generated:
            state, meta = load_checkpoint(path)
            model = build_model(meta["arch"], meta["arch_kwargs"])
            model.load_state_dict(state, strict=True)
            assert meta["kind"] == "generated"
            with torch.no_grad():
                assert torch.isfinite(model.eval()(torch.randn(2, *_input_shape(meta)))).all()
    assert (res / "report.html").stat().st_size > 10_000

    # the rest runs Snakemake in a copy of the finished run
    work = copy_run(tiny_run, tmp_path / "work")

    # config edits rerun only what they change (dry runs against the finished results)
    def dry_run_after(edit, *, whole=lambda cfg: cfg, sort_keys=True) -> dict[str, int]:
        cfg = yaml.safe_load(TINY.read_text())
        edit(cfg["experiments"]["tiny"])
        path = tmp_path / "edited.yaml"
        path.write_text(yaml.safe_dump(whole(cfg), sort_keys=sort_keys))
        proc = snakemake("-n", "--configfile", str(path), "--directory", str(work))
        return job_counts(proc.stdout + proc.stderr)

    # the same settings written otherwise rerun nothing: keys in reverse order at every depth (dry_run_after
    # writes them sorted, as yaml.safe_dump does), integral float options written as integers
    def floats_as_ints(e):
        e["train"].update(grad_clip=1, min_lr_ratio=0)  # defaults 1.0 and 0.0
        e["generate"].update(eta=0)

    assert dry_run_after(floats_as_ints, whole=reordered, sort_keys=False) == {}
    # what Snakemake recorded for each job is what tests/golden/params.json pins
    golden = json.loads((ROOT / "tests/golden/params.json").read_text())["tests/configs/tiny.yaml"]["tiny"]["cnn_s"]
    records = [json.loads(p.read_text()) for p in (work / ".snakemake" / "metadata").iterdir()]
    pinned = [r for r in records if r["rule"] in golden]
    assert {r["rule"] for r in pinned} == set(golden)
    assert all(repr(golden[r["rule"]]) in r["params"] for r in pinned)

    downstream = {"tokenize": 1, "train_generator": 1, "generate": 1, "evaluate": 1, "report": 1, "all": 1}
    # a third run: only run2 is collected, then the zoo's later stages
    assert dry_run_after(lambda e: e["zoos"]["cnn_s"].update(runs=3)) == {
        "collect_run": 1, "zoo_table": 1, **downstream}  # fmt: skip
    # two more models: one new generation job (models 2-3), then the evaluation and the report
    assert dry_run_after(lambda e: e["generate"].update(num_models=4)) == {
        "generate": 1, "evaluate": 1, "report": 1, "all": 1}  # fmt: skip

    # execution settings rerun nothing (all at once: a setting that reached a stage's params would rerun it)
    def execution_settings(e):
        for block, key, value in (("train", "threads", 2), ("train", "log_every", 1), ("train", "save_every", 3),
                                  ("generate", "threads", 2), ("evaluate", "batch_size", 7)):  # fmt: skip
            e.setdefault(block, {})[key] = value

    assert dry_run_after(execution_settings) == {}
    # a result setting reruns its stage and what follows it
    assert dry_run_after(lambda e: e["train"].update(steps=21)) == {
        "train_generator": 1, "generate": 1, "evaluate": 1, "report": 1, "all": 1}  # fmt: skip

    # every command of README's usage section runs (on the tiny config, in the copy), the one that rebuilds a run
    # last: it reruns only the job that makes the run, nothing downstream; the later stages rerun next time
    other = work / "results" / exp / "zoo" / "cnn_s" / "run1" / "ckpt_000.safetensors"
    before = other.stat().st_mtime_ns
    lines = sorted(readme_usage(), key=lambda line: "--force" in line)
    for line in lines:
        args = line.replace("results/digits/", "results/tiny/").replace("cnn_m", "cnn_s").split()[1:]
        if "--configfile" in args:
            args[args.index("--configfile") + 1] = str(TINY)
        else:
            args += ["--configfile", str(TINY)]
        proc = snakemake(*args, "--directory", str(work), check=False)
        assert proc.returncode == 0, (line, (proc.stdout + proc.stderr)[-3000:])
    assert (work / "report.html").stat().st_size > 10_000  # snakemake --report
    assert "--force" in lines[-1] and "results/tiny/zoo/cnn_s/run0" in args, lines[-1]
    assert job_counts(proc.stdout + proc.stderr) == {"collect_run": 1}, lines[-1]
    assert other.stat().st_mtime_ns == before
    proc = snakemake("-n", "--configfile", str(TINY), "--directory", str(work))
    assert job_counts(proc.stdout + proc.stderr) == {"zoo_table": 1, **downstream}


def readme_usage() -> list[str]:
    """The command lines of README.md's usage section (comments stripped)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Usage", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("snakemake")]


def test_readme_usage_section_is_parsed():
    lines = readme_usage()
    assert len(lines) >= 5 and any("--report" in line for line in lines) and any("-n" in line for line in lines)


def _input_shape(meta):
    kwargs = meta.get("arch_kwargs", {})
    size = meta.get("image_size") or kwargs.get("img_size") or 8
    return (kwargs.get("in_chans", 1), size, size)
