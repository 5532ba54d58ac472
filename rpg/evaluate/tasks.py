"""Evaluation of a task zoo (paper section 4): generated weights for tasks the generator never saw.

For every evaluated task (all held-out tasks and a seeded sample of seen ones) on that task's relabelled
validation split, accuracy and balanced accuracy (mean recall of the two classes; binary tasks are often
imbalanced) of:

- ``generated``: models sampled from the task-conditioned generator for that task vector;
- ``reference``: classifiers trained for that task the ordinary way (held out: trained only for this
  comparison; seen: the generator's own training checkpoints of the task);
- ``majority``: always predicting the class that is more frequent in the task's training split;
- ``untrained_head``: the shared backbone with the task's new, untrained 2-way head;
- ``nearest_seen``: the checkpoints of the seen task nearest in Hamming distance (another task; ties: the
  smallest id), a retrieval baseline: a generator that only recalls the closest training task scores this.

Per task, best/mean/min over its models; the summary averages these over the tasks of a split.

**Generated weights as initialisation** (paper Table 15): for held-out tasks, fine-tune the whole network from
(a) the task's first generated model, (b) the shared backbone with a new head, (c) random weights ("scratch"),
with AdamW at one constant learning rate, and evaluate after each listed number of epochs (0 = as initialised).

Outputs in ``out_dir``: ``table.parquet``/``table.csv`` (a row per model and task), ``init_finetune.csv``
(a row per task, initialisation and epoch count), ``summary.json`` and the plots of
:mod:`rpg.evaluate.task_plots`.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rpg.data import build_dataset
from rpg.data.tasks import relabel, task_id
from rpg.errors import RPGInputError
from rpg.evaluate.summary import accuracy_stats
from rpg.io import read_json, write_json, write_table
from rpg.runtime import progress, resolve_device
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model
from rpg.zoo.tasks import (
    TaskZooConfig,
    dataset_labels,
    finetune,
    head_keys,
    make_task_model,
    score,
    steps_per_epoch,
    task_seed,
)

log = logging.getLogger(__name__)

KINDS = ("generated", "reference", "majority", "untrained_head", "nearest_seen")
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
ABOVE_BASELINES = 0.20
RULES = {
    "held_out_generated_near_reference": (
        f"held-out tasks: mean balanced accuracy of generated models >= that of the reference models "
        f"- {WITHIN_REFERENCE:g}"
    ),
    "held_out_generated_far_above_baselines": (
        f"held-out tasks: mean balanced accuracy of generated models >= the best of the majority-class and "
        f"untrained-head baselines + {ABOVE_BASELINES:g}"
    ),
}


def generate_task_models(
    *,
    generator_dir: str | Path,
    token_dir: str | Path,
    tasks: Sequence[Sequence[int]],
    out_paths: Sequence[str | Path],
    generate_cfg: Mapping[str, Any],
    device: str = "auto",
) -> None:
    """Sample one model per output path, model ``i`` for task vector ``tasks[i]`` (rpg.generate).

    A generator trained without a task condition (``generator.task_condition: null``, an ablation) gives
    unconditional samples; a warning says so and the metadata keeps ``task: null``.
    """
    from rpg.generate import generate_models

    if len(tasks) != len(out_paths):
        raise ValueError(f"{len(tasks)} task vectors for {len(out_paths)} output paths")
    gcfg = read_json(Path(generator_dir) / "config.json")["generator"]
    cond = gcfg.get("task_condition")
    if cond is None:
        log.warning("the generator has no task condition: generating unconditional models (an ablation)")
    elif any(len(t) != int(gcfg["task_bits"]) for t in tasks):
        raise RPGInputError(f"the generator takes {gcfg['task_bits']}-bit tasks", generator_dir)
    cfg = {
        **dict(generate_cfg),
        "num_models": len(out_paths),
        "task": None,
        "tasks": [[int(b) for b in t] for t in tasks] if cond else None,
    }
    generate_models(
        generator_dir=generator_dir, token_dir=token_dir, out_paths=out_paths, generate_cfg=cfg, device=device
    )


def _load_model(path: str | Path) -> torch.nn.Module:
    state, meta = load_checkpoint(path)
    model = build_model(meta["arch"], meta.get("arch_kwargs") or {})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RPGInputError(f"weights do not fit {meta['arch']}: {exc}", path) from exc
    return model


def _bits(task: Sequence[int]) -> str:
    return "".join(str(int(b)) for b in task)


def seen_pool(token_dir: str | Path) -> dict[int, list[str]]:
    """Seen task id -> its checkpoint paths, from the token store's index (what the generator was trained on)."""
    from rpg.tokens.store import TokenStore

    index = TokenStore(token_dir).index
    pool: dict[int, list[str]] = {}
    for path, task in zip(index["checkpoint"], index["task"]):
        if task is None or (isinstance(task, float) and np.isnan(task)):
            raise RPGInputError(f"checkpoint {path} has no task vector: not a task zoo", token_dir)
        pool.setdefault(task_id(list(task)), []).append(str(path))
    return pool


