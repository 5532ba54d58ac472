"""A pure-torch Mamba2 layer (Dao & Gu 2024) with a chunked SSD scan and a step-by-step reference.

Layer: in_proj maps D to (z, x, B, C, dt) with inner width E = expand * D split into heads of width P;
x, B, C pass a causal depthwise conv (width 4) and SiLU; per head a scalar decay a_t = exp(dt_t * A) with
dt_t = softplus(dt_raw + dt_bias) and A = -exp(A_log); the state recurrence is h_t = a_t h_{t-1} + dt_t x_t B_t^T,
the output y_t = h_t C_t + D_skip x_t, gated by SiLU(z), RMS-normalised and projected back to D by out_proj.

The chunked "state space duality" scan computes the same y with matrix products inside chunks and a short
recurrence over chunks. B and C are shared by all heads of a group (ngroups=1: by all heads), and the
products C_t.B_s are computed once per group, not per head. Parameter names match ``mamba_ssm``'s Mamba2, and
on CUDA the compiled ``mamba_chunk_scan_combined`` kernel is used when the package is importable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rpg.config.blocks import SCAN_BACKENDS


def mamba_ssm_scan():
    """``mamba_ssm``'s fused chunk-scan kernel, or None when the package is not importable."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # ImportError, or a broken CUDA/Triton install
        return None
    return mamba_chunk_scan_combined


