"""The public API (rpg.load_generator / load_model / evaluate_model / export_model), the ``rpg`` command line and
exported model folders, against one tiny pipeline run through the stage functions (a results tree of a cnn_s zoo:
2 runs x 2 checkpoints, a 30-step generator, 2 generated models, their evaluation; about 3 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import rpg
from rpg.cli import main
from rpg.config import resolve_config
from rpg.errors import RPGInputError
from rpg.io import load_safetensors, read_table
from rpg.zoo.checkpoint import load_checkpoint, save_checkpoint
from rpg.zoo.models import build_model

ROOT = Path(__file__).resolve().parent.parent
GEN = Path("results/tiny/generator/cnn_s")
BATCH = Path("results/tiny/generated/cnn_s/batch0")
VIT_KW = {"img_size": 8, "patch_size": 2, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_pool": "avg",
          "class_token": False, "in_chans": 1, "num_classes": 10}  # fmt: skip
X = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A working directory holding config.yaml and results/tiny/... as the pipeline lays them out (paths recorded
    relative to it, as Snakemake runs)."""
    from rpg.stages import collect, evaluate, generate, tokenize, train

    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    exp = cfg["experiments"]["tiny"]
    exp["train"].update(steps=30, save_every=1000, log_every=1)  # 30 steps: far from converged
    exp["evaluate"].update(bootstrap=100)
    exp["zoos"]["cnn_s"]["collect"].update(epochs=1, checkpoints=2)
    root = tmp_path_factory.mktemp("pipeline")
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    s = resolve_config(cfg)["tiny"]["cnn_s"]
    res, cwd = Path("results/tiny"), os.getcwd()
    os.chdir(root)
    try:
        runs = [res / "zoo/cnn_s" / f"run{r}" for r in range(2)]
        for r, d in enumerate(runs):
            collect.collect_run(s, run=r, out_dir=d)
        tokenize.tokenize(s, run_dirs=runs, out_dir=res / "tokens/cnn_s")
        train.train(s, tokens_dir=res / "tokens/cnn_s", out_dir=GEN)
        generate.generate(s, generator_dir=GEN, tokens_dir=res / "tokens/cnn_s", out_dir=BATCH, indices=[0, 1])
        evaluate.evaluate(s, tokens_dir=res / "tokens/cnn_s", run_dirs=runs, generated=[BATCH], generator_dir=GEN,
                          out_dir=res / "evaluation/cnn_s")  # fmt: skip
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def here(results, monkeypatch) -> Path:
    """Run the test in the pipeline's working directory."""
    monkeypatch.chdir(results)
    return results


def table_score(root: Path, name: str) -> float:
    df = read_table(root / "results/tiny/evaluation/cnn_s/table.csv")
    return float(df.loc[(df["kind"] == "generated") & df["path"].str.endswith(name), "score"].iloc[0])


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


def test_an_under_trained_generator_is_diagnosed_and_gets_no_frontier_verdict(results):
    """The fixture's generator, trained 30 steps through the pipeline's stages, samples broken models: the evaluation
    says 'not converged' from the real training log, the report's section for the zoo says so first, and no frontier
    check passes or fails them."""
    from rpg.report import _zoo_section

    out = results / "results/tiny/evaluation/cnn_s"
    s = json.loads((out / "summary.json").read_text())
    gap = s["original"]["score"]["mean"] - s["generated"]["score"]["mean"]
    d = s["diagnosis"]
    assert gap > s["diagnosis"]["tolerance"] and d["gap"] == pytest.approx(gap), (gap, d)
    assert d["status"] == "not converged" and d["loss_trend"] < 0 and "train.steps" in d["message"], d
    frontier = [k for k in s["checks"] if k.startswith("generated_beats_")]
    assert frontier and {s["checks"][k] for k in frontier} <= {"not applicable"}, {k: s["checks"][k] for k in frontier}
    section = _zoo_section("tiny", "cnn_s", out)
    assert section.index("Diagnosis (not converged)") < section.index("<table")


def test_import_is_cheap_and_the_surface_small():
    code = "import sys, rpg; assert 'torch' not in sys.modules and 'rpg.api' not in sys.modules; print(rpg.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) == {"Generator", "__version__", "evaluate_model", "export_model", "load_generator",
                              "load_model"}  # fmt: skip
    from rpg import api

    assert rpg.load_generator is api.load_generator and rpg.Generator is api.Generator
    with pytest.raises(AttributeError):
        rpg.no_such_name  # noqa: B018


