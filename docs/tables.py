"""Fill the result tables of docs/*.md from results/ (no hand-typed figures).

    python docs/tables.py prompts  [--results results] [--experiment unseen_tasks]
    python docs/tables.py adapters [--results results] [--configfile configs/adapters_minilm.yaml]

``prompts``: a row per ``results/<exp>/prompted/*/summary.json`` (prompt, task vector, positive classes, whether the
generator saw the task, generated balanced accuracy mean/best, the trained reference's, their ratio) into
docs/prompts.md, and the rule measurement of ``benchmarks/results/prompt_rules.json``.
``adapters``: the accuracy table of ``benchmarks/results/adapter_accuracy.json`` (written by
benchmarks/adapter_accuracy.py from results/) and the stage times of ``results/<exp>/benchmarks/`` into
docs/adapters.md. Each table replaces the text between its ``<!-- name:start -->`` and ``<!-- name:end -->`` markers.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replace_block(doc: Path, name: str, text: str) -> None:
    """Put ``text`` between the markers ``<!-- name:start -->`` and ``<!-- name:end -->`` of ``doc``."""
    body = doc.read_text()
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(body):
        raise SystemExit(f"{doc}: no {name} markers")
    doc.write_text(pattern.sub(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), body))


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def prompts_table(results: Path, experiment: str) -> str:
    rows = []
    for path in sorted((results / experiment / "prompted").glob("*/summary.json")):
        s = json.loads(path.read_text())
        gen = s["generated_balanced_accuracy"]
        cells = [s["prompt"], f"`{s['task_bits']}` ({', '.join(s['positive_classes'])})", s["task_split"],
                 f"{pct(gen['mean'])} (best {pct(gen['best'])}, n={gen['n']})",
                 pct(s["reference_balanced_accuracy"]), pct(s["ratio_to_reference"])]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return f"(no results/{experiment}/prompted/*/summary.json yet)\n"
    head = ["| prompt | task vector (bit c = class c; positives) | task for the generator | generated balanced "
            "accuracy | trained reference | generated / reference |", "|---|---|---|---|---|---|"]  # fmt: skip
    return "\n".join(head + rows) + "\n"


def rules_table() -> str:
    path = ROOT / "benchmarks" / "results" / "prompt_rules.md"
    return path.read_text() if path.is_file() else "(run benchmarks/prompt_rules.py)\n"


def accuracy_table() -> str:
    path = ROOT / "benchmarks" / "results" / "adapter_accuracy.md"
    return path.read_text() if path.is_file() else "(run benchmarks/adapter_accuracy.py)\n"


def times_table(results: Path, configfile: Path) -> str:
    import yaml

    exps = list(yaml.safe_load(configfile.read_text())["experiments"])
    stages: dict[str, float] = {}
    for exp in exps:
        for tsv in sorted((results / exp / "benchmarks").rglob("*.tsv")):
            stage = tsv.relative_to(results / exp / "benchmarks").parts[0]
            with tsv.open() as f:
                row = list(csv.DictReader(f, delimiter="\t"))[-1]
            stages[stage] = stages.get(stage, 0.0) + float(row["s"])
    if not stages:
        return "(no benchmark files under results/ yet)\n"
    lines = ["| stage | jobs' wall time summed (s) |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in stages.items()]
    lines.append(f"| all | {sum(stages.values()):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["prompts", "adapters"])
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--experiment", default="unseen_tasks")
    parser.add_argument("--configfile", default=str(ROOT / "configs" / "adapters_minilm.yaml"))
    args = parser.parse_args()
    if args.what == "prompts":
        doc = ROOT / "docs" / "prompts.md"
        replace_block(doc, "prompts-table", prompts_table(Path(args.results), args.experiment))
        replace_block(doc, "rules-table", rules_table())
    else:
        doc = ROOT / "docs" / "adapters.md"
        replace_block(doc, "accuracy-table", accuracy_table())
        replace_block(doc, "times-table", times_table(Path(args.results), Path(args.configfile)))
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
