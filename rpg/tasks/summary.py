"""The summary of a task-zoo evaluation: numbers, checks, and their text and HTML forms.

Per task: best/mean/min over that task's models; the summary averages these over the tasks of a split.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import pandas as pd

from rpg.evaluate.summary import accuracy_stats

KINDS = ("generated", "reference", "majority", "untrained_head", "nearest_seen", "composed_head", "complement_swapped")
BASELINES = ("majority", "untrained_head", "nearest_seen", "composed_head", "complement_swapped")
INITS = ("generated", "backbone", "scratch")
METRICS = ("accuracy", "balanced_accuracy")
TABLE_COLUMNS = [
    "split",
    "task_id",
    "task",
    "positive_fraction",
    "kind",
    "name",
    "source_task",
    "hamming",
    "accuracy",
    "balanced_accuracy",
    "path",
]
FINETUNE_COLUMNS = ["task_id", "task", "init", "epochs", "accuracy", "balanced_accuracy"]
# The checks of summary.json: the quality bar of the unseen-task experiment (balanced accuracy, held-out tasks).
WITHIN_REFERENCE = 0.05
RULES = {
    "held_out_generated_near_reference": (
        f"held-out tasks: mean balanced accuracy of generated models >= that of the reference models "
        f"- {WITHIN_REFERENCE:g}"
    ),
    "held_out_generated_beats_strongest_baseline": (
        "held-out tasks: mean balanced accuracy of generated models >= that of the strongest zero-training baseline "
        "(majority class, untrained head, nearest seen task, composed 10-class head, swapped seen complement)"
    ),
}


def _kind_stats(df: pd.DataFrame) -> dict[str, Any]:
    """Per task best/mean/min of each metric, averaged over tasks; plus the worst single model."""
    out: dict[str, Any] = {"num_tasks": int(df["task_id"].nunique()), "num_models": int(len(df))}
    for metric in METRICS:
        per_task = df.groupby("task_id")[metric].agg(["max", "mean", "min"])
        out[metric] = {
            "best": float(per_task["max"].mean()),
            "mean": float(per_task["mean"].mean()),
            "min": float(per_task["min"].mean()),
            "worst": float(df[metric].min()),
            "per_task_mean": accuracy_stats(per_task["mean"]),
        }
    return out


def summarize_tasks(table: pd.DataFrame, finetune_table: pd.DataFrame) -> dict[str, Any]:
    """The numbers of ``summary.json`` (see the module docstring) and the two checks of :data:`RULES`."""
    splits: dict[str, Any] = {}
    for split in ("held_out", "seen"):
        part = table[table["split"] == split]
        if len(part):
            splits[split] = {
                "num_tasks": int(part["task_id"].nunique()),
                "mean_positive_fraction": float(part.groupby("task_id")["positive_fraction"].first().mean()),
                **{kind: _kind_stats(part[part["kind"] == kind]) for kind in KINDS if (part["kind"] == kind).any()},
            }
    init: dict[str, Any] = {}
    if len(finetune_table):
        init["num_tasks"] = int(finetune_table["task_id"].nunique())
        init["epochs"] = sorted(int(e) for e in finetune_table["epochs"].unique())
        for name in INITS:
            sub = finetune_table[finetune_table["init"] == name]
            init[name] = {str(int(e)): {m: float(g[m].mean()) for m in METRICS} for e, g in sub.groupby("epochs")}
    held = splits.get("held_out", {})

    def bal(kind: str) -> float | None:
        return held.get(kind, {}).get("balanced_accuracy", {}).get("mean")

    gen, ref = bal("generated"), bal("reference")
    base = {k: bal(k) for k in BASELINES if bal(k) is not None}
    strongest = max(base, key=base.get) if base else None
    comparison = {
        "baselines": base,
        "strongest_baseline": strongest,
        "strongest_value": base.get(strongest) if strongest else None,
        "generated": gen,
        "winner": None if gen is None or strongest is None else "generated" if gen >= base[strongest] else strongest,
    }
    checks = {
        "held_out_generated_near_reference": None if gen is None or ref is None else gen >= ref - WITHIN_REFERENCE,
        "held_out_generated_beats_strongest_baseline": None
        if comparison["winner"] is None
        else comparison["winner"] == "generated",
        "rules": RULES,
    }
    headline = {
        f"{split}_{kind}_mean_balanced_accuracy": splits.get(split, {})
        .get(kind, {})
        .get("balanced_accuracy", {})
        .get("mean")
        for split in ("held_out", "seen")
        for kind in ("generated", "reference")
    }
    return {"kind": "tasks", "split": "test", "splits": splits, "init_finetune": init, "comparison": comparison,
            "checks": checks, "headline": headline}  # fmt: skip


ROW_LABELS = {
    "generated": "generated (RPG)",
    "reference": "reference (trained)",
    "majority": "majority class",
    "untrained_head": "backbone + untrained head",
    "nearest_seen": "nearest seen task",
    "composed_head": "composed 10-class head",
    "complement_swapped": "seen complement, swapped",
}


def summary_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A row per (split, kind): acc. best/mean/min and balanced acc. best/mean/min, averaged over tasks."""
    rows = []
    for split, block in summary.get("splits", {}).items():
        for kind in KINDS:
            if kind in block:
                a, b = block[kind]["accuracy"], block[kind]["balanced_accuracy"]
                rows.append(
                    {
                        "split": split,
                        "kind": kind,
                        "tasks": block[kind]["num_tasks"],
                        "models": block[kind]["num_models"],
                        "acc_best": a["best"],
                        "acc_mean": a["mean"],
                        "acc_min": a["min"],
                        "bal_best": b["best"],
                        "bal_mean": b["mean"],
                        "bal_min": b["min"],
                    }
                )
    return rows


