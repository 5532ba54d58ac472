"""Mamba2: chunked SSD scan == step-by-step recurrence; layer shapes, causality, optional mamba_ssm match."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rpg.generator.mamba2 import Mamba2, mamba_ssm_scan, ssd_scan_chunked, ssd_scan_reference

torch.set_num_threads(1)


def _inputs(dtype, *, b=2, length=45, h=4, p=8, g=1, n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, h, p, generator=gen, dtype=dtype)
    dt = F.softplus(torch.randn(b, length, h, generator=gen, dtype=dtype))
    A = -torch.rand(h, generator=gen, dtype=dtype) * 2 - 0.1
    B = torch.randn(b, length, g, n, generator=gen, dtype=dtype)
    C = torch.randn(b, length, g, n, generator=gen, dtype=dtype)
    return x, dt, A, B, C


@pytest.mark.parametrize("chunk", [1, 8, 16, 64])
@pytest.mark.parametrize("groups", [1, 2])
def test_chunked_scan_matches_reference_fp64(chunk, groups):
    args = _inputs(torch.float64, g=groups)
    ref = ssd_scan_reference(*args)
    out = ssd_scan_chunked(*args, chunk_size=chunk)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_chunked_scan_matches_reference_fp32_and_gradients():
    args64 = _inputs(torch.float64, length=70)
    args = [a.float().requires_grad_() for a in args64]
    out = ssd_scan_chunked(*args, chunk_size=16)
    ref = ssd_scan_reference(*args64)
    assert (out.double() - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max())
    # gradients of the chunked form agree with the reference's
    out.square().sum().backward()
    ref_args = [a.clone().requires_grad_() for a in args64]
    ssd_scan_reference(*ref_args).square().sum().backward()
    for a, r in zip(args, ref_args):
        assert torch.allclose(a.grad.double(), r.grad, rtol=1e-3, atol=1e-3 * r.grad.abs().max())


def test_mamba2_layer_shapes_and_causality():
    torch.manual_seed(0)
    layer = Mamba2(d_model=32, d_state=8, headdim=16, chunk_size=8, scan="torch")
    u = torch.randn(2, 30, 32)
    y = layer(u)
    assert y.shape == (2, 30, 32)
    u2 = u.clone()
    u2[:, 20:] += torch.randn(2, 10, 32)  # changing the future must not change the past
    y2 = layer(u2)
    assert torch.allclose(y[:, :20], y2[:, :20], atol=1e-6)
    assert not torch.allclose(y[:, 20:], y2[:, 20:])
    # chunk size does not change the function
    layer.chunk_size = 64
    assert torch.allclose(layer(u), y, atol=1e-5)
    names = {n for n, _ in layer.named_parameters()}
    assert {"in_proj.weight", "conv1d.weight", "dt_bias", "A_log", "D", "norm.weight", "out_proj.weight"} <= names
    with pytest.raises(ValueError):
        Mamba2(d_model=30, headdim=16)


@pytest.mark.skipif(mamba_ssm_scan() is None or not torch.cuda.is_available(), reason="needs mamba_ssm and CUDA")
def test_mamba_ssm_kernel_matches_torch_scan():
    torch.manual_seed(0)
    layer = Mamba2(d_model=64, d_state=16, headdim=32, chunk_size=32, scan="torch").cuda()
    u = torch.randn(2, 200, 64, device="cuda")
    ref = layer(u)
    layer.scan = "mamba_ssm"
    out = layer(u)
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-3)
