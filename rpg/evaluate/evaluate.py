"""Evaluation of one zoo: originals, generated models (RPG, p-diff) and baselines, reported on the test split.

Every model is scored by the zoo's evaluator (:mod:`rpg.evaluate.evaluators`: main metric and failure set) on the
**test** split (what is reported) and on the **probe** split (test plus seeded corruptions, where failure sets are
large enough for similarity to have resolution). For every model the table holds:

* its score on test, its number of failures on test and on probe;
* similarity to the originals: the max IoU of failure sets on the probe split (an original: against the OTHER
  originals), and a continuous functional distance (total variation between output distributions, where the
  evaluator gives them);
* novelty: the RMS distance in the normalised token space to the nearest original, and both again leaving out the
  nearest original's run (leave-one-run-out), so that a model near one run's basin is told from a new one;
* whether it is a copy: within ``2 * evaluate.copy_noise`` of an original (a copy plus noise of std copy_noise is
  that far from its source);
* for a generated model, the baseline model that dominates it (at least as accurate and less similar), if any.

Baselines built from the originals: Gaussian noise on the normalised tokens (levels extended until their
similarity falls below the generated models'), interpolation of seeded pairs over a sweep of weights and averages
(BatchNorm statistics re-estimated), and samples of a diagonal Gaussian fitted per run to the run's checkpoints in
the normalised space (std scales extended like the noise levels). With ``evaluate.bn_recalibrate_generated`` the
generated models of a BatchNorm zoo are scored a second time with their running statistics re-estimated on
training batches (kind ``generated_bn``): a separate row, so that a gap that lies in the generated statistics rather
than the weights shows, while the models as generated stay what is reported as "generated".
:mod:`rpg.evaluate.summary` turns the table into summary.json (equal-n statistics with bootstrap intervals,
diversity, novelty, resolution, the frontiers with their intervals, dominance and the checks).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpg.config import DataConfig, EvaluateConfig
from rpg.errors import RPGInputError
from rpg.evaluate import baselines as bl
from rpg.evaluate.evaluators import Evaluator, Outcome, build_evaluator
from rpg.evaluate.frontier import dominated_by, levels_needed
from rpg.evaluate.plots import plot_accuracy_vs_similarity, plot_distances, plot_training_loss, read_train_log
from rpg.evaluate.similarity import flatten_tokens, iou_matrix, pairwise_rms_distances, rms_distances, tv_distances
from rpg.evaluate.summary import summarize
from rpg.io import read_safetensors_metadata, write_json, write_table
from rpg.runtime import fault_point, progress, resolve_device
from rpg.tokens.store import TokenStore
from rpg.tokens.tokenizer import detokenize, tokenize
from rpg.zoo.checkpoint import load_checkpoint
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

TABLE_COLUMNS = [
    "kind", "group", "name", "source", "pair_type", "level", "weight", "score", "metrics", "failures_test",
    "failures_probe", "max_iou", "max_iou_original", "functional_distance", "nearest_distance", "nearest_original",
    "nearest_original_index", "nearest_original_run", "loro_max_iou", "loro_distance", "copy", "dominated_by",
    "in_summary", "run", "state", "step", "bn_recalibrated", "path",
]  # fmt: skip
OUTPUTS_LIMIT_BYTES = 1 << 30  # keep the originals' probe outputs (for functional distances) up to this size


@dataclass
class _Job:
    """One model to evaluate: its table row (partly filled) and how to build its state_dict."""

    row: dict[str, Any]
    make: Callable[[], dict[str, torch.Tensor]]
    recalibrate: bool = False


@dataclass
class _Results:
    """What measuring the jobs gives, aligned with the jobs (originals first)."""

    test_failures: list[torch.Tensor]
    probe_failures: list[torch.Tensor]
    flats: list[torch.Tensor | None]  # normalised parameters (None: non-finite weights)
    outputs: list[torch.Tensor | None]  # probe outputs (originals only, when kept)
    functional: list[float | None]
    # each row's RMS distances to the originals and the originals' functional distances to one another: computed once
    # per row, not again at every widening of the frontiers
    distances: list[torch.Tensor] = field(default_factory=list)
    original_functional: list[float | None] | None = None


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
        self.steps = [int(m.get("step") or 0) for m in self.metas]
        self.states = _state_lookup(store, self.paths)
        self.layout, self.reference = store.layout, store.reference
        self._tokens: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def has_batchnorm(self) -> bool:
        return any(name.endswith("running_var") for name in self.layout.names)

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

    def equal_n_subsample(self, n: int, seed: int) -> list[int]:
        """``n`` originals spread evenly over the runs (as equal a share per run as possible), each run's share
        drawn one per equal stratum of its checkpoints in step order (seeded)."""
        runs = sorted(set(self.runs))
        rng = np.random.default_rng(seed)
        n = min(n, len(self))
        share = {r: n // len(runs) + (i < n % len(runs)) for i, r in enumerate(runs)}
        chosen: list[int] = []
        for r in runs:
            members = sorted((i for i, x in enumerate(self.runs) if x == r), key=lambda i: (self.steps[i], i))
            k = min(share[r], len(members))
            if k == 0:
                continue
            bounds = np.linspace(0, len(members), k + 1)
            for a, b in zip(bounds[:-1], bounds[1:]):
                lo, hi = int(np.floor(a)), max(int(np.floor(a)) + 1, int(np.floor(b)))
                chosen.append(members[int(rng.integers(lo, hi))])
        return sorted(chosen)


def _noise_jobs(zoo: _Originals, levels: Sequence[float], cfg: EvaluateConfig, first_level: int) -> list[_Job]:
    """Noise baselines: the same seeded originals at every level, so the levels differ only by the std."""
    n_src = cfg.noise_models_per_level
    rng = np.random.default_rng(cfg.seed)
    sources = rng.choice(len(zoo), size=n_src, replace=n_src > len(zoo)).tolist()
    jobs = []
    for li, std in enumerate(levels, start=first_level):
        for j, src in enumerate(sources):
            seed = cfg.seed * 1_000_003 + li * 1_009 + j
            row = _row("noise", f"noise{std:g}_{j}", group=f"noise@{std:g}", level=std, source=zoo.names[src],
                       run=zoo.runs[src], state=zoo.states[src])  # fmt: skip
            jobs.append(_Job(row, lambda s=src, d=std, sd=seed: zoo.noisy(s, d, sd)))
    return jobs


class _RunGaussians:
    """A diagonal Gaussian per run, fitted to the run's checkpoints in the normalised space (per-parameter mean and
    std over the run's original flats): the generative baseline of a per-parameter mean and variance."""

    def __init__(self, zoo: _Originals, flats: Sequence[torch.Tensor]) -> None:
        self.zoo, self.mask = zoo, zoo.layout.token_mask()
        self.params: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for r in sorted(set(zoo.runs)):
            members = torch.stack([flats[i].double() for i, x in enumerate(zoo.runs) if x == r])
            if len(members) > 1:  # a run of one checkpoint has no spread
                self.params[r] = (members.mean(0), members.std(0, unbiased=False))

    def sample(self, run: int, scale: float, seed: int) -> dict[str, torch.Tensor]:
        mean, std = self.params[run]
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        tokens = torch.full(self.mask.shape, float("nan"), dtype=torch.float32)
        tokens[self.mask] = (mean + scale * std * noise).float()
        return detokenize(tokens, self.zoo.layout, self.zoo.reference)


