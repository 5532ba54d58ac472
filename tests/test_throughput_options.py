"""Throughput options: several noise levels per token, the widened Mamba2 stack, bf16 paths, 8-bit AdamW fallback."""

from __future__ import annotations

import logging

import pytest
import torch

from rpg.config import GeneratorConfig, TrainConfig, result_dict
from rpg.generator.backbones import build_backbone
from rpg.generator.model import RPGModel, draw_tokens
from rpg.generator.samplers import build_sampler
from rpg.generator.trainer import train_generator
from rpg.optim import build_adamw
from rpg.tokens.store import TokenStore

TINY = {"dim": 16, "d_state": 4, "headdim": 8, "chunk_size": 8, "denoiser_channels": [1, 8, 16, 8, 1], "time_dim": 8}


@pytest.fixture(scope="module")
def store(tmp_path_factory, make_token_store):
    return TokenStore(make_token_store(tmp_path_factory.mktemp("opts"), token_size=16))


def _model(store, **overrides) -> RPGModel:
    torch.manual_seed(0)
    layout = store.layout
    return RPGModel(config=GeneratorConfig.parse({**TINY, **overrides}), positions=layout.positions(),
                    token_size=layout.token_size, num_states=store.num_states,
                    token_lengths=layout.token_lengths())  # fmt: skip


def test_noise_samples_denoise_each_token_at_several_timesteps(store):
    model = _model(store)
    tokens = store.tokens(range(4)).float()
    states = torch.tensor(store.index["state"].tolist()[:4])
    seen = []
    model.denoiser.register_forward_hook(lambda m, a, o: seen.append((a[0].shape[0], a[1].clone(), a[2].clone())))
    loss1 = model(tokens, states, diffusion_batch=6, generator=torch.Generator().manual_seed(0))
    loss3 = model(tokens, states, diffusion_batch=6, noise_samples=3, generator=torch.Generator().manual_seed(0))
    (n1, _, _), (n3, t3, c3) = seen
    assert (n1, n3) == (6, 18)  # 6 tokens, each at 3 timesteps
    assert torch.equal(c3[:6], c3[6:12]) and torch.equal(c3[:6], c3[12:])  # the same prototypes, computed once
    assert len(set(t3.tolist())) > 6  # own timesteps
    assert torch.isfinite(loss1) and torch.isfinite(loss3)
    loss3.backward()
    with pytest.raises(ValueError, match="noise_samples"):
        model(tokens, states, diffusion_batch=6, noise_samples=0)
    # noise_samples 1 is the previous step exactly (same draws, same loss)
    again = model(tokens, states, diffusion_batch=6, noise_samples=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, loss1)


def test_widened_mamba_stack_and_generator(store):
    stack = build_backbone("mamba2", dim=16, num_layers=2, d_state=4, headdim=8, chunk_size=8, widen_to=24)
    assert stack(torch.randn(2, 11, 16)).shape == (2, 11, 24)
    assert stack.layers[1].in_proj.in_features == 16 and stack.layers[1].out_proj.out_features == 24
    plain = build_backbone("mamba2", dim=16, num_layers=2, d_state=4, headdim=8, chunk_size=8)
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in build_backbone("mamba2", dim=16, num_layers=2, d_state=4, headdim=8, chunk_size=8,
                                              widen_to=None).state_dict().items()
    }  # fmt: skip
    model = _model(store, widen_to=24)
    assert model.denoiser.cond_proj.in_features == 24 and GeneratorConfig.parse({**TINY, "widen_to": 24}).prototype_dim
    sampler = build_sampler("ddim", schedule=model.schedule, steps=2)
    x = model.generate(state=0, sampler=sampler, generator=torch.Generator().manual_seed(0), chunk_tokens=4)
    assert x.shape == (model.num_tokens, model.token_size)
    with pytest.raises(ValueError, match="widen_to"):
        GeneratorConfig.parse({**TINY, "backbone": "lstm", "widen_to": 24})


def test_bf16_sampling_stays_close_to_float32(store):
    """The bf16 path (CPU here; the GPU speed path): prototypes under autocast and bf16 denoiser convs give tokens
    within 0.05 of the float32 ones relative to their scale, from the same noise."""
    model = _model(store)
    for bn in model.denoiser.norms:
        bn.running_var.uniform_(0.5, 2.0)
    sampler = build_sampler("ddim", schedule=model.schedule, steps=4)

    def run(dtype):
        chunks = model.sample_chunks(state=1, sampler=sampler, generator=torch.Generator().manual_seed(5),
                                     chunk_tokens=8, dtype=dtype)  # fmt: skip
        return torch.nan_to_num(torch.cat([x for _, x in chunks]))

    fp32, bf16 = run(torch.float32), run(torch.bfloat16)
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)
    assert (bf16 - fp32).abs().max() <= 0.05 * fp32.abs().max()