def test_sample_gives_the_pipelines_models(here):
    gen = rpg.load_generator(GEN, settings="config.yaml")
    assert gen.arch == "cnn_s" and gen.num_states == 2 and gen.task_bits is None
    assert gen.tokens == Path("results/tiny/tokens/cnn_s") and gen.settings.steps == 5
    # the generate stage went through Generator.sample: the same call gives the same bytes, in any batch size
    paths = gen.sample(2, out_dir=here / "api", batch_size=1)
    assert [p.name for p in paths] == ["model_000.safetensors", "model_001.safetensors"]
    for p in paths:
        assert p.read_bytes() == (BATCH / p.name).read_bytes()
    # state dicts in memory; model i uses seed + i, so (seed 1, model 0) is the pipeline's model 1
    (sd,) = gen.sample(1, seed=1)
    ref, meta = load_checkpoint(BATCH / "model_001.safetensors")
    assert list(sd) == list(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    assert gen.sample(indices=[1]) and meta["sample_seed"] == 1
    fixed = gen.sample(1, state=0, out_dir=here / "fixed")[0]
    assert load_safetensors(fixed)[1]["state"] == 0
    with pytest.raises(RPGInputError, match="state 5 out of range"):
        gen.sample(1, state=5)
    with pytest.raises(RPGInputError, match="not task-conditioned"):
        gen.sample(1, task="1000000001")
    with pytest.raises(ValueError, match="not both"):
        gen.sample(2, indices=[0])
    # without a config: the defaults (DDIM-60)
    assert rpg.load_generator(GEN).settings.steps == 60


def test_load_model_and_evaluate_model(here):
    path = BATCH / "model_000.safetensors"
    model = rpg.load_model(path)
    assert isinstance(model, torch.nn.Module) and not model.training
    state, _ = load_checkpoint(path)
    built = build_model("cnn_s", {"in_chans": 1, "num_classes": 10})
    built.load_state_dict(state)
    assert torch.equal(logits(model), logits(built))
    # the zoo's evaluator gives the number the pipeline's evaluation wrote
    want = table_score(here, "model_000.safetensors")
    assert rpg.evaluate_model(model, "config.yaml")["accuracy"] == pytest.approx(want, abs=1e-12)
    assert rpg.evaluate_model(path, {"name": "digits", "image_size": 8})["accuracy"] == pytest.approx(want, abs=1e-12)
    settings = resolve_config(yaml.safe_load(Path("config.yaml").read_text()))["tiny"]["cnn_s"]
    assert 0 <= rpg.evaluate_model(model, settings, split="val")["accuracy"] <= 1
    # checkpoints of the zoo load too
    assert isinstance(rpg.load_model("results/tiny/zoo/cnn_s/run0/ckpt_000.safetensors"), torch.nn.Module)


def test_export_of_a_builtin_model_loads_with_rpg_alone(here, tmp_path, capsys):
    src = BATCH / "model_001.safetensors"
    out = rpg.export_model(src, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert torch.equal(logits(rpg.load_model(out)), logits(rpg.load_model(src)))
    assert torch.equal(logits(rpg.load_model(out / "model.safetensors")), logits(rpg.load_model(src)))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "cnn_s" and cfg["model_args"] == {"in_chans": 1, "num_classes": 10}
    assert cfg["rpg"]["metadata"]["sample_seed"] == 1 and cfg["rpg"]["version"] == rpg.__version__
    card = (out / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    header = yaml.safe_load(header)
    assert (
        header["library_name"] == "rpg" and "generated-weights" in header["tags"] and header["metrics"] == ["accuracy"]
    )
    score = table_score(here, "model_001.safetensors")
    assert header["model-index"][0]["results"][0]["metrics"][0]["value"] == pytest.approx(score, abs=1e-6)
    for text in (
        "zoo: tiny/cnn_s",
        "generator: `results/tiny/generator/cnn_s`",
        "seed: 1",
        "permutation state",
        "95% interval",
        "similarity to the originals",
        "nearest original",
        f"version: {rpg.__version__}",
    ):
        assert text in body, text
    # an exported folder keeps what the evaluation knew when it is inspected elsewhere
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert f"test accuracy {score:.4f}" in capsys.readouterr().out


def test_export_of_a_timm_model_loads_with_timm_alone(tmp_path):
    timm = pytest.importorskip("timm")
    model = build_model("vit_tiny_patch16_224", VIT_KW, seed=0)
    src = tmp_path / "vit.safetensors"
    meta = {"kind": "generated", "arch": "vit_tiny_patch16_224", "arch_kwargs": VIT_KW, "num_classes": 10,
            "generator": "results/x/generator/vit", "sample_seed": 4, "state": 1, "sampler": "ddim",
            "sampling_steps": 20}  # fmt: skip
    save_checkpoint(src, model.state_dict(), meta)
    expected = logits(rpg.load_model(src))
    out = rpg.export_model(src, tmp_path / "vit_export")
    # timm alone: from the folder, and by name with the weights file as the pretrained config's file
    by_folder = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert torch.equal(logits(by_folder), expected)
    cfg = json.loads((out / "config.json").read_text())
    by_name = timm.create_model(
        cfg["architecture"],
        pretrained=True,
        **cfg["model_args"],
        pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file=str(out / "model.safetensors")),
    )
    assert torch.equal(logits(by_name), expected)
    header = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    assert header["library_name"] == "timm" and "model-index" not in header  # no evaluation known
    assert "No evaluation of this file is known" in (out / "README.md").read_text()


def test_cli_sample_inspect_export(here, capsys):
    assert main(["sample", str(GEN), "-n", "2", "-o", "cli", "--batch-size", "2"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == ["cli/model_000.safetensors", "cli/model_001.safetensors"]
    assert "config.yaml" in out.err and "ddim-5" in out.err  # the settings of the generator's experiment
    for name in ("model_000.safetensors", "model_001.safetensors"):
        assert (Path("cli") / name).read_bytes() == (BATCH / name).read_bytes()
    assert main(["sample", str(GEN), "-n", "1", "--first", "1", "-o", "cli1", "--steps", "3", "--state", "0"]) == 0
    assert load_safetensors(Path("cli1/model_001.safetensors"))[1]["sampling_steps"] == 3

    capsys.readouterr()
    assert main(["inspect", str(BATCH / "model_001.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "cnn_s" in text and "2,906" in text and "seed          1" in text
    assert f"test accuracy {table_score(here, 'model_001.safetensors'):.4f}" in text and "originals" in text
    assert main(["inspect", "cli1/model_001.safetensors"]) == 0
    assert "none known" in capsys.readouterr().out
    assert main(["inspect", "cli/model_000.safetensors", "--evaluate"]) == 0
    assert f"test accuracy {table_score(here, 'model_000.safetensors'):.4f} (evaluated now" in capsys.readouterr().out
    assert main(["inspect", "--json", str(BATCH / "model_000.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 2906 and info["evaluation"]["kind"] == "generated"
    assert main(["inspect", str(GEN)]) == 0
    assert "generator" in capsys.readouterr().out

    assert main(["export", "cli/model_000.safetensors", "-o", "cli_export"]) == 0
    assert capsys.readouterr().out.strip() == "cli_export"
    assert torch.equal(logits(rpg.load_model("cli_export")), logits(rpg.load_model("cli/model_000.safetensors")))


def test_cli_prompt(monkeypatch, capsys):
    from test_prompt import WordEncoder

    import rpg.adapters.encoder

    monkeypatch.setattr(rpg.adapters.encoder, "sentence_encoder", lambda spec=None: WordEncoder())
    assert main(["prompt", "select zero and nine"]) == 0
    assert "task vector 1000000001" in capsys.readouterr().out


def test_sample_with_a_task_or_a_prompt(tmp_path, make_token_store, tiny_gen, tiny_train, monkeypatch):
    from test_prompt import WordEncoder

    import rpg.adapters.encoder
    from rpg.generator.trainer import train_generator

    tokens = make_token_store(tmp_path, tasks=True)
    train_generator(token_dir=tokens, out_dir=tmp_path / "gen", generator_cfg={**tiny_gen, "task_condition": "head",
                    "head_tokens": 2}, train_cfg={**tiny_train, "steps": 2})  # fmt: skip
    settings = resolve_config(yaml.safe_load((ROOT / "tests/configs/tasks_tiny.yaml").read_text()))["tasks_tiny"]
    gen = rpg.load_generator(tmp_path / "gen", settings=settings["cnn_s"].generate.replace(steps=2))
    assert gen.task_bits == 10
    with pytest.raises(RPGInputError, match="needs a task vector"):
        gen.sample(1)
    with pytest.raises(RPGInputError, match="10-bit"):
        gen.sample(1, task=[1, 0])
    with pytest.raises(RPGInputError, match="task zoo's settings"):
        gen.sample(1, prompt="select zero")
    by_task = gen.sample(1, task="1000000001", out_dir=tmp_path / "t")[0]
    monkeypatch.setattr(rpg.adapters.encoder, "sentence_encoder", lambda spec=None: WordEncoder())
    gen = rpg.load_generator(tmp_path / "gen", settings=settings["cnn_s"])
    gen.settings = gen.settings.replace(steps=2)
    by_prompt = gen.sample(1, prompt="select zero and nine", out_dir=tmp_path / "p")[0]
    assert load_safetensors(by_prompt)[1]["task"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert by_prompt.read_bytes() == by_task.read_bytes()


def one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("rpg: error: ") and "\n" not in err, err
    for name in names:
        assert name in err, (name, err)
    return err


def test_bad_input_names_the_file_and_exits_2(here, tmp_path, capsys, token_dir):
    # a missing folder or file
    assert main(["sample", "results/tiny/generator/nope", "-n", "1", "-o", "x"]) == 2
    one_line_error(capsys, "results/tiny/generator/nope", "does not exist")
    assert main(["inspect", "nope.safetensors"]) == 2
    one_line_error(capsys, "nope.safetensors", "does not exist")
    assert main(["export", "nope.safetensors", "-o", "x"]) == 2
    one_line_error(capsys, "nope.safetensors")
    # a file that is not safetensors
    assert main(["inspect", "config.yaml"]) == 2
    one_line_error(capsys, "config.yaml", "not a .safetensors file")
    # a file of another architecture: cnn_s in its metadata, cnn_m weights
    _, meta = load_checkpoint(BATCH / "model_000.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong, build_model("cnn_m", {"in_chans": 1, "num_classes": 10}).state_dict(), meta)
    with pytest.raises(RPGInputError, match="do not fit the architecture cnn_s"):
        rpg.load_model(wrong)
    for cmd in (["inspect", str(wrong)], ["export", str(wrong), "-o", str(tmp_path / "e")]):
        assert main(cmd) == 2
        one_line_error(capsys, str(wrong), "do not fit the architecture cnn_s")
    # a model of another architecture than the config's zoo
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, build_model("cnn_m", {"in_chans": 1, "num_classes": 10}).state_dict(),
                    {**meta, "arch": "cnn_m"})  # fmt: skip
    assert main(["inspect", str(other), "--evaluate", "--config", "config.yaml"]) == 2
    one_line_error(capsys, str(other), "cnn_m model", "tiny/cnn_s")
    # a generator folder without its token store (copied away from its results tree)
    alone = tmp_path / "elsewhere" / "generator"
    shutil.copytree(GEN, alone)
    cfg = json.loads((alone / "config.json").read_text())
    (alone / "config.json").write_text(json.dumps({**cfg, "token_dir": "gone/tokens"}))
    assert main(["sample", str(alone), "-n", "1", "-o", str(tmp_path / "s")]) == 2
    one_line_error(capsys, str(alone), "no token store", "--tokens")
    # ... or whose recorded store now holds other tokens
    stale = {**cfg, "token_dir": str(here / "results/tiny/tokens/cnn_s"), "token_content_hash": "0" * 64}
    (alone / "config.json").write_text(json.dumps(stale))
    with pytest.raises(RPGInputError, match="holds other tokens"):
        rpg.load_generator(alone)
    # ... or given the token store of another zoo
    assert main(["sample", str(GEN), "-n", "1", "-o", "s", "--tokens", str(token_dir)]) == 2
    one_line_error(capsys, str(token_dir), "trained on")
    # a folder that is not a generator; a generator's weights are not a model
    assert main(["sample", "results/tiny/tokens/cnn_s", "-n", "1", "-o", "s"]) == 2
    one_line_error(capsys, "results/tiny/tokens/cnn_s", "not a generator folder")
    assert main(["inspect", str(GEN / "model.safetensors")]) == 2
    one_line_error(capsys, "generator's weights")


def test_python_dash_m_rpg(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rpg", "inspect", str(tmp_path / "missing.safetensors")],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 2 and "missing.safetensors: file does not exist" in proc.stderr