def _gaussian_jobs(gauss: _RunGaussians, scales: Sequence[float], cfg: EvaluateConfig, first: int) -> list[_Job]:
    """Gaussian baselines: ``cfg.gaussian_models_per_scale`` samples per scale, the runs taken in turn."""
    runs = sorted(gauss.params)
    jobs = []
    for si, scale in enumerate(scales, start=first):
        for j in range(cfg.gaussian_models_per_scale if runs else 0):
            run, seed = runs[j % len(runs)], cfg.seed * 1_000_033 + si * 1_013 + j
            row = _row("gaussian", f"gaussian{scale:g}_{j}", group=f"gaussian@{scale:g}", level=scale,
                       source=f"run{run}", run=run)  # fmt: skip
            jobs.append(_Job(row, lambda r=run, s=scale, sd=seed: gauss.sample(r, s, sd)))
    return jobs


def _interp_jobs(zoo: _Originals, weights: Sequence[float], cfg: EvaluateConfig) -> list[_Job]:
    """Interpolations of the seeded pairs (half across runs, half within a run) at ``weights``."""
    jobs = []
    for i, j, pair_type in bl.select_pairs(zoo.runs, cfg.interp_pairs, cfg.seed) if weights else []:
        for w in weights:
            row = _row("interpolated", f"interp_{i}_{j}@{w:g}", group=f"interpolated_{pair_type}@{w:g}", weight=w,
                       source=f"{zoo.names[i]}|{zoo.names[j]}", pair_type=pair_type,
                       run=zoo.runs[i] if pair_type == bl.WITHIN_RUN else None)  # fmt: skip
            jobs.append(_Job(row, lambda i=i, j=j, w=w: zoo.interpolate(i, j, w), recalibrate=True))
    return jobs


