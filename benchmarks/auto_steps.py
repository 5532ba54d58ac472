"""``train.steps: auto`` on zoos we did not tune for: each zoo's steps chosen, time and result, in one table.

Runs the pipeline with ``train.steps: auto`` (validation by sampling every ``--validate-every`` steps, at most
``--max-steps``) and no other change to the zoos' recipes, on:

* the default zoos of ``config.yaml`` (cnn_m, vit; p-diff off),
* the zoos of ``configs/test_timm.yaml`` (test_resnet, test_convnext, test_vit),
* two bring-your-own zoos made here, outside the collection stage: a timm MLP-Mixer and a plain MLP (an entry point
  this script writes into the work directory), each trained on digits for 2 runs x 10 checkpoints, saved as folders
  of .safetensors files and imported through ``source: {path: ...}`` (README, "Bring your own zoo"), with
  config.yaml's generator and training recipe.

``--recipe-auto`` sets ``tokens.token_size``, ``generator.dim``, ``train.lr``, ``train.warmup_steps`` and
``train.diffusion_batch`` to ``auto`` (rpg/config/recipe.py) for the bring-your-own zoos (``byo``, the default: a new
user's zoo has no recipe of its own), for every zoo (``all``) or for none (the shipped zoos always keep their shipped
recipe otherwise). The table (zoo, what ``auto`` chose, steps run and kept, why training stopped, training time,
originals' vs generated test mean, distinct models, copies) goes to ``benchmarks/results/auto_steps.md`` and its
rows to ``auto_steps.json`` beside it; a run of some zoos replaces their rows and keeps the others', so the zoos can
be run a few at a time.

    python benchmarks/auto_steps.py                          # all 7 zoos (hours on 2 CPU cores)
    python benchmarks/auto_steps.py --zoos cnn_m vit mlp     # some of them
    python benchmarks/auto_steps.py --smoke                  # the plain-MLP zoo with tiny settings (minutes)
    python benchmarks/auto_steps.py --zoos mlp --reevaluate  # a finished run's evaluation again (new evaluation code)
    python benchmarks/auto_steps.py --merge W/auto_steps.json  # rows of runs written elsewhere (--out) into the table
    python benchmarks/auto_steps.py --compare A.json B.json --out C.md  # two variants' rows side by side, per zoo
    python benchmarks/auto_steps.py --cooldown none --out benchmarks/results/auto_steps_no_cooldown.md  # the rule
                                                             # alone: stop when it fires (no lr cool-down)

``--reevaluate`` reruns only the evaluation of the chosen zoos in ``--work`` (trained generators and generated
models kept): their rows keep the run that trained them (command, date, training time) and record the
re-evaluation's command and date.

The table: docs/results.md, "Training that stops by itself" (``python docs/make.py`` copies it there).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml
from _common import ROOT, machine

DIGITS_ZOOS = ("cnn_m", "vit")
TIMM_ZOOS = ("test_resnet", "test_convnext", "test_vit")
BYO_ZOOS = ("mixer", "mlp")
ALL_ZOOS = DIGITS_ZOOS + TIMM_ZOOS + BYO_ZOOS

BYO_MODULE = '''
"""Architectures of the bring-your-own zoos of benchmarks/auto_steps.py (imported by the pipeline)."""
from torch import nn


def make_mlp(hidden=64, in_features=64, num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
'''
BYO_ARCHS = {
    # a timm MLP-Mixer of 59,842 parameters on 8x8 digits (patches of 2: 16 tokens), through timm's class (its
    # registered mixer_* names fix the patch size)
    "mixer": (
        "timm.models.mlp_mixer:MlpMixer",
        {"img_size": 8, "patch_size": 2, "in_chans": 1, "num_classes": 10, "embed_dim": 48, "num_blocks": 3},
    ),
    "mlp": ("byo_auto_steps:make_mlp", {"hidden": 64}),
}
SMOKE_EVALUATE = {"noise_levels": [0.01, 0.05], "noise_models_per_level": 1, "interp_weights": [0.5],
                  "interp_pairs": 1, "gaussian_scales": [1.0, 64.0], "gaussian_models_per_scale": 1,
                  "bn_recalibrate_batches": 1}  # fmt: skip


def auto_train(train: dict, args, recipe_auto: bool) -> dict:
    out = {**train, "steps": "auto", "max_steps": args.max_steps, "validate_every": args.validate_every}
    if args.cooldown is not None:  # a share, or "none" (stop when the rule fires); not given: the config default
        out["cooldown"] = None if args.cooldown == "none" else float(args.cooldown)
    if recipe_auto:
        out.update(lr="auto", warmup_steps="auto", diffusion_batch="auto")
    return out


def auto_recipe(exp: dict) -> None:
    """The experiment's token size and generator width: ``auto`` (the training keys: :func:`auto_train`)."""
    exp["tokens"] = {**exp.get("tokens", {}), "token_size": "auto"}
    exp["generator"] = {**exp.get("generator", {}), "dim": "auto"}


