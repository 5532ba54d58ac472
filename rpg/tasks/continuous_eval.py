"""Evaluation of a continuous task zoo (:mod:`rpg.tasks.continuous`): generated weights for unseen task values.

For every evaluated task value (all held-out values, inside and beyond the seen range, and a few seen ones), on
that value's transformed TEST split, the accuracy of:

- ``generated``: the models sampled for the value's task vector (every one; distinct ones counted);
- ``reference``: the model trained for the value the ordinary way (its final checkpoint; held out: trained only for
  this comparison);
- zero-training baselines, what a user would try instead: ``nearest`` (the final model of the nearest seen value;
  ties: the smaller value), ``interpolation`` (the final models of the two seen values bracketing the value, mixed
  linearly by the value; beyond the seen range the two nearest, extrapolated linearly), ``average`` (the uniform
  average of every seen value's final model: one shared initialisation makes these three meaningful) and
  ``backbone`` (the shared initialisation itself, trained on untransformed data).

**Fine-tuning** (paper Table 15, "initialisation"): from ``nearest``, ``interpolation``, ``generated`` (the value's
first generated model: no selection) and ``scratch`` (a seeded random initialisation), one AdamW run at a constant
learning rate on the value's transformed training split, the same batches for every start, scored after each step
count of ``continuous.finetune_steps``. ``steps_to_reference``: the first of those counts at which the accuracy is
within ``tolerance`` of the reference's (None: not within the grid).

**Intervals.** 95% bootstrap intervals over test samples (and, for the generated mean, over generated models);
``margin`` = generated mean - baseline, paired on the same resampled test samples; a verdict is ``pass`` when
the interval lies above 0, ``fail`` below, ``undecided`` otherwise.

Outputs in ``out_dir``: ``table.parquet``/``table.csv`` (a row per value and model), ``finetune.csv`` (a row per
value, start and step count), ``summary.json``, ``accuracy_vs_value.png``, ``finetune.png``, ``loss.png``.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rpg.classifier import dataset_labels, finetune, predict
from rpg.config import DataConfig, TasksConfig
from rpg.data import build_dataset, data_config
from rpg.errors import RPGInputError
from rpg.io import read_json, write_json, write_table
from rpg.runtime import progress, resolve_device
from rpg.tasks.continuous import transformed, value_seed
from rpg.tokens.store import TokenStore
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

BASELINES = ("nearest", "interpolation", "average")  # the zero-training baselines of the claim
KINDS = ("generated", "reference", *BASELINES, "backbone")
INITS = ("generated", "nearest", "interpolation", "scratch")
TABLE_COLUMNS = ["split", "task_value", "inside", "kind", "name", "accuracy", "sources", "alpha", "path"]
FINETUNE_COLUMNS = ["split", "task_value", "inside", "init", "steps", "accuracy"]
KIND_LABELS = {
    "generated": "generated (RPG)",
    "reference": "trained reference",
    "nearest": "nearest seen model",
    "interpolation": "interpolation of the two nearest",
    "average": "average of all seen models",
    "backbone": "shared initialisation",
}


# ---------------------------------------------------------------------------------------------------------
# the seen models and the zero-training baselines


def seen_models(token_dir: str | Path) -> dict[float, str]:
    """Seen task value -> its final checkpoint (largest step), from the token store's index (the generator's zoo)."""
    index = TokenStore(token_dir).index
    best: dict[float, tuple[int, str]] = {}
    for path in index["checkpoint"]:
        _, meta = load_checkpoint(path)
        if meta.get("task_value") is None:
            raise RPGInputError(f"checkpoint {path} has no task_value: not a continuous task zoo", token_dir)
        v, step = float(meta["task_value"]), int(meta.get("step") or 0)
        if v not in best or step > best[v][0]:
            best[v] = (step, str(path))
    if len(best) < 2:
        raise RPGInputError(f"{len(best)} seen task value(s): the baselines need at least 2", token_dir)
    return {v: p for v, (_, p) in sorted(best.items())}


def nearest_value(value: float, seen: Sequence[float]) -> float:
    """The seen value nearest to ``value`` (ties: the smaller)."""
    return min(seen, key=lambda s: (abs(s - value), s))


def interpolation_pair(value: float, seen: Sequence[float]) -> tuple[float, float, float]:
    """``(a, b, alpha)``: the seen values bracketing ``value`` (beyond the range: the two nearest) and the weight of
    ``b``, ``alpha = (value - a) / (b - a)`` (in [0, 1] inside the range; outside it extrapolates)."""
    s = sorted(float(v) for v in seen)
    if value <= s[0]:
        a, b = s[0], s[1]
    elif value >= s[-1]:
        a, b = s[-2], s[-1]
    else:
        b = next(v for v in s if v >= value)
        a = max(v for v in s if v <= value) if value not in s else value
        if a == b:  # a seen value: itself
            return a, b, 0.0
    return a, b, (value - a) / (b - a)


def mix_states(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """The weighted sum of state_dicts (float entries; integer buffers from the first)."""
    if len(states) != len(weights) or not states:
        raise ValueError(f"{len(states)} state_dicts for {len(weights)} weights")
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = sum(float(w) * s[k].double() for s, w in zip(states, weights)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def _load(path: str | Path) -> tuple[torch.nn.Module, dict]:
    state, meta = load_checkpoint(path)
    model = build_model(meta["arch"], meta.get("arch_kwargs") or {})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RPGInputError(f"weights do not fit {meta['arch']}: {exc}", path) from exc
    return model, meta


def _model_from(arch: str, kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model(arch, dict(kwargs))
    model.load_state_dict(dict(state), strict=True)
    return model


# ---------------------------------------------------------------------------------------------------------
# intervals


def bootstrap_ci(correct: np.ndarray, *, n: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the mean accuracy of models ``correct`` [M, N] (bool), resampling test samples
    and (M > 1) models."""
    correct = np.atleast_2d(correct).astype(np.float64)
    rng = np.random.default_rng(seed)
    m, t = correct.shape
    stats = np.empty(n)
    for i in range(n):
        rows = rng.integers(0, m, m) if m > 1 else np.zeros(1, dtype=int)
        cols = rng.integers(0, t, t)
        stats[i] = correct[np.ix_(rows, cols)].mean()
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def margin(generated: np.ndarray, baseline: np.ndarray, *, n: int, seed: int) -> dict[str, Any]:
    """Generated mean accuracy - baseline accuracy with a paired 95% bootstrap interval and a verdict."""
    g = np.atleast_2d(generated).astype(np.float64)
    b = np.atleast_2d(baseline).astype(np.float64)
    rng = np.random.default_rng(seed)
    t = g.shape[1]
    stats = np.empty(n)
    for i in range(n):
        cols = rng.integers(0, t, t)
        rows = rng.integers(0, g.shape[0], g.shape[0])
        brows = rng.integers(0, b.shape[0], b.shape[0])
        stats[i] = g[np.ix_(rows, cols)].mean() - b[np.ix_(brows, cols)].mean()
    lo, hi = (float(x) for x in np.percentile(stats, [2.5, 97.5]))
    verdict = "pass" if lo > 0 else "fail" if hi < 0 else "undecided"
    return {"margin": float(g.mean() - b.mean()), "ci95": [lo, hi], "verdict": verdict}