def _plan(
    zoo: _Originals, generated_paths: Sequence[Path], cfg: EvaluateConfig, pdiff_paths: Sequence[Path] = ()
) -> list[_Job]:
    """All models to evaluate, originals first: originals, generated, p-diff, (generated with BatchNorm statistics
    re-estimated, when asked for and the zoo has BatchNorm), noise, interpolated, average."""
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
        )  # fmt: skip
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
    if _recalibrates_generated(cfg, zoo):
        for job in [j for j in jobs if j.row["kind"] == "generated"]:  # the same weights, statistics from data
            row = {**job.row, "kind": "generated_bn", "group": "generated_bn", "name": f"{job.row['name']}_bn"}
            jobs.append(_Job(row, job.make, recalibrate=True))
    jobs += _noise_jobs(zoo, cfg.noise_levels, cfg, 0)

    jobs += _interp_jobs(zoo, cfg.interp_weights, cfg)
    jobs.append(_Job(_row("average", "mean_all", source="all"), lambda: zoo.average(range(len(zoo))), recalibrate=True))
    if len(set(zoo.runs)) > 1:
        for r in sorted(set(zoo.runs)):
            members = [i for i, x in enumerate(zoo.runs) if x == r]
            row = _row("average", f"mean_run{r}", group="average_within_run", source=f"run{r}", run=r)
            jobs.append(_Job(row, lambda m=members: zoo.average(m), recalibrate=True))
    return jobs


def _finite(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if v.is_floating_point())


def _measure(
    jobs: Sequence[_Job], zoo: _Originals, evaluator: Evaluator, cfg: EvaluateConfig, device: torch.device,
    results: _Results,
) -> None:  # fmt: skip
    """Evaluate every job on test and probe (fills score, metrics, failure counts, bn_recalibrated), appending the
    failure sets, the normalised parameters and the originals' probe outputs to ``results``."""
    n_orig = len(zoo)
    mask = zoo.layout.token_mask()
    model = build_model(zoo.arch, zoo.arch_kwargs).to(device)  # one instance; every job loads its whole state
    for job in progress(jobs, desc="evaluate models", total=len(jobs)):
        row = job.row
        try:
            model.load_state_dict(job.make(), strict=True)
        except RuntimeError as exc:
            raise RPGInputError(f"state_dict does not fit {zoo.arch}: {exc}", row["path"] or row["name"]) from exc
        if job.recalibrate and cfg.bn_recalibrate_batches > 0:
            batches = evaluator.calibration_batches(seed=cfg.seed, batch_size=cfg.batch_size)
            row["bn_recalibrated"] = bl.recalibrate_batchnorm(
                model, batches, num_batches=cfg.bn_recalibrate_batches, device=device
            )
        test: Outcome = evaluator.evaluate(model, "test")
        probe: Outcome = evaluator.evaluate(model, "probe")
        row.update(score=test.score, metrics=json.dumps(test.metrics, sort_keys=True),
                   failures_test=int(test.failures.sum()), failures_probe=int(probe.failures.sum()))  # fmt: skip
        results.test_failures.append(test.failures)
        results.probe_failures.append(probe.failures)
        final = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        is_original = len(results.flats) < n_orig
        outputs = probe.outputs
        keep = is_original and outputs is not None and outputs.numel() * 2 * n_orig <= OUTPUTS_LIMIT_BYTES
        results.outputs.append(outputs.half() if keep else None)
        if is_original or _finite(final):
            results.flats.append(flatten_tokens(tokenize(final, zoo.layout, source=row["path"] or row["name"]), mask))
        else:
            log.warning("%s %s has non-finite weights: its distances are NaN", row["kind"], row["name"])
            results.flats.append(None)
        originals_out = [o for o in results.outputs[:n_orig] if o is not None]
        if outputs is not None and len(originals_out) == n_orig and not is_original:
            results.functional.append(float(tv_distances(outputs, torch.stack(originals_out)).min()))
        else:
            results.functional.append(None)
        log.debug("%s %s: %s %.4f", row["kind"], row["name"], test.main, test.score)
        fault_point("evaluate", len(results.flats))