def finetune_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A row per initialisation: accuracy and balanced accuracy after each number of epochs."""
    init = summary.get("init_finetune", {})
    rows = []
    for name in INITS:
        if name in init:
            row: dict[str, Any] = {"init": name}
            for e in init.get("epochs", []):
                vals = init[name].get(str(e), {})
                row[f"acc@{e}"] = vals.get("accuracy")
                row[f"bal@{e}"] = vals.get("balanced_accuracy")
            rows.append(row)
    return rows


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.1f}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """Plain-text tables of the summary (Markdown), for logs and closing notes."""
    keys = ("acc_best", "acc_mean", "acc_min", "bal_best", "bal_mean", "bal_min")
    lines = [
        "| split | kind | n | acc best | acc mean | acc min | bal best | bal mean | bal min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(summary):
        cells = [r["split"], ROW_LABELS[r["kind"]], str(r["models"]), *(_pct(r[k]) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    ft = finetune_rows(summary)
    if ft:
        epochs = summary["init_finetune"]["epochs"]
        lines += ["", "| init | " + " | ".join(f"acc@{e} | bal@{e}" for e in epochs) + " |"]
        lines.append("|---|" + "---|---|" * len(epochs))
        for r in ft:
            cells = [r["init"], *(_pct(r[f"{m}@{e}"]) for e in epochs for m in ("acc", "bal"))]
            lines.append("| " + " | ".join(cells) + " |")
    checks = summary.get("checks", {})
    for key, rule in checks.get("rules", {}).items():
        lines.append(f"- {key}: {checks.get(key)} ({rule})")
    comp = summary.get("comparison") or {}
    if comp.get("winner"):
        lines.append(f"- held-out tasks: {_winner_text(comp)}")
    return "\n".join(lines)


def summary_html(summary: Mapping[str, Any]) -> str:
    """HTML tables of a task-zoo summary (used by :mod:`rpg.report`)."""

    def table(head: list[str], body: list[list[str]], classes: list[str]) -> str:
        h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
        rows = "".join(
            f'<tr class="{c}">' + "".join(f"<td>{v}</td>" for v in r) + "</tr>" for r, c in zip(body, classes)
        )
        return f"<table><tr>{h}</tr>{rows}</table>"

    rows = summary_rows(summary)
    parts = [
        table(
            [
                "split",
                "kind",
                "n",
                "acc. best %",
                "acc. mean %",
                "acc. min %",
                "bal. acc. best %",
                "bal. acc. mean %",
                "bal. acc. min %",
            ],
            [
                [html.escape(r["split"]), html.escape(ROW_LABELS[r["kind"]]), str(r["models"])]
                + [_pct(r[k]) for k in ("acc_best", "acc_mean", "acc_min", "bal_best", "bal_mean", "bal_min")]
                for r in rows
            ],
            [
                "generated" if r["kind"] == "generated" else "original" if r["kind"] == "reference" else "baseline"
                for r in rows
            ],
        )
    ]
    parts.append(
        '<p class="caption">Per task: best/mean/min over that task\'s models on its relabelled validation split; '
        "the table averages these over the tasks of a split. Balanced accuracy is the mean recall of the two "
        "classes (0.5 for a constant predictor).</p>"
    )
    ft = finetune_rows(summary)
    if ft:
        epochs = summary["init_finetune"]["epochs"]
        head = ["initialisation"] + [f"{m} @{e} ep. %" for e in epochs for m in ("acc.", "bal. acc.")]
        body = [[html.escape(r["init"])] + [_pct(r[f"{m}@{e}"]) for e in epochs for m in ("acc", "bal")] for r in ft]
        parts.append(table(head, body, ["generated" if r["init"] == "generated" else "baseline" for r in ft]))
        parts.append(
            f'<p class="caption">Fine-tuning on {summary["init_finetune"].get("num_tasks")} held-out tasks from '
            "generated weights, from the shared backbone with a new head, and from scratch (paper Table 15); "
            "means over tasks.</p>"
        )
    checks = summary.get("checks", {})
    items = []
    for key, rule in checks.get("rules", {}).items():
        value = checks.get(key)
        mark = (
            '<span class="na">n/a</span>'
            if value is None
            else '<span class="pass">PASS</span>'
            if value
            else '<span class="fail">FAIL</span>'
        )
        items.append(f"<li>{mark} <code>{html.escape(key)}</code>: {html.escape(rule)}</li>")
    comp = summary.get("comparison") or {}
    if comp.get("winner"):
        items.append(f"<li>held-out tasks: {html.escape(_winner_text(comp))}</li>")
    parts.append(f"<ul>{''.join(items)}</ul>")
    return "\n".join(parts)


def _winner_text(comp: Mapping[str, Any]) -> str:
    """Which wins on held-out tasks: the generated models or the strongest zero-training baseline."""
    name = ROW_LABELS.get(comp["strongest_baseline"], comp["strongest_baseline"])
    gen, base = 100 * comp["generated"], 100 * comp["strongest_value"]
    if comp["winner"] == "generated":
        return f"the generated models win ({gen:.1f}% balanced accuracy against {base:.1f}% of the {name})"
    return f"the {name} wins ({base:.1f}% balanced accuracy against {gen:.1f}% of the generated models)"