def distinct_models(states: Sequence[Mapping[str, torch.Tensor]], correct: np.ndarray, spacing: float) -> int:
    """Models with no duplicate among the others: a duplicate has the same test failures or lies within ``spacing``
    (RMS over all float entries) of it."""
    flat = [torch.cat([v.double().reshape(-1) for v in s.values() if v.is_floating_point()]) for s in states]
    n = len(flat)
    dup = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(i + 1, n):
            same = bool((correct[i] == correct[j]).all())
            rms = float((flat[i] - flat[j]).pow(2).mean().sqrt())
            dup[i, j] = dup[j, i] = same or rms <= spacing
    return int((~dup.any(1)).sum())


def checkpoint_spacing(token_dir: str | Path) -> float | None:
    """The median RMS distance between consecutive checkpoints of one seen value (what counts as 'the same model')."""
    index = TokenStore(token_dir).index
    by_value: dict[float, list[tuple[int, dict]]] = {}
    for path in index["checkpoint"]:
        state, meta = load_checkpoint(path)
        by_value.setdefault(float(meta["task_value"]), []).append((int(meta.get("step") or 0), state))
    gaps = []
    for ckpts in by_value.values():
        ckpts.sort(key=lambda x: x[0])
        for (_, a), (_, b) in zip(ckpts, ckpts[1:]):
            d = torch.cat([(a[k].double() - b[k].double()).reshape(-1) for k in a if a[k].is_floating_point()])
            gaps.append(float(d.pow(2).mean().sqrt()))
    return float(np.median(gaps)) if gaps else None