def _fill_similarity(jobs: Sequence[_Job], zoo: _Originals, results: _Results, copy_radius: float) -> None:
    """Similarity, distances (also leaving out the nearest original's run), copy flags (originals: vs the OTHERS)."""
    n_orig, n = len(zoo), len(jobs)
    _add_distances(results, n_orig, n)
    dist = torch.stack(results.distances[:n])
    iou = iou_matrix(torch.stack(results.probe_failures), torch.stack(results.probe_failures[:n_orig]))
    runs = torch.tensor(zoo.runs)
    self_pairs = torch.zeros(n, n_orig, dtype=torch.bool)
    self_pairs[:n_orig] = torch.eye(n_orig, dtype=torch.bool)
    if results.original_functional is None:
        results.original_functional = _original_functional(results.outputs[:n_orig])
    for r, job in enumerate(jobs):
        d = dist[r].masked_fill(self_pairs[r], float("nan"))
        s = iou[r].masked_fill(self_pairs[r], float("nan"))
        row = job.row
        if torch.isnan(d).all():
            row.update(nearest_distance=None, nearest_original="", nearest_original_index=-1)
            near_run = zoo.runs[r] if r < n_orig else None
        else:
            k = int(torch.nan_to_num(d, nan=float("inf")).argmin())
            near_run = zoo.runs[r] if r < n_orig else zoo.runs[k]
            row.update(nearest_distance=float(d[k]), nearest_original=zoo.names[k], nearest_original_index=k,
                       nearest_original_run=zoo.runs[k])  # fmt: skip
        if not torch.isnan(s).all():
            k = int(torch.nan_to_num(s, nan=-1.0).argmax())
            row.update(max_iou=float(s[k]), max_iou_original=zoo.names[k])
        if near_run is not None:
            other = runs != near_run
            if other.any():
                row["loro_distance"] = _nanmin(d[other])
                row["loro_max_iou"] = _nanmax(s[other])
        if r < n_orig and results.original_functional[r] is not None:
            row["functional_distance"] = results.original_functional[r]
        elif r >= n_orig:
            row["functional_distance"] = results.functional[r]
        row["copy"] = None if row["nearest_distance"] is None else bool(row["nearest_distance"] <= copy_radius)


def _add_distances(results: _Results, n_orig: int, n: int) -> None:
    """Append the RMS distances to every original [n_orig] of rows len(results.distances) .. n - 1 (NaN rows for
    non-finite weights; an original's own entry is 0)."""
    if len(results.distances) >= n:
        return
    originals = torch.stack([f.float() for f in results.flats[:n_orig]]).double()  # float64 once, not per row
    if not results.distances:
        results.distances.extend(pairwise_rms_distances(originals).unbind(0))
    nan = torch.full((n_orig,), float("nan"), dtype=torch.float64)
    for r in range(len(results.distances), n):
        flat = results.flats[r]
        results.distances.append(nan if flat is None else rms_distances(flat, originals))


