"""The diffusion denoiser: one small 1D conv network shared by all tokens (1 channel, length k).

Conv layers (kernel 7) follow a symmetric channel list, by default 1->32->64->128->64->32->1, with
BatchNorm + ELU after each but the last; encoder outputs are added to the decoder inputs of matching width
(skip connections). The prototype is projected by Linear(D -> k) to c, the timestep by a sinusoidal embedding
+ MLP to t_emb of length k, and each conv's input is (x + c) * t_emb. The network predicts epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N] integer timesteps -> [N, dim] sinusoidal embedding (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class ConvDenoiser(nn.Module):
    """eps_hat = f(x_t [N, k], t [N], prototype [N, D])."""

    def __init__(
        self,
        *,
        token_size: int,
        cond_dim: int,
        channels: Sequence[int] = (1, 32, 64, 128, 64, 32, 1),
        kernel_size: int = 7,
        time_dim: int = 128,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if len(channels) < 3 or len(channels) % 2 == 0 or channels != channels[::-1] or channels[0] != 1:
            raise ValueError(f"denoiser channels must be a symmetric list from 1 to 1 of odd length, got {channels}")
        if kernel_size % 2 == 0:
            raise ValueError(f"denoiser kernel_size must be odd, got {kernel_size}")
        self.token_size = token_size
        n = len(channels) - 1
        self.convs = nn.ModuleList(
            nn.Conv1d(channels[i], channels[i + 1], kernel_size, padding=kernel_size // 2) for i in range(n)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(channels[i + 1]) for i in range(n - 1))
        self.act = nn.ELU()
        self.num_encoder = n // 2
        self.cond_proj = nn.Linear(cond_dim, token_size)
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, token_size))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.token_size:
            raise ValueError(f"denoiser input must be [N, {self.token_size}], got {tuple(x.shape)}")
        c = self.cond_proj(cond)[:, None, :]
        t_emb = self.time_mlp(timestep_embedding(t, self.time_dim))[:, None, :]
        h = x[:, None, :]
        skips = []
        for i, conv in enumerate(self.convs):
            if i > self.num_encoder:  # decoder input of the same width as an earlier encoder output
                h = h + skips[2 * self.num_encoder - i - 1]
            h = conv((h + c) * t_emb)
            if i < len(self.norms):
                h = self.act(self.norms[i](h))
            if i < self.num_encoder:
                skips.append(h)
        return h[:, 0, :]
