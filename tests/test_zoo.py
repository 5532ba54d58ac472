"""Model registry, initial weights, checkpoint files, accuracy evaluation."""

from __future__ import annotations

import pytest
import torch

from rpg.data import build_dataset, make_loader
from rpg.errors import RPGInputError
from rpg.zoo import (
    build_model,
    check_compatible,
    count_parameters,
    load_checkpoint,
    load_initial_weights,
    save_checkpoint,
)
from rpg.zoo.collect import evaluate_accuracy

DIGITS_KW = {"in_chans": 1, "num_classes": 10}
VIT_SMALL = {
    "img_size": 8,
    "patch_size": 2,
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 2,
    "global_pool": "avg",
    "class_token": False,
}
META = {
    "kind": "checkpoint",
    "arch": "cnn_s",
    "arch_kwargs": DIGITS_KW,
    "run": 0,
    "seed": 0,
    "step": 5,
    "index": 0,
    "val_accuracy": 0.5,
    "task": None,
    "num_classes": 10,
}


def test_builtin_param_counts_and_shapes():
    s, m = build_model("cnn_s", DIGITS_KW), build_model("cnn_m", DIGITS_KW)
    assert count_parameters(s) == 2906 and count_parameters(m) == 10986
    assert s(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert m(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    rgb = build_model("cnn_m", {"in_chans": 3, "num_classes": 5, "channels": [4, 8]})
    assert rgb(torch.randn(2, 3, 8, 8)).shape == (2, 5)


def test_seeded_init():
    a, b, c = (build_model("cnn_s", DIGITS_KW, seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    build_model("cnn_s", DIGITS_KW, seed=7)  # must not disturb the global RNG
    assert torch.equal(torch.rand(1), expected)


def test_unknown_arch_and_bad_kwargs():
    with pytest.raises(RPGInputError, match="cnn_m"):
        build_model("no_such_net", {})
    with pytest.raises(RPGInputError, match="arch_kwargs"):
        build_model("cnn_s", {"bogus": 1})


def test_timm_models_for_digits():
    vit = build_model("vit_tiny_patch16_224", {**VIT_SMALL, **DIGITS_KW}, seed=0)
    assert count_parameters(vit) == 58138
    assert vit(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    again = build_model("vit_tiny_patch16_224", {**VIT_SMALL, **DIGITS_KW}, seed=0)
    assert torch.equal(vit.state_dict()["head.weight"], again.state_dict()["head.weight"])


@pytest.mark.parametrize(
    "arch, kwargs, size, params",
    [
        ("test_resnet", {}, 8, 373370),
        ("test_convnext", {}, 32, 207010),
        ("test_vit", {"img_size": 32}, 32, 267978),
    ],
)
def test_timm_test_models_for_digits(arch, kwargs, size, params):
    model = build_model(arch, {**kwargs, **DIGITS_KW}, seed=0).eval()
    assert count_parameters(model) == params
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_initial_weights_from_safetensors_and_pth(tmp_path):
    from safetensors.torch import save_file

    src = build_model("cnn_s", DIGITS_KW, seed=1)
    st, pth = tmp_path / "w.safetensors", tmp_path / "w.pth"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))  # plain file, no rpg header
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, pth)
    for path in (st, pth):
        dst = build_model("cnn_s", DIGITS_KW, seed=2)
        load_initial_weights(dst, path)
        assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())
    with pytest.raises(RPGInputError, match="w.pth"):
        load_initial_weights(build_model("cnn_m", DIGITS_KW), pth)  # strict: shapes differ
    with pytest.raises(RPGInputError, match="missing.pth"):
        load_initial_weights(src, tmp_path / "missing.pth")


def test_checkpoint_round_trip_keeps_order(tmp_path):
    state = build_model("cnn_s", DIGITS_KW, seed=0).state_dict()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, state, META)
    loaded, meta = load_checkpoint(path)
    assert list(loaded) == list(state)  # architecture order, although safetensors sorts entries
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].dtype == state[k].dtype for k in state)
    assert meta == META
    check_compatible(loaded, state, path)
    assert not list(tmp_path.glob("*.tmp"))


def test_shared_storage_is_saved(tmp_path):
    w = torch.randn(4, 4)
    save_checkpoint(tmp_path / "tied.safetensors", {"a": w, "b": w}, META)
    loaded, _ = load_checkpoint(tmp_path / "tied.safetensors")
    assert torch.equal(loaded["a"], loaded["b"])


def test_truncated_and_corrupt_checkpoints(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, build_model("cnn_m", DIGITS_KW).state_dict(), META)
    data = path.read_bytes()
    for name, content in [
        ("truncated", data[: len(data) - 200]),
        ("header", data[:40]),
        ("garbage", b"x" * 64),
    ]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(content)
        with pytest.raises(RPGInputError, match=f"{name}.safetensors"):
            load_checkpoint(bad)
    with pytest.raises(RPGInputError, match="absent"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_check_compatible_names_file_and_first_mismatch():
    ref = build_model("cnn_s", DIGITS_KW).state_dict()
    other = build_model("cnn_m", DIGITS_KW).state_dict()
    with pytest.raises(RPGInputError, match=r"zoo/x\.safetensors.*features\.0\.weight.*shape"):
        check_compatible(other, ref, "zoo/x.safetensors")
    missing = {k: v for k, v in ref.items() if k != "head.bias"}
    with pytest.raises(RPGInputError, match="missing entry 'head.bias'"):
        check_compatible(missing, ref, "m.safetensors")
    with pytest.raises(RPGInputError, match="unexpected entry 'extra'"):
        check_compatible({**ref, "extra": torch.zeros(1)}, ref, "m.safetensors")
    half = {**ref, "head.weight": ref["head.weight"].half()}
    with pytest.raises(RPGInputError, match="dtype"):
        check_compatible(half, ref, "m.safetensors")


def test_evaluate_accuracy_matches_predictions():
    val = build_dataset({"name": "digits"}, "val")
    model = build_model("cnn_s", DIGITS_KW, seed=0).train()
    acc, preds = evaluate_accuracy(model, val, device="cpu", batch_size=100)
    assert model.training  # mode restored
    assert preds.dtype == torch.int64 and preds.shape == (len(val),)
    assert acc == pytest.approx(float((preds == val.tensors[1]).float().mean()))
    with torch.no_grad():
        expected = model.eval()(val.tensors[0]).argmax(1)
    assert torch.equal(preds, expected)
    loader = make_loader(val, batch_size=64, shuffle=False, seed=0)
    acc2, preds2 = evaluate_accuracy(model, loader, device="cpu")
    assert acc2 == acc and torch.equal(preds2, preds)
