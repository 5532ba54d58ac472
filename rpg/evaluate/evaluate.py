"""Evaluation of one zoo: originals, generated models and baselines on the validation split.

For every model: validation accuracy, the set of wrongly classified samples, its similarity
(max IoU of wrong sets against the originals; for an original against the OTHER originals),
and its RMS distance in the normalised token space to the nearest original. Writes
``table.parquet``/``table.csv`` (a row per model), ``summary.json`` (see
:mod:`rpg.evaluate.summary` for the numbers and the rules of the checks) and three PNG plots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpg.errors import RPGInputError
from rpg.evaluate import baselines as bl
from rpg.evaluate.similarity import flatten_tokens, masked_min, max_iou, pairwise_rms_distances, rms_distances
from rpg.evaluate.similarity import wrong_mask

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "kind", "group", "name", "source", "pair_type", "level", "weight", "accuracy", "num_wrong", "max_iou",
    "max_iou_original", "nearest_distance", "nearest_original", "nearest_original_index", "nearest_original_run",
    "run", "state", "step", "bn_recalibrated", "path",
]  # fmt: skip


@dataclass
class EvaluateConfig:
    """Settings of the evaluation stage (config block ``evaluate``).

    noise_levels: std of the Gaussian noise added to normalised tokens, one baseline group each.
    noise_models_per_level: noisy models per level (the same seeded originals at every level).
    interp_weights: mixing weights w of (1 - w) * a + w * b.
    interp_pairs: seeded pairs of originals (half across runs, half within a run when possible).
    bn_recalibrate_batches: training batches used to re-estimate BatchNorm statistics of
        interpolated/averaged models (0 disables).
    batch_size: evaluation (and BN re-estimation) batch size.
    seed: seed of noise, pair choice and BN batches.
    """

    noise_levels: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.03, 0.04, 0.05])
    noise_models_per_level: int = 3
    interp_weights: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    interp_pairs: int = 3
    bn_recalibrate_batches: int = 10
    batch_size: int = 512
    seed: int = 0

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> EvaluateConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise RPGInputError(f"unknown option(s) {unknown}; known: {sorted(known)}", "evaluate config")
        out = cls(**cfg)
        out.noise_levels = [float(x) for x in out.noise_levels]
        out.interp_weights = [float(x) for x in out.interp_weights]
        if any(x < 0 for x in out.noise_levels):
            raise RPGInputError(f"noise_levels must be >= 0, got {out.noise_levels}", "evaluate config")
        if any(not 0.0 <= w <= 1.0 for w in out.interp_weights):
            raise RPGInputError(f"interp_weights must lie in [0, 1], got {out.interp_weights}", "evaluate config")
        for name in ("noise_models_per_level", "interp_pairs", "bn_recalibrate_batches"):
            if getattr(out, name) < 0:
                raise RPGInputError(f"{name} must be >= 0", "evaluate config")
        if out.batch_size < 1:
            raise RPGInputError("batch_size must be >= 1", "evaluate config")
        return out


@dataclass
class _Job:
    """One model to evaluate: its table row (partly filled) and how to build its state_dict."""

    row: dict[str, Any]
    make: Callable[[], dict[str, torch.Tensor]]
    recalibrate: bool = False


def dataset_labels(dataset, *, batch_size: int = 512) -> torch.Tensor:
    """Labels of a classification dataset (y of every item, in order) as LongTensor [N].

    Uses ``TensorDataset.tensors[1]`` or a ``targets`` attribute when it matches the items
    (checked on a few samples), else iterates the dataset once.
    """
    n = len(dataset)
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1].reshape(-1).long().cpu()
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == n and n > 0:
        t = torch.as_tensor(np.asarray(targets)).long().reshape(-1)
        probe = sorted({0, n // 2, n - 1})
        if all(int(dataset[i][1]) == int(t[i]) for i in probe):
            return t
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    ys = [torch.as_tensor(batch[1]).reshape(-1).long() for batch in loader]
    return torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)


def _checkpoint_name(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _state_lookup(store, checkpoint_paths: Sequence[Path]) -> list[int | None]:
    """Permutation state of each checkpoint from the token index (matched by path), else None."""
    index = getattr(store, "index", None)
    if index is None or "checkpoint" not in index or "state" not in index:
        return [None] * len(checkpoint_paths)
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


def evaluate_zoo(
    *,
    data_cfg: Mapping[str, Any],
    token_dir: str | Path,
    checkpoint_paths: Sequence[str | Path],
    generated_paths: Sequence[str | Path],
    generator_dir: str | Path | None,
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
    """
    from rpg.data import build_dataset, make_loader
    from rpg.evaluate.plots import plot_accuracy_vs_similarity, plot_distances, plot_training_loss, read_train_log
    from rpg.evaluate.summary import summarize
    from rpg.io import write_json, write_table
    from rpg.runtime import progress, resolve_device
    from rpg.tokens import TokenStore, detokenize, tokenize
    from rpg.zoo.checkpoint import load_checkpoint
    from rpg.zoo.collect import evaluate_accuracy
    from rpg.zoo.models import build_model

    cfg = EvaluateConfig.from_dict(evaluate_cfg)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    checkpoint_paths = [Path(p) for p in checkpoint_paths]
    generated_paths = [Path(p) for p in generated_paths]
    if not checkpoint_paths:
        raise RPGInputError("no original checkpoints to evaluate", token_dir)

    store = TokenStore(token_dir)
    layout, reference = store.layout, store.reference
    mask = layout.token_mask()
    metas = [load_checkpoint(p)[1] for p in checkpoint_paths]  # cheap enough; also validates the files
    arch, arch_kwargs = metas[0]["arch"], dict(metas[0].get("arch_kwargs") or {})
    if any(m.get("task") is not None for m in metas):
        log.warning("checkpoints carry task vectors: all models are evaluated on the plain validation split")
    states = _state_lookup(store, checkpoint_paths)
    runs = [int(m.get("run", 0)) for m in metas]
    names = [_checkpoint_name(p) for p in checkpoint_paths]

    val = build_dataset(dict(data_cfg), "val")
    labels = dataset_labels(val, batch_size=cfg.batch_size)
    log.info("evaluating zoo %s (%s): %d originals, %d generated, %d validation samples on %s",
             token_dir, arch, len(checkpoint_paths), len(generated_paths), len(labels), dev)  # fmt: skip
    train_set = None

    def train_batches():
        nonlocal train_set
        if train_set is None:
            train_set = build_dataset(dict(data_cfg), "train")
        return make_loader(train_set, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                           workers=int(data_cfg.get("workers", 0) or 0))  # fmt: skip

    def original(i: int) -> dict[str, torch.Tensor]:
        return load_checkpoint(checkpoint_paths[i])[0]

    jobs: list[_Job] = []
    for i, p in enumerate(checkpoint_paths):
        jobs.append(_Job(_row("original", names[i], run=runs[i], state=states[i], step=metas[i].get("step"),
                              path=str(p)), lambda i=i: original(i)))  # fmt: skip
    for p in generated_paths:
        jobs.append(_Job(_row("generated", p.stem, path=str(p)), lambda p=p: _load_generated(p, arch)))

    # noise: the same seeded sources at every level, so levels differ only by the std
    rng = np.random.default_rng(cfg.seed)
    n_src = cfg.noise_models_per_level
    sources = rng.choice(len(names), size=n_src, replace=n_src > len(names)).tolist() if cfg.noise_levels else []
    token_cache: dict[int, torch.Tensor] = {}

    def noisy(src: int, std: float, seed: int) -> dict[str, torch.Tensor]:
        if src not in token_cache:
            token_cache[src] = tokenize(original(src), layout)
        gen = torch.Generator().manual_seed(seed)
        return detokenize(bl.add_token_noise(token_cache[src], std, gen), layout, reference)

    for li, std in enumerate(cfg.noise_levels):
        for j, src in enumerate(sources):
            seed = cfg.seed * 1_000_003 + li * 1_009 + j
            row = _row("noise", f"noise{std:g}_{j}", group=f"noise@{std:g}", level=std, source=names[src],
                       run=runs[src], state=states[src])  # fmt: skip
            jobs.append(_Job(row, lambda s=src, d=std, sd=seed: noisy(s, d, sd)))

    for i, j, pair_type in bl.select_pairs(runs, cfg.interp_pairs, cfg.seed) if cfg.interp_weights else []:
        for w in cfg.interp_weights:
            row = _row("interpolated", f"interp_{i}_{j}@{w:g}", group=f"interpolated@{w:g}", weight=w,
                       source=f"{names[i]}|{names[j]}", pair_type=pair_type,
                       run=runs[i] if pair_type == bl.WITHIN_RUN else None)  # fmt: skip
            jobs.append(_Job(row, lambda i=i, j=j, w=w: bl.interpolate_state_dicts(original(i), original(j), w),
                             recalibrate=True))  # fmt: skip
    jobs.append(_Job(_row("average", "mean_all", source="all"),
                     lambda: bl.average_state_dicts(original(i) for i in range(len(names))), recalibrate=True))  # fmt: skip
    if len(set(runs)) > 1:
        for r in sorted(set(runs)):
            members = [i for i, x in enumerate(runs) if x == r]
            jobs.append(_Job(_row("average", f"mean_run{r}", group="average_within_run", source=f"run{r}", run=r),
                             lambda m=members: bl.average_state_dicts(original(i) for i in m),
                             recalibrate=True))  # fmt: skip

    wrongs: list[torch.Tensor] = []
    flats: list[torch.Tensor] = []  # originals only (float32 [P] each)
    originals_flat: torch.Tensor | None = None
    distances: list[torch.Tensor | None] = []
    n_orig = len(names)
    for job in progress(jobs, desc="evaluate models", total=len(jobs)):
        row = job.row
        state_dict = job.make()
        model = build_model(arch, arch_kwargs)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise RPGInputError(f"state_dict does not fit {arch}: {exc}", row["path"] or row["name"]) from exc
        model.to(dev)
        if job.recalibrate and cfg.bn_recalibrate_batches > 0:
            row["bn_recalibrated"] = bl.recalibrate_batchnorm(
                model, train_batches(), num_batches=cfg.bn_recalibrate_batches, device=dev
            )
        acc, preds = evaluate_accuracy(model, val, device=dev, batch_size=cfg.batch_size)
        wrong = wrong_mask(preds, labels)
        row["accuracy"], row["num_wrong"] = float(acc), int(wrong.sum())
        wrongs.append(wrong)
        final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        flat = flatten_tokens(tokenize(final, layout).to(torch.float64), mask)
        if row["kind"] == "original":
            flats.append(flat.to(torch.float32))
            distances.append(None)
        else:
            if originals_flat is None:
                originals_flat = torch.stack(flats)
            distances.append(rms_distances(flat, originals_flat))
        del model, state_dict, final
        log.debug("%s %s: accuracy %.4f", row["kind"], row["name"], acc)
    if originals_flat is None:
        originals_flat = torch.stack(flats)

    # similarity: max IoU vs originals (originals: vs the others)
    wrong_all = torch.stack(wrongs)
    eye = torch.zeros(len(jobs), n_orig, dtype=torch.bool)
    eye[:n_orig] = torch.eye(n_orig, dtype=torch.bool)
    sim, sim_idx = max_iou(wrong_all, wrong_all[:n_orig], exclude=eye)
    # distances: originals pairwise, others computed above
    dist = torch.empty(len(jobs), n_orig, dtype=torch.float64)
    dist[:n_orig] = pairwise_rms_distances(originals_flat)
    for r, d in enumerate(distances):
        if d is not None:
            dist[r] = d
    near, near_idx = masked_min(dist, exclude=eye)
    for r, job in enumerate(jobs):
        row = job.row
        row["max_iou"] = float(sim[r])
        row["max_iou_original"] = names[int(sim_idx[r])] if sim_idx[r] >= 0 else ""
        row["nearest_distance"] = float(near[r])
        k = int(near_idx[r])
        row["nearest_original"] = names[k] if k >= 0 else ""
        row["nearest_original_index"] = k
        row["nearest_original_run"] = runs[k] if k >= 0 else None

    table = _to_frame([job.row for job in jobs])
    summary = summarize(table)
    summary["settings"] = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "num_val_samples": int(len(labels)),
        "device": str(dev),
        "evaluate": asdict(cfg),
        "noise_space": "normalised tokens (per-layer standardised; BN running_var in log space)",
        "distance": "RMS over non-padding normalised token entries",
        "bn_recalibrated": "interpolated and average models" if cfg.bn_recalibrate_batches else "none",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(table, out_dir / "table.parquet")
    write_table(table, out_dir / "table.csv")
    write_json(summary, out_dir / "summary.json")
    zoo = Path(token_dir).name
    plot_accuracy_vs_similarity(table, out_dir / "accuracy_vs_similarity.png", title=f"{zoo}: accuracy vs similarity")
    train_log = read_train_log(Path(generator_dir) / "train_log.csv") if generator_dir else None
    plot_training_loss(train_log, out_dir / "loss.png", title=f"{zoo}: generator training loss")
    plot_distances(table, out_dir / "distances.png", title=f"{zoo}: distance to the nearest original")
    _log_summary(summary)
    return summary


