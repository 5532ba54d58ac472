"""Tokenizer and layout: bit-exact round trips, geometry, statistics, log-variance transform."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

from rpg.errors import RPGInputError
from rpg.tokens import LayerSpec, Layout, build_layout, detokenize, tokenize
from rpg.tokens.layout import LOGVAR_MIN, is_generated

torch.set_num_threads(1)


class _TinyCNN(nn.Module):
    """Conv + BatchNorm + linear head (with a float scalar and a [1] parameter, both copied)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, bias=True)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 5)
        self.temperature = nn.Parameter(torch.tensor(1.5))
        self.gain = nn.Parameter(torch.tensor([2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)).mean((2, 3))) * self.temperature * self.gain


def _warm_bn(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """A few train-mode forward passes so BatchNorm running statistics vary."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape, generator=g) * 2 + 0.5)
    return model


def _zoo(model: nn.Module, n: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """The model's state_dict plus n-1 perturbed copies (float entries scaled and shifted)."""
    g = torch.Generator().manual_seed(seed)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    zoo = [base]
    for _ in range(n - 1):
        sd = {}
        for k, v in base.items():
            if v.is_floating_point():
                noise = torch.randn(v.shape, generator=g).to(v.dtype)
                v = (v * 1.1 + 0.01 * noise).abs() if k.endswith("running_var") else v * 1.1 + 0.01 * noise
            sd[k] = v.clone()
        zoo.append(sd)
    return zoo


def _assert_exact(original: dict[str, torch.Tensor], restored: dict[str, torch.Tensor]) -> None:
    assert list(restored) == list(original)
    for name, t in original.items():
        assert restored[name].dtype == t.dtype, name
        assert restored[name].shape == t.shape, name
        assert torch.equal(restored[name], t), f"{name}: {(restored[name] != t).sum()} values differ"


def _roundtrip(zoo: list[dict[str, torch.Tensor]], token_size: int) -> Layout:
    layout = build_layout(zoo, token_size=token_size)
    for sd in zoo:
        tokens = tokenize(sd, layout)
        assert tokens.dtype == torch.float64 and tokens.shape == (layout.num_tokens, token_size)
        reference = {k: v for k, v in sd.items() if not is_generated(v)}
        _assert_exact(sd, detokenize(tokens, layout, reference))
    return layout


def test_roundtrip_tiny_cnn_with_batchnorm() -> None:
    model = _warm_bn(_TinyCNN(), (4, 3, 8, 8), seed=1)
    zoo = _zoo(model, n=3)
    assert not torch.allclose(zoo[0]["bn.running_var"], torch.ones(6))
    layout = _roundtrip(zoo, token_size=16)
    rows = {s.name: s for s in layout.layers}
    assert rows["bn.running_var"].generated and rows["bn.running_var"].transform == "logvar"
    assert rows["bn.running_mean"].generated and rows["bn.running_mean"].transform == "none"
    for copied in ("bn.num_batches_tracked", "temperature", "gain"):
        assert not rows[copied].generated and rows[copied].num_tokens == 0


@pytest.mark.parametrize("arch", ["cnn_s", "cnn_m"])
def test_roundtrip_builtin_archs(arch: str) -> None:
    models = pytest.importorskip("rpg.zoo.models")
    model = _warm_bn(models.build_model(arch, {"in_chans": 1, "num_classes": 10}, seed=0), (8, 1, 8, 8), seed=2)
    _roundtrip(_zoo(model, n=2), token_size=64)


@pytest.mark.parametrize("arch", ["resnet18", "vit_tiny_patch16_224", "convnext_atto"])
def test_roundtrip_timm_random_init(arch: str) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=10)
    if arch == "resnet18":
        _warm_bn(model, (2, 3, 32, 32), seed=3)
        assert model.bn1.running_var.std() > 0
    # k=1000 does not divide most layer sizes: exercises padding; zoo[0] holds exact zeros
    # (biases) in layers whose zoo mean is not zero.
    layout = _roundtrip(_zoo(model, n=2), token_size=1000)
    assert layout.num_parameters == sum(
        v.numel() for v in model.state_dict().values() if v.is_floating_point() and v.numel() > 1
    )


