"""Evaluation of one zoo: originals, generated models and baselines on the validation split.

For every model: validation accuracy, the set of wrongly classified samples, its similarity
(max IoU of wrong sets against the originals; for an original against the OTHER originals),
and its RMS distance in the normalised token space to the nearest original. Writes
``table.parquet``/``table.csv`` (a row per model), ``summary.json`` (see
:mod:`rpg.evaluate.summary` for the numbers and the rules of the checks) and three PNG plots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpg.classifier import dataset_labels, evaluate_accuracy
from rpg.config import DataConfig, EvaluateConfig
from rpg.data import build_dataset, data_config, make_loader
from rpg.errors import RPGInputError
from rpg.evaluate import baselines as bl
from rpg.evaluate.plots import plot_accuracy_vs_similarity, plot_distances, plot_training_loss, read_train_log
from rpg.evaluate.similarity import (
    flatten_tokens,
    masked_min,
    max_iou,
    pairwise_rms_distances,
    rms_distances,
    wrong_mask,
)
from rpg.evaluate.summary import summarize
from rpg.io import read_safetensors_metadata, write_json, write_table
from rpg.runtime import fault_point, progress, resolve_device
from rpg.tokens.store import TokenStore
from rpg.tokens.tokenizer import detokenize, tokenize
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "kind", "group", "name", "source", "pair_type", "level", "weight", "accuracy", "num_wrong", "max_iou",
    "max_iou_original", "nearest_distance", "nearest_original", "nearest_original_index", "nearest_original_run",
    "run", "state", "step", "bn_recalibrated", "path",
]  # fmt: skip


@dataclass
class _Job:
    """One model to evaluate: its table row (partly filled) and how to build its state_dict."""

    row: dict[str, Any]
    make: Callable[[], dict[str, torch.Tensor]]
    recalibrate: bool = False


def _checkpoint_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _state_lookup(store: TokenStore, checkpoint_paths: Sequence[Path]) -> list[int | None]:
    """Permutation state of each checkpoint from the token index (matched by path), else None."""
    index = store.index
    by_path: dict[str, int] = {}
    for ckpt, state in zip(index["checkpoint"], index["state"]):
        p = Path(str(ckpt))
        by_path[str(p.resolve())] = int(state)
        by_path.setdefault(_checkpoint_name(p), int(state))
    return [by_path.get(str(p.resolve()), by_path.get(_checkpoint_name(p))) for p in checkpoint_paths]


def _row(kind: str, name: str, **kw: Any) -> dict[str, Any]:
    row = {c: None for c in TABLE_COLUMNS}
    row.update(kind=kind, group=kind, name=name, source="", pair_type="", path="", bn_recalibrated=False)
    row.update(kw)
    return row


class _Originals:
    """The original checkpoints of a zoo (read from disk on demand) and the token layout."""

    def __init__(self, paths: Sequence[Path], store: TokenStore) -> None:
        self.paths = list(paths)
        self.metas = [read_safetensors_metadata(p) for p in self.paths]  # headers only
        for p, m in zip(self.paths, self.metas):
            if "arch" not in m:
                raise RPGInputError("checkpoint metadata lacks 'arch'", p)
        self.arch = self.metas[0]["arch"]
        self.arch_kwargs = dict(self.metas[0].get("arch_kwargs") or {})
        self.names = [_checkpoint_name(p) for p in self.paths]
        self.runs = [int(m.get("run", 0)) for m in self.metas]
        self.states = _state_lookup(store, self.paths)
        self.layout, self.reference = store.layout, store.reference
        self._tokens: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        return load_checkpoint(self.paths[i])[0]

    def noisy(self, i: int, std: float, seed: int) -> dict[str, torch.Tensor]:
        """Original ``i`` with N(0, std^2) noise added to its normalised tokens (tokens cached)."""
        if i not in self._tokens:
            self._tokens[i] = tokenize(self.state_dict(i), self.layout, source=self.paths[i])
        noisy = bl.add_token_noise(self._tokens[i], std, torch.Generator().manual_seed(seed))
        return detokenize(noisy, self.layout, self.reference)

    def interpolate(self, i: int, j: int, weight: float) -> dict[str, torch.Tensor]:
        return bl.interpolate_state_dicts(self.state_dict(i), self.state_dict(j), weight)

    def average(self, members: Sequence[int]) -> dict[str, torch.Tensor]:
        return bl.average_state_dicts(self.state_dict(i) for i in members)


def _plan(
    zoo: _Originals, generated_paths: Sequence[Path], cfg: EvaluateConfig, pdiff_paths: Sequence[Path] = ()
) -> list[_Job]:
    """All models to evaluate, originals first: originals, generated, p-diff, noise, interpolated, average."""
    jobs = [
        _Job(
            _row(
                "original",
                zoo.names[i],
                run=zoo.runs[i],
                state=zoo.states[i],
                step=zoo.metas[i].get("step"),
                path=str(p),
            ),
            lambda i=i: zoo.state_dict(i),
        )
        for i, p in enumerate(zoo.paths)
    ]
    for kind, paths in (("generated", generated_paths), ("pdiff", pdiff_paths)):
        for p in paths:
            meta = read_safetensors_metadata(p)
            if meta.get("arch") not in (None, zoo.arch):
                raise RPGInputError(f"generated for arch {meta.get('arch')!r}, zoo is {zoo.arch!r}", p)
            name = p.stem if kind == "generated" else f"pdiff_{p.stem}"
            row = _row(kind, name, path=str(p), state=meta.get("state"), source=str(meta.get("sampler", "")))
            jobs.append(_Job(row, lambda p=p: load_checkpoint(p)[0]))

    # noise: the same seeded originals at every level, so the levels differ only by the std
    n_src = cfg.noise_models_per_level
    rng = np.random.default_rng(cfg.seed)
    sources = rng.choice(len(zoo), size=n_src, replace=n_src > len(zoo)).tolist() if cfg.noise_levels else []
    for li, std in enumerate(cfg.noise_levels):
        for j, src in enumerate(sources):
            seed = cfg.seed * 1_000_003 + li * 1_009 + j
            row = _row(
                "noise",
                f"noise{std:g}_{j}",
                group=f"noise@{std:g}",
                level=std,
                source=zoo.names[src],
                run=zoo.runs[src],
                state=zoo.states[src],
            )
            jobs.append(_Job(row, lambda s=src, d=std, sd=seed: zoo.noisy(s, d, sd)))

    pairs = bl.select_pairs(zoo.runs, cfg.interp_pairs, cfg.seed) if cfg.interp_weights else []
    for i, j, pair_type in pairs:
        for w in cfg.interp_weights:
            row = _row(
                "interpolated",
                f"interp_{i}_{j}@{w:g}",
                group=f"interpolated@{w:g}",
                weight=w,
                source=f"{zoo.names[i]}|{zoo.names[j]}",
                pair_type=pair_type,
                run=zoo.runs[i] if pair_type == bl.WITHIN_RUN else None,
            )
            jobs.append(_Job(row, lambda i=i, j=j, w=w: zoo.interpolate(i, j, w), recalibrate=True))

    jobs.append(_Job(_row("average", "mean_all", source="all"), lambda: zoo.average(range(len(zoo))), recalibrate=True))
    if len(set(zoo.runs)) > 1:
        for r in sorted(set(zoo.runs)):
            members = [i for i, x in enumerate(zoo.runs) if x == r]
            row = _row("average", f"mean_run{r}", group="average_within_run", source=f"run{r}", run=r)
            jobs.append(_Job(row, lambda m=members: zoo.average(m), recalibrate=True))
    return jobs


def _measure(
    jobs: Sequence[_Job],
    zoo: _Originals,
    *,
    val,
    labels: torch.Tensor,
    cfg: EvaluateConfig,
    device: torch.device,
    train_batches: Callable[[], Iterable],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate every job (fills accuracy, num_wrong, bn_recalibrated in its row).

    Returns the wrong-sample masks [M, N_val] and the RMS distances to every original [M, n_orig]
    (originals come first in ``jobs``; their own distances are computed pairwise).
    """
    n_orig = len(zoo)
    mask = zoo.layout.token_mask()
    wrongs: list[torch.Tensor] = []
    originals: list[torch.Tensor] = []  # flat normalised parameters, float32 [P] each
    reference = torch.zeros(0, 0)  # the stacked originals, set once all are measured
    dist = torch.full((len(jobs), n_orig), float("nan"), dtype=torch.float64)
    for r, job in enumerate(progress(jobs, desc="evaluate models", total=len(jobs))):
        row = job.row
        model = build_model(zoo.arch, zoo.arch_kwargs)
        try:
            model.load_state_dict(job.make(), strict=True)
        except RuntimeError as exc:
            raise RPGInputError(f"state_dict does not fit {zoo.arch}: {exc}", row["path"] or row["name"]) from exc
        model.to(device)
        if job.recalibrate and cfg.bn_recalibrate_batches > 0:
            row["bn_recalibrated"] = bl.recalibrate_batchnorm(
                model, train_batches(), num_batches=cfg.bn_recalibrate_batches, device=device
            )
        acc, preds = evaluate_accuracy(model, val, device=device, batch_size=cfg.batch_size)
        wrong = wrong_mask(preds, labels)
        row["accuracy"], row["num_wrong"] = float(acc), int(wrong.sum())
        wrongs.append(wrong)
        final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        del model
        if row["kind"] != "original" and not _finite(final):
            log.warning("%s %s has non-finite weights: its distance is NaN", row["kind"], row["name"])
            continue
        flat = flatten_tokens(tokenize(final, zoo.layout, source=row["path"] or row["name"]), mask)
        if row["kind"] == "original":
            originals.append(flat.to(torch.float32))
            if len(originals) == n_orig:
                reference = torch.stack(originals)
                dist[:n_orig] = pairwise_rms_distances(reference)
        else:
            dist[r] = rms_distances(flat, reference)
        log.debug("%s %s: accuracy %.4f", row["kind"], row["name"], acc)
        fault_point("evaluate", r + 1)
    return torch.stack(wrongs), dist


