"""Coupled generation (issue 26): each generator mode (``generator.coupling``) on the default zoos over seeds and on
the test_timm zoos, one row per (zoo, seed, mode), side by side.

For every config and seed the pipeline runs once per mode in the same experiment folder (``--workdir``): the
checkpoints and tokens are collected once, and switching the mode reruns only training, generation and evaluation
(their params change). After each run the evaluation's ``summary.json`` and the stages' Snakemake benchmarks are
read into one row: test accuracy of the originals and of the generated models at equal n (the generated mean's 95%
interval), distinct of n, copies, pairwise similarity, similarity to the originals, nearest distance, the margins
over the noise frontier and over the per-run Gaussian frontier with their 95% intervals and verdicts, the dominated
share, the generator's training CPU-seconds and the generation's seconds per model (wall). p-diff is off (it does
not depend on the mode). Rows are kept in ``benchmarks/results/coupling.csv`` by (config, zoo, seed, mode), so runs
add to them and a row is remeasured only with ``--rerun``; ``coupling.md`` is the table of all rows,
``coupling_short.md`` the issue's bars per zoo and mode over its seeds (README).

    python benchmarks/studies/coupling.py --configs default --seeds 0 --modes paper autoregressive   # cnn_m + vit
    python benchmarks/studies/coupling.py --configs default --zoos cnn_m --seeds 0                  # one zoo
    python benchmarks/studies/coupling.py --configs default test_timm --seeds 0 1 2                 # the study
    python benchmarks/studies/coupling.py --render-only                                             # the table again
    python benchmarks/studies/coupling.py --add DIR/results/digits cnn_m_ar cnn_m autoregressive     # a finished run
    python benchmarks/studies/coupling.py --beside RUN/auto_steps.yaml RUN --modes autoregressive \\
        --workdir /tmp/ar --add-config test_timm                                    # a finished run, in another mode

    python benchmarks/studies/coupling.py --costs DIR/results/digits/tokens/cnn_m        # CPU-s per step and model
    python benchmarks/studies/coupling.py --scale paper=/tmp/paper/scale.csv autoregressive=/tmp/ar/scale.csv

``--costs TOKEN_DIR``: CPU seconds per training step and per generated model of each mode on a token store, with
config.yaml's recipe (untrained generators; steps interleaved, medians), written to ``coupling_costs.{csv,md}``.
``--scale MODE=CSV ...``: the scale benchmark's rows (e.g. convnext_large, 197.8M parameters) per mode, written to
``coupling_scale.{csv,md}``.
``--add EXP_DIR RUN_ZOO ZOO MODE`` takes a row from a pipeline run made by hand (its evaluation summary and
benchmarks under ``EXP_DIR``, the zoo named ``RUN_ZOO`` there), recorded as (``--add-config``, ZOO, ``--add-seed``,
MODE); the mode's overrides must be what that run used, and ``--add-note`` says how else it differs (kept in the
row's note, e.g. a whole default pipeline with p-diff on).
``--beside CONFIG RUN_DIR`` runs a finished run again in each of ``--modes``: ``CONFIG`` (one experiment, e.g. the
``auto_steps.yaml`` that ``benchmarks/auto_steps.py`` wrote) with the mode's generator overrides, in ``--workdir`` on
copies of ``RUN_DIR``'s checkpoints and tokens (their timestamps kept, so only training, generation and evaluation
run), one row per zoo (``--add-config``, ``--add-seed``; ``--add-note`` replaces the default note).

``test_timm`` runs ``configs/test_timm.yaml`` (three zoos) for seed 0 only (``--timm-seeds`` for more). The peak memory
of generation at 197.8M parameters in each mode is the scale benchmark's, e.g.::

    python benchmarks/scale.py --targets convnext_large --backbones mamba2 --no-pdiff --train-steps 0 \\
        --set 'denoiser_channels=[1,4,8,4,1]' --set 'coupling="autoregressive"' --out /tmp/scale_ar

A study (docs/development.md, "Studies"): its finding is in docs/results.md, "Coupled generation".
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rpg.config import deep_merge  # noqa: E402

CONFIGS = {"default": ROOT / "config.yaml", "test_timm": ROOT / "configs" / "test_timm.yaml"}
# mode -> generator overrides; every mode names all coupling keys, so that a row stays what it says when the
# defaults change
AR = {"coupling": "autoregressive", "coupling_block": 8, "coupling_noise": 0.2, "coupling_dropout": 0.1}
MODES: dict[str, dict] = {
    "paper": {"coupling": "none"},
    "autoregressive": AR,
    "autoregressive b1": {**AR, "coupling_block": 1},
    "autoregressive b8 clean": {**AR, "coupling_noise": 0.0, "coupling_dropout": 0.0},
}
COLUMNS = ["config", "zoo", "seed", "mode", "orig_mean", "gen_mean", "gen_lo", "gen_hi", "n", "distinct", "copies",
           "pairwise_similarity", "similarity", "nearest_distance", "noise_margin", "noise_lo", "noise_hi",
           "noise_verdict", "gaussian_margin", "gaussian_lo", "gaussian_hi", "gaussian_verdict", "dominated_share",
           "steps_run", "kept_step", "gen_bn_mean", "stages_s", "train_cpu_s", "gen_s_per_model", "wall_s",
           "note"]  # fmt: skip


def experiment_config(config: str, seed: int, mode: str, zoos: list[str] | None) -> tuple[str, dict]:
    """(experiment name, the config dict) of one run: the config's single experiment, seeded, p-diff off, the mode's
    generator overrides at the experiment and at every zoo (a zoo's own generator keys stay, the mode's win)."""
    raw = yaml.safe_load(CONFIGS[config].read_text())
    (exp_name, exp), *rest = raw["experiments"].items()
    if rest:
        raise SystemExit(f"{CONFIGS[config]} must hold one experiment")
    name = f"{exp_name}_s{seed}"
    exp = deep_merge(exp, {"seed": seed, "generator": MODES[mode]})
    selected = {}
    for zoo, zcfg in exp["zoos"].items():
        if zoos and zoo not in zoos:
            continue
        zcfg = deep_merge(zcfg, {"pdiff": {"enabled": False}})
        if "generator" in zcfg:
            zcfg = deep_merge(zcfg, {"generator": MODES[mode]})
        selected[zoo] = zcfg
    if not selected:
        raise SystemExit(f"none of the zoos {zoos} is in {CONFIGS[config]}")
    exp["zoos"] = selected
    return name, {"experiments": {name: exp}}


def beside(config_file: Path, source: Path, workdir: Path, mode: str, cores: int) -> tuple[str, list[str], float]:
    """Run ``config_file``'s experiment, already run in ``source``, again in ``workdir`` with ``mode``'s generator
    overrides, on copies of the source run's checkpoints and tokens (with their logs and benchmarks; timestamps
    kept, so Snakemake reruns only training, generation and evaluation). Returns (experiment, zoos, wall s)."""
    raw = yaml.safe_load(config_file.read_text())
    (name, exp), *rest = raw["experiments"].items()
    if rest:
        raise SystemExit(f"{config_file} must hold one experiment")
    exp = deep_merge(exp, {"generator": MODES[mode]})
    exp["zoos"] = {zoo: deep_merge(zcfg, {"generator": MODES[mode]}) if "generator" in zcfg else zcfg
                   for zoo, zcfg in exp["zoos"].items()}  # fmt: skip
    src, dst = source / "results" / name, workdir / "results" / name
    if not (src / "tokens").is_dir():
        raise SystemExit(f"{src / 'tokens'}: no token store; --beside needs a finished run of {config_file}")
    for part in ("zoo", "tokens", "logs/collect", "logs/tokenize", "benchmarks/collect", "benchmarks/tokenize"):
        if (src / part).exists() and not (dst / part).exists():
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src / part, dst / part)  # copy2 + copystat: the timestamps Snakemake compares
    cfg_path = workdir / f"{mode.replace(' ', '_')}.yaml"
    cfg_path.write_text(yaml.safe_dump({"experiments": {name: exp}}, sort_keys=False))
    zoos = list(exp["zoos"])
    cmd = [sys.executable, "-m", "snakemake", *[f"results/{name}/evaluation/{z}/summary.json" for z in zoos],
           "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--cores", str(cores), "--configfile",
           str(cfg_path), "--rerun-triggers", "mtime"]  # fmt: skip
    print(f"{config_file} {mode}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return name, zoos, time.perf_counter() - t0


def _leave_out_resumed_cpu(row: dict, exp_dir: Path, zoo: str) -> None:
    """A resumed training's benchmark covers only its last attempt: its CPU-s, the stage minutes and the wall time are
    left out, and the note says so."""
    log = exp_dir / "logs" / "train" / f"{zoo}.log"
    resumed = [ln for ln in log.read_text().splitlines() if "resuming from" in ln] if log.is_file() else []
    if resumed:
        row.update(train_cpu_s=None, stages_s=None, wall_s=None)
        row["note"] = "; ".join(filter(None, [row.get("note"), (
            f"training was resumed at step {resumed[-1].rsplit(' ', 1)[-1]}, so the train rule's benchmark covers "
            "only the last attempt: CPU-s, stage minutes and wall time left out")]))  # fmt: skip


def last_tsv(path: Path) -> dict:
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    return rows[-1]


def row_of(summary: dict, *, config: str, zoo: str, seed: int, mode: str, bench: Path, wall: float) -> dict:
    """One table row from an evaluation summary and the stages' Snakemake benchmarks."""
    gen, orig, fr = summary["generated"], summary["original"], summary["frontiers"]
    div, dom = summary["generated_diversity"], summary["dominance"]
    row = {"config": config, "zoo": zoo, "seed": seed, "mode": mode, "orig_mean": orig["score"]["mean"],
           "gen_mean": gen["score"]["mean"], "gen_lo": gen["score"]["ci95"]["mean"][0],
           "gen_hi": gen["score"]["ci95"]["mean"][1], "n": gen["n"], "distinct": div["distinct"],
           "copies": gen["copies"], "pairwise_similarity": div["pairwise_similarity_mean"],
           "similarity": gen["similarity"]["mean"], "nearest_distance": gen["distance"]["mean"],
           "dominated_share": 1.0 - dom["undominated_share"], "wall_s": round(wall, 1)}  # fmt: skip
    for kind in ("noise", "gaussian"):
        f = fr.get(kind) or {}
        ci = f.get("ci95") or [None, None]
        row.update({f"{kind}_margin": f.get("margin"), f"{kind}_lo": ci[0], f"{kind}_hi": ci[1],
                    f"{kind}_verdict": f.get("verdict")})  # fmt: skip
    if summary.get("generated_bn"):  # a BatchNorm zoo's generated weights with re-estimated running statistics
        row["gen_bn_mean"] = summary["generated_bn"]["score"]["mean"]
    gen_config = bench.parent / "generator" / zoo / "config.json"
    if gen_config.is_file():  # steps run and the step whose generator was kept (they differ under steps: auto)
        training = json.loads(gen_config.read_text()).get("training") or {}
        row["steps_run"], row["kept_step"] = training.get("steps_run"), training.get("kept_step")
    stages = [*bench.glob(f"collect/{zoo}/*.tsv"), bench / "tokenize" / f"{zoo}.tsv", bench / "train" / f"{zoo}.tsv",
              *bench.glob(f"generate/{zoo}/*.tsv"), bench / "evaluate" / f"{zoo}.tsv"]  # fmt: skip
    if all(path.is_file() for path in stages):  # the zoo's jobs one after the other, from collection to evaluation
        row["stages_s"] = round(sum(float(last_tsv(path)["s"]) for path in stages), 1)
    train = bench / "train" / f"{zoo}.tsv"
    row["train_cpu_s"] = float(last_tsv(train)["cpu_time"]) if train.is_file() else None
    gens = sorted((bench / "generate" / zoo).glob("batch*.tsv"))
    seconds = sum(float(last_tsv(p)["s"]) for p in gens)
    row["gen_s_per_model"] = seconds / gen["n"] if gens else None
    return row