def shipped_experiment(config: Path, zoos: list[str], args) -> tuple[str, dict]:
    """The one experiment of a shipped config with ``steps: auto`` (zoo-level step counts dropped)."""
    (name, exp), *_ = yaml.safe_load(config.read_text())["experiments"].items()
    exp = copy.deepcopy(exp)
    exp["zoos"] = {z: exp["zoos"][z] for z in zoos}
    recipe_auto = args.recipe_auto == "all"
    for zoo in exp["zoos"].values():
        zoo.get("train", {}).pop("steps", None)
        zoo.pop("pdiff", None)
        if recipe_auto:
            zoo.pop("tokens", None)
            zoo.get("generator", {}).pop("dim", None)
            for key in ("lr", "diffusion_batch", "warmup_steps"):
                zoo.get("train", {}).pop(key, None)
    exp["train"] = auto_train(exp.get("train", {}), args, recipe_auto)
    if recipe_auto:
        auto_recipe(exp)
    return f"auto_{name}", exp


def train_byo_zoo(kind: str, root: Path, *, runs: int = 2, checkpoints: int = 10, epochs: int = 30) -> Path:
    """A zoo made outside the collection stage: ``runs`` runs of ``epochs`` epochs of AdamW on the digits train
    split, then ``checkpoints`` checkpoints a tenth of an epoch apart at a small constant lr; one folder per run."""
    import torch

    from rpg.config import DataConfig
    from rpg.data import build_dataset, make_loader
    from rpg.io import save_safetensors
    from rpg.zoo.models import build_model

    out = root / f"byo_{kind}"
    if (out / f"run{runs - 1}" / f"ckpt_{checkpoints - 1:03d}.safetensors").is_file():
        return out
    arch, kwargs = BYO_ARCHS[kind]
    data = DataConfig.parse({"name": "digits"})
    train = build_dataset(data, "train")
    for run in range(runs):
        torch.manual_seed(1000 + run)
        model = build_model(arch, kwargs)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
        loader = make_loader(train, batch_size=64, shuffle=True, seed=run, workers=0)
        for _ in range(epochs):
            for x, y in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        for group in opt.param_groups:
            group["lr"] = 3e-4
        batches = iter(make_loader(train, batch_size=64, shuffle=True, seed=100 + run, workers=0))
        per_checkpoint = max(1, len(loader) // 10)
        for c in range(checkpoints):
            for _ in range(per_checkpoint):
                try:
                    x, y = next(batches)
                except StopIteration:
                    batches = iter(make_loader(train, batch_size=64, shuffle=True, seed=200 + c, workers=0))
                    x, y = next(batches)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
            save_safetensors(state, out / f"run{run}" / f"ckpt_{c:03d}.safetensors", {"run": run, "step": c})
    return out


def byo_experiment(zoos: list[str], work: Path, args) -> tuple[str, dict]:
    """The bring-your-own zoos with config.yaml's recipe (no tuning for them) and ``steps: auto``."""
    (_, base), *_ = yaml.safe_load((ROOT / "config.yaml").read_text())["experiments"].items()
    exp = {k: copy.deepcopy(v) for k, v in base.items() if k != "zoos"}
    exp["zoos"] = {}
    for kind in zoos:
        arch, kwargs = BYO_ARCHS[kind]
        folder = train_byo_zoo(kind, work, checkpoints=args.byo_checkpoints, epochs=args.byo_epochs)
        exp["zoos"][kind] = {"arch": arch, "arch_kwargs": kwargs, "source": {"path": str(folder)}}
    recipe_auto = args.recipe_auto in ("byo", "all")
    exp["train"] = auto_train(exp.get("train", {}), args, recipe_auto)
    if recipe_auto:
        auto_recipe(exp)
    return "auto_byo", exp


def smoke(exp: dict) -> dict:
    """Tiny settings: few generated models, a cheap evaluation."""
    exp = copy.deepcopy(exp)
    exp["generate"] = {**exp.get("generate", {}), "num_models": 2, "models_per_job": 2, "steps": 5}
    exp["evaluate"] = {**exp.get("evaluate", {}), **SMOKE_EVALUATE}
    return exp


def run_pipeline(experiments: dict, work: Path, cores: int, *, reevaluate: bool = False) -> float:
    config = work / "auto_steps.yaml"
    if not reevaluate:
        config.write_text(yaml.safe_dump({"experiments": experiments}, sort_keys=False))
    elif not config.is_file():
        sys.exit(f"--reevaluate: no finished run in {work} ({config.name} is missing)")
    targets = [f"results/{e}/evaluation/{z}/summary.json" for e, exp in experiments.items() for z in exp["zoos"]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores), "--configfile",
           str(config), "--directory", str(work), *targets]  # fmt: skip
    if reevaluate:  # only the evaluation jobs of the targets; a missing upstream output is an error, not a rerun
        cmd += ["--forcerun", "evaluate", "--allowed-rules", "evaluate"]
    print(" ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=work, env=env, check=True)
    return time.perf_counter() - start


def seconds(tsv: Path) -> float | None:
    """The wall seconds of a Snakemake benchmark file."""
    if not tsv.is_file():
        return None
    with tsv.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return float(rows[-1]["s"]) if rows else None


def row(work: Path, exp: str, zoo: str) -> dict:
    res = work / "results" / exp
    gen = json.loads((res / "generator" / zoo / "config.json").read_text())
    summary = json.loads((res / "evaluation" / zoo / "summary.json").read_text())
    training = gen.get("training", {})
    diversity = summary.get("generated_diversity", {})
    return {
        "zoo": zoo, "experiment": exp, "tokens": f"{gen['num_tokens']} x {gen['token_size']}",
        "steps_run": training.get("steps_run"), "kept_step": training.get("kept_step"),
        "stopped": training.get("stopped"), "cooldown_steps": (training.get("cooldown") or {}).get("steps"),
        "validation_share": training.get("validation_share"),
        "train_s": seconds(res / "benchmarks" / "train" / f"{zoo}.tsv"),
        "original_mean": summary["original"]["score"]["mean"], "generated_mean": summary["generated"]["score"]["mean"],
        "distinct": diversity.get("distinct"), "n": diversity.get("n"), "copies": summary["generated"].get("copies"),
        "diagnosis": (summary.get("diagnosis") or {}).get("status"), "recipe": gen.get("recipe", {}),
        "generated_bn_mean": (summary.get("generated_bn") or {}).get("score", {}).get("mean"),
    }  # fmt: skip


def chosen(recipe: dict) -> str:
    """The values ``auto`` chose, in one cell ("shipped" when none was auto)."""
    names = {"token_size": "token", "dim": "width", "lr": "lr", "warmup_steps": "warm-up", "diffusion_batch": "batch"}
    cells = [f"{label} {recipe[key]['value']:g}" for key, label in names.items() if key in recipe]
    return ", ".join(cells) or "shipped"


def merged(stored: Path, rows: list[dict], *, command: str, wall: float, reevaluate: bool = False) -> list[dict]:
    """This run's rows (with its command, date, machine and wall time) replacing the stored rows of their zoos; a
    re-evaluation keeps each stored row's training run and records itself beside it."""
    run = {"command": command, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "wall_min": wall / 60}
    old = json.loads(stored.read_text()) if stored.is_file() else []
    if reevaluate:
        trained = {r["zoo"]: r["run"] for r in old if "run" in r}
        rows = [{**r, "run": trained.get(r["zoo"], run), "reevaluated": {"command": command, "date": run["date"]}}
                for r in rows]  # fmt: skip
    else:
        rows = [{**r, "run": run} for r in rows]
    new = {r["zoo"] for r in rows}
    order = {z: i for i, z in enumerate(ALL_ZOOS)}
    return sorted([r for r in old if r["zoo"] not in new] + rows, key=lambda r: order.get(r["zoo"], len(order)))


def table(rows: list[dict], *, note: str) -> str:
    runs = list({json.dumps(r["run"], sort_keys=True): r["run"] for r in rows if "run" in r}.values())
    written = "; ".join(f"`{r['command']}` ({r['date']}, {r['machine']}; {r['wall_min']:.1f} min wall)" for r in runs)
    again: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if "reevaluated" in r:
            again.setdefault((r["reevaluated"]["command"], r["reevaluated"]["date"]), []).append(r["zoo"])
    if again:
        note += "; evaluated again by " + "; ".join(f"`{c}` ({d}: {', '.join(z)})" for (c, d), z in again.items())
    lines = [
        "# `train.steps: auto` on the shipped zoos and two bring-your-own zoos",
        "",
        f"Written by {written}{note}.",
        "Test split, equal n; `steps` = steps run / step kept; `stopped`: the rule that fired (+ the steps of the lr's "
        "cool-down after it, `train.cooldown`); `val share` = validation's share of the training time; `BN "
        "re-estimated`: a BatchNorm zoo's generated weights with running statistics re-estimated on training batches "
        "(row `generated_bn`; `generated` is the models as generated).",
        "",
        "| zoo | tokens | auto recipe | steps | stopped | val share | train min | originals | generated | gap (points) "
        "| distinct | copies | diagnosis |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        gap = 100 * (r["original_mean"] - r["generated_mean"])
        share = "" if r["validation_share"] is None else f"{100 * r['validation_share']:.1f} %"
        train = "" if r["train_s"] is None else f"{r['train_s'] / 60:.1f}"
        cooled = f" + {r['cooldown_steps']} cool-down" if r.get("cooldown_steps") else ""
        scores = f"{100 * r['original_mean']:.2f} | {100 * r['generated_mean']:.2f} | {gap:+.2f}"
        bn = r.get("generated_bn_mean")  # a BatchNorm zoo: the same weights with re-estimated statistics
        diagnosis = r["diagnosis"] if bn is None else f"{r['diagnosis']} (BN re-estimated: {100 * bn:.2f})"
        lines.append(
            f"| {r['zoo']} | {r['tokens']} | {chosen(r['recipe'])} | {r['steps_run']} / {r['kept_step']} "
            f"| {r['stopped']}{cooled} | {share} | {train} | {scores} | {r['distinct']}/{r['n']} | {r['copies']} "
            f"| {diagnosis} |"
        )
    return "\n".join(lines) + "\n"


def compare(base: Path, variant: Path, *, labels: tuple[str, str]) -> str:
    """The rows two runs share (by zoo) side by side: steps run / kept, generated mean, its change, distinct and
    the training time of each."""
    a = {r["zoo"]: r for r in json.loads(base.read_text())}
    b = {r["zoo"]: r for r in json.loads(variant.read_text())}
    zoos = [z for z in ALL_ZOOS if z in a and z in b]
    x, y = labels
    lines = [
        f"# `train.steps: auto`: {x} against {y}, zoo by zoo",
        "",
        f"Rows of `{base.name}` ({x}) and `{variant.name}` ({y}), written by `benchmarks/auto_steps.py --compare`; "
        "test split, equal n; each run's command is in its table. `steps` = steps run / step kept. The training "
        "minutes come from separate runs, each on its machine's load at the time: the steps are the cost measure.",
        "",
        f"| zoo | originals | steps {x} | steps {y} | generated {x} | generated {y} | change (points) "
        f"| distinct {x} | distinct {y} | train min {x} | train min {y} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for z in zoos:
        r, v = a[z], b[z]
        if abs(r["original_mean"] - v["original_mean"]) > 1e-9:
            raise SystemExit(f"{z}: the two runs' originals differ ({r['original_mean']} vs {v['original_mean']})")
        cells = [
            z, f"{100 * r['original_mean']:.2f}", f"{r['steps_run']} / {r['kept_step']}",
            f"{v['steps_run']} / {v['kept_step']}", f"{100 * r['generated_mean']:.2f}",
            f"{100 * v['generated_mean']:.2f}", f"{100 * (v['generated_mean'] - r['generated_mean']):+.2f}",
            f"{r['distinct']}/{r['n']}", f"{v['distinct']}/{v['n']}",
            *("" if t is None else f"{t / 60:.1f}" for t in (r["train_s"], v["train_s"])),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cooldown(text: str) -> str:
    if text != "none":
        float(text)  # argparse reports a ValueError as an invalid --cooldown
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoos", nargs="+", default=list(ALL_ZOOS), choices=ALL_ZOOS)
    p.add_argument("--work", default=str(ROOT / "benchmarks" / ".cache" / "auto_steps"), help="pipeline directory")
    p.add_argument("--max-steps", type=int, default=6000)
    p.add_argument("--validate-every", type=int, default=250)
    p.add_argument("--cooldown", type=_cooldown, default=None,
                   help="train.cooldown: when the rule fires at step s, decay the lr over this share of s; none: "
                   "stop when it fires (default: train.cooldown's default)")  # fmt: skip
    p.add_argument("--recipe-auto", choices=("byo", "all", "none"), default="byo",
                   help="which zoos get token size, lr, warm-up and diffusion batch 'auto'")  # fmt: skip
    p.add_argument("--byo-checkpoints", type=int, default=10, help="checkpoints per run of the BYO zoos")
    p.add_argument("--byo-epochs", type=int, default=30)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--threads", type=int, default=None,
                   help="train.threads and generate.threads (default: the configs'; 1 runs two of these side by side "
                   "on 2 cores without oversubscribing)")  # fmt: skip
    p.add_argument("--smoke", action="store_true",
                   help="tiny settings (max 300 steps, validation every 100, 2 models, a cheap evaluation); "
                        "only the plain-MLP zoo unless --zoos is given")  # fmt: skip
    p.add_argument("--reevaluate", action="store_true",
                   help="rerun only the evaluation of the chosen zoos of a finished run in --work")  # fmt: skip
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="no run: merge the rows of these auto_steps.json files (other --out) into --out")  # fmt: skip
    p.add_argument("--compare", nargs=2, default=None, metavar="JSON",
                   help="no run: the rows of two auto_steps.json files side by side (table to --out)")  # fmt: skip
    p.add_argument("--labels", nargs=2, default=("without", "with"), help="the two columns' names for --compare")
    p.add_argument("--out", default=None, help="default benchmarks/results/auto_steps.md (smoke: in --work)")
    args = p.parse_args(argv)
    if args.compare:
        if not args.out:
            sys.exit("--compare needs --out (the table's file)")
        Path(args.out).write_text(compare(*map(Path, args.compare), labels=tuple(args.labels)))
        print(Path(args.out).read_text())
        return
    if args.merge:
        out = Path(args.out or ROOT / "benchmarks" / "results" / "auto_steps.md")
        rows = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else []
        for path in args.merge:
            new = json.loads(Path(path).read_text())
            zoos = {r["zoo"] for r in new}
            rows = [r for r in rows if r["zoo"] not in zoos] + new
        order = {z: i for i, z in enumerate(ALL_ZOOS)}
        rows.sort(key=lambda r: order.get(r["zoo"], len(order)))
        out.write_text(table(rows, note=""))
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
        print(out.read_text())
        return
    if args.smoke:
        if argv is None and "--zoos" not in sys.argv:
            args.zoos = ["mlp"]
        args.max_steps, args.validate_every, args.byo_epochs = 300, 100, 5
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "byo_auto_steps.py").write_text(textwrap.dedent(BYO_MODULE).lstrip())
    sys.path.insert(0, str(work))
    experiments = {}
    groups = ((ROOT / "config.yaml", DIGITS_ZOOS), (ROOT / "configs" / "test_timm.yaml", TIMM_ZOOS))
    for config, names in groups:
        chosen = [z for z in names if z in args.zoos]
        if chosen:
            name, exp = shipped_experiment(config, chosen, args)
            experiments[name] = exp
    byo = [z for z in BYO_ZOOS if z in args.zoos]
    if byo:
        name, exp = byo_experiment(byo, work, args)
        experiments[name] = exp
    if args.smoke:
        experiments = {name: smoke(exp) for name, exp in experiments.items()}
    if args.threads:
        for exp in experiments.values():
            for block in ("train", "generate"):
                exp[block] = {**exp.get(block, {}), "threads": args.threads}
    wall = run_pipeline(experiments, work, args.cores, reevaluate=args.reevaluate)
    rows = [row(work, e, z) for e, exp in experiments.items() for z in exp["zoos"]]
    command = "python benchmarks/auto_steps.py " + " ".join(argv if argv is not None else sys.argv[1:])
    note = " (smoke settings: not a result)" if args.smoke else ""
    out = Path(args.out or (work / "auto_steps_smoke.md" if args.smoke else ROOT / "benchmarks" / "results" /
                            "auto_steps.md"))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = merged(out.with_suffix(".json"), rows, command=command.strip(), wall=wall, reevaluate=args.reevaluate)
    out.write_text(table(rows, note=note))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
