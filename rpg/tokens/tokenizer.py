"""state_dict <-> token matrix [L, k] (float64, NaN padding), following a :class:`Layout`.

Everything is computed in float64, so tokenize -> detokenize gives back float32, float16 and
bfloat16 state_dicts bit-exactly (float64 entries only to ~1e-16). One caveat of the design's
normalisation: a value v with 0 < |v| < ~1e-8 * |layer mean| (or a running_var below
1e-3 * c, which the inverse clips) cannot be restored exactly; exact zeros are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from rpg.errors import RPGInputError
from rpg.tokens.layout import Layout, dtype_from_name, forward_transform, inverse_transform

# A denormalised value within this fraction of |mean| of zero is below the resolution of a
# float64 token (|error| <= ~2**-52 * |mean|); it is snapped to exactly 0 so zeros round-trip.
_ZERO_SNAP = 2.0**-49


def tokenize(
    state_dict: Mapping[str, torch.Tensor], layout: Layout, *, source: str | Path | None = None
) -> torch.Tensor:
    """Normalised tokens [L, k] (float64) of ``state_dict``; padding is NaN.

    Only the generated entries are read (non-generated ones may be absent). ``source`` names
    the file in error messages.
    """
    layout.check_state_dict(state_dict, source, generated_only=True)
    k = layout.token_size
    flat = torch.full((layout.num_tokens * k,), float("nan"), dtype=torch.float64)
    for spec in layout.generated:
        start = spec.first_token * k
        y = flat[start : start + spec.numel]
        y.copy_(state_dict[spec.name].detach().reshape(-1))  # exact: float64 holds every float32
        if spec.transform != "none":
            y.copy_(forward_transform(y, spec.transform, spec.scale))
        y.sub_(spec.mean).div_(spec.std)
        if not bool(torch.isfinite(y).all()):
            raise RPGInputError(f"entry {spec.name!r} gives NaN or infinite tokens (non-finite weights?)", source)
    return flat.view(layout.num_tokens, k)


def detokenize(tokens: torch.Tensor, layout: Layout, reference: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict (CPU, layout order and dtypes) of ``tokens`` [L, k]; padding is cropped.

    Non-generated entries (integer buffers, scalars) are copied from ``reference``.
    """
    L, k = layout.num_tokens, layout.token_size
    if tuple(tokens.shape) != (L, k):
        raise ValueError(f"tokens have shape {list(tokens.shape)}, the layout needs [{L}, {k}]")
    flat = tokens.detach().to(device="cpu").reshape(-1)
    out: dict[str, torch.Tensor] = {}
    for spec in layout.layers:
        if spec.generated:
            start = spec.first_token * k
            y = flat[start : start + spec.numel].to(torch.float64, copy=True).mul_(spec.std).add_(spec.mean)
            if spec.transform == "none" and spec.mean != 0.0:
                y.masked_fill_(y.abs() <= _ZERO_SNAP * abs(spec.mean), 0.0)
            x = inverse_transform(y, spec.transform, spec.scale)
            out[spec.name] = x.to(dtype_from_name(spec.dtype)).reshape(spec.shape)
            continue
        ref = reference.get(spec.name)
        if ref is None:
            raise RPGInputError(f"reference lacks the copied (non-generated) entry {spec.name!r}")
        if tuple(ref.shape) != spec.shape or str(ref.dtype).removeprefix("torch.") != spec.dtype:
            raise RPGInputError(f"reference entry {spec.name!r} does not match the layout's shape/dtype")
        out[spec.name] = ref.detach().to("cpu").clone()
    return out