def _load_generated(path: Path, arch: str) -> dict[str, torch.Tensor]:
    from rpg.zoo.checkpoint import load_checkpoint

    state_dict, meta = load_checkpoint(path)
    if meta.get("arch") not in (None, arch):
        raise RPGInputError(f"generated for arch {meta.get('arch')!r}, zoo is {arch!r}", path)
    return state_dict


def _to_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("level", "weight", "accuracy", "max_iou", "nearest_distance"):
        df[col] = df[col].astype("float64")
    for col in ("num_wrong", "nearest_original_index", "nearest_original_run", "run", "state", "step"):
        df[col] = pd.array([None if v is None else int(v) for v in df[col]], dtype="Int64")
    df["bn_recalibrated"] = df["bn_recalibrated"].astype(bool)
    for col in ("kind", "group", "name", "source", "pair_type", "max_iou_original", "nearest_original", "path"):
        df[col] = df[col].fillna("").astype(str)
    return df


def _log_summary(summary: Mapping[str, Any]) -> None:
    def fmt(d: Mapping[str, Any]) -> str:
        return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())

    log.info("original accuracy: %s", fmt(summary["original_accuracy"]))
    log.info("generated accuracy: %s", fmt(summary["generated_accuracy"]))
    log.info("similarity: original %s | generated %s", fmt(summary["original_similarity"]),
             fmt(summary["generated_similarity"]))  # fmt: skip
    checks = {k: v for k, v in summary["checks"].items() if k != "rules"}
    log.info("checks: %s", fmt(checks))