def test_bf16_training_loss_stays_close_to_float32(store):
    model = _model(store)
    tokens = store.tokens(range(4)).float()
    states = torch.tensor(store.index["state"].tolist()[:4])
    losses = []
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                losses.append(
                    float(model(tokens, states, diffusion_batch=8, generator=torch.Generator().manual_seed(1)))
                )
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_adamw_8bit_falls_back_with_a_warning(caplog, store, tmp_path, tiny_gen, tiny_train):
    params = [torch.nn.Parameter(torch.randn(3))]
    with caplog.at_level(logging.WARNING):
        opt = build_adamw(params, lr=1e-3, weight_decay=0.0, eight_bit=True)
    assert isinstance(opt, torch.optim.AdamW) and "8-bit AdamW unavailable" in caplog.text
    assert isinstance(build_adamw(params, lr=1e-3, weight_decay=0.0), torch.optim.AdamW)
    # the trainer takes the options (and the CPU bf16 autocast) end to end
    cfg = TrainConfig.parse({**tiny_train, "steps": 2, "adamw_8bit": True, "bf16_cpu": True, "noise_samples": 2})
    train_generator(token_dir=store.directory, out_dir=tmp_path / "g", generator_cfg=tiny_gen,
                    train_cfg=cfg.to_dict(), device="cpu")  # fmt: skip
    assert (tmp_path / "g" / "model.safetensors").is_file()


def test_running_stats_tokens_are_drawn_more_often(store, tmp_path, tiny_gen, tiny_train):
    """``train.running_stats_weight``: the BatchNorm running-statistics tokens (the fake zoo's bn.running_var) are
    drawn in proportion to their weight, without replacement and never from all-padding tokens; no weight is the
    uniform draw of before; the trainer passes the weights on."""
    layout = store.layout
    is_stat = layout.running_stats_tokens()
    var = next(s for s in layout.generated if s.name == "bn.running_var")
    assert is_stat.nonzero().flatten().tolist() == list(range(var.first_token, var.first_token + var.num_tokens))
    present = torch.ones(4, layout.num_tokens, dtype=torch.bool)
    present[1, 0] = False  # an all-padding token
    weights = torch.where(is_stat, 8.0, 1.0)
    share = {None: 0, "weighted": 0}
    for seed in range(300):
        for key in share:
            rows, toks = draw_tokens(present, 4, torch.Generator().manual_seed(seed), None if key is None else weights)
            assert len(set(zip(rows.tolist(), toks.tolist()))) == 4 and not ((rows == 1) & (toks == 0)).any()
            share[key] += int(is_stat[toks].sum())
    # expected stat tokens per draw: uniform 4 x 4/31 = 0.52; weight 8 about 2.1
    assert share[None] / 300 == pytest.approx(4 * 4 / 31, rel=0.25) and share["weighted"] / 300 > 1.7
    rows, toks = draw_tokens(present, 4, torch.Generator().manual_seed(0))
    pick = torch.randperm(31, generator=torch.Generator().manual_seed(0))[:4]
    assert torch.equal(torch.stack([rows, toks]), torch.stack(present.nonzero(as_tuple=True))[:, pick])
    assert draw_tokens(present, 100, None, weights)[0].numel() == 31  # fewer present than asked: all of them
    logs = {}
    for w in (1.0, 8.0):
        out = tmp_path / f"w{w}"
        train_generator(token_dir=store.directory, out_dir=out, generator_cfg=tiny_gen,
                        train_cfg={**tiny_train, "running_stats_weight": w}, device="cpu")  # fmt: skip
        logs[w] = (out / "train_log.csv").read_text()
    assert logs[1.0] != logs[8.0]
    with pytest.raises(ValueError, match="running_stats_weight"):
        TrainConfig.parse({"running_stats_weight": 0})
    # at its neutral value the option is not in the rule's params: adding it reran no finished training
    assert "running_stats_weight" not in result_dict(TrainConfig.parse({}))
    assert result_dict(TrainConfig.parse({"running_stats_weight": 12}))["running_stats_weight"] == 12
