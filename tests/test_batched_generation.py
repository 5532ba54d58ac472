"""Batched generation: B models at once give the same files as one at a time; the sampling denoiser's numerics."""

from __future__ import annotations

import pytest
import torch

from rpg.config import GeneratorConfig
from rpg.generator.denoiser import ConvDenoiser
from rpg.generator.model import RPGModel
from rpg.generator.samplers import build_sampler
from rpg.generator.sampling import generate_models
from rpg.generator.trainer import train_generator
from rpg.tokens.store import TokenStore

TINY = {"dim": 16, "d_state": 4, "headdim": 8, "chunk_size": 8, "denoiser_channels": [1, 4, 8, 4, 1], "time_dim": 8}


def _models(root, n):
    return [root / f"model_{i:03d}.safetensors" for i in range(n)]


@pytest.mark.parametrize(
    "cfg",
    [
        {"sampler": "ddim", "steps": 4, "chunk_tokens": 3},  # several chunks, a last one of 1 token
        {"sampler": "ddpm", "steps": 5, "chunk_tokens": 1},  # noise at every step, one-token chunks
        {"sampler": "ddim", "steps": 3, "eta": 1.0, "chunk_tokens": 256, "state": 1},  # one chunk, a fixed state
    ],
)
def test_batched_files_are_bit_identical_to_batch_size_one(trained_generator, tmp_path, cfg):
    _, tokens, gen_dir = trained_generator
    n = 5
    cfg = {**cfg, "seed": 3}
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=_models(tmp_path / "one", n),
                    generate_cfg={**cfg, "batch_size": 1}, device="cpu")  # fmt: skip
    for b in (2, 5, 8):
        generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=_models(tmp_path / f"b{b}", n),
                        generate_cfg={**cfg, "batch_size": b}, device="cpu")  # fmt: skip
        for one, batched in zip(_models(tmp_path / "one", n), _models(tmp_path / f"b{b}", n)):
            assert one.read_bytes() == batched.read_bytes(), (b, one.name)
    # a model does not depend on the others of its batch: model 3 alone, at index 3
    generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=[tmp_path / "alone.safetensors"],
                    indices=[3], generate_cfg={**cfg, "batch_size": 4}, device="cpu")  # fmt: skip
    assert (tmp_path / "alone.safetensors").read_bytes() == _models(tmp_path / "one", n)[3].read_bytes()


def test_batched_task_generation_is_bit_identical(tmp_path, make_token_store, tiny_gen, tiny_train):
    tokens = make_token_store(tmp_path, tasks=True)
    gen_dir = tmp_path / "generator"
    gcfg = {**tiny_gen, "task_condition": "all"}
    train_generator(token_dir=tokens, out_dir=gen_dir, generator_cfg=gcfg, train_cfg={**tiny_train, "steps": 2})
    tasks = [[1, 0, 1, 0, 1, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 0, 0, 0, 0, 1], [1, 0, 1, 0, 1, 0, 0, 0, 0, 1]]
    cfg = {"steps": 3, "chunk_tokens": 2}
    for b in (1, 3):
        generate_models(generator_dir=gen_dir, token_dir=tokens, out_paths=_models(tmp_path / f"b{b}", 3),
                        tasks=tasks, generate_cfg={**cfg, "batch_size": b}, device="cpu")  # fmt: skip
    for one, batched in zip(_models(tmp_path / "b1", 3), _models(tmp_path / "b3", 3)):
        assert one.read_bytes() == batched.read_bytes()


def test_sample_batch_computes_prototypes_once_per_condition(cnn_layout):
    torch.manual_seed(0)
    model = RPGModel(config=GeneratorConfig.parse(TINY), positions=cnn_layout.positions(), num_states=3,
                     token_size=cnn_layout.token_size, token_lengths=cnn_layout.token_lengths())  # fmt: skip
    calls = []
    model.backbone.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    sampler = build_sampler("ddim", schedule=model.schedule, steps=2)
    gens = [torch.Generator().manual_seed(i) for i in range(5)]
    chunks = list(model.sample_batch(states=[0, 2, 0, 0, 2], sampler=sampler, generators=gens, chunk_tokens=4))
    assert calls == [1, 1]  # two distinct states: two backbone passes of one sequence each
    assert [s for s, _ in chunks] == list(range(0, model.num_tokens, 4))
    assert all(x.shape[0] == 5 and x.shape[2] == model.token_size for _, x in chunks)
    with pytest.raises(ValueError, match="one each per model"):
        next(model.sample_batch(states=[0, 1], sampler=sampler, generators=gens[:1]))


@pytest.fixture(scope="module")
def cnn_layout(tmp_path_factory, make_token_store):
    return TokenStore(make_token_store(tmp_path_factory.mktemp("layout"), token_size=8)).layout


def test_frozen_denoiser_matches_the_eval_network():
    torch.manual_seed(0)
    net = ConvDenoiser(token_size=32, cond_dim=12, channels=[1, 8, 16, 8, 1], time_dim=16)
    for bn in net.norms:  # non-trivial BatchNorm statistics and affine parameters
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_(1.0, 0.2)
        bn.bias.data.normal_()
    net.eval()
    x, cond = torch.randn(6, 32), torch.randn(6, 12)
    frozen = net.frozen()
    for t in (0, 417, 999):
        with torch.no_grad():
            ref = net(x, torch.full((6,), t), cond)
        out = frozen(x, frozen.time(t), frozen.condition(cond))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        one = frozen(x[:1], frozen.time(t), frozen.condition(cond[:1]))  # a one-token batch (padded)
        torch.testing.assert_close(one, ref[:1], rtol=1e-5, atol=1e-5)
    # bfloat16 convs stay close to float32 (relative to the output scale)
    bf = net.frozen().to(torch.bfloat16)
    out = bf(x, bf.time(999), bf.condition(cond)).float()
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    assert net.conv_flops_per_token() == 2 * 7 * 32 * (8 + 8 * 16 + 16 * 8 + 8)
    assert net.flops_per_token() == net.conv_flops_per_token() + 2 * (12 * 32 + 16 * 16 + 16 * 32)


@pytest.mark.parametrize(("threads", "token_size"), [(1, 8), (2, 8), (1, 64), (2, 64)])
def test_a_model_does_not_depend_on_batch_or_micro_batch(tmp_path, make_token_store, threads, token_size):
    layout = TokenStore(make_token_store(tmp_path, token_size=token_size)).layout
    torch.manual_seed(0)
    cfg = {**TINY, "denoiser_channels": [1, 16, 32, 16, 1]}
    model = RPGModel(config=GeneratorConfig.parse(cfg), positions=layout.positions(), num_states=3,
                     token_size=layout.token_size, token_lengths=layout.token_lengths())  # fmt: skip
    sampler = build_sampler("ddpm", schedule=model.schedule, steps=3)

    def run(states, micro_batch):
        gens = [torch.Generator().manual_seed(10 + s) for s in range(len(states))]
        chunks = model.sample_batch(states=states, sampler=sampler, generators=gens, chunk_tokens=2,
                                    micro_batch=micro_batch)  # fmt: skip
        return torch.cat([x for _, x in chunks], dim=1)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = run([1], 2)
        for states, micro_batch in (([1, 0, 2], 3), ([1, 2], 7), ([1], 5), ([1, 1, 0, 2], 1 << 30)):
            got = run(states, micro_batch)[0]
            assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(alone[0])), (states, micro_batch)
    finally:
        torch.set_num_threads(before)
