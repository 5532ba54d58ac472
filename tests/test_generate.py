"""Generation from a trained (tiny) generator: loadable state_dicts, metadata, seeds, task conditioning."""

from __future__ import annotations

import pytest
import torch

from rpg.errors import RPGInputError
from rpg.generator.sampling import generate_models, load_generator
from rpg.generator.trainer import train_generator
from rpg.io import load_safetensors


@pytest.fixture(scope="module")
def trained(trained_generator):
    return trained_generator


def test_generated_models_match_the_architecture(trained):
    root, tokens, gen_dir = trained
    paths = [root / "out" / f"model_{i:03d}.safetensors" for i in range(3)]
    cfg = {"num_models": 3, "sampler": "ddim", "steps": 5, "eta": 0.0, "chunk_tokens": 2, "seed": 10}
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=paths, generate_cfg=cfg, device="cpu")
    ref, ref_meta = load_safetensors(root / "zoo" / "run0" / "ckpt_000.safetensors")
    states = set()
    for i, p in enumerate(paths):
        sd, meta = load_safetensors(p)
        assert sorted(sd) == sorted(ref)
        for k in ref:
            assert sd[k].shape == ref[k].shape and sd[k].dtype == ref[k].dtype, k
            assert torch.isfinite(sd[k].float()).all()
        assert torch.equal(sd["bn.num_batches_tracked"], ref["bn.num_batches_tracked"])  # copied
        assert (sd["bn.running_var"] > 0).all()  # inverse of the log-variance transform
        assert meta["kind"] == "generated" and meta["arch"] == "fake" and meta["num_classes"] == 3
        assert meta["sample_seed"] == 10 + i and meta["sampler"] == "ddim" and meta["sampling_steps"] == 5
        assert meta["val_accuracy"] is None and meta["generator"] == str(gen_dir) and meta["index"] == i
        states.add(meta["state"])
    # each model's state is the one drawn from its own seed (uniform over the 2 runs' states)
    expected = [int(torch.randint(2, (1,), generator=torch.Generator().manual_seed(10 + i))) for i in range(3)]
    assert [load_safetensors(p)[1]["state"] for p in paths] == expected
    # same seed -> same model; the state can be fixed
    again = root / "again.safetensors"
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[again], generate_cfg=cfg, device="cpu")
    a, b = load_safetensors(paths[0])[0], load_safetensors(again)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[again],
                    generate_cfg={**cfg, "state": 1, "sampler": "ddpm", "steps": 20}, device="cpu")  # fmt: skip
    meta = load_safetensors(again)[1]
    assert meta["state"] == 1 and meta["sampler"] == "ddpm" and meta["sampling_steps"] == 20


def test_load_generator_weights_and_errors(trained, tmp_path, make_token_store):
    root, tokens, gen_dir = trained
    ema, _ = load_generator(gen_dir, weights="ema")
    raw, cfg = load_generator(gen_dir, weights="model")
    assert not ema.training and cfg["num_states"] == 2
    w = "denoiser.convs.0.weight"
    assert not torch.equal(ema.state_dict()[w], raw.state_dict()[w])
    assert torch.equal(load_generator(gen_dir)[0].state_dict()[w], ema.state_dict()[w])  # auto = EMA
    with pytest.raises(RPGInputError):
        load_generator(tmp_path)
    other = make_token_store(tmp_path, token_size=8)  # another layout
    with pytest.raises(RPGInputError, match="trained on"):
        generate_models(generator_dir=gen_dir, token_dir=other, out_paths=[tmp_path / "x.safetensors"],
                        generate_cfg={"steps": 2}, device="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="unknown key"):
        generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[], generate_cfg={"stepz": 2})
    with pytest.raises(ValueError, match="state"):
        generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[tmp_path / "y.safetensors"],
                        generate_cfg={"steps": 2, "state": 7}, device="cpu")  # fmt: skip


def test_task_conditioned_generator(tmp_path, make_token_store, tiny_gen, tiny_train):
    tokens = make_token_store(tmp_path, tasks=True)
    gen_dir = tmp_path / "generator"
    gcfg = {**tiny_gen, "task_condition": "head", "head_tokens": 2}
    train_generator(token_dir=tokens, out_dir=gen_dir, generator_cfg=gcfg, train_cfg={**tiny_train, "steps": 2})
    out = tmp_path / "m.safetensors"
    task = [1, 0, 1, 0, 1, 0, 0, 0, 0, 1]
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[out],
                    generate_cfg={"steps": 3, "task": task}, device="cpu")  # fmt: skip
    assert load_safetensors(out)[1]["task"] == task
    with pytest.raises(ValueError, match="task"):
        generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[out], generate_cfg={"steps": 3})
