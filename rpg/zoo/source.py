"""Bring your own zoo: checkpoints from a folder, imported into the run directories the collection stage writes.

A zoo with a ``source`` block (:class:`rpg.config.SourceConfig`) is not trained. Its runs are

- the subfolders of ``source.path`` (natural order: run2 before run10), each holding its checkpoint files
  (``glob``, default every ``.safetensors``/``.pt``/``.pth``/``.bin`` file, natural order by path); when no subfolder
  holds any, the files of ``path`` itself are one run; or
- the rows of a CSV ``source.table``: columns ``path`` (relative to ``source.path`` or absolute), ``run`` (any label;
  runs in natural order), optional ``step`` (orders a run's checkpoints; default: the table's order) and any numeric
  metric columns (kept in the metadata; ``source.metric`` names the one stored as the validation score).

:func:`list_source_runs` is the cheap scan the workflow runs at start (one import job per run); :func:`import_run`
reads one run's files (safetensors, or torch files read with ``weights_only=True``, a nested state_dict unwrapped),
checks each (readable; keys and shapes of the architecture, built on the meta device with exactly the configured
``arch_kwargs``; dtypes as the zoo's first checkpoint; finite values) and writes ``ckpt_<iii>.safetensors`` with the
pipeline's metadata plus ``run.csv``, so tokenization and everything after it treat the zoo like a collected one.
Any problem raises RPGInputError naming the file, and the run directory is left as it was (nothing written).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rpg.config import SourceConfig
from rpg.errors import RPGInputError
from rpg.io import write_table
from rpg.runtime import progress
from rpg.zoo.checkpoint import check_compatible, save_checkpoint
from rpg.zoo.collect import RUN_TABLE, TABLE_COLUMNS, checkpoint_name
from rpg.zoo.models import build_model, read_weights_file

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class SourceCheckpoint:
    """One checkpoint file of a source zoo; ``step`` and ``metrics`` come from the table (if any)."""

    path: Path
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceRun:
    """One run of a source zoo: its label (folder name or the table's run value) and checkpoints, in order."""

    label: str
    checkpoints: tuple[SourceCheckpoint, ...]

    @property
    def files(self) -> list[Path]:
        return [c.path for c in self.checkpoints]


def natural_key(text: str) -> list:
    """Sort key that orders digit runs by value: ckpt_2 before ckpt_10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


def _root(source: SourceConfig) -> Path:
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise RPGInputError("source folder does not exist", root)
    return root


def _files(folder: Path, pattern: str | None) -> list[Path]:
    if pattern is None:
        found = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES]
    else:
        found = [p for p in folder.glob(pattern) if p.is_file()]
    return sorted(
        (p for p in found if not p.name.startswith(".")), key=lambda p: natural_key(str(p.relative_to(folder)))
    )


def _runs_from_folders(source: SourceConfig, root: Path) -> list[SourceRun]:
    runs = []
    folders = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: natural_key(d.name))  # fmt: skip
    for folder in folders:
        files = _files(folder, source.glob)
        if files:
            runs.append(SourceRun(folder.name, tuple(SourceCheckpoint(p) for p in files)))
        else:
            log.warning("%s: no checkpoint files; not a run", folder)
    if not runs:
        files = _files(root, source.glob)
        if files:
            runs.append(SourceRun(".", tuple(SourceCheckpoint(p) for p in files)))
    return runs


def _runs_from_table(source: SourceConfig, root: Path) -> list[SourceRun]:
    table_path = Path(source.table).expanduser()
    table_path = table_path if table_path.is_absolute() else root / table_path
    if not table_path.is_file():
        raise RPGInputError("source table does not exist", table_path)
    try:
        table = pd.read_csv(table_path)
    except Exception as exc:
        raise RPGInputError(f"unreadable source table ({type(exc).__name__}: {exc})", table_path) from exc
    missing = [c for c in ("path", "run") if c not in table.columns]
    if missing:
        raise RPGInputError(f"source table lacks the column(s) {missing} (columns: {list(table.columns)})", table_path)
    if source.metric is not None and source.metric not in table.columns:
        raise RPGInputError(f"source.metric {source.metric!r} is not a column ({list(table.columns)})", table_path)
    metric_cols = [
        c for c in table.columns if c not in ("path", "run", "step") and pd.api.types.is_numeric_dtype(table[c])
    ]
    if "step" in table.columns and not pd.api.types.is_numeric_dtype(table["step"]):
        raise RPGInputError("source table column 'step' must hold integers", table_path)
    by_run: dict[str, list[tuple[int, int, SourceCheckpoint]]] = {}
    for order, row in enumerate(table.itertuples(index=False)):
        rec = row._asdict()
        path = Path(str(rec["path"])).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise RPGInputError(f"checkpoint listed in {table_path.name} (row {order + 1}) does not exist", path)
        step = None if "step" not in rec or pd.isna(rec["step"]) else int(rec["step"])
        metrics = {c: float(rec[c]) for c in metric_cols if not pd.isna(rec[c])}
        key = step if step is not None else order
        by_run.setdefault(str(rec["run"]), []).append((key, order, SourceCheckpoint(path, step, metrics)))
    return [SourceRun(label, tuple(c for _, _, c in sorted(rows, key=lambda r: (r[0], r[1]))))
            for label, rows in sorted(by_run.items(), key=lambda kv: natural_key(kv[0]))]  # fmt: skip


def list_source_runs(source: SourceConfig | Mapping[str, Any]) -> list[SourceRun]:
    """The runs of a source zoo (a cheap scan: no file is opened but the table). An empty source raises
    RPGInputError naming the folder."""
    source = SourceConfig.parse(source, "source")
    root = _root(source)
    runs = _runs_from_table(source, root) if source.table else _runs_from_folders(source, root)
    if not runs:
        what = f"matching {source.glob!r}" if source.glob else f"({', '.join('*' + s for s in WEIGHT_SUFFIXES)})"
        raise RPGInputError(f"empty source: no checkpoint files {what} in the folder or its subfolders", root)
    if source.last is not None:
        runs = [SourceRun(r.label, r.checkpoints[-source.last :]) for r in runs]
    return runs


def architecture_entries(arch: str, arch_kwargs: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{name: (shape, dtype)}`` of the architecture's state_dict in its order (built on the meta device)."""
    try:
        with torch.device("meta"):
            model = build_model(arch, dict(arch_kwargs))
    except RPGInputError:
        raise
    except Exception:  # code that does not run on the meta device: build it for real once
        model = build_model(arch, dict(arch_kwargs))
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def check_fits(state: Mapping[str, torch.Tensor], entries: Mapping[str, tuple], arch: str, path: Path) -> None:
    """RPGInputError naming ``path`` unless ``state`` has exactly the architecture's keys and shapes."""
    missing = [k for k in entries if k not in state]
    extra = [k for k in state if k not in entries]
    if missing or extra:
        raise RPGInputError(
            f"does not fit architecture {arch!r}: {len(missing)} entries missing ({missing[:3]}), {len(extra)} "
            f"unexpected ({extra[:3]}); check arch and arch_kwargs (the model gets exactly those)",
            path,
        )
    for name, (shape, _) in entries.items():
        if tuple(state[name].shape) != shape:
            raise RPGInputError(f"entry {name!r} has shape {list(state[name].shape)}, architecture {arch!r} has "
                                f"{list(shape)}; check arch_kwargs", path)  # fmt: skip


def check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RPGInputError(f"entry {name!r} holds NaN or infinite values", path)


def import_run(
    *,
    source: SourceConfig | Mapping[str, Any],
    arch: str,
    arch_kwargs: Mapping[str, Any],
    run: int,
    out_dir: str | Path,
) -> None:
    """Import run ``run`` (its index in :func:`list_source_runs`) into ``out_dir``: checked checkpoints
    ``ckpt_<iii>.safetensors`` and ``run.csv`` (see the module docstring)."""
    source = SourceConfig.parse(source, "source")
    out_dir = Path(out_dir)
    runs = list_source_runs(source)
    if not 0 <= run < len(runs):
        raise RPGInputError(f"the source has {len(runs)} runs, there is no run {run}", source.path)
    entries = architecture_entries(arch, arch_kwargs)
    first = runs[0].checkpoints[0].path
    reference = read_weights_file(first, key=source.key)
    check_fits(reference, entries, arch, first)
    this = runs[run]
    log.info("importing run %d (%s): %d checkpoints of %s", run, this.label, len(this.checkpoints), arch)
    created = not out_dir.exists()
    written: list[Path] = []
    rows = []
    try:
        for index, ckpt in enumerate(progress(this.checkpoints, desc=f"import run {run}", total=len(this.checkpoints))):
            state = read_weights_file(ckpt.path, key=source.key)
            check_fits(state, entries, arch, ckpt.path)
            check_compatible(state, reference, ckpt.path)  # dtypes as the zoo's first checkpoint
            check_finite(state, ckpt.path)
            score = ckpt.metrics.get(source.metric) if source.metric else None
            step = ckpt.step if ckpt.step is not None else index
            meta = {"kind": "checkpoint", "arch": arch, "arch_kwargs": dict(arch_kwargs), "run": int(run), "seed": None,
                    "step": step, "index": index, "val_accuracy": score, "val_metric": source.metric, "task": None,
                    "num_classes": arch_kwargs.get("num_classes"), "source": str(ckpt.path), "source_run": this.label,
                    "metrics": ckpt.metrics}  # fmt: skip
            path = out_dir / checkpoint_name(index)
            save_checkpoint(path, {k: state[k] for k in entries}, meta)
            written.append(path)
            rows.append({"path": str(path), "run": int(run), "seed": None, "step": step, "index": index,
                         "val_accuracy": math.nan if score is None else score})  # fmt: skip
        table = out_dir / RUN_TABLE
        write_table(pd.DataFrame(rows, columns=TABLE_COLUMNS), table)
        written.append(table)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