def _original_functional(outputs: Sequence[torch.Tensor | None]) -> list[float | None]:
    """Each original's functional distance to the nearest other original (None without every original's outputs)."""
    if len(outputs) < 2 or any(o is None for o in outputs):
        return [None] * len(outputs)
    stacked = torch.stack(list(outputs))
    return [float(tv_distances(o, torch.cat([stacked[:i], stacked[i + 1 :]])).min()) for i, o in enumerate(outputs)]


def _nanmin(x: torch.Tensor) -> float | None:
    x = x[~torch.isnan(x)]
    return float(x.min()) if x.numel() else None


def _nanmax(x: torch.Tensor) -> float | None:
    x = x[~torch.isnan(x)]
    return float(x.max()) if x.numel() else None


def generated_pairs(jobs: Sequence[_Job], results: _Results, kind: str) -> dict[str, Any]:
    """Pairwise relations among the models of ``kind``: RMS distances, probe-failure IoU, equal probe failure sets
    (``same_failures``; the probe split, where every model fails often enough for equal sets to mean the same
    function, not the test split, where accurate models share a dozen failures by chance)."""
    idx = [r for r, j in enumerate(jobs) if j.row["kind"] == kind]
    if not idx:
        return {"names": [], "states": [], "distance": [], "iou": [], "same_failures": []}
    finite = [results.flats[r] is not None for r in idx]
    flats = [results.flats[r].float() if f else None for r, f in zip(idx, finite)]
    dist = torch.full((len(idx), len(idx)), float("nan"), dtype=torch.float64)
    ok = [i for i, f in enumerate(finite) if f]
    if ok:
        sub = pairwise_rms_distances(torch.stack([flats[i] for i in ok]))
        for a, i in enumerate(ok):
            for b, j in enumerate(ok):
                dist[i, j] = sub[a, b]
    probe = torch.stack([results.probe_failures[r] for r in idx])
    same = (probe[:, None, :] == probe[None, :, :]).all(-1)
    return {
        "names": [jobs[r].row["name"] for r in idx],
        "states": [jobs[r].row["state"] for r in idx],
        "distance": [[None if math.isnan(v) else v for v in row] for row in dist.tolist()],  # NaN: non-finite weights
        "iou": iou_matrix(probe, probe).tolist(),
        "same_failures": same.tolist(),
    }


def consecutive_spacing(zoo: _Originals, results: _Results) -> float | None:
    """Median RMS distance between consecutive checkpoints (in step order) of one run: the zoo's finest spacing."""
    gaps = []
    for r in sorted(set(zoo.runs)):
        members = sorted((i for i, x in enumerate(zoo.runs) if x == r), key=lambda i: (zoo.steps[i], i))
        for a, b in zip(members, members[1:]):
            gaps.append(float(rms_distances(results.flats[a].float(), results.flats[b].float()[None])[0]))
    return float(np.median(gaps)) if gaps else None


