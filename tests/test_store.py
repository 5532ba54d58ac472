"""Token store: write/read, shards, permutation states, float32 option, bad input leaves no files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import rpg.tokens.store as store_mod
from rpg.errors import RPGInputError
from rpg.io import load_safetensors, save_safetensors
from rpg.tokens import TokenStore, shard_names, tokenize, write_token_store

torch.set_num_threads(1)
RUNS = [7, 3, 3, 9, 7]  # run id of each checkpoint -> states (rank among {3, 7, 9}) 1, 0, 0, 2, 1


def _model(seed: int, width: int = 6) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 1, 6, 6) * 3 + 1)
    return model


def _save(path: Path, sd: dict, **meta) -> Path:
    full = {"kind": "checkpoint", "arch": "tiny", "arch_kwargs": {}, "state_dict_keys": list(sd), **meta}
    save_safetensors(sd, path, full)
    return path


def _zoo(tmp_path: Path, n: int = 5) -> list[Path]:
    paths = []
    for i in range(n):
        sd = _model(i).state_dict()
        task = [1, 0, 1] if i % 2 else None
        paths.append(
            _save(
                tmp_path / "zoo" / f"ckpt_{i}.safetensors",
                sd,
                run=RUNS[i],
                step=10 * i,
                val_accuracy=0.5 + i / 100,
                task=task,
            )
        )
    return paths


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_shard_names() -> None:
    assert shard_names(5, 2) == [
        "shard_00000.safetensors",
        "shard_00001.safetensors",
        "shard_00002.safetensors",
    ]
    assert shard_names(4, 4) == ["shard_00000.safetensors"]
    assert shard_names(0, 4) == []
    with pytest.raises(RPGInputError, match="shard_size"):
        shard_names(3, 0)


def test_write_and_read_store(tmp_path: Path) -> None:
    paths = _zoo(tmp_path)
    out = tmp_path / "tokens"
    write_token_store(paths, out, token_size=8, shard_size=2)
    assert _files(out) == ["SHA256SUMS", "index.parquet", "layout.parquet", "reference.safetensors", *shard_names(5, 2)]

    store = TokenStore(out)
    layout = store.layout
    assert len(store) == 5 and layout.token_size == 8 and layout.num_checkpoints == 5
    idx = store.index
    assert idx["shard"].tolist() == [shard_names(5, 2)[i // 2] for i in range(5)]
    assert idx["row"].tolist() == [0, 1, 0, 1, 0]
    assert idx["run"].tolist() == RUNS and idx["state"].tolist() == [1, 0, 0, 2, 1]
    assert idx["step"].tolist() == [0, 10, 20, 30, 40]
    assert idx["val_accuracy"].tolist() == pytest.approx([0.5, 0.51, 0.52, 0.53, 0.54])
    assert idx["task"][0] is None and list(idx["task"][1]) == [1, 0, 1]
    assert idx["checkpoint"].tolist() == [str(p) for p in paths]
    assert store.num_states == 3
    assert store.meta["arch"] == "tiny" and store.meta["state"] == "run" and store.meta["token_size"] == 8
    assert set(store.reference) == {"1.num_batches_tracked"}

    # layout follows the stored state_dict order, not the file's sorted order
    original, _ = load_safetensors(paths[3])
    expected_order = list(_model(3).state_dict())
    assert layout.names == expected_order

    batch = store.tokens([3, 0, 4])
    assert batch.dtype == torch.float32 and batch.shape == (3, layout.num_tokens, 8)
    assert torch.equal(torch.isnan(batch[0]), ~layout.token_mask())
    torch.testing.assert_close(batch[0], tokenize(original, layout).float(), rtol=0, atol=0, equal_nan=True)
    restored = store.checkpoint_state_dict(3)
    assert list(restored) == expected_order
    for name in expected_order:
        assert restored[name].dtype == original[name].dtype and torch.equal(restored[name], original[name]), name
    with pytest.raises(IndexError):
        store.tokens([5])

    # each shard is a plain safetensors file with key "tokens" [n, L, k]
    shard = load_file(str(out / "shard_00002.safetensors"))
    assert list(shard) == ["tokens"] and shard["tokens"].shape == (1, layout.num_tokens, 8)
    assert shard["tokens"].dtype == torch.float64


def test_checkpoint_states_and_float32_shards(tmp_path: Path) -> None:
    paths = _zoo(tmp_path, n=3)
    out = tmp_path / "tokens"
    write_token_store(paths, out, token_size=16, shard_size=10, state="checkpoint", dtype="float32")
    store = TokenStore(out)
    assert store.num_states == 3 and store.index["state"].tolist() == [0, 1, 2]
    assert _files(out).count("shard_00000.safetensors") == 1 and len(shard_names(3, 10)) == 1
    with safe_open(str(out / "shard_00000.safetensors"), framework="pt") as f:
        assert f.get_slice("tokens").get_dtype() == "F32"
    original, _ = load_safetensors(paths[1])
    restored = store.checkpoint_state_dict(1)
    for name, t in original.items():  # float32 shards: close, not bit-exact (documented)
        assert torch.allclose(restored[name], t, rtol=1e-5, atol=1e-6), name


def test_entry_order_fallbacks(tmp_path: Path, caplog) -> None:
    models = pytest.importorskip("rpg.zoo.models")
    sd = models.build_model("cnn_s", {"in_chans": 1, "num_classes": 10}, seed=0).state_dict()
    paths = []
    for i in range(2):  # no state_dict_keys: order comes from rebuilding the architecture
        save_safetensors(
            sd,
            tmp_path / f"c{i}.safetensors",
            {"arch": "cnn_s", "arch_kwargs": {"in_chans": 1, "num_classes": 10}, "run": 0},
        )
        paths.append(tmp_path / f"c{i}.safetensors")
    write_token_store(paths, tmp_path / "t1", token_size=32, shard_size=4)
    assert TokenStore(tmp_path / "t1").layout.names == list(sd)
    save_safetensors(sd, tmp_path / "bare.safetensors", {})  # nothing known: the file's order
    with caplog.at_level(logging.WARNING):
        write_token_store([tmp_path / "bare.safetensors"], tmp_path / "t2", token_size=32, shard_size=4)
    assert "entry order" in caplog.text
    assert sorted(TokenStore(tmp_path / "t2").layout.names) == sorted(sd)


def _truncated(paths: list[Path]) -> Path:
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])
    return paths[2]


def _corrupt(paths: list[Path]) -> Path:
    paths[1].write_bytes(b"\x00garbage" * 10)
    return paths[1]


def _other_arch(paths: list[Path]) -> Path:
    sd, meta = load_safetensors(paths[3])
    save_safetensors(sd, paths[3], {**meta, "arch": "other"})
    return paths[3]


def _other_shape(paths: list[Path]) -> Path:
    return _save(paths[2], _model(0, width=5).state_dict(), run=0)


def _other_keys(paths: list[Path]) -> Path:
    sd = dict(_model(0).state_dict())
    sd["extra.weight"] = torch.randn(3, 3)
    return _save(paths[4], sd, run=0)


def _missing(paths: list[Path]) -> Path:
    paths[1].unlink()
    return paths[1]


def _non_finite(paths: list[Path]) -> Path:
    sd = dict(_model(0).state_dict())
    sd["0.weight"] = sd["0.weight"].clone()
    sd["0.weight"][0, 0, 0, 0] = float("inf")
    return _save(paths[2], sd, run=0)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_truncated, "truncated or corrupt|not a readable"),
        (_corrupt, "not a readable"),
        (_other_arch, "another architecture"),
        (_other_shape, "shape"),
        (_other_keys, "unexpected.*extra.weight"),
        (_missing, "does not exist"),
        (_non_finite, "NaN or infinite"),
    ],
)
def test_bad_checkpoint_leaves_no_output(tmp_path: Path, spoil, message: str) -> None:
    paths = _zoo(tmp_path)
    bad = spoil(paths)
    out = tmp_path / "tokens"
    with pytest.raises(RPGInputError, match=message) as err:
        write_token_store(paths, out, token_size=8, shard_size=2)
    assert str(bad) in str(err.value)
    assert not out.exists()


def test_empty_zoo_and_bad_options(tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    with pytest.raises(RPGInputError, match="empty zoo"):
        write_token_store([], out, token_size=8, shard_size=2)
    paths = _zoo(tmp_path, n=1)
    with pytest.raises(RPGInputError, match="state"):
        write_token_store(paths, out, token_size=8, shard_size=2, state="seed")
    with pytest.raises(RPGInputError, match="dtype"):
        write_token_store(paths, out, token_size=8, shard_size=2, dtype="float16")
    with pytest.raises(RPGInputError, match="token_size"):
        write_token_store(paths, out, token_size=0, shard_size=2)
    assert _files(out) == []


def test_failure_in_token_pass_removes_written_shards(tmp_path: Path, monkeypatch) -> None:
    paths = _zoo(tmp_path)
    calls = {"n": 0}
    real = store_mod.tokenize

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # shard 0 is complete, shard 1 is half written
            raise RPGInputError("changed on disk", paths[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(store_mod, "tokenize", flaky)
    out = tmp_path / "tokens"
    with pytest.raises(RPGInputError, match="changed on disk"):
        write_token_store(paths, out, token_size=8, shard_size=2)
    assert calls["n"] == 4 and not out.exists()


def test_store_errors(tmp_path: Path) -> None:
    with pytest.raises(RPGInputError, match="does not exist"):
        TokenStore(tmp_path / "nowhere")
    paths = _zoo(tmp_path, n=3)
    out = tmp_path / "tokens"
    write_token_store(paths, out, token_size=8, shard_size=1)
    (out / "shard_00001.safetensors").unlink()
    store = TokenStore(out)  # cheap: nothing read yet; an incomplete store fails on first read
    with pytest.raises(RPGInputError, match="shard_00001.safetensors: token shard is missing"):
        store.tokens([0])
    (out / "index.parquet").unlink()
    with pytest.raises(RPGInputError, match="index.parquet is missing"):
        TokenStore(out)