def load_rows(path: Path) -> dict[tuple, dict]:
    if not path.is_file():
        return {}
    with path.open() as f:
        return {(r["config"], r["zoo"], str(r["seed"]), r["mode"]): r for r in csv.DictReader(f)}


def write_rows(rows: dict[tuple, dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows.values(), key=lambda r: (r["config"], r["zoo"], int(r["seed"]), list(MODES).index(r["mode"])
                                                   if r["mode"] in MODES else 99))  # fmt: skip
    with (out / "coupling.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in ordered:
            w.writerow({k: r.get(k) for k in COLUMNS})
    (out / "coupling.md").write_text(render(ordered))
    (out / "coupling_short.md").write_text(short(ordered))


def _f(value, scale: float = 1.0, fmt: str = ".2f") -> str:
    if value in (None, ""):
        return "-"
    return format(float(value) * scale, fmt)


def _margin(r: dict, kind: str) -> str:
    if r.get(f"{kind}_margin") in (None, ""):
        return "-"
    return (f"{_f(r[f'{kind}_margin'], 100, '+.2f')} [{_f(r[f'{kind}_lo'], 100, '+.2f')}, "
            f"{_f(r[f'{kind}_hi'], 100, '+.2f')}] {r[f'{kind}_verdict']}")  # fmt: skip


def _steps(r: dict) -> str:
    if r.get("steps_run") in (None, ""):
        return "-"
    return f"{r['steps_run']} / {r['kept_step']}"


def render(rows: list[dict]) -> str:
    lines = ["| config | zoo | seed | mode | originals mean % | generated mean % [95%] | distinct / n | copies | "
             "pairwise sim. | sim. to originals | nearest dist. | over noise, points [95%] | over per-run Gaussian | "
             "dominated | steps run / kept | train CPU-s | gen. s / model |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['zoo']} | {r['seed']} | {r['mode']} | {_f(r['orig_mean'], 100)} | "
            f"{_f(r['gen_mean'], 100)} [{_f(r['gen_lo'], 100)}, {_f(r['gen_hi'], 100)}] | {r['distinct']} / {r['n']} | "
            f"{r['copies']} | {_f(r['pairwise_similarity'], 1, '.3f')} | {_f(r['similarity'], 1, '.3f')} | "
            f"{_f(r['nearest_distance'], 1, '.3f')} | {_margin(r, 'noise')} | {_margin(r, 'gaussian')} | "
            f"{_f(r['dominated_share'], 100, '.0f')}% | {_steps(r)} | {_f(r['train_cpu_s'], 1, '.0f')} | "
            f"{_f(r['gen_s_per_model'], 1, '.2f')} |"
        )
    notes = [f"{r['zoo']} seed {r['seed']} {r['mode']}: {r['note']}" for r in rows if r.get("note")]
    notes += [f"{r['zoo']} seed {r['seed']} {r['mode']}: the generated weights with BatchNorm running statistics "
              f"re-estimated on training batches (the evaluation's row generated_bn): {_f(r['gen_bn_mean'], 100)} %"
              for r in rows if r.get("gen_bn_mean") not in (None, "")]  # fmt: skip
    notes += [f"{r['zoo']} seed {r['seed']} {r['mode']}: the zoo's stages, collection to evaluation (the sum of their "
              f"Snakemake benchmarks' wall seconds): {float(r['stages_s']) / 60:.1f} min"
              for r in rows if r.get("stages_s") not in (None, "") and r["config"] == "test_timm"]  # fmt: skip
    used = [m for m in MODES if any(r["mode"] == m for r in rows)]
    modes = "; ".join(f"`{m}`: {json.dumps(MODES[m], sort_keys=True)}" for m in used)
    lines += ["", f"- Modes (generator overrides): {modes}.",
              "- Test split; originals at equal n; margins = generated mean - frontier at the generated similarity, "
              "with the evaluation's bootstrap interval and verdict; dominated = share of generated models that "
              "some baseline model matches in accuracy at a lower similarity; steps run / kept from the generator's "
              "config.json (-: a row measured before the column, config.yaml's fixed 3,000 steps); train CPU-s from "
              "the train rule's Snakemake benchmark; gen. s / model = the generate rule's wall seconds / models (on a "
              "shared machine: CPU costs measured side by side are in coupling_costs.md)."]  # fmt: skip
    lines += [f"- {n}." for n in notes]
    return "\n".join(lines) + "\n"


def _per_step(r: dict) -> float | None:
    """Training CPU-seconds per step run (the steps are config.yaml's fixed 3,000 where the row predates them)."""
    if r.get("train_cpu_s") in (None, ""):
        return None
    steps = r.get("steps_run")
    return float(r["train_cpu_s"]) / (float(steps) if steps not in (None, "") else 3000.0)


def _against_paper(rows: list[dict]) -> list[str]:
    """One line per coupled mode: on how many (zoo, seed) pairs it moved each figure against the paper mode."""
    paper = {(r["config"], r["zoo"], str(r["seed"])): r for r in rows if r["mode"] == "paper"}
    out = []
    for mode in [m for m in MODES if m != "paper"]:
        pairs = [(r, paper[(r["config"], r["zoo"], str(r["seed"]))]) for r in rows
                 if r["mode"] == mode and (r["config"], r["zoo"], str(r["seed"])) in paper]  # fmt: skip
        if not pairs:
            continue

        def more(key: str) -> int:
            return sum(float(r[key]) > float(q[key]) for r, q in pairs if r.get(key) not in (None, "")
                       and q.get(key) not in (None, ""))  # fmt: skip

        sims = sum(float(r["similarity"]) < float(q["similarity"]) for r, q in pairs)
        out.append(f"- `{mode}` against `paper` on the same zoo and seed ({len(pairs)} pairs): more accurate on "
                   f"{more('gen_mean')}, a lower similarity to the originals on {sims}, a larger margin over the noise "
                   f"frontier on {more('noise_margin')} and over the per-run Gaussian on "
                   f"{more('gaussian_margin')}.")  # fmt: skip
    return out


def short(rows: list[dict]) -> str:
    """The issue's bars per (config, zoo, mode) over the seeds measured: the gap to the originals and on how many
    seeds it is within 1 point, distinct and copies, similarity to the originals, how many seeds beat each frontier
    with the interval's lower bound above 0, and training CPU time against the paper mode's on the same seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["zoo"], r["mode"]), []).append(r)
    lines = ["| config | zoo | mode | seeds | generated - originals, points | within 1 point | distinct / n (min) | "
             "copies | sim. to originals | beats noise | beats per-run Gaussian | train CPU / step x paper |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (config, zoo, mode), rs in groups.items():
        gaps = [100 * (float(r["gen_mean"]) - float(r["orig_mean"])) for r in rs]
        within = sum(g >= -1.0 for g in gaps)
        passes = {k: sum(r[f"{k}_verdict"] == "pass" for r in rs) for k in ("noise", "gaussian")}
        paper = {str(r["seed"]): r for r in groups.get((config, zoo, "paper"), [])}
        ratios = [_per_step(r) / _per_step(paper[str(r["seed"])]) for r in rs
                  if str(r["seed"]) in paper and _per_step(r) and _per_step(paper[str(r["seed"])])]  # fmt: skip
        ratio = f"{sum(ratios) / len(ratios):.2f} (n={len(ratios)})" if ratios and mode != "paper" else "-"
        sims = [float(r["similarity"]) for r in rs]
        lines.append(
            f"| {config} | {zoo} | {mode} | {', '.join(str(r['seed']) for r in rs)} | "
            f"{', '.join(f'{g:+.2f}' for g in gaps)} | {within} of {len(rs)} | "
            f"{min(int(r['distinct']) for r in rs)} / {rs[0]['n']} | {sum(int(r['copies']) for r in rs)} | "
            f"{sum(sims) / len(sims):.3f} | {passes['noise']} of {len(rs)} | {passes['gaussian']} of {len(rs)} | "
            f"{ratio} |"
        )
    lines += ["", *_against_paper(rows)]
    lines += ["- Rows of `coupling.md` (its notes say how each run was made); test split, originals at equal n; "
              "'beats': seeds on which the margin over the frontier has its 95% interval above 0; train CPU / step x "
              "paper: training CPU-seconds per step run against the paper mode's on the same seed, the mean over the "
              "seeds where both modes' training ran uninterrupted."]  # fmt: skip
    return "\n".join(lines) + "\n"


def costs(token_dir: Path, modes: list[str], out: Path, *, train_steps: int = 10, repeats: int = 3,
          models: int = 10) -> None:  # fmt: skip
    """CPU-seconds per training step (batch 4, diffusion batch 128) and per model (a batch of ``models``, DDIM-20)
    of every mode, with config.yaml's generator recipe, on the token store ``token_dir`` (medians of ``repeats``
    interleaved measurements; 1 thread)."""
    import statistics

    import torch

    from rpg.config import GeneratorConfig
    from rpg.generator.model import build_generator
    from rpg.generator.samplers import build_sampler
    from rpg.optim import batch_rows
    from rpg.tokens.store import TokenStore

    torch.set_num_threads(1)
    store = TokenStore(token_dir)
    recipe = yaml.safe_load((ROOT / "config.yaml").read_text())
    (_, exp), *_ = recipe["experiments"].items()
    tokens_all = store.tokens(range(len(store)))
    states_all = torch.tensor(store.index["state"].tolist())
    setups = {}
    for mode in modes:
        torch.manual_seed(0)
        model = build_generator(GeneratorConfig.parse({**exp["generator"], **MODES[mode]}), store.layout,
                                store.num_states)  # fmt: skip
        setups[mode] = (model, torch.optim.AdamW(model.parameters(), lr=3e-3))
    train = {m: [] for m in modes}
    gen = {m: [] for m in modes}
    for rep in range(repeats):
        for mode, (model, opt) in setups.items():
            t0 = time.process_time()
            for step in range(train_steps):
                rows = batch_rows(step + train_steps * rep, batch_size=4, num_checkpoints=len(store), seed=0)
                loss = model(tokens_all[rows], states_all[rows], diffusion_batch=128,
                             generator=torch.Generator().manual_seed(step))  # fmt: skip
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            train[mode].append((time.process_time() - t0) / train_steps)
            sampler = build_sampler("ddim", schedule=model.schedule, steps=20)
            t0 = time.process_time()
            states = [i % store.num_states for i in range(models)]
            gens = [torch.Generator().manual_seed(i) for i in range(models)]
            for _ in model.sample_batch(states=states, sampler=sampler, generators=gens):
                pass
            gen[mode].append((time.process_time() - t0) / models)
    rows = [{"mode": m, "train_cpu_s_per_step": statistics.median(train[m]),
             "gen_cpu_s_per_model": statistics.median(gen[m])} for m in modes]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with (out / "coupling_costs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    first = rows[0]
    lines = ["| mode | train CPU-s / step | x first | gen. CPU-s / model | x first |", "|---|---|---|---|---|"]
    for r in rows:
        tr, ge = r["train_cpu_s_per_step"], r["gen_cpu_s_per_model"]
        lines.append(f"| {r['mode']} | {tr:.3f} | {tr / first['train_cpu_s_per_step']:.2f} | {ge:.3f} | "
                     f"{ge / first['gen_cpu_s_per_model']:.2f} |")  # fmt: skip
    lines += ["", f"- Token store: {store.layout.num_tokens} tokens of {store.layout.token_size}, {len(store)} "
              "checkpoints; config.yaml's generator recipe; untrained generators; a training step = batch of 4 "
              "checkpoints, 128 token samples, backward, clipping, AdamW; a model = DDIM-20 in a batch of "
              f"{models}; medians of {repeats} interleaved measurements (CPU time, 1 thread)."]  # fmt: skip
    (out / "coupling_costs.md").write_text("\n".join(lines) + "\n")


def scale_rows(pairs: list[str], out: Path) -> None:
    """The scale benchmark's rows per mode (``MODE=path/scale.csv``) into ``coupling_scale.{csv,md}``."""
    rows = []
    for pair in pairs:
        mode, path = pair.split("=", 1)
        with open(path) as f:
            for r in csv.DictReader(f):
                rows.append({"mode": mode, "target": r["target"], "params": int(r["params"]),
                             "tokens": int(r["tokens"]), "token_size": int(r["token_size"]), "method": r["method"],
                             "gen_peak_gib": float(r["gen_peak_gib"]), "model_s": float(r["model_s"])})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with (out / "coupling_scale.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    first = rows[0]
    lines = ["| mode | target | parameters | tokens | generation peak RSS GiB | x first | s / model | x first |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        peak, sec = r["gen_peak_gib"], r["model_s"]
        ratios = f"{peak / first['gen_peak_gib']:.2f} | {sec:.0f} | {sec / first['model_s']:.2f}"
        lines.append(f"| {r['mode']} | {r['target']} | {r['params'] / 1e6:.1f}M | {r['tokens']:,} of {r['token_size']} "
                     f"| {peak:.2f} | {ratios} |")  # fmt: skip
    lines += ["", "- `benchmarks/scale.py --targets convnext_large --backbones mamba2 --no-pdiff --train-steps 0` (an "
              "untrained tiny generator with the narrow denoiser 1-4-8-4-1, DDIM-2, 1 thread, the pipeline's "
              "streamed generation path), with `--set 'coupling=\"autoregressive\"'` for the coupled mode; peak RSS "
              "of the generating process; s / model: its wall time (on a shared machine)."]  # fmt: skip
    (out / "coupling_scale.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["default", "test_timm"], choices=sorted(CONFIGS))
    p.add_argument("--zoos", nargs="+", default=None, help="only these zoos of the configs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the default config")
    p.add_argument("--timm-seeds", nargs="+", type=int, default=[0], help="seeds of test_timm")
    p.add_argument("--modes", nargs="+", default=["paper", "autoregressive"], choices=list(MODES))
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--workdir", default=str(ROOT / "results_coupling"), help="the pipeline's working directory")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--rerun", action="store_true", help="remeasure rows already in the CSV")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--add", nargs=4, metavar=("EXP_DIR", "RUN_ZOO", "ZOO", "MODE"), help="a row from a finished run")
    p.add_argument("--add-no-cpu", metavar="WHY", help="leave the --add run's training CPU-s out, for this reason")
    p.add_argument("--beside", nargs=2, metavar=("CONFIG", "RUN_DIR"), help="a finished run again in --modes")
    p.add_argument("--add-config", default="default")
    p.add_argument("--add-seed", type=int, default=0)
    p.add_argument("--add-note", default=None, help="how the --add run differs from the study's own runs (kept)")
    p.add_argument("--costs", metavar="TOKEN_DIR", help="CPU-s per training step and per model of --modes")
    p.add_argument("--scale", nargs="+", metavar="MODE=CSV", help="the scale benchmark's rows per mode")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.costs or args.scale:
        if args.costs:
            costs(Path(args.costs), args.modes, out)
            print((out / "coupling_costs.md").read_text())
        if args.scale:
            scale_rows(args.scale, out)
            print((out / "coupling_scale.md").read_text())
        return
    rows = load_rows(out / "coupling.csv")
    if args.add:
        exp_dir, run_zoo, zoo, mode = args.add
        if mode not in MODES:
            raise SystemExit(f"mode {mode!r} unknown; one of {list(MODES)}")
        exp_dir = Path(exp_dir)
        summary = json.loads((exp_dir / "evaluation" / run_zoo / "summary.json").read_text())
        row = row_of(summary, config=args.add_config, zoo=run_zoo, seed=args.add_seed, mode=mode,
                     bench=exp_dir / "benchmarks", wall=float("nan"))  # fmt: skip
        row.update(zoo=zoo, wall_s=None)
        if args.add_note:
            row["note"] = args.add_note
        _leave_out_resumed_cpu(row, exp_dir, run_zoo)
        if args.add_no_cpu:
            row["train_cpu_s"] = None
            row["note"] = "; ".join(filter(None, [row.get("note"), f"{args.add_no_cpu}: CPU-s left out"]))
        rows[(args.add_config, zoo, str(args.add_seed), mode)] = row
        write_rows(rows, out)
        print((out / "coupling.md").read_text())
        return
    if args.beside:
        config_file, source = Path(args.beside[0]), Path(args.beside[1])
        for mode in args.modes:
            workdir = Path(args.workdir)
            name, zoos, wall = beside(config_file, source, workdir, mode, args.cores)
            for z in zoos:
                exp_dir = workdir / "results" / name
                summary = json.loads((exp_dir / "evaluation" / z / "summary.json").read_text())
                row = row_of(summary, config=args.add_config, zoo=z, seed=args.add_seed, mode=mode,
                             bench=exp_dir / "benchmarks", wall=wall)  # fmt: skip
                row["note"] = args.add_note or (
                    f"the run of {config_file.name} in {source} again with the mode's overrides, on copies of its "
                    "checkpoints and tokens (--beside)"
                )
                _leave_out_resumed_cpu(row, exp_dir, z)
                rows[(args.add_config, z, str(args.add_seed), mode)] = row
            write_rows(rows, out)
        print((out / "coupling.md").read_text())
        return
    if args.render_only:
        write_rows(rows, out)
        print((out / "coupling.md").read_text())
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for config in args.configs:
        for seed in args.seeds if config == "default" else args.timm_seeds:
            for mode in args.modes:
                name, cfg = experiment_config(config, seed, mode, args.zoos)
                zoos = list(cfg["experiments"][name]["zoos"])
                if not args.rerun and all((config, z, str(seed), mode) in rows for z in zoos):
                    print(f"{config} seed {seed} {mode}: in the table (--rerun measures again)", flush=True)
                    continue
                with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False, dir=workdir) as f:
                    yaml.safe_dump(cfg, f, sort_keys=False)
                targets = [f"results/{name}/evaluation/{z}/summary.json" for z in zoos]
                cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"),
                       "--directory", str(workdir), "--cores", str(args.cores), "--configfile", f.name]  # fmt: skip
                print(f"{config} seed {seed} {mode}: {' '.join(cmd)}", flush=True)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
                wall = time.perf_counter() - t0
                os.unlink(f.name)
                for z in zoos:
                    summary = json.loads((workdir / f"results/{name}/evaluation/{z}/summary.json").read_text())
                    rows[(config, z, str(seed), mode)] = row_of(summary, config=config, zoo=z, seed=seed, mode=mode,
                                                                bench=workdir / f"results/{name}/benchmarks",
                                                                wall=wall)  # fmt: skip
                write_rows(rows, out)
    print((out / "coupling.md").read_text())


if __name__ == "__main__":
    main()