def test_roundtrip_half_bfloat16_float64_and_zeros() -> None:
    g = torch.Generator().manual_seed(0)
    zoo = []
    for i in range(3):
        sd = {}
        for j in range(40):  # many layers with different means, each holding exact zeros
            w = torch.randn(37, generator=g) * 0.1 + (j - 20) * 0.37 + i * 0.01
            w[::5] = 0.0
            sd[f"layer{j}.weight"] = w
        sd["h"] = (torch.randn(50, generator=g) + 3).half()
        sd["b"] = (torch.randn(50, generator=g) - 1).bfloat16()
        sd["tiny"] = torch.randn(50, generator=g) * 1e-30
        sd["steps"] = torch.tensor(5 + i)
        zoo.append(sd)
    layout = _roundtrip(zoo, token_size=8)
    assert {s.dtype for s in layout.layers} == {"float32", "float16", "bfloat16", "int64"}
    # float64 entries come back to within float64 rounding (not bit-exact by design).
    d = [{"w": torch.randn(20, dtype=torch.float64, generator=g)} for _ in range(2)]
    lay = build_layout(d, token_size=8)
    back = detokenize(tokenize(d[0], lay), lay, {})["w"]
    assert back.dtype == torch.float64 and torch.allclose(back, d[0]["w"], rtol=1e-14, atol=1e-15)


def test_positions_padding_and_mask() -> None:
    sd = {
        "a": torch.arange(5.0),
        "count": torch.tensor(3),
        "b": torch.arange(3.0),
        "scalar": torch.tensor([7.0]),
        "c": torch.arange(8.0).reshape(2, 4),
    }
    layout = build_layout([sd], token_size=4)
    assert layout.num_tokens == 5 and layout.num_layers == 3 and layout.num_parameters == 16
    assert layout.positions().tolist() == [[0, 0], [0, 1], [1, 0], [2, 0], [2, 1]]
    assert layout.positions().dtype == torch.long
    assert layout.token_lengths().tolist() == [4, 1, 3, 4, 4]
    mask = layout.token_mask()
    assert mask.dtype == torch.bool and mask.shape == (5, 4)
    tokens = tokenize(sd, layout)
    assert torch.equal(torch.isnan(tokens), ~mask)
    assert [(s.name, s.first_token, s.num_tokens) for s in layout.layers] == [
        ("a", 0, 2), ("count", -1, 0), ("b", 2, 1), ("scalar", -1, 0), ("c", 3, 2),
    ]  # fmt: skip


def test_positions_large_layout_vectorised() -> None:
    g = torch.Generator().manual_seed(0)
    k = 512
    numels = torch.randint(2, 200_000, (3000,), generator=g).tolist()  # ~300M parameters
    layers, first = [], 0
    for i, n in enumerate(numels):
        t = math.ceil(n / k)
        layers.append(LayerSpec(f"l{i}", (n,), "float32", n, True, i, 0.0, 1.0, "none", 1.0, first, t))
        first += t
    layout = Layout(token_size=k, layers=tuple(layers))
    start = time.perf_counter()
    pos, lengths = layout.positions(), layout.token_lengths()
    assert time.perf_counter() - start < 2.0
    assert pos.shape == (first, 2) and int(lengths.sum()) == sum(numels)
    # spot-check against the definition
    for i in (0, 1, 1234, 2999):
        s = layers[i]
        block = pos[s.first_token : s.first_token + s.num_tokens]
        assert (block[:, 0] == i).all() and block[:, 1].tolist() == list(range(s.num_tokens))
        assert int(lengths[s.first_token + s.num_tokens - 1]) == s.numel - (s.num_tokens - 1) * k


