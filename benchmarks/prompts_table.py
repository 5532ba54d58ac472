"""The table of prompts made into weights: a row per ``results/<exp>/prompted/*/summary.json``.

    python benchmarks/prompts_table.py [--results results] [--experiment unseen_tasks]

Each row: the prompt, the task vector it became (bit c = class c) and its positive classes, whether the generator was
trained on that task, the generated models' balanced accuracy (mean, best) and that of the reference the stage
trained for the task, their ratio, and the composed-head baseline (the backbone's 10-class head turned into the
task's 2-way head without training: positive-class logsumexp minus negative-class logsumexp). Writes
``benchmarks/results/prompts.md``; ``python docs/make.py`` puts it into docs/prompts.md.

Table: docs/prompts.md, "Results" (generated block bench.prompts), from
``python benchmarks/prompts_table.py`` after the prompted targets of configs/unseen_tasks.yaml ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def table(results: Path, experiment: str) -> str:
    rows = []
    for path in sorted((results / experiment / "prompted").glob("*/summary.json")):
        s = json.loads(path.read_text())
        gen = s["generated_balanced_accuracy"]
        cells = [s["prompt"], f"`{s['task_bits']}` ({', '.join(s['positive_classes'])})", s["task_split"],
                 f"{pct(gen['mean'])} (best {pct(gen['best'])}, n={gen['n']})",
                 pct(s["reference_balanced_accuracy"]), pct(s["ratio_to_reference"]),
                 pct(s.get("baselines", {}).get("composed_head", {}).get("mean"))]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        raise SystemExit(f"no {results / experiment / 'prompted'}/*/summary.json: run the prompted targets first")
    head = ["| prompt | task vector (positives) | task for the generator | generated: balanced accuracy | "
            "trained reference | generated / reference | composed head (no training) |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    return "\n".join(head + rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--experiment", default="unseen_tasks")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prompts.md"))
    args = parser.parse_args()
    text = table(Path(args.results), args.experiment)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
