"""Which recipe variants let a zoo's generator reach its originals' val score sooner, under ``train.steps: auto``.

Each variant (``name={"train": {...}, "generator": {...}}``, overrides of the zoo's recipe) trains the zoo's generator
in a fresh process with ``steps: auto`` (``--max-steps``, ``validate_every: --every``, ``cooldown: --cooldown``,
validation in turn, 1 thread), ``--jobs`` variants at a time. The table gives, per variant, the first step whose
sampled models reach the originals' val score within ``train.val_tolerance`` (the stopping rule's "reached"), the
val score at a few steps, the best validation, the rule's stop, and the training's seconds per step (validation
excluded; the variants of one ``--jobs`` batch share the machine, so compare them within a run). Runs already in
``--work`` with the same settings are read back, not trained again (training is deterministic).

    python benchmarks/studies/auto_recipes.py results/digits/tokens/vit --zoo vit \\
        --variants 'base={}' 'ema 0.999={"train": {"ema_decay": 0.999}}' 'lr 0.02={"train": {"lr": 0.02}}'

A study (docs/development.md, "Studies"): issue 25's question whether the default ViT can reach its target within
config.yaml's 3,000 steps; its table is docs/results.md's (generated block bench.auto_recipes).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402

from rpg.config import resolve_config  # noqa: E402

CHILD = """
import json, sys, yaml
from pathlib import Path
from rpg.config import resolve_config
from rpg.generator.trainer import train_generator
from rpg.runtime import setup_logging
config, experiment, zoo, tokens, out, spec = sys.argv[1:7]
spec = json.loads(spec)
s = resolve_config(yaml.safe_load(Path(config).read_text()))[experiment][zoo]
setup_logging(str(Path(out) / "train.log"))
generator = {**s.generator.to_dict(), **spec["generator"]}
train = {**s.train.to_dict(), **spec["train"]}
train_generator(token_dir=tokens, out_dir=out, generator_cfg=generator, train_cfg=train, device="cpu", resume=False,
                validation={"data": s.data, "evaluator": s.evaluate.evaluator})