def test_stats_averaged_over_zoo_and_constant_layers() -> None:
    g = torch.Generator().manual_seed(0)
    zoo = [{"w": torch.randn(100, generator=g) * (i + 1) + i, "const": torch.full((10,), 3.0)} for i in range(3)]
    layout = build_layout(zoo, token_size=16)
    w = layout.layers[0]
    means = [float(sd["w"].double().mean()) for sd in zoo]
    stds = [float(sd["w"].double().std()) for sd in zoo]
    assert w.mean == pytest.approx(sum(means) / 3, rel=1e-12)
    assert w.std == pytest.approx(sum(stds) / 3, rel=1e-12)
    assert layout.num_checkpoints == 3
    const = layout.layers[1]
    assert const.mean == pytest.approx(3.0) and const.std == 1.0
    tokens = tokenize(zoo[1], layout)
    expected = (zoo[1]["w"].double() - w.mean) / w.std
    assert torch.equal(tokens[: w.num_tokens].reshape(-1)[:100], expected)
    assert torch.all(tokens[w.num_tokens :].reshape(-1)[:10] == 0)
    back = detokenize(tokens, layout, {})
    assert torch.equal(back["const"], zoo[1]["const"])


def test_logvar_transform_and_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    zoo = [{"bn.running_var": torch.rand(64, generator=g) * (i + 1) + 0.05} for i in range(3)]
    layout = build_layout(zoo, token_size=32)
    spec = layout.layers[0]
    assert spec.transform == "logvar"
    c = 0.95 * sum(float(sd["bn.running_var"].double().mean()) for sd in zoo) / 3
    assert spec.scale == pytest.approx(c, rel=1e-12)
    logs = [torch.log(sd["bn.running_var"].double() / c + 0.05) for sd in zoo]
    assert spec.mean == pytest.approx(sum(float(x.mean()) for x in logs) / 3, rel=1e-12)
    assert spec.std == pytest.approx(sum(float(x.std()) for x in logs) / 3, rel=1e-12)
    tokens = tokenize(zoo[0], layout)
    assert torch.allclose(tokens.reshape(-1), (logs[0] - spec.mean) / spec.std, rtol=0, atol=1e-12)
    _assert_exact(zoo[0], detokenize(tokens, layout, {}))
    # the inverse clips at LOGVAR_MIN * c (a generated token far below the data)
    low = torch.full_like(tokens, -50.0)
    assert torch.allclose(detokenize(low, layout, {})["bn.running_var"], torch.full((64,), LOGVAR_MIN * c))


def test_layout_save_load(tmp_path) -> None:
    model = _warm_bn(_TinyCNN(), (4, 3, 8, 8), seed=1)
    layout = build_layout(_zoo(model, n=2), token_size=7)
    layout.save(tmp_path / "layout.parquet")
    again = Layout.load(tmp_path / "layout.parquet")
    assert again == layout and again.token_size == 7 and again.num_checkpoints == 2
    assert torch.equal(again.positions(), layout.positions())
    with pytest.raises(RPGInputError, match="does not exist"):
        Layout.load(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(RPGInputError, match="bad.parquet"):
        Layout.load(tmp_path / "bad.parquet")


def test_bad_state_dicts_are_rejected() -> None:
    zoo = [{"w": torch.randn(10), "b": torch.randn(4)} for _ in range(2)]
    layout = build_layout(zoo, token_size=4)
    with pytest.raises(RPGInputError, match="missing.*'b'"):
        tokenize({"w": torch.randn(10)}, layout, source="x.safetensors")
    with pytest.raises(RPGInputError, match="shape"):
        tokenize({"w": torch.randn(11), "b": torch.randn(4)}, layout)
    with pytest.raises(RPGInputError, match="dtype"):
        tokenize({"w": torch.randn(10).half(), "b": torch.randn(4)}, layout)
    nan = {"w": torch.randn(10), "b": torch.tensor([1.0, float("nan"), 0.0, 1.0])}
    with pytest.raises(RPGInputError, match="'b'"):
        tokenize(nan, layout)
    with pytest.raises(RPGInputError, match="NaN"):
        build_layout([zoo[0], nan], token_size=4)
    with pytest.raises(RPGInputError, match="keys differ"):
        build_layout([zoo[0], {"w": torch.randn(10)}], token_size=4)
    with pytest.raises(RPGInputError, match="empty zoo"):
        build_layout([], token_size=4)
    with pytest.raises(ValueError, match="shape"):
        detokenize(torch.zeros(3, 4), layout, {})
    with_int = [{"w": torch.randn(10), "n": torch.tensor(1)}] * 2
    lay = build_layout(with_int, token_size=4)
    with pytest.raises(RPGInputError, match="'n'"):
        detokenize(tokenize(with_int[0], lay), lay, {})
