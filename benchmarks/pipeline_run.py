"""Report of one finished pipeline run of a zoo: wall time per stage (Snakemake's benchmark files) and the accuracy of
the originals and of the generated models (the evaluation table), as a table.

    python benchmarks/pipeline_run.py /work/scratch-speed --experiment test_timm --zoo test_resnet \\
        --name test_resnet_cpu --note "snakemake --cores 2 ... (command)"

Stages: every ``results/<exp>/benchmarks/<stage>/<zoo>*.tsv`` (collection runs and generation batches are summed;
the collection runs of a zoo run in parallel when cores allow: the stages' wall time counts them side by side, and
the zoo's wall time is also given from the first job's start to the last job's end, read off the log files).
Accuracy: ``results/<exp>/evaluation/<zoo>/table.csv``, column ``accuracy`` (or ``score``), rows of kind
``original`` and ``generated`` (and ``generated_bn`` when the evaluation has it): best / mean / min and count; the
diversity, copies and checks from ``summary.json``.
Writes ``benchmarks/results/<name>.{csv,md}`` and prints the Markdown.

Tables: docs/throughput.md, "test_resnet on this CPU, the whole pipeline" (generated block
bench.test_resnet_cpu), and docs/results.md, "A timm ConvNeXt zoo in the CPU hour" (bench.test_convnext_cpu); each
table's notes give the pipeline command of its run.
"""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["collect", "zoo_table", "tokenize", "train", "generate", "evaluate"]


def stage_times(results: Path, exp: str, zoo: str) -> list[dict]:
    import pandas as pd

    rows = []
    bench = results / exp / "benchmarks"
    order = {s: i for i, s in enumerate(STAGES)}
    for stage in sorted({p.name for p in bench.iterdir() if p.is_dir()}, key=lambda s: (order.get(s, 99), s)):
        files = sorted((bench / stage).glob(f"{zoo}*.tsv")) + sorted((bench / stage / zoo).glob("*.tsv"))
        if not files:
            continue
        seconds = [float(pd.read_csv(f, sep="\t")["s"].iloc[0]) for f in files]
        runs = [t for f, t in zip(files, seconds) if stage == "collect" and f.stem.startswith("run")]
        rows.append({"stage": stage, "jobs": len(files), "job seconds (sum)": sum(seconds),
                     "longest job s": max(seconds),
                     # the collection runs side by side (the --cores 2 default), every other job one after another
                     "wall s": sum(seconds) - sum(runs) + max(runs, default=0.0)})  # fmt: skip
    return rows


def span(results: Path, exp: str, zoo: str) -> float | None:
    """Seconds from the first job's start to the last job's end (attempt headers and modification times)."""
    logs = [p for p in (results / exp / "logs").rglob("*") if p.is_file() and zoo in str(p)]
    logs = [p for p in logs if not p.name.endswith(".attempts.log")]
    starts = []
    for p in logs:
        m = re.search(r"attempt started (\S+)", p.read_text(errors="replace"))
        if m:
            starts.append(datetime.datetime.fromisoformat(m.group(1)).timestamp())
    if not starts:
        return None
    return max(p.stat().st_mtime for p in logs) - min(starts)


def accuracies(results: Path, exp: str, zoo: str) -> list[dict]:
    import pandas as pd

    table = pd.read_csv(results / exp / "evaluation" / zoo / "table.csv")
    col = "accuracy" if "accuracy" in table else "score"
    rows = []
    for kind in ("original", "generated", "generated_bn"):
        acc = table.loc[table["kind"] == kind, col].astype(float)
        if kind == "generated_bn" and not len(acc):  # only with evaluate.bn_recalibrate_generated
            continue
        rows.append({"models": kind, "count": len(acc), "best": acc.max(), "mean": acc.mean(), "min": acc.min()})
    return rows


def summary_note(path: Path) -> str:
    """Diversity, copies, the checks and the equal-n originals' mean, from the evaluation's summary.json."""
    import json

    s = json.loads(path.read_text())
    div, checks = s["generated_diversity"], s["checks"]
    orig, gen = s["original"], s["generated"]
    claims = []
    for family, block in (s.get("frontiers") or {}).items():
        if family in ("noise", "interpolation", "gaussian"):
            margin, ci = block.get("margin"), block.get("ci95") or [None, None]
            where = "" if margin is None else f", margin {margin:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"
            claims.append(f"{family}: {checks[f'generated_beats_{family}_at_equal_similarity']}{where}")
    dom = s.get("dominance") or {}
    return (
        f"From summary.json: {div['distinct']} of {div['n']} generated models distinct, {gen['copies']} copies; "
        f"generated_not_copies {checks['generated_not_copies']}; beats the frontiers at the generated mean similarity "
        f"{gen['similarity']['mean']:.3f} (95% intervals): {'; '.join(claims) or '-'}; undominated "
        f"{dom.get('undominated', '-')} of {dom.get('n', '-')}; equal-n originals (n={orig['n']}) mean "
        f"{orig['score']['mean']:.4f} against generated {gen['score']['mean']:.4f}."
    )


def main(argv: list[str] | None = None) -> None:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", help="the folder holding results/ (Snakemake's --directory)")
    p.add_argument("--experiment", required=True)
    p.add_argument("--zoo", required=True)
    p.add_argument("--name", required=True, help="benchmarks/results/<name>.{csv,md}")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    results = Path(args.workdir) / "results"
    stages = stage_times(results, args.experiment, args.zoo)
    accs = accuracies(results, args.experiment, args.zoo)
    total = span(results, args.experiment, args.zoo)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.concat([pd.DataFrame(stages).assign(kind="stage"), pd.DataFrame(accs).assign(kind="accuracy")]).to_csv(
        out / f"{args.name}.csv", index=False
    )
    lines = ["| stage | jobs | job seconds (sum) | longest job (min) |", "|---|---|---|---|"]
    for r in stages:
        lines.append(f"| {r['stage']} | {r['jobs']} | {r['job seconds (sum)']:.0f} | {r['longest job s'] / 60:.1f} |")
    wall = sum(r["wall s"] for r in stages)
    lines.append(f"| **stages, collection runs side by side** | | {wall:.0f} | **{wall / 60:.1f}** |")
    lines.append(f"| **zoo, first job start to last job end** | | | **{total / 60:.1f}** |" if total else "")
    lines += ["", "| models | count | best | mean | min |", "|---|---|---|---|---|"]
    for r in accs:
        lines.append(f"| {r['models']} | {r['count']} | {r['best']:.4f} | {r['mean']:.4f} | {r['min']:.4f} |")
    orig, notes = accs[0], []
    for gen in accs[1:]:
        verdict = (gen["mean"] >= orig["mean"] - 0.01) and (gen["best"] >= orig["mean"])
        notes.append(
            f"Bar (generated mean within 1 point of the originals' mean, best at or above it), {gen['models']}: "
            f"{'met' if verdict else 'not met'} (mean {gen['mean']:.4f} vs {orig['mean']:.4f}, best {gen['best']:.4f})."
        )
    if len(accs) > 2:
        notes.append(
            "generated_bn: the same generated weights with BatchNorm statistics re-estimated on training "
            "batches (evaluate.bn_recalibrate_generated); the models as generated are the row 'generated'."
        )
    notes.append(summary_note(results / args.experiment / "evaluation" / args.zoo / "summary.json"))
    notes += args.note
    md = "\n".join(ln for ln in lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
