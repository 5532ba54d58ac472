"""Memory-flat generation: the streaming safetensors writer and streamed detokenization of sampled chunks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from rpg.config import GeneratorConfig
from rpg.generator.model import RPGModel
from rpg.generator.samplers import build_sampler
from rpg.generator.sampling import generate_models, load_generator, write_generated_model
from rpg.generator.trainer import train_generator
from rpg.io import (
    META_KEY,
    SafetensorsStreamWriter,
    file_digest,
    load_safetensors,
    read_safetensors_metadata,
    save_safetensors,
)
from rpg.tokens.store import TokenStore, write_token_store
from rpg.tokens.stream import LazyTensors, layer_pieces, write_streamed_state_dict
from rpg.tokens.tokenizer import detokenize, tokenize
from rpg.zoo.checkpoint import save_checkpoint
from rpg.zoo.models import build_model

TINY = {"dim": 16, "d_state": 4, "headdim": 8, "chunk_size": 8, "denoiser_channels": [1, 4, 1], "time_dim": 8}


def test_writer_is_byte_identical_to_save_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "z.weight": torch.randn(5, 7, generator=g),
        "a.double": torch.randn(3, generator=g, dtype=torch.float64),
        "m.half": torch.randn(2, 3, generator=g).half(),
        "m.bf16": torch.randn(4, generator=g).bfloat16(),
        "count": torch.tensor(7),
        "flags": torch.tensor([True, False, True]),
        "b.int": torch.arange(5, dtype=torch.int32),
    }
    meta = {"kind": "generated", "note": 'quotes " and unicode \u00e9'}
    save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    digest = save_safetensors(tensors, tmp_path / "saved.safetensors", meta)  # streams its entries in file order
    assert (tmp_path / "saved.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert digest == file_digest(tmp_path / "ref.safetensors")  # computed as it was written
    entries = [(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    with SafetensorsStreamWriter(tmp_path / "stream.safetensors", entries, meta) as out:
        for name in reversed(list(tensors)):  # any entry order, pieces of any size
            flat = tensors[name].reshape(-1)
            for i in range(0, flat.numel(), 3):
                out.write(name, flat[i : i + 3])
    assert (tmp_path / "stream.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    assert out.digest == digest  # pieces out of file order: read back before the rename
    loaded, loaded_meta = load_safetensors(tmp_path / "stream.safetensors")
    assert loaded_meta == meta and all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_writer_leaves_nothing_on_errors(tmp_path):
    path = tmp_path / "out.safetensors"
    entries = [("w", (2, 3), torch.float32), ("n", (), torch.int64)]
    with pytest.raises(ValueError, match="incomplete"):
        with SafetensorsStreamWriter(path, entries) as out:
            out.write("w", torch.zeros(6))  # "n" never written
    with pytest.raises(ValueError, match="is torch.float32"):
        with SafetensorsStreamWriter(path, entries) as out:
            out.write("w", torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="7 elements"):
        with SafetensorsStreamWriter(path, entries) as out:
            out.write("w", torch.zeros(4))
            out.write("w", torch.zeros(3))
    with pytest.raises(RuntimeError, match="boom"):
        with SafetensorsStreamWriter(path, entries) as out:
            out.write("w", torch.zeros(6))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file
    with pytest.raises(ValueError, match="given twice"):
        SafetensorsStreamWriter(path, entries + entries)


@pytest.fixture(scope="module")
def cnn_zoo(tmp_path_factory):
    """Two real cnn_s checkpoints (conv, BatchNorm with running stats and an int64 counter, linear head)."""
    root = tmp_path_factory.mktemp("cnn")
    paths = []
    for seed in (0, 1):
        model = build_model("cnn_s", {"num_classes": 10, "in_chans": 1}, seed=seed)
        model.train()(torch.randn(8, 1, 8, 8))  # move the BatchNorm running statistics away from 0/1
        meta = {"kind": "checkpoint", "arch": "cnn_s", "arch_kwargs": {"num_classes": 10, "in_chans": 1},
                "run": seed, "seed": seed, "step": 0, "index": 0, "val_accuracy": 0.1, "task": None,
                "num_classes": 10}  # fmt: skip
        path = root / f"ckpt_{seed}.safetensors"
        save_checkpoint(path, model.state_dict(), meta)
        paths.append(path)
    write_token_store(paths, root / "tokens", token_size=24, shard_size=2)
    return root, TokenStore(root / "tokens")


def _untrained(layout, num_states: int = 2) -> RPGModel:
    torch.manual_seed(0)
    return RPGModel(config=GeneratorConfig.parse(TINY), positions=layout.positions(), token_size=layout.token_size,
                    num_states=num_states, token_lengths=layout.token_lengths())  # fmt: skip


@pytest.mark.parametrize("chunk_tokens", [1, 5, 1000])
def test_streamed_generation_is_bit_identical_and_loads_strict(cnn_zoo, tmp_path, chunk_tokens):
    root, store = cnn_zoo
    layout = store.layout
    model = _untrained(layout)
    sampler = build_sampler("ddim", schedule=model.schedule, steps=3)
    meta = {"kind": "generated", "arch": "cnn_s", "state_dict_keys": layout.names}
    # the non-streaming path: all tokens, then detokenize, then save (same seed, same chunks of noise)
    tokens = model.generate(state=1, sampler=sampler, generator=torch.Generator().manual_seed(3),
                            chunk_tokens=chunk_tokens)  # fmt: skip
    full = detokenize(tokens, layout, store.reference)
    save_safetensors(full, tmp_path / "full.safetensors", meta)
    reference = LazyTensors(root / "tokens" / "reference.safetensors")  # copied entries read when written
    write_generated_model(model, path=tmp_path / "stream.safetensors", layout=layout, reference=reference, state=1,
                          sampler=sampler, generator=torch.Generator().manual_seed(3), chunk_tokens=chunk_tokens,
                          metadata=meta)  # fmt: skip
    assert (tmp_path / "stream.safetensors").read_bytes() == (tmp_path / "full.safetensors").read_bytes()
    streamed, _ = load_safetensors(tmp_path / "stream.safetensors")
    assert all(torch.equal(streamed[k], v) and streamed[k].dtype == v.dtype for k, v in full.items())
    assert torch.equal(streamed["features.1.num_batches_tracked"], store.reference["features.1.num_batches_tracked"])
    assert (streamed["features.1.running_var"] > 0).all()
    target = build_model("cnn_s", {"num_classes": 10, "in_chans": 1})
    target.load_state_dict(streamed, strict=True)


def test_streamed_detokenize_round_trips_a_checkpoint(cnn_zoo, tmp_path):
    root, store = cnn_zoo
    layout = store.layout
    original, _ = load_safetensors(root / "ckpt_1.safetensors")
    tokens = tokenize(original, layout)
    chunks = [(s, tokens[s : s + 4]) for s in range(0, layout.num_tokens, 4)]
    write_streamed_state_dict(tmp_path / "rt.safetensors", chunks, layout, store.reference, {"kind": "x"})
    back, meta = load_safetensors(tmp_path / "rt.safetensors")
    assert meta == {"kind": "x"} and all(torch.equal(back[k], original[k]) for k in original)  # bit-exact
    pieces = list(layer_pieces(chunks, layout))
    assert [p[0].name for p in pieces][0] == layout.generated[0].name
    assert sum(v.numel() for _, v in pieces) == layout.num_parameters  # padding cropped


def test_bad_chunks_and_non_finite_weights_leave_no_file(cnn_zoo, tmp_path):
    root, store = cnn_zoo
    layout = store.layout
    tokens = torch.zeros(layout.num_tokens, layout.token_size)
    out = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="consecutive"):
        write_streamed_state_dict(out, [(0, tokens[:2]), (3, tokens[3:])], layout, store.reference)
    with pytest.raises(ValueError, match="stopped at token 2"):
        write_streamed_state_dict(out, [(0, tokens[:2])], layout, store.reference)
    model = _untrained(layout)
    model.denoiser.convs[-1].bias.data.fill_(float("nan"))  # the denoiser outputs NaN
    sampler = build_sampler("ddim", schedule=model.schedule, steps=2)
    with pytest.raises(FloatingPointError, match="non-finite"):
        write_generated_model(model, path=out, layout=layout, reference=store.reference, state=0, sampler=sampler)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_lazy_tensors_reads_on_demand(cnn_zoo):
    root, store = cnn_zoo
    lazy = LazyTensors(root / "tokens" / "reference.safetensors")
    assert sorted(lazy) == sorted(store.reference) and len(lazy) == len(store.reference)
    name = next(iter(lazy))
    assert torch.equal(lazy[name], store.reference[name])
    with pytest.raises(KeyError):
        lazy["nope"]


def test_pipeline_generation_streams_from_a_trained_generator(tmp_path, make_token_store, tiny_gen, tiny_train):
    tokens = make_token_store(tmp_path)
    gen_dir = tmp_path / "generator"
    train_generator(token_dir=tokens, out_dir=gen_dir, generator_cfg=tiny_gen, train_cfg={**tiny_train, "steps": 2},
                    device="cpu")  # fmt: skip
    model, _ = load_generator(gen_dir)
    layout = TokenStore(tokens).layout
    assert torch.equal(model.token_mask, layout.token_mask())  # token lengths read slice by slice
    paths = [tmp_path / "gen" / f"model_{i}.safetensors" for i in range(2)]
    cfg = {"sampler": "ddim", "steps": 3, "chunk_tokens": 3, "seed": 5, "state": 1}
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=paths, generate_cfg=cfg, device="cpu")
    sd, meta = load_safetensors(paths[1])
    expected = detokenize(model.generate(state=1, sampler=build_sampler("ddim", schedule=model.schedule, steps=3),
                                         generator=torch.Generator().manual_seed(6), chunk_tokens=3), layout,
                          TokenStore(tokens).reference)  # fmt: skip
    assert all(torch.equal(sd[k], expected[k]) for k in expected)
    assert meta["state_dict_keys"] == layout.names and read_safetensors_metadata(paths[0])["sample_seed"] == 5