def evaluate_zoo(
    *,
    data_cfg: DataConfig | Mapping[str, Any],
    token_dir: str | Path,
    checkpoint_paths: Sequence[str | Path],
    generated_paths: Sequence[str | Path],
    generator_dir: str | Path | None,
    pdiff_paths: Sequence[str | Path] = (),
    out_dir: str | Path,
    evaluate_cfg: Mapping[str, Any] | EvaluateConfig | None,
    device: str = "auto",
    evaluator: Evaluator | None = None,
) -> dict[str, Any]:
    """Evaluate originals, generated models and baselines of one zoo (module docstring); write table.csv/.parquet,
    pairs.json, summary.json and the plots into ``out_dir``; return the summary.

    ``evaluator``: default ``build_evaluator(evaluate.evaluator, data=data_cfg, ...)``.
    """
    cfg = EvaluateConfig.parse(evaluate_cfg, "evaluate")
    dev = resolve_device(device)
    if not checkpoint_paths:
        raise RPGInputError("no original checkpoints to evaluate", token_dir)
    if evaluator is None:
        evaluator = build_evaluator(cfg.evaluator, data=data_cfg, device=dev, batch_size=cfg.batch_size)
    zoo = _Originals([Path(p) for p in checkpoint_paths], TokenStore(token_dir))
    if any(m.get("task") is not None for m in zoo.metas):
        log.warning("checkpoints carry task vectors: all models are evaluated on the plain test split")
    jobs = _plan(zoo, [Path(p) for p in generated_paths], cfg, [Path(p) for p in pdiff_paths])
    n_gen = len(generated_paths) + len(pdiff_paths)
    log.info("evaluating %s (%s, %s evaluator) on %s: %d originals, %d generated, %d baselines",
             token_dir, zoo.arch, evaluator.name, dev, len(zoo), n_gen, len(jobs) - len(zoo) - n_gen)  # fmt: skip
    results = _Results([], [], [], [], [])
    _measure(jobs, zoo, evaluator, cfg, dev, results)
    copy_radius = 2.0 * cfg.copy_noise

    # the noise and Gaussian frontiers must reach below the generated models' similarity: more levels until they do
    gauss = _RunGaussians(zoo, results.flats[: len(zoo)]) if cfg.gaussian_models_per_scale else None
    if gauss is not None and not gauss.params:
        log.warning("no run has two checkpoints or more: no Gaussian baseline")
    levels, scales = list(cfg.noise_levels), list(cfg.gaussian_scales) if gauss and gauss.params else []
    weights = list(cfg.interp_weights)
    extra = _gaussian_jobs(gauss, scales, cfg, 0) if scales else []
    if not extra:
        _fill_similarity(jobs, zoo, results, copy_radius)
    while True:
        if extra:
            _measure(extra, zoo, evaluator, cfg, dev, results)
            jobs = [*jobs, *extra]
            _fill_similarity(jobs, zoo, results, copy_radius)
        rows = [j.row for j in jobs]
        more = {
            "noise": levels_needed(rows, "noise", levels, cap=cfg.frontier_max_level),
            "gaussian": levels_needed(rows, "gaussian", scales, cap=cfg.gaussian_max_scale, floor=1 / 64),
            "interpolated": levels_needed(rows, "interpolated", weights, key="weight", cap=0.5, floor=0.005),
        }  # interpolation only ever halves its smallest weight: towards the originals
        if not any(more.values()):
            break
        log.info("the frontiers do not cover the generated models' similarity yet: adding %s",
                 {k: v for k, v in more.items() if v})  # fmt: skip
        extra = (_noise_jobs(zoo, more["noise"], cfg, len(levels)) + _interp_jobs(zoo, more["interpolated"], cfg)
                 + (_gaussian_jobs(gauss, more["gaussian"], cfg, len(scales)) if more["gaussian"] else []))  # fmt: skip
        levels += more["noise"]
        scales += more["gaussian"]
        weights += more["interpolated"]

    n_generated = sum(j.row["kind"] == "generated" for j in jobs)
    equal_n = cfg.equal_n or n_generated or len(zoo)
    for i in zoo.equal_n_subsample(equal_n, cfg.seed):
        jobs[i].row["in_summary"] = True
    for job in jobs:
        job.row["in_summary"] = bool(job.row["in_summary"])
    table = _to_frame([job.row for job in jobs])
    table["dominated_by"] = dominated_by(table)
    pairs = {kind: generated_pairs(jobs, results, kind) for kind in ("generated", "pdiff")}
    pairs["spacing"] = consecutive_spacing(zoo, results)
    failures = torch.stack(results.test_failures).numpy() if results.test_failures else None
    train_log = read_train_log(Path(generator_dir) / "train_log.csv") if generator_dir else None
    summary = summarize(table, pairs=pairs, cfg=cfg, metric=evaluator.main_metric or "score", test_failures=failures,
                        train_log=train_log)  # fmt: skip
    summary["settings"] = {
        "arch": zoo.arch,
        "arch_kwargs": zoo.arch_kwargs,
        "evaluator": evaluator.name,
        "device": str(dev),
        "evaluate": cfg.to_dict(),
        "noise_levels": levels,
        "gaussian_scales": scales,
        "interp_weights": weights,
        "noise_space": "normalised tokens (per-layer standardised; BN running_var in log space)",
        "distance": "RMS over non-padding normalised token entries",
        "similarity": "max IoU of failure sets on the probe split (test + seeded corruptions)",
        "functional_distance": "min over originals of the mean total variation between probe output distributions",
        "bn_recalibrated": _recalibrated_kinds(cfg, jobs),
    }
    out = Path(out_dir)
    write_json(pairs, out / "pairs.json")
    _write_outputs(table, summary, out, title=Path(token_dir).name, train_log=train_log)
    _log_summary(summary)
    return summary


