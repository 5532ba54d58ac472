"""Similarity and novelty measures between models (paper section 4.3 / Fig. 3).

* Similarity of two models: IoU of their failure sets (the samples they get wrong; for detection the missed
  objects). IoU(a, b) = |fail_a & fail_b| / |fail_a | fail_b|, 1.0 when both sets are empty.
* A model's similarity to a zoo: the maximum IoU over the zoo's originals.
* Functional distance: mean total variation between two models' output distributions (:func:`tv_distances`).
* Distance: L2 in the normalised token space over the non-padding entries, divided by sqrt(#entries), i.e. the
  RMS difference of the normalised parameters.
"""

from __future__ import annotations

import torch


def wrong_mask(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool [N]: True where ``predictions`` differ from ``labels``."""
    predictions = torch.as_tensor(predictions).reshape(-1)
    labels = torch.as_tensor(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.numel()} predictions for {labels.numel()} labels")
    return predictions.cpu() != labels.cpu()


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two wrong-sample masks (bool [N]); 1.0 when both are empty."""
    return float(iou_matrix(torch.as_tensor(a)[None], torch.as_tensor(b)[None])[0, 0])


def iou_matrix(wrong: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """IoU of every row of ``wrong`` [n, N] against every row of ``reference`` [m, N] -> float64 [n, m]."""
    w = torch.as_tensor(wrong, dtype=torch.bool).to(torch.float64)
    r = torch.as_tensor(reference, dtype=torch.bool).to(torch.float64)
    if w.ndim != 2 or r.ndim != 2 or w.shape[1] != r.shape[1]:
        raise ValueError(f"need [n, N] and [m, N] masks, got {tuple(w.shape)} and {tuple(r.shape)}")
    inter = w @ r.T
    union = w.sum(1, keepdim=True) + r.sum(1)[None, :] - inter
    out = torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(inter))
    return out


def masked_max(matrix: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise max and argmax of ``matrix`` [n, m], ignoring entries where ``exclude`` is True.

    Rows with no candidate left get NaN and index -1.
    """
    m = matrix.to(torch.float64).clone()
    if exclude is not None:
        m[exclude] = float("-inf")
    m[torch.isnan(m)] = float("-inf")
    if m.shape[1] == 0:
        return torch.full((m.shape[0],), float("nan"), dtype=torch.float64), torch.full((m.shape[0],), -1)
    values, index = m.max(dim=1)
    empty = torch.isinf(values)
    values = torch.where(empty, torch.full_like(values, float("nan")), values)
    index = torch.where(empty, torch.full_like(index, -1), index)
    return values, index


def masked_min(matrix: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise min and argmin, ignoring excluded entries (see :func:`masked_max`)."""
    values, index = masked_max(-matrix.to(torch.float64), exclude)
    return -values, index


def max_iou(
    wrong: torch.Tensor, reference: torch.Tensor, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity of each model to the reference set: (max IoU [n], index of that reference [n]).

    ``exclude`` (bool [n, m]) removes pairs, e.g. a model against itself.
    """
    return masked_max(iou_matrix(wrong, reference), exclude)


def flatten_tokens(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The real (non-padding) entries of a token tensor [L, k] as a flat vector.

    ``mask`` (bool [L, k], True where real) defaults to ``~isnan(tokens)``; pass the
    layout's mask so that a NaN produced by a broken model stays visible as NaN.
    """
    if mask is None:
        mask = ~torch.isnan(tokens)
    if mask.shape != tokens.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}")
    return tokens[mask]


def rms_distances(x: torch.Tensor, references: torch.Tensor, *, chunk_elements: int = 1 << 24) -> torch.Tensor:
    """RMS distance from a flat vector ``x`` [P] to every row of ``references`` [m, P] -> float64 [m].

    sqrt(sum((x - r)^2) / P), computed in float64 in chunks so memory stays bounded.
    """
    if references.ndim != 2 or x.ndim != 1 or references.shape[1] != x.shape[0]:
        raise ValueError(f"need [P] and [m, P], got {tuple(x.shape)} and {tuple(references.shape)}")
    p = x.shape[0]
    if p == 0:
        raise ValueError("no parameter entries to compare")
    x64 = x.to(torch.float64)
    rows = max(1, chunk_elements // max(p, 1))
    out = []
    for start in range(0, references.shape[0], rows):
        diff = references[start : start + rows].to(torch.float64) - x64  # a new tensor: squared in place
        out.append(diff.mul_(diff).sum(1))
    if not out:
        return torch.zeros(0, dtype=torch.float64)
    return torch.sqrt(torch.cat(out) / p)


def pairwise_rms_distances(references: torch.Tensor) -> torch.Tensor:
    """Symmetric [m, m] RMS distances between the rows of ``references`` (zero diagonal)."""
    m = references.shape[0]
    refs = references.to(torch.float64)  # once, not once per row
    out = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m - 1):  # (a - b)^2 == (b - a)^2 exactly: each pair once, mirrored
        out[i, i + 1 :] = rms_distances(refs[i], refs[i + 1 :])
    return out + out.T


def tv_distances(outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Functional distance of a model to each reference: the mean over samples of the total variation between their
    output distributions, ``0.5 * mean_n sum_c |p[n, c] - q[n, c]|`` in [0, 1]. ``outputs`` [N, C], ``references``
    [m, N, C] -> float64 [m] (computed reference by reference, so memory stays at one [N, C])."""
    if references.ndim != 3 or outputs.shape != references.shape[1:]:
        raise ValueError(f"need [N, C] and [m, N, C], got {tuple(outputs.shape)} and {tuple(references.shape)}")
    p = outputs.to(torch.float64)
    return torch.stack([0.5 * (p - q.to(torch.float64)).abs().sum(-1).mean() for q in references])