# ---------------------------------------------------------------------------------------------------------
# evaluation


def _correct(model: torch.nn.Module, dataset, labels: torch.Tensor, device: torch.device) -> np.ndarray:
    return (predict(model.to(device), dataset, device=device) == labels).numpy()


def finetune_curve(model, train_set, test_set, labels, *, steps: Sequence[int], lr: float, weight_decay: float,
                   batch_size: int, seed: int, device: torch.device) -> dict[int, float]:  # fmt: skip
    """Accuracy after each of ``steps`` steps of one AdamW run (constant lr; 0: as initialised)."""
    steps = sorted({int(s) for s in steps})
    model = model.to(device)
    curve: dict[int, float] = {}

    def record(step: int) -> None:
        if step in steps:
            curve[step] = float(_correct(model, test_set, labels, device).mean())

    record(0)
    if steps and steps[-1] > 0:
        finetune(model, train_set, steps=steps[-1], lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                 seed=seed, device=device, on_step=record)  # fmt: skip
    return curve


def steps_to_reference(curve: Mapping[int, float], reference: float, tolerance: float) -> int | None:
    """The first step count at which the curve is within ``tolerance`` of ``reference`` (None: never)."""
    return next((s for s in sorted(curve) if curve[s] >= reference - tolerance), None)


@dataclass
class _Context:
    """What every evaluated value shares: the architecture, the seen models and their baselines, the data."""

    arch: str
    kwargs: dict
    cfg: TasksConfig
    seen: dict[float, str]
    seen_states: dict[float, dict]
    average: dict
    backbone: dict
    spacing: float
    train: Any
    test: Any
    device: torch.device


