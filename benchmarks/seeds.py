"""The default pipeline over several seeds: the spread that README's result table reports.

For each seed the default config (``config.yaml``) is run as experiment ``<exp>_s<seed>`` with the experiment key
``seed`` set (collection, training, generation and evaluation all reseeded; the data split stays), timed end to end
with ``snakemake --cores 2``; then the summaries are copied to ``docs/data/default_seeds.json`` and the first
seed's accuracy-vs-similarity plots to ``docs/data/default_<zoo>_accuracy_vs_similarity.png``, from which
``python docs/make.py`` writes the tables of README.md and docs/results.md.

    python benchmarks/seeds.py                 # seeds 0 1 2 (about 3 x the default pipeline's time)
    python benchmarks/seeds.py --seeds 0       # one seed
    python benchmarks/seeds.py --refresh       # only the evaluation and report again (a new evaluation version)

Tables: README.md, "What the default run shows" (generated block default-results), and docs/results.md, "The
default config, every seed" (seed-details), from ``python benchmarks/seeds.py``.
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
from _common import ROOT, machine

KEEP = ("split", "metric", "original", "original_all", "generated", "generated_diversity", "novelty", "resolution",
        "frontiers", "dominance", "checks", "pdiff", "num_models")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config.yaml"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "data" / "default_seeds.json"))
    p.add_argument("--rerun", action="store_true", help="run again even if the seed is in the data file")
    p.add_argument("--refresh", action="store_true",
                   help="rerun only the evaluation and report of finished seeds (keeps their wall time)")  # fmt: skip
    p.add_argument("--note", default=None, help="the machine's state during the runs, e.g. other load (kept)")
    args = p.parse_args(argv)
    base = yaml.safe_load(Path(args.config).read_text())
    (exp_name, exp), *rest = base["experiments"].items()
    if rest:
        raise SystemExit("the config must hold one experiment")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {"runs": {}}
    for seed in args.seeds:
        name = f"{exp_name}_s{seed}"
        cfg = {"experiments": {name: {**exp, "seed": seed}}}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(cfg, f)
        summaries = {zoo: ROOT / f"results/{name}/evaluation/{zoo}/summary.json" for zoo in exp["zoos"]}
        wall = data["runs"].get(str(seed), {}).get("wall_seconds")
        refresh = None
        if args.refresh and wall is not None and not args.rerun:  # the evaluation again: the rest is unchanged
            cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(args.cores),
                   "--configfile", f.name, "--forcerun", "evaluate"]  # fmt: skip
            print(f"seed {seed}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            refresh = round(time.perf_counter() - t0, 1)
        elif args.rerun or wall is None:  # every job runs, so the wall time is the whole pipeline's
            cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(args.cores),
                   "--configfile", f.name, "--forceall"]  # fmt: skip
            print(f"seed {seed}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            wall = time.perf_counter() - t0
        os.unlink(f.name)
        zoos = {}
        for zoo, path in summaries.items():
            s = json.loads(path.read_text())
            zoos[zoo] = {k: s[k] for k in KEEP if k in s}
            gen = path.parents[2] / "generator" / zoo / "config.json"  # the steps trained (and why it stopped)
            if gen.is_file():
                zoos[zoo]["training"] = json.loads(gen.read_text()).get("training", {})
        bench = ROOT / f"results/{name}/benchmarks"
        jobs = {str(tsv.relative_to(bench).with_suffix("")): list(csv.DictReader(tsv.open(), delimiter="\t"))[-1]
                for tsv in sorted(bench.rglob("*.tsv"))}  # fmt: skip
        cpu = sum(float(job["cpu_time"]) for job in jobs.values())
        job_seconds = {k: round(float(job["s"]), 1) for k, job in jobs.items()}  # e.g. evaluate/vit: its wall s
        data["runs"][str(seed)] = {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "zoos": zoos,
                                   "job_seconds": job_seconds}  # fmt: skip
        if refresh is not None:
            data["runs"][str(seed)]["refresh_seconds"] = refresh
        print(f"seed {seed}: {wall / 60:.1f} min", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    first = f"{exp_name}_s{args.seeds[0]}"  # the first seed's accuracy-vs-similarity plots, for README
    for zoo in exp["zoos"]:
        plot = ROOT / f"results/{first}/evaluation/{zoo}/accuracy_vs_similarity.png"
        if plot.is_file():
            shutil.copyfile(plot, out.parent / f"default_{zoo}_accuracy_vs_similarity.png")
    from rpg.data import build_dataset

    data["test_size"] = len(build_dataset(exp["data"], "test"))
    blocks = ("generator", "train", "generate")  # the recipe the runs used
    data["config"] = {"shared": {k: exp[k] for k in blocks if k in exp},
                      "zoos": {z: {k: v[k] for k in blocks if k in v} for z, v in exp["zoos"].items()}}  # fmt: skip
    data["machine"] = machine()
    if args.note:
        data["load"] = args.note
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}; now: python docs/make.py")


if __name__ == "__main__":
    main()
