"""What validation by sampling adds to a training job's wall time: fixed steps without validation, validation in turn
(``train.validate_overlap: false``) and validation on a thread beside the next steps (``true``), with a core free
beside the job and with that core busy (another process keeps one core loaded, as a second training job does in the
pipeline's middle).

Each measurement is a fresh process that trains the zoo's generator for ``--steps`` steps with the config's recipe
(``validate_every: --every``; the last validation always runs in turn); its wall time from start to the written
generator is taken. Rounds interleave every (load, mode), so a machine whose speed drifts over the run affects all
alike; medians over rounds are reported, with each mode's ratio to fixed steps under the same load and the seconds
added per validation. The generators of the two validation modes are compared bit for bit.

    python benchmarks/studies/validation_overlap.py results/digits/tokens/vit --zoo vit --rounds 3

A study (docs/development.md, "Studies"): its table is docs/results.md's (generated block
bench.validation_overlap).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402

MODES = {"fixed": None, "in turn": False, "overlap": True}  # mode -> train.validate_overlap (None: no validation)
LOADS = ("core free", "core busy")

CHILD = """
import sys, yaml
from pathlib import Path
from rpg.config import resolve_config
from rpg.generator.trainer import train_generator
config, experiment, zoo, tokens, out, steps, every, overlap = sys.argv[1:9]
s = resolve_config(yaml.safe_load(Path(config).read_text()))[experiment][zoo]
train = {**s.train.to_dict(), "steps": int(steps), "threads": 1, "save_every": 10**9, "nproc": 1}
train.pop("max_steps", None)
validation = None
if overlap != "none":
    train.update(validate_every=int(every), validate_overlap=overlap == "true")
    validation = {"data": s.data, "evaluator": s.evaluate.evaluator}
train_generator(token_dir=tokens, out_dir=out, generator_cfg=s.generator, train_cfg=train, device="cpu", resume=False,
                validation=validation)
"""

LOAD = "import torch\ntorch.set_num_threads(1)\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a)\n"


def train_seconds(args, mode: str, out: Path) -> float:
    overlap = MODES[mode]
    flag = "none" if overlap is None else str(overlap).lower()
    cmd = [sys.executable, "-c", CHILD, args.config, args.experiment, args.zoo, args.tokens, str(out), str(args.steps),
           str(args.every), flag]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - start


def same_generator(a: Path, b: Path) -> bool:
    from rpg.io import load_safetensors

    x, y = load_safetensors(a / "model.safetensors")[0], load_safetensors(b / "model.safetensors")[0]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tokens", help="a token store (results/<exp>/tokens/<zoo>)")
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--experiment", default="digits")
    p.add_argument("--zoo", default="vit")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    times: dict[tuple[str, str], list[float]] = {(load, mode): [] for load in LOADS for mode in MODES}
    identical = True
    with tempfile.TemporaryDirectory() as work:
        for r in range(args.rounds):
            for load in LOADS:
                busy = subprocess.Popen([sys.executable, "-c", LOAD]) if load == "core busy" else None
                try:
                    for mode in MODES:
                        out = Path(work) / f"{r}-{load}-{mode}"
                        times[load, mode].append(train_seconds(args, mode, out))
                        print(f"round {r} {load:9s} {mode:8s} {times[load, mode][-1]:7.1f} s", flush=True)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                identical &= same_generator(Path(work) / f"{r}-{load}-in turn", Path(work) / f"{r}-{load}-overlap")
    validations = len(range(args.every, args.steps + 1, args.every)) + (args.steps % args.every != 0)
    rows = []
    for load in LOADS:
        fixed = statistics.median(times[load, "fixed"])
        for mode in MODES:
            med = statistics.median(times[load, mode])
            rows.append({"load": load, "mode": mode, "median_s": round(med, 2), "ratio": round(med / fixed, 3),
                         "added_s_per_validation": None if mode == "fixed" else round((med - fixed) / validations, 2),
                         "runs_s": [round(t, 1) for t in times[load, mode]]})  # fmt: skip
    meta = {"zoo": args.zoo, "config": Path(args.config).name, "steps": args.steps, "every": args.every,
            "validations": validations, "rounds": args.rounds, "identical": identical, "torch": torch.__version__,
            "machine": machine()}  # fmt: skip
    lines = [
        "| load beside the job | mode | wall s (median) | / fixed | s added per validation | runs, s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        added = "-" if r["added_s_per_validation"] is None else f"{r['added_s_per_validation']:+.2f}"
        runs = ", ".join(f"{t:.1f}" for t in r["runs_s"])
        lines.append(f"| {r['load']} | {r['mode']} | {r['median_s']:.1f} | {r['ratio']:.3f} | {added} | {runs} |")
    lines += [
        "",
        f"- {meta['zoo']} of {meta['config']}, its recipe for {meta['steps']} steps, validation every {meta['every']} "
        f"steps ({validations} validations, the last in turn), 1 training thread; {args.rounds} rounds, every "
        f"(load, mode) interleaved, a fresh process each; core busy: another process keeps one core loaded. "
        f"{meta['machine']}, torch {meta['torch']}.",
        f"- The generators of the two validation modes are {'bit-identical' if identical else 'NOT identical'} in "
        "every round and load.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation_overlap.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (out / "validation_overlap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
