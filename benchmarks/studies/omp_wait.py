"""Training step time against the OpenMP wait policy of the job (OMP_WAIT_POLICY) and its thread count.

Each measurement is a fresh process (the policy is read when OpenMP starts) that trains the zoo's generator for
``--steps`` steps with the config's recipe; the time per step is taken from the training log after the first 10
steps. Rounds interleave the settings, medians over rounds are reported, with the ratio to the first setting.

    python benchmarks/studies/omp_wait.py results/test_timm/tokens/test_convnext --config configs/test_timm.yaml \
        --zoo test_convnext

A study (docs/development.md, "Studies"): its table is docs/throughput.md, "What changed" (generated block
bench.omp_wait).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [("PASSIVE", 2), ("default", 2), ("default", 1)]  # (OMP_WAIT_POLICY, train.threads)

CHILD = """
import json, sys, yaml
from pathlib import Path
from rpg.config import resolve_config
from rpg.generator.trainer import train_generator
config, experiment, zoo, tokens, out, steps, threads = sys.argv[1:8]
s = resolve_config(yaml.safe_load(Path(config).read_text()))[experiment][zoo]
train = {**s.train.to_dict(), "steps": int(steps), "threads": int(threads), "save_every": 10**9, "nproc": 1}
train_generator(token_dir=tokens, out_dir=out, generator_cfg=s.generator, train_cfg=train, device="cpu", resume=False)
"""


def step_seconds(args, policy: str, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", CHILD, args.config, args.experiment, args.zoo, args.tokens, out, str(args.steps),
               str(threads)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = pd.read_csv(Path(out) / "train_log.csv")["time"].to_numpy()
    return float((t[-1] - t[9]) / (len(t) - 10))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tokens", help="a token store (results/<exp>/tokens/<zoo>)")
    p.add_argument("--config", default=str(ROOT / "configs" / "test_timm.yaml"))
    p.add_argument("--experiment", default="test_timm")
    p.add_argument("--zoo", default="test_convnext")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "omp_wait"))
    args = p.parse_args(argv)
    if args.steps <= 10:
        raise SystemExit("--steps must be > 10 (the first 10 steps are not timed)")
    load = os.getloadavg()[0]
    times: dict[tuple[str, int], list[float]] = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for policy, threads in SETTINGS:
            times[(policy, threads)].append(step_seconds(args, policy, threads))
            print(f"round {r}: {policy} {threads} thread(s): {times[(policy, threads)][-1]:.3f} s/step", flush=True)
    first = statistics.median(times[SETTINGS[0]])
    lines = ["| OMP_WAIT_POLICY | threads | s / step (median) | rounds | x the first row |", "|---|---|---|---|---|"]
    for (policy, threads), values in times.items():
        med = statistics.median(values)
        lines.append(f"| {policy} | {threads} | {med:.3f} | {', '.join(f'{v:.3f}' for v in values)} | "
                     f"{first / med:.2f} |")  # fmt: skip
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    text = "\n".join(lines) + (
        f"\n\n- Generator of {Path(args.config).name} zoo `{args.zoo}` ({args.tokens}), its recipe, {args.steps} "
        f"steps per process (the first 10 untimed); {args.rounds} interleaved rounds. Machine: {machine}; load "
        f"average before: {load:.1f}.\n"
    )
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({f"{p} {t}": v for (p, t), v in times.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
