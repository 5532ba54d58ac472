"""Baselines that a parameter generator must beat (paper section 4.3, Fig. 3).

* Noise: Gaussian noise of a given std added to the normalised tokens of an original
  (padding stays NaN), then detokenized. Std 0.01 means 1% of each layer's spread.
* Interpolation: (1 - w) * a + w * b of two originals, entry by entry, for every
  floating-point state_dict entry; other entries (integer buffers) come from ``a``.
* Average: the mean of several originals.
Interpolated and averaged models get their BatchNorm statistics re-estimated on a few
training batches (:func:`recalibrate_batchnorm`), because mixing running statistics of
different models does not give the statistics of the mixed weights.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

WITHIN_RUN = "within_run"
ACROSS_RUN = "across_run"


def add_token_noise(tokens: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``tokens`` [L, k] plus N(0, std^2) noise on the real entries; NaN padding stays NaN."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    noise = torch.randn(tokens.shape, generator=generator, dtype=torch.float64).to(tokens.dtype)
    return tokens + std * noise  # NaN + x = NaN keeps padding


def interpolate_state_dicts(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], weight: float
) -> dict[str, torch.Tensor]:
    """(1 - weight) * a + weight * b for floating entries; non-float entries are copied from ``a``.

    weight 0 returns ``a`` and weight 1 returns ``b`` exactly.
    """
    if a.keys() != b.keys():
        raise ValueError("state_dicts have different keys")
    out = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            raise ValueError(f"{name}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} differ")
        if ta.is_floating_point():
            mixed = (1.0 - weight) * ta.to(torch.float64) + weight * tb.to(torch.float64)
            out[name] = mixed.to(ta.dtype)
        else:
            out[name] = ta.clone()
    return out


def average_state_dicts(state_dicts: Iterable[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Entry-wise mean of floating entries; non-float entries are copied from the first.

    ``state_dicts`` may be a generator: only a running sum is kept in memory.
    """
    first: dict[str, torch.Tensor] | None = None
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for sd in state_dicts:
        if first is None:
            first = sd
            sums = {k: v.to(torch.float64).clone() for k, v in sd.items() if v.is_floating_point()}
        else:
            if sd.keys() != first.keys():
                raise ValueError("state_dicts have different keys")
            for k in sums:
                sums[k] += sd[k].to(torch.float64)
        count += 1
    if first is None:
        raise ValueError("nothing to average")
    return {k: (sums[k] / count).to(v.dtype) if k in sums else v.clone() for k, v in first.items()}


def select_pairs(runs: Sequence[int], num_pairs: int, seed: int) -> list[tuple[int, int, str]]:
    """Seeded pairs (i, j, pair_type) of originals to interpolate.

    Half of the pairs (rounded up) join different runs and half the same run, when both
    kinds exist; otherwise all come from the kind that exists. No pair repeats.
    """
    rng = np.random.default_rng(seed)
    idx = range(len(runs))
    across = [(i, j) for i, j in itertools.combinations(idx, 2) if runs[i] != runs[j]]
    within = [(i, j) for i, j in itertools.combinations(idx, 2) if runs[i] == runs[j]]
    want_across = min(len(across), (num_pairs + 1) // 2 if within else num_pairs)
    want_within = min(len(within), num_pairs - want_across)
    want_across = min(len(across), num_pairs - want_within)  # refill if too few within-run pairs

    def pick(cands: list[tuple[int, int]], n: int, kind: str) -> list[tuple[int, int, str]]:
        chosen = rng.choice(len(cands), size=n, replace=False) if n else []
        return [(*cands[c], kind) for c in sorted(int(c) for c in chosen)]

    pairs = pick(across, want_across, ACROSS_RUN) + pick(within, want_within, WITHIN_RUN)
    if len(pairs) < num_pairs:
        log.warning("only %d interpolation pairs possible (asked for %d)", len(pairs), num_pairs)
    return pairs


def batchnorm_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """All BatchNorm layers (1d/2d/3d, sync) of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, *, num_batches: int, device: torch.device | str) -> bool:
    """Re-estimate BatchNorm running mean/var from ``num_batches`` input batches.

    Statistics are reset and accumulated as a plain average over the batches; only BN
    layers are in train mode (dropout etc. stay off). Returns True when statistics were
    re-estimated (the model has BN layers, ``num_batches`` > 0 and at least one batch).
    """
    bns = [m for m in batchnorm_modules(model) if m.track_running_stats]
    if not bns or num_batches <= 0:
        return False
    was_training = model.training
    momenta = [m.momentum for m in bns]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = mean over the batches seen
        m.train()
    seen = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(x.to(device))
            seen += 1
            if seen >= num_batches:
                break
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.train(was_training)
    if seen == 0:
        log.warning("no batches to re-estimate BatchNorm statistics; keeping the old ones")
        for m, (mean, var, count) in zip(bns, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
    return seen > 0
