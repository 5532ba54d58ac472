"""The diffusion denoiser: one small 1D conv network shared by all tokens (1 channel, length k).

Conv layers (kernel 7) follow a symmetric channel list, by default 1->32->64->128->64->32->1, with
BatchNorm + ELU after each but the last; encoder outputs are added to the decoder inputs of matching width
(skip connections). The prototype is projected by Linear(D -> k) to c, the timestep by a sinusoidal embedding
+ MLP to t_emb of length k, and each conv's input is (x + c) * t_emb. The network predicts epsilon.

Performance (the numerics are those of the formula above up to float rounding): each conv input is computed in one
pass as ``x * t_emb + c * t_emb`` (``addcmul``; ``c * t_emb`` has one channel), ELU runs in place, and sampling
uses :meth:`ConvDenoiser.frozen`: the eval-mode network with every BatchNorm folded into its conv, the prototype
projection computed once per chunk and the time embedding once per timestep (all tokens of a sampling step share
it). On a CPU, ELU is computed as ``max(x, 0) + (exp(min(x, 0)) - 1)`` (:func:`elu_`): torch's own CPU kernel
evaluates ``expm1`` one element at a time on AVX-512 builds (about ten times the cost of ``exp``; a fifth of a
training step of the default ViT's generator), and ``exp(x) - 1`` differs from ``expm1(x)`` by at most a few 1e-8
(the rounding of 1); the gradient is torch's own ELU backward from the output. Elsewhere (CUDA) it is torch's ELU.
Every conv runs on at least two tokens (a one-token batch is padded), because the CPU conv kernel for a batch of one
differs in rounding from the kernel for larger batches; so a token's result does not depend on which other tokens
share its batch, and batched generation is bit-identical to generating one model at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N] integer timesteps -> [N, dim] sinusoidal embedding (cos half, sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


def _exp_elu_(x: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) of ``x`` in place, as ``max(x, 0) + (exp(min(x, 0)) - 1)``: vectorised ``exp`` in place of
    the ``expm1`` of torch's CPU kernel (module docstring)."""
    negative = torch.clamp(x, max=0).exp_().sub_(1)
    return x.clamp_(min=0).add_(negative)


class _ExpELU(torch.autograd.Function):
    """:func:`_exp_elu_` with torch's ELU backward, taken from the output (as for torch's in-place ELU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = _exp_elu_(x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


def elu_(x: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) in place: :func:`_exp_elu_` on a CPU (differentiable), torch's ELU elsewhere."""
    if x.device.type != "cpu":
        return F.elu(x, inplace=True)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ExpELU.apply(x)
    return _exp_elu_(x)


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
        self.num_encoder = n // 2
        self.cond_proj = nn.Linear(cond_dim, token_size)
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, token_size))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """[N] timesteps -> t_emb [N, k]."""
        return self.time_mlp(timestep_embedding(t, self.time_dim))

    def conv_flops_per_token(self) -> int:
        """2 x multiply-adds of the convs for one token (a sampling step's work per token; analytic count)."""
        return sum(2 * c.in_channels * c.out_channels * c.kernel_size[0] * self.token_size for c in self.convs)

    def flops_per_token(self) -> int:
        """2 x multiply-adds of one forward pass for one token: the convs, the prototype projection and the time
        MLP (analytic count; elementwise work not counted)."""
        linears = [self.cond_proj, *(m for m in self.time_mlp if isinstance(m, nn.Linear))]
        return self.conv_flops_per_token() + sum(2 * m.in_features * m.out_features for m in linears)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.token_size:
            raise ValueError(f"denoiser input must be [N, {self.token_size}], got {tuple(x.shape)}")
        c = self.cond_proj(cond)[:, None, :]
        t_emb = self.time_embedding(t)[:, None, :]
        ct = c * t_emb  # one channel: (h + c) * t_emb = h * t_emb + c * t_emb in one pass per layer
        h = x[:, None, :]
        skips = []
        for i, conv in enumerate(self.convs):
            if i > self.num_encoder:  # decoder input of the same width as an earlier encoder output
                h = h + skips[2 * self.num_encoder - i - 1]
            h = conv(torch.addcmul(ct, h, t_emb))
            if i < len(self.norms):
                h = elu_(self.norms[i](h))
            if i < self.num_encoder:
                skips.append(h)
        return h[:, 0, :]

    @torch.no_grad()
    def frozen(self) -> FrozenDenoiser:
        """The eval-mode network for sampling, BatchNorm folded into the convs (a snapshot of the weights)."""
        return FrozenDenoiser(self)


class FrozenDenoiser:
    """Inference form of a :class:`ConvDenoiser` (eval mode; BatchNorm folded into the conv weights).

    ``condition(cond)`` and ``time(t)`` are computed once per chunk and once per timestep, ``__call__`` runs the
    convs; ``denoiser(x, t, cond)`` equals ``frozen(x, frozen.time(t), frozen.condition(cond))`` up to rounding.
    """

    def __init__(self, net: ConvDenoiser) -> None:
        self.net = net
        self.num_encoder = net.num_encoder
        self.token_size = net.token_size
        self.weights: list[tuple[torch.Tensor, torch.Tensor]] = []
        for i, conv in enumerate(net.convs):
            w, b = conv.weight.detach(), conv.bias.detach()
            if i < len(net.norms):
                bn = net.norms[i]
                scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w = w * scale[:, None, None]
                b = (b - bn.running_mean) * scale + bn.bias.detach()
            self.weights.append((w.contiguous(), b.contiguous()))
        self.padding = net.convs[0].padding

    @torch.no_grad()
    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Prototypes [N, D] -> c [N, 1, k]."""
        return self.net.cond_proj(cond)[:, None, :]

    @torch.no_grad()
    def time(self, t: int | torch.Tensor, *, device: torch.device | str | None = None) -> torch.Tensor:
        """One timestep -> t_emb [1, 1, k] (shared by every token of a sampling step)."""
        t = torch.as_tensor(t, device=device if device is not None else self.weights[0][0].device).reshape(1)
        return self.net.time_embedding(t)[:, None, :]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t_emb: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [N, k], t_emb [1 or N, 1, k], c [N, 1, k] -> output [N, k] (the dtype of the weights)."""
        n = x.shape[0]
        if n == 1:  # see the module docstring: never a one-token conv batch
            x, c = torch.cat([x, torch.zeros_like(x)]), torch.cat([c, torch.zeros_like(c)])
        dtype = self.weights[0][0].dtype
        x, c, t_emb = x.to(dtype), c.to(dtype), t_emb.to(dtype)
        ct = c * t_emb
        h = x[:, None, :]
        skips = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(self.weights):
            if i > self.num_encoder:
                h = h.add_(skips[2 * self.num_encoder - i - 1])
            h = F.conv1d(torch.addcmul(ct, h, t_emb), w, b, padding=self.padding)
            if i < last:
                h = elu_(h)
            if i < self.num_encoder:
                skips.append(h)
        return h[:n, 0, :]

    def to(self, dtype: torch.dtype) -> FrozenDenoiser:
        """The same network with its conv weights cast to ``dtype`` (e.g. bfloat16 on a GPU)."""
        self.weights = [(w.to(dtype), b.to(dtype)) for w, b in self.weights]
        return self
