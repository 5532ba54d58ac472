"""Recurrent backbones: [B, L, D] position/state inputs -> [B, L, D] prototypes.

"mamba2" (the paper's default: stacked Mamba2 layers), "lstm" and a causal "transformer" (ablations).
In the paper's mode parameter tokens are never an input: the backbone is a sequence model over positions (with
``generator.coupling: autoregressive`` the model adds the previous block's tokens to the input, and the recurrent
backbones run piece by piece with ``forward_stateful``).
"""

from __future__ import annotations

import torch
from torch import nn

from rpg.config.blocks import BACKBONES
from rpg.generator.mamba2 import Mamba2


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaStack(nn.Module):
    """Pre-norm residual Mamba2 blocks followed by a final RMSNorm.

    ``widen_to``: the last layer reads width ``dim`` and outputs this larger width (no residual around it), as the
    official generator for ViT-B/ConvNeXt-L widens 12288 -> 16384; the output (the prototypes) has that width.
    """

    def __init__(self, *, dim: int, num_layers: int, widen_to: int | None = None, **mamba_kwargs) -> None:
        super().__init__()
        self.out_dim = widen_to or dim
        widths = [dim] * (num_layers - 1) + [self.out_dim]
        self.norms = nn.ModuleList(RMSNorm(dim) for _ in range(num_layers))
        self.layers = nn.ModuleList(Mamba2(d_model=w, d_in=dim, **mamba_kwargs) for w in widths)
        self.final_norm = RMSNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, layer in zip(self.norms, self.layers):
            y = layer(norm(x))
            x = x + y if y.shape[-1] == x.shape[-1] else y
        return self.final_norm(x)

    def forward_stateful(self, x: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """:meth:`forward` on a piece of a longer sequence, given the state after the positions before (None: the
        sequence starts here); returns (output, the state after the piece: one per layer)."""
        states = [None] * len(self.layers) if state is None else state
        out = []
        for norm, layer, s in zip(self.norms, self.layers, states):
            y, s = layer.forward_stateful(norm(x), s)
            out.append(s)
            x = x + y if y.shape[-1] == x.shape[-1] else y
        return self.final_norm(x), out


class LSTMBackbone(nn.Module):
    """A stacked LSTM of width D."""

    def __init__(self, *, dim: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]

    def forward_stateful(self, x: torch.Tensor, state=None):
        """:meth:`forward` on a piece of a longer sequence; ``state``: the LSTM's (h, c) after the positions before."""
        return self.lstm(x, state)


class CausalTransformer(nn.Module):
    """Pre-norm Transformer encoder layers with a causal attention mask."""

    def __init__(self, *, dim: int, num_layers: int, heads: int = 8, ff_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer dim={dim} must be a multiple of heads={heads}")
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff_mult * dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device, dtype=x.dtype)
        return self.encoder(x, mask=mask, is_causal=True)


def build_backbone(kind: str, *, dim: int, num_layers: int, **kwargs) -> nn.Module:
    """Backbone factory. kwargs: mamba2 -> Mamba2 args (d_state, headdim, expand, chunk_size, ...);
    transformer -> heads, ff_mult, dropout; lstm -> none."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if kind == "mamba2":
        return MambaStack(dim=dim, num_layers=num_layers, **kwargs)
    if kind == "lstm":
        if kwargs:
            raise ValueError(f"lstm backbone takes no extra arguments, got {sorted(kwargs)}")
        return LSTMBackbone(dim=dim, num_layers=num_layers)
    if kind == "transformer":
        return CausalTransformer(dim=dim, num_layers=num_layers, **kwargs)
    raise ValueError(f"backbone {kind!r} unknown; choose one of {BACKBONES}")
