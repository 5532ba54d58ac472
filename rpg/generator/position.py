"""Position embeddings over the token sequence.

Each token has a 2D position (layer index i, token index j within the layer). The fixed 2D sinusoid of
width D uses half of the channels for j and half for i; each half interleaves sin/cos with frequencies
exp(-2m ln(10000) / (D/2)). Combinations are chosen by name: "sin2d", "sin1d", "learned", "sin2d+learned"
(a zero-initialised learned per-token table added to the sinusoid).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rpg.config.blocks import POSITION_KINDS


def sinusoid_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] with channel 2m = sin(pos w_m), 2m+1 = cos(pos w_m), w_m = exp(-2m ln 1e4 / dim)."""
    if dim % 2:
        raise ValueError(f"sinusoid width must be even, got {dim}")
    m = torch.arange(dim // 2, dtype=torch.float64)
    freq = torch.exp(-2.0 * m * math.log(10000.0) / dim)
    angle = pos.to(torch.float64)[:, None] * freq[None, :]
    out = torch.stack([angle.sin(), angle.cos()], dim=-1)  # interleave sin/cos
    return out.reshape(pos.shape[0], dim).to(torch.float32)


def sinusoid_2d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[N, 2] (layer i, token j) -> [N, dim]: first half encodes j, second half encodes i."""
    if dim % 4:
        raise ValueError(f"2D sinusoid width must be a multiple of 4, got {dim}")
    return torch.cat([sinusoid_1d(positions[:, 1], dim // 2), sinusoid_1d(positions[:, 0], dim // 2)], dim=-1)


class PositionEmbedding(nn.Module):
    """A [L, D] table of position vectors, fixed, learned or both (``kind`` in POSITION_KINDS)."""

    def __init__(self, *, positions: torch.Tensor, dim: int, kind: str = "sin2d") -> None:
        super().__init__()
        if kind not in POSITION_KINDS:
            raise ValueError(f"position kind {kind!r} unknown; choose one of {POSITION_KINDS}")
        positions = torch.as_tensor(positions, dtype=torch.long)
        if positions.ndim != 2 or positions.shape[1] != 2:
            raise ValueError(f"positions must be [L, 2] (layer, token-in-layer), got {tuple(positions.shape)}")
        self.kind = kind
        num_tokens = positions.shape[0]
        fixed = torch.zeros(num_tokens, dim)
        if kind.startswith("sin2d"):
            fixed = sinusoid_2d(positions, dim)
        elif kind.startswith("sin1d"):
            fixed = sinusoid_1d(torch.arange(num_tokens), dim)
        self.register_buffer("fixed", fixed, persistent=False)
        self.learned: nn.Parameter | None = None
        if kind == "learned":
            self.learned = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        elif kind.endswith("+learned"):
            self.learned = nn.Parameter(torch.zeros(num_tokens, dim))

    def forward(self) -> torch.Tensor:
        """The [L, D] position table."""
        return self.fixed if self.learned is None else self.fixed + self.learned

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of the table (the same values as ``self()[start:stop]``)."""
        fixed = self.fixed[start:stop]
        return fixed if self.learned is None else fixed + self.learned[start:stop]