def evaluate_value(entry: Mapping[str, Any], ctx: _Context) -> tuple[dict, list[dict], list[dict]]:
    """One evaluated value: ``(summary record, table rows, fine-tuning rows)`` (see the module docstring)."""
    cfg, c, dev = ctx.cfg, ctx.cfg.continuous, ctx.device
    assert c is not None
    seen_values = list(ctx.seen)
    split, value = entry["split"], float(entry["task_value"])
    inside = bool(entry.get("inside", min(seen_values) <= value <= max(seen_values)))
    test_set = transformed(ctx.test, value, family=cfg.family)
    labels = dataset_labels(test_set)
    seed = value_seed(cfg.seed, value)
    rows: list[dict[str, Any]] = []

    def add(kind: str, name: str, model, *, sources="", alpha=None, path="") -> np.ndarray:
        ok = _correct(model, test_set, labels, dev)
        rows.append({"split": split, "task_value": value, "inside": inside, "kind": kind, "name": name,
                     "accuracy": float(ok.mean()), "sources": sources, "alpha": alpha, "path": str(path)})  # fmt: skip
        return ok

    corr: dict[str, np.ndarray] = {}
    gen_states, gen_ok = [], []
    for p in entry["generated"]:
        model, _ = _load(p)
        gen_states.append(model.state_dict())
        gen_ok.append(add("generated", Path(p).stem, model, path=p))
    corr["generated"] = np.array(gen_ok)
    ref_path = entry["reference"][-1]  # the final checkpoint
    corr["reference"] = add("reference", Path(ref_path).stem, _load(ref_path)[0], path=ref_path)[None]
    near = nearest_value(value, seen_values)
    starts = {"nearest": ctx.seen_states[near]}
    corr["nearest"] = add("nearest", f"seen {near:g}", _model_from(ctx.arch, ctx.kwargs, starts["nearest"]),
                          sources=f"{near:g}", path=ctx.seen[near])[None]  # fmt: skip
    a, b, alpha = interpolation_pair(value, seen_values)
    starts["interpolation"] = mix_states([ctx.seen_states[a], ctx.seen_states[b]], [1.0 - alpha, alpha])
    corr["interpolation"] = add("interpolation", f"{1 - alpha:.3g} x {a:g} + {alpha:.3g} x {b:g}",
                                _model_from(ctx.arch, ctx.kwargs, starts["interpolation"]), sources=f"{a:g},{b:g}",
                                alpha=alpha)[None]  # fmt: skip
    corr["average"] = add("average", f"{len(seen_values)} seen models", _model_from(ctx.arch, ctx.kwargs, ctx.average),
                          sources=",".join(f"{v:g}" for v in seen_values))[None]  # fmt: skip
    corr["backbone"] = add("backbone", "shared initialisation", _model_from(ctx.arch, ctx.kwargs, ctx.backbone))[None]

    n_boot = int(c.bootstrap)
    acc = {k: {"mean": float(v.mean()), "ci95": list(bootstrap_ci(v, n=n_boot, seed=seed))} for k, v in corr.items()}
    per_model = corr["generated"].mean(1)
    acc["generated"].update(min=float(per_model.min()), max=float(per_model.max()), n=len(gen_ok),
                            distinct=distinct_models(gen_states, corr["generated"], ctx.spacing))  # fmt: skip
    margins = {k: margin(corr["generated"], corr[k], n=n_boot, seed=seed + 1) for k in (*BASELINES, "reference")}

    # fine-tuning from each start, the same optimiser and batches for all
    ft: dict[str, dict[int, float]] = {}
    ft_rows: list[dict[str, Any]] = []
    if split == "held_out" and c.finetune_steps:
        train_set = transformed(ctx.train, value, family=cfg.family)
        for init in INITS:
            if init == "generated":
                if not entry["generated"]:
                    continue
                model = _load(entry["generated"][0])[0]  # the value's first generated model: no selection
            elif init == "scratch":
                model = build_model(ctx.arch, ctx.kwargs, seed=seed)
            else:
                model = _model_from(ctx.arch, ctx.kwargs, starts[init])
            ft[init] = finetune_curve(model, train_set, test_set, labels, steps=c.finetune_steps, lr=c.finetune_lr,
                                      weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, seed=seed + 2,
                                      device=dev)  # fmt: skip
            ft_rows += [{"split": split, "task_value": value, "inside": inside, "init": init, "steps": s,
                         "accuracy": x} for s, x in sorted(ft[init].items())]  # fmt: skip
    ref_acc = acc["reference"]["mean"]
    record = {
        "split": split, "task_value": value, "inside": inside, "nearest": near, "interpolation": [a, b, alpha],
        "accuracy": acc, "margins": margins,
        "finetune": {i: {str(s): v for s, v in cur.items()} for i, cur in ft.items()},
        "steps_to_reference": {i: steps_to_reference(cur, ref_acc, c.tolerance) for i, cur in ft.items()},
    }  # fmt: skip
    log.info("%s value %g (%s): generated %.4f (%d distinct of %d), reference %.4f, nearest %.4f, "
             "interpolation %.4f, average %.4f; margin over interpolation %+.4f %s; steps to reference %s", split,
             value, "inside" if inside else "beyond", acc["generated"]["mean"], acc["generated"]["distinct"],
             len(gen_ok), ref_acc, acc["nearest"]["mean"], acc["interpolation"]["mean"], acc["average"]["mean"],
             margins["interpolation"]["margin"], margins["interpolation"]["verdict"],
             record["steps_to_reference"])  # fmt: skip
    return record, rows, ft_rows