def _finite(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if v.is_floating_point())


def _fill_similarity(jobs: Sequence[_Job], zoo: _Originals, wrong: torch.Tensor, dist: torch.Tensor) -> None:
    """Max IoU and nearest distance of every model against the originals (originals: against the OTHERS)."""
    n_orig = len(zoo)
    self_pairs = torch.zeros(len(jobs), n_orig, dtype=torch.bool)
    self_pairs[:n_orig] = torch.eye(n_orig, dtype=torch.bool)
    sim, sim_idx = max_iou(wrong, wrong[:n_orig], exclude=self_pairs)
    near, near_idx = masked_min(dist, exclude=self_pairs)
    for r, job in enumerate(jobs):
        s, k = int(sim_idx[r]), int(near_idx[r])
        job.row.update(
            max_iou=float(sim[r]),
            max_iou_original=zoo.names[s] if s >= 0 else "",
            nearest_distance=float(near[r]),
            nearest_original=zoo.names[k] if k >= 0 else "",
            nearest_original_index=k,
            nearest_original_run=zoo.runs[k] if k >= 0 else None,
        )


def evaluate_zoo(
    *,
    data_cfg: DataConfig | Mapping[str, Any],
    token_dir: str | Path,
    checkpoint_paths: Sequence[str | Path],
    generated_paths: Sequence[str | Path],
    generator_dir: str | Path | None,
    pdiff_paths: Sequence[str | Path] = (),
    out_dir: str | Path,
    evaluate_cfg: Mapping[str, Any] | None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate originals, generated models and baselines of one zoo; write the outputs; return the summary.

    Baselines built from the originals (see :mod:`rpg.evaluate.baselines`): Gaussian noise in
    the normalised token space (``noise@<std>``), interpolation of seeded pairs
    (``interpolated@<w>``, pair_type within_run/across_run), the mean of all originals
    (``average``) and, with several runs, the mean of each run (``average_within_run``).
    Interpolated/averaged models get re-estimated BatchNorm statistics (column
    ``bn_recalibrated``); noisy and generated models are used as they are.
    Distances use the zoo's token layout (``token_dir``): RMS over the non-padding entries.
    ``pdiff_paths``: models of the p-diff baseline (:mod:`rpg.pdiff`), rows of kind ``pdiff`` measured like the
    generated ones (summary block ``pdiff``).
    """
    cfg = EvaluateConfig.parse(evaluate_cfg, "evaluate")
    data_cfg = data_config(data_cfg)
    dev = resolve_device(device)
    if not checkpoint_paths:
        raise RPGInputError("no original checkpoints to evaluate", token_dir)
    zoo = _Originals([Path(p) for p in checkpoint_paths], TokenStore(token_dir))
    if any(m.get("task") is not None for m in zoo.metas):
        log.warning("checkpoints carry task vectors: all models are evaluated on the plain validation split")
    jobs = _plan(zoo, [Path(p) for p in generated_paths], cfg, [Path(p) for p in pdiff_paths])

    val = build_dataset(data_cfg, "val")
    workers = data_cfg.workers
    labels = dataset_labels(val, batch_size=cfg.batch_size, workers=workers)
    n_gen = len(generated_paths) + len(pdiff_paths)
    log.info("evaluating %s (%s) on %s: %d originals, %d generated, %d baselines, %d validation samples",
             token_dir, zoo.arch, dev, len(zoo), n_gen, len(jobs) - len(zoo) - n_gen, len(labels))  # fmt: skip
    train_set: list = []

    def train_batches() -> Iterable:
        if not train_set:
            train_set.append(build_dataset(data_cfg, "train"))
        return make_loader(train_set[0], batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, workers=workers)

    wrong, dist = _measure(jobs, zoo, val=val, labels=labels, cfg=cfg, device=dev, train_batches=train_batches)
    _fill_similarity(jobs, zoo, wrong, dist)

    table = _to_frame([job.row for job in jobs])
    summary = summarize(table)
    summary["settings"] = {
        "arch": zoo.arch,
        "arch_kwargs": zoo.arch_kwargs,
        "num_val_samples": int(len(labels)),
        "device": str(dev),
        "evaluate": cfg.to_dict(),
        "noise_space": "normalised tokens (per-layer standardised; BN running_var in log space)",
        "distance": "RMS over non-padding normalised token entries",
        "bn_recalibrated": "interpolated and average models" if cfg.bn_recalibrate_batches else "none",
    }
    _write_outputs(table, summary, Path(out_dir), title=Path(token_dir).name, generator_dir=generator_dir)
    _log_summary(summary)
    return summary


def _write_outputs(table, summary: Mapping[str, Any], out_dir: Path, *, title: str, generator_dir) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(table, out_dir / "table.parquet")
    write_table(table, out_dir / "table.csv")
    write_json(summary, out_dir / "summary.json")
    plot_accuracy_vs_similarity(table, out_dir / "accuracy_vs_similarity.png", title=f"{title}: accuracy vs similarity")
    train_log = read_train_log(Path(generator_dir) / "train_log.csv") if generator_dir else None
    plot_training_loss(train_log, out_dir / "loss.png", title=f"{title}: generator training loss")
    plot_distances(table, out_dir / "distances.png", title=f"{title}: distance to the nearest original")


def _to_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("level", "weight", "accuracy", "max_iou", "nearest_distance"):
        df[col] = df[col].astype("float64")
    for col in ("num_wrong", "nearest_original_index", "nearest_original_run", "run", "state", "step"):
        df[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    df["bn_recalibrated"] = df["bn_recalibrated"].astype(bool)
    for col in ("kind", "group", "name", "source", "pair_type", "max_iou_original", "nearest_original", "path"):
        df[col] = df[col].fillna("").astype(str)
    return df


def _log_summary(summary: Mapping[str, Any]) -> None:
    def fmt(d: Mapping[str, Any]) -> str:
        return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())

    log.info("original accuracy: %s", fmt(summary["original_accuracy"]))
    log.info("generated accuracy: %s", fmt(summary["generated_accuracy"]))
    log.info(
        "similarity: original %s | generated %s",
        fmt(summary["original_similarity"]),
        fmt(summary["generated_similarity"]),
    )
    checks = {k: v for k, v in summary["checks"].items() if k != "rules"}
    log.info("checks: %s", fmt(checks))
