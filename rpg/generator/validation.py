"""Validation by sampling during training, and the stopping rule of ``train.steps: auto``.

The loss says little about whether sampled models work. :class:`SampleValidator` samples ``train.validate_models``
models from the generator's current weights with a fast DDIM sampler (``train.validate_steps`` steps), scores them
on the **val** split with the zoo's evaluator and measures, in the normalised token space, how far each lies from the
nearest original and how many of them are distinct models (the evaluation's diversity rule,
:func:`rpg.evaluate.summary.diversity`, with val failure sets in place of test ones). Model i of every validation
draws its permutation state (spread evenly over the states) and its noise from its own ``torch.Generator`` seeded
``train.validate_seed + i``: the same noise at every validation, so that two validations differ by the generator
only, and no random stream of training is touched (the trainer also forks the global RNG around it).

The originals' val score (the mean over up to :data:`TARGET_ORIGINALS` checkpoints spread over runs and steps, scored
by the same evaluator) is the target. :class:`AutoStop` turns the validation scores into a decision: stop when
``patience`` consecutive validations reach the target within ``val_tolerance`` ("reached"), or when ``patience``
validations brought no new best by more than ``val_min_delta`` ("plateau") once the best has left the starting level
(``plateau_after``: scores flat at chance level before the generator begins to work are not a plateau); the generator
kept is the one of the best validation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from rpg.evaluate.evaluators import Evaluator
from rpg.evaluate.similarity import iou_matrix, pairwise_rms_distances, rms_distances
from rpg.evaluate.summary import diversity
from rpg.generator.samplers import build_sampler
from rpg.optim import linear_cooldown
from rpg.tokens.store import TokenStore
from rpg.tokens.tokenizer import detokenize
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

TARGET_ORIGINALS = 10  # originals scored for the target (spread over runs and steps), like the evaluation's equal n
VAL_COLUMNS = ("val_score", "val_target", "val_distinct", "val_nearest_distance", "val_time")
REFERENCE_CACHE_MB = 1024  # originals' normalised parameters are kept in memory up to this size, else streamed


@dataclass
class AutoStop:
    """The stopping rule of ``train.steps: auto`` over a sequence of validation scores (higher is better).

    :meth:`update` takes each validation's (step, score) and says whether it is a new best and why to stop, if so:
    ``reached`` (``patience`` consecutive scores at least ``target - tolerance``), ``plateau`` (``patience``
    validations since the last one that beat the best by more than ``min_delta``, once the best has closed
    ``plateau_after`` of the gap from the first score to the target); the first reason stays. The best
    is the highest score (ties: the earlier step). With ``train.cooldown`` the trainer goes on from the step the rule
    fired to ``cooldown_end`` while the lr decays (:meth:`begin_cooldown`; :meth:`lr_factor` is the schedule). Its
    state (:meth:`state_dict`) goes into the resumable training state.
    """

    target: float | None
    tolerance: float
    patience: int
    min_delta: float
    plateau_after: float = 0.0
    steps: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    reached_run: int = 0  # consecutive validations within the tolerance of the target
    since_best: int = 0  # validations since the last that improved the best by more than min_delta
    reason: str | None = None
    cooldown_start: int | None = None  # the step the rule fired at, when a cool-down follows it
    cooldown_end: int | None = None
    cooldown_factor: float | None = None  # the lr factor at cooldown_start

    def update(self, step: int, score: float) -> tuple[bool, str | None]:
        """Record one validation; returns (new best, reason to stop or None)."""
        score = float(score)
        self.steps.append(int(step))
        self.scores.append(score)
        finite = math.isfinite(score)
        new_best = finite and (self.best_score is None or score > self.best_score)
        improved = finite and (self.best_score is None or score > self.best_score + self.min_delta)
        if new_best:
            self.best_step, self.best_score = int(step), score
        self.since_best = 0 if improved else self.since_best + 1
        reached = finite and self.target is not None and score >= self.target - self.tolerance
        self.reached_run = self.reached_run + 1 if reached else 0
        if self.reason is None and self.reached_run >= self.patience:
            self.reason = "reached"
        elif self.reason is None and self.since_best >= self.patience and self.left_start():
            self.reason = "plateau"
        return new_best, self.reason

    def left_start(self) -> bool:
        """True once the best score has closed ``plateau_after`` of the gap from the first finite score to the target
        (always without a target, or when the first score was already within the tolerance of it)."""
        if self.target is None or self.plateau_after <= 0:
            return True
        first = next((s for s in self.scores if math.isfinite(s)), None)
        if first is None or self.best_score is None:
            return False
        gap = self.target - first
        return gap <= self.tolerance or self.best_score - first >= self.plateau_after * gap

    def begin_cooldown(self, start: int, end: int, factor: float) -> None:
        """Train on from step ``start`` to ``end`` while the lr factor decays linearly from ``factor``."""
        self.cooldown_start, self.cooldown_end, self.cooldown_factor = int(start), int(end), float(factor)

    def cooling(self, step: int) -> bool:
        """True while a cool-down is under way before ``step`` (steps done) reaches its end."""
        return self.cooldown_end is not None and step < self.cooldown_end

    def lr_factor(self, step: int, schedule: Callable[[int], float], min_ratio: float) -> float:
        """The lr factor at ``step``: ``schedule``'s, then the cool-down's once it has begun."""
        if self.cooldown_start is None or step < self.cooldown_start:
            return schedule(step)
        return linear_cooldown(step, start=self.cooldown_start, end=self.cooldown_end, factor=self.cooldown_factor,
                               min_ratio=min_ratio)  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("target", "steps", "scores", "best_step", "best_score", "reached_run",
                                              "since_best", "reason", "cooldown_start", "cooldown_end",
                                              "cooldown_factor")}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, list(value) if isinstance(value, list) else value)


def validation_states(num_models: int, num_states: int) -> list[int]:
    """Permutation states of the validation models: spread evenly over the states (every run when k >= runs)."""
    return [(i * num_states) // num_models for i in range(num_models)]


@torch.no_grad()
def sample_validation_models(generator: nn.Module, *, num_models: int, sampling_steps: int, seed: int,
                             device: torch.device | str = "cpu", chunk_tokens: int = 256) -> torch.Tensor:  # fmt: skip
    """The tokens [num_models, L, k] (float32, CPU, NaN at padding) of one validation's models: DDIM with
    ``sampling_steps`` steps, model i in permutation state ``validation_states(...)[i]`` with noise seeded
    ``seed + i``."""
    sampler = build_sampler("ddim", schedule=generator.schedule, steps=sampling_steps)
    states = validation_states(num_models, generator.permutation.num_states)
    gens = [torch.Generator(device).manual_seed(seed + i) for i in range(num_models)]
    tokens = torch.empty(num_models, generator.num_tokens, generator.token_size)
    for first, x in generator.sample_batch(states=states, sampler=sampler, generators=gens, chunk_tokens=chunk_tokens):
        tokens[:, first : first + x.shape[1]] = x
    return tokens


def _spread(index, count: int) -> list[int]:
    """Up to ``count`` rows of the token index spread evenly over its (run, step) order."""
    order = index.sort_values(["run", "step"], kind="stable").index.to_list()
    if len(order) <= count:
        return [int(r) for r in order]
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(int))
    return [int(order[i]) for i in picks]


class SampleValidator:
    """Scores models sampled from a generator on the val split (module docstring).

    ``evaluator``: the zoo's evaluator (:func:`rpg.evaluate.evaluators.build_evaluator`); ``make_model``: builds one
    instance of the zoo's architecture (default: ``build_model`` of the store's arch), loaded with each model's weights.
    """

    def __init__(
        self,
        *,
        store: TokenStore,
        evaluator: Evaluator,
        num_models: int = 4,
        sampling_steps: int = 10,
        seed: int = 0,
        device: torch.device | str = "cpu",
        chunk_tokens: int = 256,
        make_model: Callable[[], nn.Module] | None = None,
    ) -> None:
        self.store, self.layout, self.evaluator = store, store.layout, evaluator
        self.num_models, self.sampling_steps, self.seed = int(num_models), int(sampling_steps), int(seed)
        self.device, self.chunk_tokens = torch.device(device), int(chunk_tokens)
        meta = store.meta
        self._make_model = make_model or (lambda: build_model(meta["arch"], dict(meta.get("arch_kwargs") or {})))
        self._net: nn.Module | None = None
        self._mask = self.layout.token_mask()
        self._reference = store.reference
        self._flats: torch.Tensor | None = None
        self._target: float | None = None
        self._spacing: float | None | bool = False  # False: not computed yet

    # -- the originals -------------------------------------------------------------------------------------------
    def _score(self, state_dict: Mapping[str, torch.Tensor]):
        if self._net is None:
            self._net = self._make_model().to(self.device)
        self._net.load_state_dict(state_dict, strict=True)
        return self.evaluator.evaluate(self._net, "val")

    @property
    def target(self) -> float:
        """The originals' mean val score (computed once)."""
        if self._target is None:
            rows = _spread(self.store.index, TARGET_ORIGINALS)
            scores = [self._score(self.store.checkpoint_state_dict(r)).score for r in rows]
            self._target = float(np.mean(scores))
            log.info("validation target: the originals' val score %.4f (mean of %d checkpoints, %s)",
                     self._target, len(rows), self.evaluator.name)  # fmt: skip
        return self._target

    def _flat(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[self._mask].float()

    def _reference_blocks(self):
        """The originals' normalised parameters [n, P] in blocks (one cached block when small enough)."""
        n, p = len(self.store), int(self._mask.sum())
        if self._flats is not None:
            yield self._flats
            return
        cache = n * p * 4 <= REFERENCE_CACHE_MB * 2**20
        rows = n if cache else max(1, (256 * 2**20) // max(1, self.layout.num_tokens * self.layout.token_size * 4))
        blocks = []
        for start in range(0, n, rows):
            tokens = self.store.tokens(range(start, min(n, start + rows)), dtype=torch.float32)
            block = torch.stack([self._flat(t) for t in tokens])
            if cache:
                blocks.append(block)
            yield block
        if cache:
            self._flats = torch.cat(blocks)

    def _nearest(self, flats: list[torch.Tensor]) -> list[float]:
        best = [math.inf] * len(flats)
        for block in self._reference_blocks():
            for i, f in enumerate(flats):
                if bool(torch.isfinite(f).all()):
                    best[i] = min(best[i], float(rms_distances(f, block).min()))
        return [b if math.isfinite(b) else math.nan for b in best]

    @property
    def spacing(self) -> float | None:
        """Median RMS distance between consecutive checkpoints of one run (the evaluation's duplicate radius)."""
        if self._spacing is False:
            index, gaps = self.store.index, []
            for _, rows in index.sort_values(["run", "step"], kind="stable").groupby("run", sort=True):
                rows = rows.index.to_list()
                for a, b in zip(rows, rows[1:]):
                    ta, tb = self.store.tokens([a, b], dtype=torch.float32)
                    gaps.append(float(rms_distances(self._flat(ta), self._flat(tb)[None])[0]))
            self._spacing = float(np.median(gaps)) if gaps else None
        return self._spacing

    # -- one validation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> dict[str, Any]:
        """Sample, score and measure ``validate_models`` models of ``generator`` (an RPGModel on its device)."""
        start_time = time.perf_counter()
        target = self.target
        k = self.num_models
        tokens = sample_validation_models(generator, num_models=k, sampling_steps=self.sampling_steps, seed=self.seed,
                                          device=self.device, chunk_tokens=self.chunk_tokens)  # fmt: skip
        states = validation_states(k, generator.permutation.num_states)
        scores, failures, flats = [], [], []
        for b in range(k):
            flats.append(self._flat(tokens[b]))
            outcome = self._score(detokenize(tokens[b], self.layout, self._reference))
            scores.append(outcome.score)
            failures.append(outcome.failures)
        nearest = self._nearest(flats)
        fails = torch.stack(failures)
        pairwise = pairwise_rms_distances(torch.stack(flats)).tolist()
        pairs = {
            "names": [str(b) for b in range(k)],
            "states": states,
            "distance": [[None if math.isnan(v) else v for v in row] for row in pairwise],
            "iou": iou_matrix(fails, fails).tolist(),
            "same_failures": (fails[:, None, :] == fails[None, :, :]).all(-1).tolist(),
        }
        div = diversity(pairs, self.spacing)
        return {
            "val_score": float(np.mean(scores)),
            "val_target": target,
            "val_distinct": int(div["distinct"]),
            "val_nearest_distance": float(np.nanmean(nearest)) if any(map(math.isfinite, nearest)) else math.nan,
            "val_time": time.perf_counter() - start_time,
            "scores": [float(s) for s in scores],
        }