def evaluate_continuous(
    *,
    manifest: Sequence[Mapping[str, Any]],
    data: DataConfig | Mapping[str, Any],
    tasks: TasksConfig | Mapping[str, Any],
    backbone_path: str | Path,
    token_dir: str | Path,
    generator_dir: str | Path | None,
    out_dir: str | Path,
    device: str = "auto",
    plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a continuous task zoo (see the module docstring); write the outputs into ``out_dir``."""
    from rpg.evaluate.plots import plot_training_loss, read_train_log
    from rpg.tasks.continuous_plots import plot_accuracy_vs_value, plot_finetune

    dev = resolve_device(device)
    cfg, data_cfg = TasksConfig.parse(tasks, "tasks"), data_config(data)
    if cfg.continuous is None:
        raise RPGInputError(f"family {cfg.family!r} needs tasks.continuous", "config tasks")
    c = cfg.continuous
    if not manifest:
        raise RPGInputError("no task values to evaluate", out_dir)
    backbone_state, bmeta = load_checkpoint(backbone_path)
    arch, kwargs = bmeta["arch"], dict(bmeta.get("arch_kwargs") or {})
    seen = seen_models(token_dir)
    seen_values = list(seen)
    seen_states = {v: load_checkpoint(p)[0] for v, p in seen.items()}
    average = mix_states([seen_states[v] for v in seen_values], [1.0 / len(seen_values)] * len(seen_values))
    spacing = checkpoint_spacing(token_dir)
    train_full, test_full = build_dataset(data_cfg, "train"), build_dataset(data_cfg, "test")
    rows: list[dict[str, Any]] = []
    ft_rows: list[dict[str, Any]] = []
    per_value: list[dict[str, Any]] = []
    ctx = _Context(
        arch=arch, kwargs=kwargs, cfg=cfg, seen=seen, seen_states=seen_states, average=average,
        backbone=backbone_state, spacing=spacing or 0.0, train=train_full, test=test_full, device=dev,
    )  # fmt: skip
    for entry in progress(manifest, desc="evaluate task values", total=len(manifest)):
        record, value_rows_, value_ft = evaluate_value(entry, ctx)
        rows += value_rows_
        ft_rows += value_ft
        per_value.append(record)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    ft_table = pd.DataFrame(ft_rows, columns=FINETUNE_COLUMNS)
    summary = summarize_continuous(per_value, tolerance=c.tolerance)
    gen_cfg = read_json(Path(generator_dir) / "config.json") if generator_dir else {}
    summary["settings"] = {
        "arch": arch,
        "family": cfg.family,
        "tasks": cfg.to_dict(),
        "seen_values": seen_values,
        "models_per_task": max((len(e["generated"]) for e in manifest), default=0),
        "generator": gen_cfg.get("generator", {}),
        "train": gen_cfg.get("train", {}),
        "device": str(dev),
        "duplicate_spacing": spacing,
        "finetune": {
            "optimizer": "adamw",
            "lr": c.finetune_lr,
            "schedule": "constant",
            "batch_size": cfg.batch_size,
            "weight_decay": cfg.weight_decay,
            "steps": list(c.finetune_steps),
        },  # fmt: skip
        "split": "test",
    }
    if plan is not None:
        summary["plan"] = dict(plan)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out / "table.parquet")
    write_table(table, out / "table.csv")
    write_table(ft_table, out / "finetune.csv")
    write_json(summary, out / "summary.json")
    plot_accuracy_vs_value(table, seen_values, out / "accuracy_vs_value.png")
    plot_finetune(ft_table, summary, out / "finetune.png")
    train_log = read_train_log(Path(generator_dir) / "train_log.csv") if generator_dir else None
    plot_training_loss(train_log, out / "loss.png", title="task-conditioned generator: training loss")
    log.info("%s", format_continuous(summary))
    return summary


# ---------------------------------------------------------------------------------------------------------
# summary, text, HTML


def summarize_continuous(per_value: Sequence[Mapping[str, Any]], *, tolerance: float) -> dict[str, Any]:
    """The summary: per value, and the claims over the held-out values inside / beyond the seen range."""
    held = [v for v in per_value if v["split"] == "held_out"]

    def claim(group: list[Mapping[str, Any]]) -> dict[str, Any]:
        verdicts = {b: [v["margins"][b]["verdict"] for v in group] for b in BASELINES}
        every = [all(v["margins"][b]["verdict"] == "pass" for b in BASELINES) for v in group]
        return {
            "values": [v["task_value"] for v in group],
            "verdicts": verdicts,
            "beats_every_zero_training_baseline": f"{sum(every)} of {len(group)}",
            "all_pass": bool(group) and all(every),
        }

    def faster(group: list[Mapping[str, Any]]) -> dict[str, Any]:
        out = {}
        for other in ("nearest", "scratch", "interpolation"):
            wins = 0
            for v in group:
                s = v["steps_to_reference"]
                g, o = s.get("generated"), s.get(other)
                wins += g is not None and (o is None or g < o)
            out[other] = f"{wins} of {len(group)}"
        return out

    inside = [v for v in held if v["inside"]]
    beyond = [v for v in held if not v["inside"]]
    return {
        "kind": "continuous_tasks",
        "split": "test",
        "tolerance": tolerance,
        "values": list(per_value),
        "checks": {
            "inside": claim(inside),
            "beyond": claim(beyond),
            "generated_reaches_reference_first": {"inside": faster(inside), "beyond": faster(beyond)},
        },
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def value_rows(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    """A row per evaluated value: accuracies (%), generated margins with verdicts, steps to reference."""
    out = []
    for v in summary["values"]:
        a, m, s = v["accuracy"], v["margins"], v.get("steps_to_reference", {})
        g = a["generated"]
        row = {
            "value": f"{v['task_value']:g}",
            "where": v["split"] if v["split"] == "seen" else ("inside" if v["inside"] else "beyond"),
            "generated": f"{_pct(g['mean'])} [{_pct(g['ci95'][0])}, {_pct(g['ci95'][1])}] ({g['distinct']}/{g['n']})",
        }
        for k in ("reference", *BASELINES, "backbone"):
            row[k] = _pct(a[k]["mean"])
        for k in BASELINES:
            lo, hi = m[k]["ci95"]
            row[f"vs {k}"] = f"{100 * m[k]['margin']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] {m[k]['verdict']}"
        for i in INITS:
            if i in s:
                row[f"steps {i}"] = "-" if s[i] is None else str(s[i])
        out.append(row)
    return out


def format_continuous(summary: Mapping[str, Any]) -> str:
    rows = value_rows(summary)
    if not rows:
        return "no task values evaluated"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["  ".join(cols)] + ["  ".join(r.get(c, "") for c in cols) for r in rows]
    ch = summary["checks"]
    lines.append(f"inside the seen range: generated beats every zero-training baseline on "
                 f"{ch['inside']['beats_every_zero_training_baseline']} held-out values; beyond: "
                 f"{ch['beyond']['beats_every_zero_training_baseline']}")  # fmt: skip
    return "\n".join(lines)


def summary_html(summary: Mapping[str, Any]) -> str:
    """HTML table of a continuous task-zoo summary (used by :mod:`rpg.report`)."""
    rows = value_rows(summary)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    ch = summary["checks"]
    note = (f"<p>Accuracy (%) on each task value's transformed test split; generated: mean [95% bootstrap interval] "
            f"(distinct/n); vs X: generated mean - X in points [paired 95% interval] and the verdict; steps: "
            f"fine-tuning steps until within {100 * summary['tolerance']:.1f} points of the reference. Held-out values "
            f"inside the seen range where the generated models beat every zero-training baseline: "
            f"{html.escape(ch['inside']['beats_every_zero_training_baseline'])}; beyond: "
            f"{html.escape(ch['beyond']['beats_every_zero_training_baseline'])}.</p>")  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>{note}"
