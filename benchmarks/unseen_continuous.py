"""Unseen task values that need new weights (configs/unseen_continuous.yaml) over seeds: the study table.

For each seed the preset runs as experiment ``<exp>`` (seed 0: the preset itself, so a finished
``snakemake --configfile configs/unseen_continuous.yaml`` counts) or ``<exp>_s<seed>`` with the experiment key
``seed`` set (backbone, collection, generator training, generation and evaluation all reseeded; the data split
stays); then every seed's evaluation summary is collected into ``benchmarks/results/unseen_continuous.json`` and the
tables ``unseen_continuous.md`` (per held-out value), ``unseen_continuous_short.md`` (the claims) and
``unseen_continuous_levers.md`` (what each lever tried gave, beside the preset on the same seeds), which
``python docs/make.py`` copies into docs/results.md and README.md.

    python benchmarks/unseen_continuous.py                 # seeds 0 1 2 (about 3 x the preset's time)
    python benchmarks/unseen_continuous.py --seeds 0       # one seed
    python benchmarks/unseen_continuous.py --tables-only   # rewrite the tables from the JSON
    python benchmarks/unseen_continuous.py --seeds 0 --lever long --set train.steps=9000 --workdir DIR
                                                          # a lever: the preset changed, in its own directory

Cells: mean over seeds with the 95% bootstrap interval of each seed's own test set beside it when there is one seed,
or the range over seeds (min..max) with more; margins: generated mean - baseline in points, and how many seeds pass
(the paired 95% interval over test samples lies above 0).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _common import ROOT, machine

PRESET = ROOT / "configs" / "unseen_continuous.yaml"
OUT = ROOT / "benchmarks" / "results" / "unseen_continuous"
BASELINES = ("nearest", "interpolation", "average")
INITS = ("generated", "nearest", "interpolation", "scratch")


def run_seed(exp_name: str, exp: dict, seed: int, cores: int, workdir: Path = ROOT) -> tuple[dict, float]:
    """Run (or reuse) the preset for ``seed`` in ``workdir``; ``(summary, seconds of all jobs)``."""
    name = exp_name if seed == 0 else f"{exp_name}_s{seed}"
    cfg = {"experiments": {name: {**exp, "seed": seed}}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--cores",
        str(cores),
        "--configfile",
        f.name,
        "--directory",
        str(workdir),
    ]
    print(f"seed {seed}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    os.unlink(f.name)
    zoo = next(iter(exp["zoos"]))
    summary = json.loads((workdir / f"results/{name}/evaluation/{zoo}/tasks/summary.json").read_text())
    seconds = sum(
        float(list(csv.DictReader(t.open(), delimiter="\t"))[-1]["s"])
        for t in (workdir / f"results/{name}/benchmarks").rglob("*.tsv")
    )
    return summary, seconds


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(values: list[float], ci: list[list[float]] | None = None) -> str:
    if len(values) == 1:
        lo, hi = (ci or [[None, None]])[0]
        return _pct(values[0]) + ("" if lo is None else f" [{_pct(lo)}, {_pct(hi)}]")
    return f"{_pct(sum(values) / len(values))} ({_pct(min(values))}..{_pct(max(values))})"


def _margin_cell(ms: list[dict]) -> str:
    mean = sum(m["margin"] for m in ms) / len(ms)
    passes = sum(m["verdict"] == "pass" for m in ms)
    if len(ms) == 1:
        lo, hi = ms[0]["ci95"]
        return f"{100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] {ms[0]['verdict']}"
    return f"{100 * mean:+.1f}, pass {passes}/{len(ms)}"


def _steps_cell(values: list[int | None]) -> str:
    return "/".join("-" if v is None else str(v) for v in values)


def tables(data: dict) -> tuple[str, str]:
    """``(full table, short table)`` in Markdown from the collected summaries."""
    seeds = sorted(data["runs"], key=int)
    runs = [data["runs"][s]["summary"] for s in seeds]
    values = [v for v in runs[0]["values"]]
    tol = runs[0]["tolerance"]
    steps = runs[0]["settings"]["finetune"]["steps"]
    head = [
        "angle",
        "where",
        "generated (distinct/n)",
        "trained reference",
        *BASELINES,
        "shared init",
        *(f"gen. vs {b}" for b in BASELINES),
        *(f"steps: {i}" for i in INITS),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, v0 in enumerate(values):
        per = [r["values"][k] for r in runs]
        assert all(p["task_value"] == v0["task_value"] for p in per), "the seeds evaluate different task values"
        where = v0["split"] if v0["split"] == "seen" else ("inside" if v0["inside"] else "beyond")
        acc = lambda kind: [p["accuracy"][kind]["mean"] for p in per]  # noqa: E731
        ci = lambda kind: [p["accuracy"][kind]["ci95"] for p in per]  # noqa: E731
        distinct = "+".join(str(p["accuracy"]["generated"]["distinct"]) for p in per)
        n = sum(p["accuracy"]["generated"]["n"] for p in per)
        row = [
            f"{v0['task_value']:g}",
            where,
            f"{_cell(acc('generated'), ci('generated'))} ({distinct}/{n})",
            _cell(acc("reference"), ci("reference")),
            *(_cell(acc(b), ci(b)) for b in BASELINES),
            _cell(acc("backbone")),
        ]
        row += [_margin_cell([p["margins"][b] for p in per]) for b in BASELINES]
        row += [
            _steps_cell([p["steps_to_reference"].get(i) for p in per]) if p0 else ""
            for i in INITS
            for p0 in [per[0]["steps_to_reference"]]
        ]
        lines.append("| " + " | ".join(row) + " |")
    n_seeds = len(seeds)
    seed_text = f"{n_seeds} seed{'s' if n_seeds > 1 else ''} ({', '.join(seeds)})"
    cells = (
        "mean [95% bootstrap interval over the test images]"
        if n_seeds == 1
        else "mean over seeds (min..max over seeds)"
    )
    minutes = ", ".join(f"{data['runs'][s]['seconds'] / 60:.1f} min" for s in seeds)
    note = (
        f"\nTest accuracy (%) on digits rotated by each angle, {seed_text}; cells: {cells}. Seen angles (the "
        f"generator's training tasks): {', '.join(f'{x:g}' for x in runs[0]['settings']['seen_values'])}; every "
        "other angle is held out (inside: between two seen angles; beyond: outside the seen range). generated: "
        f"{runs[0]['settings']['models_per_task']} models per angle and seed, distinct ones counted. gen. vs X: "
        "generated mean - X in points"
        + (
            " [paired 95% interval over test images] and the verdict"
            if n_seeds == 1
            else ", and the seeds on which the paired 95% interval over test images lies above 0"
        )
        + f". steps: fine-tuning steps (of {', '.join(map(str, steps))}; AdamW, constant lr "
        f"{runs[0]['settings']['finetune']['lr']:g}, the same batches for every start) until the accuracy is within "
        f"{100 * tol:g} point{'s' if tol != 0.01 else ''} of the reference's, per seed ('-': not within "
        f"{max(steps)} steps). Pipeline time per seed (sum of its jobs): {minutes} on {data['machine']}.\n"
    )
    full = "\n".join(lines) + "\n" + note + "\n" + finetune_table(runs, seed_text)

    # the claims, short
    short = [
        "| held-out angles | generated beats nearest | ... interpolation | ... average | every one | "
        "generated reaches the reference first (vs nearest / scratch / interpolation) |",
        "|---|---|---|---|---|---|",
    ]
    for where in ("inside", "beyond"):
        ch = [r["checks"][where] for r in runs]
        fast = [r["checks"]["generated_reaches_reference_first"][where] for r in runs]
        verdicts = {b: sum(v == "pass" for c in ch for v in c["verdicts"][b]) for b in BASELINES}
        total = sum(len(c["values"]) for c in ch)
        every = sum(int(c["beats_every_zero_training_baseline"].split()[0]) for c in ch)

        def frac(key: str, fast=fast) -> str:
            return f"{sum(int(f[key].split()[0]) for f in fast)}/{total}"

        angles = ", ".join(f"{x:g}" for x in ch[0]["values"])
        short.append(
            f"| {where} the seen range ({angles}) | "
            + " | ".join(f"{verdicts[b]}/{total}" for b in BASELINES)
            + f" | {every}/{total} | {frac('nearest')} / {frac('scratch')} / {frac('interpolation')} |"
        )
    seen = [v for r in runs for v in r["values"] if v["split"] == "seen"]
    fidelity = ""
    if seen:
        g = sum(v["accuracy"]["generated"]["mean"] for v in seen) / len(seen)
        ref = sum(v["accuracy"]["reference"]["mean"] for v in seen) / len(seen)
        angles = ", ".join(f"{v['task_value']:g}" for v in runs[0]["values"] if v["split"] == "seen")
        fidelity = (
            f" On the seen angles ({angles}), the generator's own training tasks, its models reach {_pct(g)}% "
            f"against the trained models' {_pct(ref)}% (mean over angles and seeds): how far it falls short there "
            "bounds what it can do on an unseen angle."
        )
    short_text = "\n".join(short) + (
        f"\n\nCounts over held-out angles x {seed_text}: 'beats' = the paired 95% interval of (generated mean - "
        "baseline) over test images lies above 0; 'reaches first' = fewer fine-tuning steps to the reference's "
        "accuracy." + fidelity + " Per angle: docs/results.md.\n"
    )
    return full, short_text


def _summary_row(label: str, runs: list[dict]) -> list[str]:
    """Generated and trained accuracy on the seen and the inside held-out angles, and the inside margins' passes."""

    def mean(where: str, kind: str) -> str:
        vals = [
            v["accuracy"][kind]["mean"]
            for r in runs
            for v in r["values"]
            if (v["split"] == "seen") == (where == "seen") and (where == "seen" or v.get("inside"))
        ]
        return _pct(sum(vals) / len(vals)) if vals else "-"

    inside = [r["checks"]["inside"] for r in runs]
    total = sum(len(c["values"]) for c in inside)
    passes = [f"{sum(v == 'pass' for c in inside for v in c['verdicts'][b])}/{total}" for b in BASELINES]
    margins = [
        v["margins"][b]["margin"] for r in runs for v in r["values"] if v["split"] != "seen" and v.get("inside")
        for b in ("nearest",)
    ]  # fmt: skip
    return [label, mean("seen", "generated"), mean("seen", "reference"), mean("inside", "generated"),
            mean("inside", "nearest"), f"{100 * sum(margins) / max(len(margins), 1):+.1f}", *passes]  # fmt: skip