def ssd_scan_reference(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor):
    """Step-by-step recurrence. x [b,l,h,p], dt [b,l,h] (after softplus), A [h], B/C [b,l,g,n] -> y [b,l,h,p]."""
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    rep = h // g
    Bh = B.repeat_interleave(rep, dim=2)  # [b,l,h,n]
    Ch = C.repeat_interleave(rep, dim=2)
    state = x.new_zeros(b, h, p, n)
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)  # [b,h]
        state = decay[..., None, None] * state + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.stack(ys, dim=1)


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T, T] with out[..., i, j] = sum(a[j+1..i]) for j <= i, -inf above the diagonal."""
    length = a.shape[-1]
    cs = torch.cumsum(a, dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    mask = torch.ones(length, length, dtype=torch.bool, device=a.device).tril()
    return out.masked_fill(~mask, -math.inf)


def ssd_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    *,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
):
    """The same y as :func:`ssd_scan_reference`, by chunks (state space duality).

    ``initial_state`` [b,h,p,n]: the state entering the sequence (default zero); with ``return_final_state`` the
    result is (y, the state after the last position [b,h,p,n]), so a sequence can be scanned piece by piece.
    """
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    r = h // g
    pad = (-length) % chunk_size
    if pad:  # zero input and zero log-decay at the end: causal, so earlier outputs are unchanged
        x, dt, B, C = (F.pad(t, (0,) * (2 * (t.ndim - 2)) + (0, pad)) for t in (x, dt, B, C))
    c, q = (length + pad) // chunk_size, chunk_size
    a = (dt * A).reshape(b, c, q, g, r).permute(0, 3, 4, 1, 2)  # log-decay [b,g,r,c,q]
    xdt = (x * dt[..., None]).reshape(b, c, q, g, r, p)
    B = B.reshape(b, c, q, g, n)
    C = C.reshape(b, c, q, g, n)
    a_cum = torch.cumsum(a, dim=-1)  # [b,g,r,c,q]

    # 1. within chunks: y_l = sum_{s<=l} (C_l.B_s) exp(a_cum_l - a_cum_s) xdt_s   (C.B shared by the r heads)
    cb = torch.einsum("bclgn,bcsgn->bgcls", C, B)  # [b,g,c,q,q]
    kernel = cb[:, :, None] * torch.exp(_segsum(a))  # [b,g,r,c,q,q]
    y = torch.einsum("bgrcls,bcsgrp->bclgrp", kernel, xdt)

    # 2. the state each chunk adds at its end
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b,g,r,c,q]
    states = torch.einsum("bcsgn,bcsgrp->bcgrpn", B, xdt * decay_to_end.permute(0, 3, 4, 1, 2)[..., None])

    # 3. short recurrence across chunks: the state entering each chunk
    chunk_decay = torch.exp(a_cum[..., -1]).permute(0, 3, 1, 2)  # [b,c,g,r]
    if initial_state is None:
        carried = [states.new_zeros(states[:, 0].shape)]
    else:
        carried = [initial_state.to(states.dtype).reshape(b, g, r, p, n)]
    for k in range(c - 1):
        carried.append(carried[-1] * chunk_decay[:, k, ..., None, None] + states[:, k])
    entering = torch.stack(carried, dim=1)  # [b,c,g,r,p,n]

    # 4. contribution of the entering state to every output in the chunk
    y_off = torch.einsum("bclgn,bcgrpn->bclgrp", C, entering)
    y = y + y_off * torch.exp(a_cum).permute(0, 3, 4, 1, 2)[..., None]
    y = y.reshape(b, c * q, h, p)[:, :length]
    if not return_final_state:
        return y
    # padding has zero input and zero log-decay: the state after the last chunk is the state after the last position
    final = carried[-1] * chunk_decay[:, c - 1, ..., None, None] + states[:, c - 1]
    return y, final.reshape(b, h, p, n)


class RMSNormGated(nn.Module):
    """RMSNorm(y * SiLU(z)) * weight (mamba_ssm's norm_before_gate=False), one group."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y * F.silu(z)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y * self.weight


class Mamba2(nn.Module):
    """One Mamba2 mixer, [B, L, d_in] -> [B, L, d_model] (d_in defaults to d_model; a wider d_model widens)."""

    def __init__(
        self,
        *,
        d_model: int,
        d_in: int | None = None,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 64,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        scan: str = "auto",
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand*d_model={d_inner} must be a multiple of headdim={headdim}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"nheads={nheads} must be a multiple of ngroups={ngroups}")
        if scan not in SCAN_BACKENDS:
            raise ValueError(f"scan {scan!r} unknown; choose one of {SCAN_BACKENDS}")
        self.d_inner, self.nheads, self.headdim = d_inner, nheads, headdim
        self.ngroups, self.d_state, self.chunk_size, self.scan = ngroups, d_state, chunk_size, scan
        conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_in or d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, d_conv, groups=conv_dim, padding=d_conv - 1)
        dt = torch.exp(torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(nheads))
        self.norm = RMSNormGated(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def _use_kernel(self, u: torch.Tensor) -> bool:
        if self.scan == "torch" or not u.is_cuda:
            if self.scan == "mamba_ssm" and not u.is_cuda:
                raise RuntimeError("scan='mamba_ssm' needs a CUDA tensor")
            return False
        kernel = mamba_ssm_scan()
        if kernel is None and self.scan == "mamba_ssm":
            raise RuntimeError("scan='mamba_ssm' but mamba_ssm is not importable")
        return kernel is not None

    def forward_stateful(
        self, u: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`forward` on a piece of a longer sequence: ``state`` = (conv state: the last d_conv - 1 conv inputs
        [b, conv_dim, d_conv - 1], scan state [b, h, p, n]) of the positions before (None: the sequence starts
        here); returns (y, the state after the piece). Running a sequence piece by piece gives the outputs of one
        pass up to float rounding. Always the pure-torch scan."""
        b, length, _ = u.shape
        e, g, n, h, p = self.d_inner, self.ngroups, self.d_state, self.nheads, self.headdim
        width = self.conv1d.kernel_size[0]
        z, xbc, dt = torch.split(self.in_proj(u), [e, e + 2 * g * n, h], dim=-1)
        xbc = xbc.transpose(1, 2)  # [b, conv_dim, length]
        if state is None:
            conv_state = xbc.new_zeros(b, xbc.shape[1], width - 1)
            ssm_state = None
        else:
            conv_state, ssm_state = state
        padded = torch.cat([conv_state.to(xbc.dtype), xbc], dim=2)
        new_conv_state = padded[:, :, padded.shape[2] - (width - 1) :]
        xbc = F.silu(F.conv1d(padded, self.conv1d.weight, self.conv1d.bias, groups=self.conv1d.groups).transpose(1, 2))
        x, B, C = torch.split(xbc, [e, g * n, g * n], dim=-1)
        x = x.reshape(b, length, h, p)
        B = B.reshape(b, length, g, n)
        C = C.reshape(b, length, g, n)
        A = -torch.exp(self.A_log.float())
        with torch.autocast(u.device.type, enabled=False):
            dt_f = F.softplus(dt.float() + self.dt_bias.float())
            y, ssm_state = ssd_scan_chunked(x.float(), dt_f, A, B.float(), C.float(), chunk_size=self.chunk_size,
                                            initial_state=ssm_state, return_final_state=True)  # fmt: skip
            y = y + self.D.float()[:, None] * x.float()
        y = y.reshape(b, length, e)
        return self.out_proj(self.norm(y.to(z.dtype), z)), (new_conv_state, ssm_state)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        b, length, _ = u.shape
        e, g, n, h, p = self.d_inner, self.ngroups, self.d_state, self.nheads, self.headdim
        z, xbc, dt = torch.split(self.in_proj(u), [e, e + 2 * g * n, h], dim=-1)
        xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :length].transpose(1, 2))
        x, B, C = torch.split(xbc, [e, g * n, g * n], dim=-1)
        x = x.reshape(b, length, h, p)
        B = B.reshape(b, length, g, n)
        C = C.reshape(b, length, g, n)
        A = -torch.exp(self.A_log.float())
        if self._use_kernel(u):
            y = mamba_ssm_scan()(x, dt, A, B, C, self.chunk_size, D=self.D, dt_bias=self.dt_bias, dt_softplus=True)
        else:
            with torch.autocast(u.device.type, enabled=False):  # the scan in fp32: exp(cumsum) is fragile in bf16
                dt_f = F.softplus(dt.float() + self.dt_bias.float())
                y = ssd_scan_chunked(x.float(), dt_f, A, B.float(), C.float(), chunk_size=self.chunk_size)
                y = y + self.D.float()[:, None] * x.float()
        y = y.reshape(b, length, e)
        return self.out_proj(self.norm(y.to(z.dtype), z))
