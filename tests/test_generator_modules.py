"""Backbones, denoiser and presets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rpg.config import PRESETS, GeneratorConfig
from rpg.generator.backbones import build_backbone
from rpg.generator.denoiser import ConvDenoiser, elu_, timestep_embedding

torch.set_num_threads(1)


@pytest.mark.parametrize("kind", ["mamba2", "lstm", "transformer"])
def test_backbones_map_bld_to_bld_causally(kind):
    torch.manual_seed(0)
    kwargs = {"mamba2": {"d_state": 8, "headdim": 16, "chunk_size": 8}, "transformer": {"heads": 4}}.get(kind, {})
    net = build_backbone(kind, dim=32, num_layers=2, **kwargs).eval()
    x = torch.randn(2, 20, 32)
    y = net(x)
    assert y.shape == (2, 20, 32)
    x2 = x.clone()
    x2[:, 12:] = torch.randn(2, 8, 32)
    y2 = net(x2)
    assert torch.allclose(y[:, :12], y2[:, :12], atol=1e-5), "output at t must not depend on inputs after t"
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


def test_build_backbone_errors():
    with pytest.raises(ValueError, match="unknown"):
        build_backbone("gru", dim=8, num_layers=1)
    with pytest.raises(ValueError):
        build_backbone("lstm", dim=8, num_layers=1, heads=2)


def test_denoiser_shapes_skips_and_conditioning():
    torch.manual_seed(0)
    net = ConvDenoiser(token_size=24, cond_dim=16, channels=[1, 8, 16, 32, 16, 8, 1])
    assert [c.in_channels for c in net.convs] == [1, 8, 16, 32, 16, 8]
    assert len(net.norms) == 5  # BatchNorm after every conv but the last
    x, t, c = torch.randn(5, 24), torch.randint(0, 1000, (5,)), torch.randn(5, 16)
    out = net(x, t, c)
    assert out.shape == (5, 24)
    net.eval()
    base = net(x, t, c)
    assert not torch.allclose(base, net(x, t, torch.randn(5, 16)))  # the prototype matters
    assert not torch.allclose(base, net(x, (t + 500) % 1000, c))  # the timestep matters
    # skip connections: the input of the decoder's 16-channel conv is (decoder state + encoder's 16-channel
    # output + c) * t_emb; without the skip it would be (decoder state + c) * t_emb
    seen = {}

    def keep(name, value):  # a hook that returns None leaves the module's output alone
        seen.setdefault(name, value)

    net.convs[4].register_forward_pre_hook(lambda m, a: keep("dec_in", a[0]))
    net.norms[1].register_forward_hook(lambda m, a, o: keep("enc", F.elu(o)))
    net.norms[3].register_forward_hook(lambda m, a, o: keep("dec", F.elu(o)))
    with torch.no_grad():
        net(x, t, c)
        cond = net.cond_proj(c)[:, None, :]
        t_emb = net.time_mlp(timestep_embedding(t, net.time_dim))[:, None, :]
    assert seen["dec_in"].shape[1] == seen["enc"].shape[1] == 16
    assert torch.allclose(seen["dec_in"], (seen["dec"] + seen["enc"] + cond) * t_emb, atol=1e-5)
    assert not torch.allclose(seen["dec_in"], (seen["dec"] + cond) * t_emb, atol=1e-3)
    with pytest.raises(ValueError):
        ConvDenoiser(token_size=8, cond_dim=4, channels=[1, 8, 16, 1])
    with pytest.raises(ValueError):
        net(torch.randn(5, 23), t, c)


def test_cpu_elu_matches_torch_elu_and_its_gradient():
    """The denoiser's CPU ELU (exp(min(x, 0)) - 1 for the negative part) equals torch's ELU within the rounding of
    1, in place, with special values kept, and its gradient is torch's in-place ELU gradient."""
    torch.manual_seed(0)
    x = torch.randn(8, 16, 64) * 4
    x[0, 0, :6] = torch.tensor([0.0, -0.0, -1e-30, float("-inf"), float("inf"), -20.0])
    x[0, 1, 0] = float("nan")
    expected = F.elu(x)
    y = x.clone()
    out = elu_(y)
    assert out.data_ptr() == y.data_ptr()  # in place
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(out)) and torch.isnan(out[0, 1, 0])
    assert (out[finite] - expected[finite]).abs().max() <= 1.2e-7
    assert torch.equal(out[x > 0], x[x > 0])  # the positive part is exact
    assert float(out[0, 0, 3]) == -1.0 and float(out[0, 0, 4]) == float("inf")
    weights = torch.randn_like(x)
    grads = []
    for act in (lambda h: elu_(h), lambda h: F.elu(h, inplace=True)):
        leaf = x.clone().requires_grad_(True)
        (act(leaf * 1.0) * weights).nan_to_num().sum().backward()
        grads.append(leaf.grad)
    keep = torch.isfinite(grads[1])
    assert torch.equal(keep, torch.isfinite(grads[0]))
    assert (grads[0][keep] - grads[1][keep]).abs().max() <= 1e-6 * weights.abs().max()
    # a training step through the denoiser with it: finite loss and gradients
    net = ConvDenoiser(token_size=16, cond_dim=8, channels=[1, 8, 16, 8, 1])
    loss = net(torch.randn(6, 16), torch.randint(0, 1000, (6,)), torch.randn(6, 8)).pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_presets_and_overrides():
    cfg = GeneratorConfig.parse({"preset": "tiny"})
    assert (cfg.dim, cfg.d_state, cfg.num_layers, cfg.backbone) == (256, 32, 2, "mamba2")
    assert (
        GeneratorConfig.parse({"preset": "small"}).dim == 4096 and GeneratorConfig.parse({"preset": "base"}).dim == 8192
    )
    assert set(PRESETS) == {"tiny", "small", "base", "large"}
    cfg = GeneratorConfig.parse({"preset": "tiny", "dim": 64, "backbone": "lstm"})
    assert cfg.dim == 64 and cfg.backbone == "lstm" and cfg.d_state == 32
    assert GeneratorConfig.parse(cfg.to_dict()) == cfg  # round trip through a plain dict (config.json)
    with pytest.raises(ValueError, match="unknown key"):
        GeneratorConfig.parse({"dimm": 3})
    with pytest.raises(ValueError, match="preset"):
        GeneratorConfig.parse({"preset": "huge"})
    with pytest.raises(ValueError, match="backbone"):
        GeneratorConfig.parse({"backbone": "gru"})