def lever_table(data: dict) -> str:
    """The study's levers beside the preset, seed by seed as measured (same seeds where the lever ran)."""
    head = ["run", "seeds", "seen: generated", "seen: trained", "inside: generated", "inside: nearest",
            "inside: gen. - nearest", *(f"inside: beats {b}" for b in BASELINES)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, lever in sorted(data.get("levers", {}).items()):
        seeds = sorted(lever["runs"], key=int)
        base = [data["runs"][x]["summary"] for x in seeds if x in data["runs"]]
        if len(base) == len(seeds):
            row = _summary_row("the preset", base)
            lines.append("| " + " | ".join([row[0], ", ".join(seeds), *row[1:]]) + " |")
        row = _summary_row(f"{name}: {', '.join(f'{k}={v}' for k, v in lever['set'].items())}",
                           [lever["runs"][x]["summary"] for x in seeds])  # fmt: skip
        minutes = ", ".join(f"{lever['runs'][x]['seconds'] / 60:.1f}" for x in seeds)
        note = f"; {lever['note']}" if lever.get("note") else ""
        lines.append("| " + " | ".join([row[0] + f" ({minutes} min of jobs{note})", ", ".join(seeds), *row[1:]]) + " |")
    return (
        "\n".join(lines)
        + "\n\nTest accuracy (%), means over angles and seeds: seen = the generator's training angles evaluated "
        "(-90, 0, 90), inside = held-out angles between seen ones; gen. - nearest in points; beats: angles x seeds "
        "whose paired 95% interval over test images lies above 0. A lever changes the preset only where it says; its "
        "minutes are the sum of the jobs' times in its working directory, zoo collection included.\n"
    )


K = (0, 10, 100)  # the fine-tuning budgets of the study's second table


def finetune_table(runs: list[dict], seed_text: str) -> str:
    """Accuracy after k fine-tuning steps from each start, per held-out angle (mean over seeds)."""
    head = ["angle", "where", "reference", *(f"{i}: k = {'/'.join(map(str, K))}" for i in INITS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, v0 in enumerate(runs[0]["values"]):
        if v0["split"] != "held_out" or not v0["finetune"]:
            continue
        per = [r["values"][k] for r in runs]
        row = [
            f"{v0['task_value']:g}",
            "inside" if v0["inside"] else "beyond",
            _pct(sum(p["accuracy"]["reference"]["mean"] for p in per) / len(per)),
        ]
        for i in INITS:
            cells = []
            for step in K:
                got = [p["finetune"].get(i, {}).get(str(step)) for p in per]
                cells.append("-" if None in got else _pct(sum(got) / len(got)))
            row.append(" / ".join(cells))
        lines.append("| " + " | ".join(row) + " |")
    return (
        "\n".join(lines)
        + f"\n\nTest accuracy (%) after k fine-tuning steps from each start (k = 0: as it starts), {seed_text}, "
        "mean over seeds; generated: the angle's first generated model (no selection).\n"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(PRESET))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cores", type=int, default=1)
    p.add_argument("--tables-only", action="store_true", help="rewrite the tables from the JSON")
    p.add_argument("--note", default=None, help="the machine's state during the runs, e.g. other load (kept)")
    p.add_argument("--lever", default=None, help="a name: run the preset changed by --set as a lever of the study")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="experiment keys the lever changes, dotted (train.steps=9000), values as YAML")  # fmt: skip
    p.add_argument("--workdir", default=str(ROOT), help="the working directory of the runs (a lever's own)")
    args = p.parse_args(argv)
    path = OUT.with_suffix(".json")
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    if not args.tables_only:
        base = yaml.safe_load(Path(args.config).read_text())
        (exp_name, exp), *rest = base["experiments"].items()
        if rest:
            raise SystemExit("the config must hold one experiment")
        changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
        for key, value in changes.items():
            *parents, leaf = key.split(".")
            node = exp
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        if changes and not args.lever:
            raise SystemExit("--set needs --lever NAME (the preset's own rows are not changed)")
        runs = data
        if args.lever:
            runs = data.setdefault("levers", {}).setdefault(args.lever, {"runs": {}})
            runs["set"] = changes
            runs["note"] = args.note
        for seed in args.seeds:
            summary, seconds = run_seed(exp_name, exp, seed, args.cores, Path(args.workdir))
            runs["runs"][str(seed)] = {"seconds": round(seconds, 1), "summary": summary}
            print(f"seed {seed}: {seconds / 60:.1f} min of jobs", flush=True)
        if not args.lever:
            data["machine"] = machine() + (f" ({args.note})" if args.note else data.get("note_suffix", ""))
    if not data["runs"]:
        raise SystemExit(f"{path}: no runs yet")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    full, short = tables(data)
    OUT.with_suffix(".md").write_text(full)
    OUT.with_name(OUT.name + "_short.md").write_text(short)
    levers = lever_table(data) if data.get("levers") else ""
    if levers:
        OUT.with_name(OUT.name + "_levers.md").write_text(levers)
    print(full + "\n" + short + "\n" + levers)


if __name__ == "__main__":
    main()