def nearest_task(task: Sequence[int], pool: Sequence[int]) -> tuple[int, int]:
    """``(id, Hamming distance)`` of the task in ``pool`` nearest to ``task``, itself excluded (ties: smallest id)."""
    tid = task_id(task)
    best: tuple[int, int] | None = None
    for other in sorted(pool):
        if other == tid:
            continue
        d = bin(other ^ tid).count("1")
        if best is None or d < best[1]:
            best = (other, d)
    if best is None:
        raise ValueError("no other seen task to compare with")
    return best


def _row(split: str, tid: int, task, pos: float, kind: str, name: str, acc: float, bal: float, **kw) -> dict:
    row = {c: None for c in TABLE_COLUMNS}
    row.update(
        split=split,
        task_id=tid,
        task=_bits(task),
        positive_fraction=pos,
        kind=kind,
        name=name,
        accuracy=acc,
        balanced_accuracy=bal,
        source_task=None,
        hamming=None,
        path="",
    )
    row.update(kw)
    return row


def evaluate_task_models(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data_cfg: Mapping[str, Any],
    zoo_cfg: Mapping[str, Any],
    backbone_path: str | Path,
    token_dir: str | Path,
    device: torch.device,
    batch_size: int = 512,
) -> pd.DataFrame:
    """The table of every model on every evaluated task of ``manifest`` (see the module docstring)."""
    cfg = TaskZooConfig.from_dict(zoo_cfg["tasks"])
    backbone, bmeta = load_checkpoint(backbone_path)
    full_kwargs = dict(bmeta["arch_kwargs"])
    task_kwargs = {**full_kwargs, "num_classes": 2}
    arch = bmeta["arch"]
    heads = head_keys(arch, full_kwargs, task_kwargs)
    train_full, val_full = build_dataset(dict(data_cfg), "train"), build_dataset(dict(data_cfg), "val")
    train_labels = dataset_labels(train_full)
    pool = seen_pool(token_dir)
    rows: list[dict[str, Any]] = []
    for entry in progress(manifest, desc="evaluate tasks", total=len(manifest)):
        split, task = entry["split"], [int(b) for b in entry["task"]]
        tid = task_id(task)
        val_set = relabel(val_full, task)
        labels = dataset_labels(val_set)
        pos = float(labels.float().mean())

        for kind in ("generated", "reference"):
            for path in entry[kind]:
                acc, bal = score(_load_model(path).to(device), val_set, device=device, batch_size=batch_size)
                rows.append(_row(split, tid, task, pos, kind, Path(path).stem, acc, bal, path=str(path)))
        majority = int(torch.tensor(task)[train_labels].float().mean() >= 0.5)
        acc = float((labels == majority).float().mean())
        rows.append(_row(split, tid, task, pos, "majority", f"always {majority}", acc, 0.5))
        model = make_task_model(arch, task_kwargs, backbone, heads=heads, seed=task_seed(cfg.seed, tid))
        acc, bal = score(model.to(device), val_set, device=device, batch_size=batch_size)
        rows.append(_row(split, tid, task, pos, "untrained_head", "backbone + new head", acc, bal))
        other, dist = nearest_task(task, list(pool))
        for path in pool[other]:
            acc, bal = score(_load_model(path).to(device), val_set, device=device, batch_size=batch_size)
            rows.append(
                _row(
                    split,
                    tid,
                    task,
                    pos,
                    "nearest_seen",
                    Path(path).stem,
                    acc,
                    bal,
                    source_task=other,
                    hamming=dist,
                    path=str(path),
                )
            )
        gen = [r["balanced_accuracy"] for r in rows if r["task_id"] == tid and r["kind"] == "generated"]
        ref = [r["balanced_accuracy"] for r in rows if r["task_id"] == tid and r["kind"] == "reference"]
        log.info(
            "%s task %d (%s, %.0f%% positive): balanced accuracy generated mean %.4f (min %.4f), reference %.4f",
            split,
            tid,
            _bits(task),
            100 * pos,
            np.mean(gen) if gen else float("nan"),
            min(gen) if gen else float("nan"),
            np.mean(ref) if ref else float("nan"),
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def finetune_curve(
    model: torch.nn.Module,
    train_set,
    val_set,
    *,
    epochs: Sequence[int],
    steps_per_epoch: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> list[tuple[int, float, float]]:
    """``(epochs, accuracy, balanced accuracy)`` after each of ``epochs`` epochs of one fine-tuning run (0: as is).

    One run with a constant learning rate, evaluated on the way, gives the same numbers as separate runs per count.
    """
    epochs = sorted({int(e) for e in epochs})
    at = {e * steps_per_epoch: e for e in epochs}
    curve: list[tuple[int, float, float]] = []

    def record(step: int) -> None:
        if step in at:
            curve.append((at[step], *score(model, val_set, device=device)))

    record(0)
    if epochs and epochs[-1] > 0:
        finetune(
            model,
            train_set,
            steps=epochs[-1] * steps_per_epoch,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            seed=seed,
            device=device,
            on_step=record,
        )
    return curve


def init_finetune_experiment(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data_cfg: Mapping[str, Any],
    zoo_cfg: Mapping[str, Any],
    backbone_path: str | Path,
    device: torch.device,
) -> pd.DataFrame:
    """Fine-tuning from generated weights, the shared backbone and scratch on held-out tasks (paper Table 15)."""
    cfg = TaskZooConfig.from_dict(zoo_cfg["tasks"])
    ev = cfg.evaluate
    epochs = sorted({int(e) for e in ev.finetune_epochs})
    entries = [e for e in manifest if e["split"] == "held_out" and e["generated"]]
    if ev.finetune_tasks is not None:
        entries = entries[: int(ev.finetune_tasks)]
    if not entries or not epochs:
        return pd.DataFrame(columns=FINETUNE_COLUMNS)
    backbone, bmeta = load_checkpoint(backbone_path)
    arch, full_kwargs = bmeta["arch"], dict(bmeta["arch_kwargs"])
    task_kwargs = {**full_kwargs, "num_classes": 2}
    heads = head_keys(arch, full_kwargs, task_kwargs)
    train_full, val_full = build_dataset(dict(data_cfg), "train"), build_dataset(dict(data_cfg), "val")
    spe = steps_per_epoch(len(train_full), cfg.batch_size)
    rows: list[dict[str, Any]] = []
    for entry in progress(entries, desc="fine-tune from inits", total=len(entries)):
        task = [int(b) for b in entry["task"]]
        tid = task_id(task)
        seed = task_seed(cfg.seed, tid)
        train_set, val_set = relabel(train_full, task), relabel(val_full, task)
        for init in INITS:
            if init == "generated":  # the task's first generated model: no selection on the validation split
                model = _load_model(entry["generated"][0])
            elif init == "backbone":
                model = make_task_model(arch, task_kwargs, backbone, heads=heads, seed=seed)
            else:
                model = build_model(arch, task_kwargs, seed=seed)
            curve = finetune_curve(
                model.to(device),
                train_set,
                val_set,
                epochs=epochs,
                steps_per_epoch=spe,
                lr=ev.finetune_lr,
                weight_decay=cfg.weight_decay,
                batch_size=cfg.batch_size,
                seed=seed + 2,
                device=device,
            )
            rows += [
                {
                    "task_id": tid,
                    "task": _bits(task),
                    "init": init,
                    "epochs": e,
                    "accuracy": acc,
                    "balanced_accuracy": bal,
                }
                for e, acc, bal in curve
            ]
    return pd.DataFrame(rows, columns=FINETUNE_COLUMNS)


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
    base = [b for b in (bal("majority"), bal("untrained_head")) if b is not None]
    checks = {
        "held_out_generated_near_reference": None if gen is None or ref is None else gen >= ref - WITHIN_REFERENCE,
        "held_out_generated_far_above_baselines": (
            None if gen is None or not base else gen >= max(base) + ABOVE_BASELINES
        ),
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
    return {"kind": "tasks", "splits": splits, "init_finetune": init, "checks": checks, "headline": headline}


def evaluate_tasks(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data_cfg: Mapping[str, Any],
    zoo_cfg: Mapping[str, Any],
    backbone_path: str | Path,
    token_dir: str | Path,
    generator_dir: str | Path | None,
    out_dir: str | Path,
    device: str = "auto",
    plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a task zoo (see the module docstring); write the outputs into ``out_dir``; return the summary.

    ``manifest``: a row per evaluated task with ``split``, ``task`` (vector), ``reference`` and ``generated``
    (checkpoint paths), as made by :meth:`rpg.zoo.tasks.TaskZooPlan.manifest`. ``plan``: recorded in the summary.
    """
    from rpg.evaluate.task_plots import plot_init_finetune, plot_task_accuracy
    from rpg.evaluate.plots import plot_training_loss, read_train_log

    dev = resolve_device(device)
    cfg = TaskZooConfig.from_dict(zoo_cfg["tasks"])
    if not manifest:
        raise RPGInputError("no tasks to evaluate", out_dir)
    table = evaluate_task_models(
        manifest=manifest,
        data_cfg=data_cfg,
        zoo_cfg=zoo_cfg,
        backbone_path=backbone_path,
        token_dir=token_dir,
        device=dev,
        batch_size=cfg.evaluate.batch_size,
    )
    ft = init_finetune_experiment(
        manifest=manifest, data_cfg=data_cfg, zoo_cfg=zoo_cfg, backbone_path=backbone_path, device=dev
    )
    summary = summarize_tasks(table, ft)
    gen_cfg = read_json(Path(generator_dir) / "config.json") if generator_dir else {}
    summary["settings"] = {
        "arch": load_checkpoint(backbone_path)[1]["arch"],
        "tasks": dict(zoo_cfg["tasks"]),
        "num_seen_tasks": len(seen_pool(token_dir)),
        "models_per_task": max((len(e["generated"]) for e in manifest), default=0),
        "generator": gen_cfg.get("generator", {}),
        "train": gen_cfg.get("train", {}),
        "device": str(dev),
        "finetune": {
            "optimizer": "adamw",
            "lr": cfg.evaluate.finetune_lr,
            "schedule": "constant",
            "batch_size": cfg.batch_size,
            "weight_decay": cfg.weight_decay,
        },
        "majority": "the class more frequent in the task's training split",
        "untrained_head": "shared backbone + the task's seeded random 2-way head",
        "nearest_seen": "checkpoints of the nearest other seen task (Hamming distance; ties: smallest id)",
    }
    if plan is not None:
        summary["plan"] = dict(plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "table.parquet")
    write_table(table, out / "table.csv")
    write_table(ft, out / "init_finetune.csv")
    write_json(summary, out / "summary.json")
    plot_task_accuracy(table, out / "task_accuracy.png")
    plot_init_finetune(ft, out / "init_finetune.png")
    train_log = read_train_log(Path(generator_dir) / "train_log.csv") if generator_dir else None
    plot_training_loss(train_log, out / "loss.png", title="task-conditioned generator: training loss")
    log.info("%s", format_summary(summary))
    return summary


# ---------------------------------------------------------------------------------------------------------
# text and HTML forms of the summary (closing notes, logs, the HTML report)

ROW_LABELS = {
    "generated": "generated (RPG)",
    "reference": "reference (trained)",
    "majority": "majority class",
    "untrained_head": "backbone + untrained head",
    "nearest_seen": "nearest seen task",
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
            else '<span class="pass">PASS</span>' if value else '<span class="fail">FAIL</span>'
        )
        items.append(f"<li>{mark} <code>{html.escape(key)}</code>: {html.escape(rule)}</li>")
    parts.append(f"<ul>{''.join(items)}</ul>")
    return "\n".join(parts)


__all__ = [
    "INITS",
    "KINDS",
    "RULES",
    "evaluate_task_models",
    "evaluate_tasks",
    "finetune_curve",
    "format_summary",
    "generate_task_models",
    "init_finetune_experiment",
    "nearest_task",
    "seen_pool",
    "summarize_tasks",
    "summary_html",
]