"""


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition("=")
    over = json.loads(body or "{}")
    unknown = set(over) - {"train", "generator"}
    if unknown:
        raise SystemExit(f"variant {name!r}: only 'train' and 'generator' overrides, got {sorted(unknown)}")
    return name, {"train": over.get("train", {}), "generator": over.get("generator", {})}


def spec_of(args, over: dict) -> dict:
    train = {"steps": "auto", "max_steps": args.max_steps, "validate_every": args.every, "cooldown": args.cooldown,
             "validate_overlap": False, "threads": 1, "nproc": 1, "save_every": 10**9, **over["train"]}  # fmt: skip
    return {"train": train, "generator": over["generator"]}


def run_dir(work: Path, name: str) -> Path:
    return work / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def finished(out: Path, spec: dict, tokens: str) -> bool:
    want = {"spec": spec, "tokens": str(Path(tokens).resolve())}
    done = out / "variant.json"
    return (out / "train_log.csv").is_file() and done.is_file() and json.loads(done.read_text()) == want


def launch(args, name: str, spec: dict) -> subprocess.Popen | None:
    out = run_dir(Path(args.work), name)
    if finished(out, spec, args.tokens):
        print(f"{name}: in {out} (read back)", flush=True)
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / "variant.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-c", CHILD, args.config, args.experiment, args.zoo, args.tokens, str(out), json.dumps(spec)]
    print(f"{name}: training in {out}", flush=True)
    with (out / "stderr.txt").open("w") as err:  # the progress bar, and a traceback if the child fails
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


def train_variants(args, specs: dict[str, dict]) -> None:
    """Train every variant not yet in ``--work``, ``--jobs`` at a time; a failure stops the others."""
    pending = list(specs)
    running: dict[str, subprocess.Popen] = {}
    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                name = pending.pop(0)
                proc = launch(args, name, specs[name])
                if proc is not None:
                    running[name] = proc
            for name, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                out = run_dir(Path(args.work), name)
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: training failed (exit {proc.returncode}); see {out / 'stderr.txt'}")
                done = {"spec": specs[name], "tokens": str(Path(args.tokens).resolve())}
                (out / "variant.json").write_text(json.dumps(done))
                print(f"{name}: done", flush=True)
            time.sleep(1)
    finally:
        for proc in running.values():
            proc.terminate()
            proc.wait()


def summarise(name: str, out: Path, tolerance: float, at: list[int]) -> dict:
    log = pd.read_csv(out / "train_log.csv")
    info = json.loads((out / "config.json").read_text())["training"]
    val = log.dropna(subset=["val_score"])
    target = float(val["val_target"].iloc[0])
    reached = val[val["val_score"] >= target - tolerance]
    steps = int(info["steps_run"])
    train_s = float(info["seconds"]) - float(info.get("validation_seconds") or 0.0)
    row = {"variant": name, "target": target, "first_reached": int(reached["step"].iloc[0]) if len(reached) else None,
           "best_val": float(info["best_val_score"]), "best_step": int(info["best_step"]), "stopped": info["stopped"],
           "steps_run": steps, "kept_step": int(info["kept_step"]), "s_per_step": train_s / steps,
           "train_min": float(info["seconds"]) / 60}  # fmt: skip
    for s in at:
        hit = val[val["step"] == s]
        row[f"val_{s}"] = float(hit["val_score"].iloc[0]) if len(hit) else None
    return row


def table(rows: list[dict], meta: dict) -> str:
    at = meta["at"]
    head = ["variant", "overrides", "first step at target", *[f"val @ {s:,}" for s in at], "best val (step)",
            "stopped", "steps run / kept", "s / step", "x base s / step"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = rows[0]["s_per_step"]
    for r in rows:
        vals = [("-" if r[f"val_{s}"] is None else f"{100 * r[f'val_{s}']:.2f}") for s in at]
        first = "not reached" if r["first_reached"] is None else f"{r['first_reached']:,}"
        lines.append("| " + " | ".join([
            r["variant"], f"`{json.dumps(r['overrides'], sort_keys=True)}`", first, *vals,
            f"{100 * r['best_val']:.2f} ({r['best_step']:,})", r["stopped"],
            f"{r['steps_run']:,} / {r['kept_step']:,}", f"{r['s_per_step']:.3f}", f"{r['s_per_step'] / base:.2f}",
        ]) + " |")  # fmt: skip
    lines += [
        "",
        f"- {meta['zoo']} of {meta['config']} (its recipe plus each row's overrides), tokens `{meta['tokens']}`; "
        f"`train.steps: auto`, `max_steps: {meta['max_steps']}` (the cosine spans it), validation every "
        f"{meta['every']} steps in turn, cool-down {meta['cooldown']}, 1 thread; target = the originals' val score "
        f"{100 * meta['target']:.2f} within {100 * meta['tolerance']:.0f} point (the stopping rule's 'reached'); "
        "val scores: the validation's sampled models on the val split.",
        f"- s / step: training seconds (validation excluded) / steps run, {meta['jobs']} variants at a time on "
        f"{meta['machine']}; a row read back from an earlier run keeps the time of that run.",
        f"- `{meta['command']}` ({meta['date']}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tokens", help="the zoo's token store (results/<exp>/tokens/<zoo>)")
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--experiment", default="digits")
    p.add_argument("--zoo", default="vit")
    p.add_argument("--variants", nargs="+", default=["base={}"], help='name={"train": {...}, "generator": {...}}')
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--cooldown", type=float, default=0.2)
    p.add_argument("--at", type=int, nargs="+", default=[1000, 2000, 3000], help="steps whose val score is shown")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", default=str(ROOT / "results_auto_recipes"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="auto_recipes", help="the table's file name in --out (without .md/.json)")
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    specs = {name: spec_of(args, over) for name, over in variants}
    train_variants(args, specs)
    zoo = resolve_config(yaml.safe_load(Path(args.config).read_text()))[args.experiment][args.zoo]
    tolerance = float(zoo.train.val_tolerance)
    rows = []
    for name, over in variants:
        row = summarise(name, run_dir(Path(args.work), name), tolerance, args.at)
        row["overrides"] = over
        rows.append(row)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python benchmarks/studies/auto_recipes.py", *(shlex.quote(a) for a in given)])
    meta = {"zoo": args.zoo, "config": Path(args.config).name, "tokens": args.tokens, "max_steps": args.max_steps,
            "every": args.every, "cooldown": args.cooldown, "target": rows[0]["target"], "tolerance": tolerance,
            "at": args.at, "jobs": args.jobs, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "command": command}  # fmt: skip
    text = table(rows, meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / f"{args.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
