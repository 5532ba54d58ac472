"""Partial generation: tokens.include / tokens.exclude choose the generated entries; the rest is copied from the
reference checkpoint (the zoo's first), like integer buffers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rpg.config import ConfigError, resolve_config
from rpg.errors import RPGInputError
from rpg.generator.sampling import generate_models
from rpg.generator.trainer import train_generator
from rpg.io import load_safetensors
from rpg.tokens.layout import build_layout, select_entries
from rpg.tokens.store import TokenStore, write_token_store

NAMES = ["fc.weight", "fc.bias", "bn.weight", "bn.running_var", "bn.num_batches_tracked", "head.weight"]


def _zoo(root: Path, make_token_store) -> list[Path]:
    make_token_store(root)  # writes root/zoo/run<r>/ckpt_<s>.safetensors (2 runs x 3)
    return sorted((root / "zoo").glob("run*/ckpt_*.safetensors"))


def test_select_entries_globs():
    assert select_entries(NAMES) == set(NAMES)
    assert select_entries(NAMES, ["fc.*"]) == {"fc.weight", "fc.bias"}
    assert select_entries(NAMES, ["fc.*", "head.*"], ["*.bias"]) == {"fc.weight", "head.weight"}
    assert select_entries(NAMES, None, ["bn.*"]) == {"fc.weight", "fc.bias", "head.weight"}
    with pytest.raises(RPGInputError, match="tokens.include pattern 'fc2.*' matches no state_dict entry"):
        select_entries(NAMES, ["fc2.*"])
    with pytest.raises(RPGInputError, match="tokens.exclude pattern"):
        select_entries(NAMES, None, ["Head.*"])  # case-sensitive


def test_layout_marks_only_selected_entries(make_token_store, tmp_path):
    paths = _zoo(tmp_path, make_token_store)
    states = [load_safetensors(p)[0] for p in paths]
    layout = build_layout(({k: sd[k] for k in NAMES} for sd in states), token_size=4, include=["fc.*", "head.*"],
                          exclude=["fc.bias"])  # fmt: skip
    assert [s.name for s in layout.generated] == ["fc.weight", "head.weight"]
    assert layout.num_tokens == 40 // 4 + 24 // 4
    with pytest.raises(RPGInputError, match="no entry to generate"):
        build_layout(iter(states[:1]), token_size=4, include=["bn.num_batches_tracked"])


def test_store_copies_unselected_entries_from_the_reference(make_token_store, tmp_path):
    paths = _zoo(tmp_path, make_token_store)
    out = tmp_path / "partial"
    write_token_store(paths, out, token_size=8, shard_size=4, include=["head.*", "bn.*"], exclude=["*.running_var"])
    store = TokenStore(out)
    assert [s.name for s in store.layout.generated] == ["bn.weight", "head.weight"]
    assert store.meta["include"] == ["head.*", "bn.*"] and store.meta["exclude"] == ["*.running_var"]
    first, fourth = load_safetensors(paths[0])[0], load_safetensors(paths[4])[0]
    assert set(store.reference) == {"fc.weight", "fc.bias", "bn.running_var", "bn.num_batches_tracked"}
    assert all(torch.equal(store.reference[k], first[k]) for k in store.reference)
    rebuilt = store.checkpoint_state_dict(4)
    assert torch.equal(rebuilt["head.weight"], fourth["head.weight"])  # generated entries: the checkpoint's own
    assert torch.equal(rebuilt["fc.weight"], first["fc.weight"]) and not torch.equal(
        first["fc.weight"], fourth["fc.weight"]
    )
    with pytest.raises(RPGInputError, match="matches no state_dict entry") as err:
        write_token_store(paths, tmp_path / "bad", token_size=8, shard_size=4, include=["heads.*"])
    assert err.value.path == str(paths[0]) and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("coupling", ["none", "autoregressive"])
def test_generated_models_copy_the_unselected_entries(make_token_store, tmp_path, tiny_gen, tiny_train, coupling):
    paths = _zoo(tmp_path, make_token_store)
    tokens = tmp_path / "partial"
    write_token_store(paths, tokens, token_size=8, shard_size=4, include=["head.*"])
    train_generator(token_dir=tokens, out_dir=tmp_path / "gen", generator_cfg={**tiny_gen, "coupling": coupling},
                    train_cfg={**tiny_train, "steps": 3}, device="cpu")  # fmt: skip
    out = [tmp_path / "generated" / f"model_{i}.safetensors" for i in range(2)]
    generate_models(generator_dir=tmp_path / "gen", token_dir=tokens, out_paths=out,
                    generate_cfg={"num_models": 2, "steps": 3}, device="cpu")  # fmt: skip
    first = load_safetensors(paths[0])[0]
    for path in out:
        state, meta = load_safetensors(path)
        assert list(state) == sorted(NAMES) and meta["kind"] == "generated"
        for name in NAMES:
            if name == "head.weight":
                assert torch.isfinite(state[name]).all() and not torch.equal(state[name], first[name])
            else:
                assert torch.equal(state[name], first[name]), name


def test_tokens_patterns_in_the_config():
    zoo = {"arch": "cnn_s", "tokens": {"include": ["head.*"]}}
    cfg = {"experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": zoo}}}}
    s = resolve_config(cfg)["e"]["z"]
    assert s.tokens.include == ["head.*"] and s.tokens.exclude == []
    cfg["experiments"]["e"]["zoos"]["z"]["tokens"] = {"exclude": "head.*"}
    with pytest.raises(ConfigError) as err:
        resolve_config(cfg)
    assert err.value.path == "experiments.e.zoos.z.tokens.exclude"