def _recalibrates_generated(cfg: EvaluateConfig, zoo: _Originals) -> bool:
    """Whether the generated models are scored again with re-estimated BatchNorm statistics (kind generated_bn)."""
    if cfg.bn_recalibrate_generated and not zoo.has_batchnorm:
        log.warning("evaluate.bn_recalibrate_generated: %s has no BatchNorm, nothing to re-estimate", zoo.arch)
    return cfg.bn_recalibrate_generated and cfg.bn_recalibrate_batches > 0 and zoo.has_batchnorm


def _recalibrated_kinds(cfg: EvaluateConfig, jobs: Sequence[_Job]) -> str:
    if not cfg.bn_recalibrate_batches:
        return "none"
    if any(j.row["kind"] == "generated_bn" for j in jobs):
        return "interpolated and average models; generated models again as kind generated_bn"
    return "interpolated and average models"


def _write_outputs(table, summary: Mapping[str, Any], out_dir: Path, *, title: str, train_log) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(table, out_dir / "table.parquet")
    write_table(table, out_dir / "table.csv")
    write_json(summary, out_dir / "summary.json")
    metric = summary.get("metric", "score")
    plot_accuracy_vs_similarity(table, out_dir / "accuracy_vs_similarity.png", title=f"{title}: {metric} vs similarity",
                                metric=metric, frontiers=summary.get("frontiers"))  # fmt: skip
    plot_training_loss(train_log, out_dir / "loss.png", title=f"{title}: generator training loss")
    plot_distances(table, out_dir / "distances.png", title=f"{title}: distance to the nearest original",
                   copy_radius=summary.get("novelty", {}).get("copy_radius"))  # fmt: skip


def _to_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for col in ("level", "weight", "score", "max_iou", "functional_distance", "nearest_distance", "loro_max_iou",
                "loro_distance"):  # fmt: skip
        df[col] = df[col].astype("float64")
    for col in ("failures_test", "failures_probe", "nearest_original_index", "nearest_original_run", "run", "state",
                "step"):  # fmt: skip
        df[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    df["copy"] = pd.array([None if v is None else bool(v) for v in df["copy"]], dtype="boolean")
    for col in ("bn_recalibrated", "in_summary"):
        df[col] = df[col].astype(bool)
    for col in ("kind", "group", "name", "source", "pair_type", "metrics", "max_iou_original", "nearest_original",
                "dominated_by", "path"):  # fmt: skip
        df[col] = df[col].fillna("").astype(str)
    return df


def _log_summary(summary: Mapping[str, Any]) -> None:
    def fmt(d: Mapping[str, Any]) -> str:
        return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items() if k != "ci95")

    metric = summary.get("metric", "score")
    for who in ("original", "generated", "generated_bn"):
        if who not in summary:
            continue
        block = summary.get(who) or {}
        log.info("%s (n=%s) %s: %s", who, block.get("n"), metric, fmt(block.get("score") or {}))
    log.info("generated diversity: %s", fmt(summary.get("generated_diversity") or {}))
    checks = {k: v for k, v in summary["checks"].items() if k != "rules"}
    log.info("checks: %s", fmt(checks))
    diagnosis = summary.get("diagnosis") or {}
    if diagnosis.get("status") not in (None, "ok") or (diagnosis.get("batchnorm") or {}).get("message"):
        log.warning("diagnosis (%s): %s", diagnosis["status"], diagnosis["message"])
