"""generator.coupling: autoregressive: the backbone reads the previous block's tokens; the paper's mode unchanged.

Stateful backbones (a sequence in pieces == one pass), teacher forcing in training, block-by-block sampling whose
prototypes are those of the teacher-forced pass over the generated tokens, batched generation bit-identical to
one model at a time, training with resume and DDP, task conditioning, and the config keys' params.
"""

from __future__ import annotations

import pytest
import torch

from rpg.config import ConfigError, GeneratorConfig, result_dict
from rpg.generator.backbones import build_backbone
from rpg.generator.mamba2 import Mamba2, ssd_scan_chunked
from rpg.generator.model import RPGModel
from rpg.generator.samplers import build_sampler
from rpg.generator.sampling import generate_models, load_generator
from rpg.generator.trainer import train_generator

torch.set_num_threads(1)
TINY = {"dim": 32, "d_state": 8, "headdim": 16, "chunk_size": 4, "denoiser_channels": [1, 4, 8, 4, 1], "time_dim": 16}
POS = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 1], [3, 0]])  # L = 7
K = 12
AR = {"coupling": "autoregressive", "coupling_block": 3}


def make(**over) -> RPGModel:
    torch.manual_seed(0)
    mask = torch.ones(7, K, dtype=torch.bool)
    mask[2, 7:] = False
    mask[5, 3:] = False
    cfg = GeneratorConfig.parse({**TINY, **AR, **over})
    model = RPGModel(config=cfg, positions=POS, token_size=K, num_states=3, token_mask=mask)
    if model.token_input is not None:  # as if trained: a non-zero coupling
        with torch.no_grad():
            model.token_input.proj.weight.normal_(0, 0.3)
            model.token_input.start.normal_(0, 0.3)
    return model


def test_chunked_scan_carries_a_state_across_pieces():
    gen = torch.Generator().manual_seed(0)
    b, length, h, p, n = 2, 23, 4, 3, 5
    x = torch.randn(b, length, h, p, generator=gen, dtype=torch.float64)
    dt = torch.rand(b, length, h, generator=gen, dtype=torch.float64)
    A = -torch.rand(h, generator=gen, dtype=torch.float64) - 0.1
    B = torch.randn(b, length, 1, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, length, 1, n, generator=gen, dtype=torch.float64)
    whole, final = ssd_scan_chunked(x, dt, A, B, C, chunk_size=4, return_final_state=True)
    assert torch.equal(whole, ssd_scan_chunked(x, dt, A, B, C, chunk_size=4))  # the default path is unchanged
    state, pieces = None, []
    for a, z in ((0, 5), (5, 6), (6, 17), (17, 23)):
        y, state = ssd_scan_chunked(x[:, a:z], dt[:, a:z], A, B[:, a:z], C[:, a:z], chunk_size=4,
                                    initial_state=state, return_final_state=True)  # fmt: skip
        pieces.append(y)
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-12)
    assert torch.allclose(state, final, atol=1e-12)


@pytest.mark.parametrize("kind", ["mamba2", "lstm"])
def test_backbone_in_pieces_equals_one_pass(kind):
    torch.manual_seed(0)
    kwargs = {"d_state": 8, "headdim": 16, "chunk_size": 4} if kind == "mamba2" else {}
    net = build_backbone(kind, dim=32, num_layers=2, **kwargs)
    u = torch.randn(2, 19, 32)
    whole = net(u)
    state, pieces = None, []
    for a, z in ((0, 1), (1, 3), (3, 11), (11, 19)):  # pieces shorter than the conv width too
        y, state = net.forward_stateful(u[:, a:z], state)
        pieces.append(y)
    assert torch.allclose(torch.cat(pieces, dim=1), whole, atol=1e-5)


def test_mamba2_layer_stateful_from_scratch_equals_forward():
    torch.manual_seed(0)
    layer = Mamba2(d_model=16, d_state=4, headdim=8, chunk_size=4, scan="torch")
    u = torch.randn(1, 10, 16)
    y, _ = layer.forward_stateful(u)
    assert torch.allclose(y, layer(u), atol=1e-6)


def test_config_keys_neutral_and_checked():
    paper = GeneratorConfig.parse({})
    assert paper.coupling == "none"
    assert not {"coupling", *GeneratorConfig.COUPLING_KEYS} & set(result_dict(paper))  # params of today unchanged
    ar = GeneratorConfig.parse({"coupling": "autoregressive"})
    assert {"coupling", *GeneratorConfig.COUPLING_KEYS} <= set(result_dict(ar))
    with pytest.raises(ConfigError, match="coupling"):
        GeneratorConfig.parse({"coupling": "autoregressive", "backbone": "transformer"})
    with pytest.raises(ConfigError, match="coupling_block"):
        GeneratorConfig.parse({"coupling": "autoregressive", "coupling_block": 0})


def test_paper_mode_builds_the_same_model_as_before():
    """No coupling: no new parameters, and the same initial weights (the new module is created last)."""
    plain, coupled = make(coupling="none"), make()
    assert plain.token_input is None and not plain.coupled
    extra = set(coupled.state_dict()) - set(plain.state_dict())
    assert extra == {"token_input.proj.weight", "token_input.proj.bias", "token_input.start"}
    for k, v in plain.state_dict().items():
        assert torch.equal(v, coupled.state_dict()[k]), k


def test_untrained_coupling_computes_the_paper_prototypes():
    torch.manual_seed(0)
    cfg = GeneratorConfig.parse({**TINY, **AR})
    model = RPGModel(config=cfg, positions=POS, token_size=K, num_states=3)
    plain = RPGModel(config=GeneratorConfig.parse(TINY), positions=POS, token_size=K, num_states=3)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("token_input.")})
    tokens = torch.randn(2, 7, K)
    states = torch.tensor([0, 2])
    assert torch.allclose(model.prototypes(states, tokens=tokens), plain.prototypes(states))


def test_training_loss_is_causal_per_checkpoint_and_reaches_the_coupling():
    model = make(coupling_noise=0.0, coupling_dropout=0.0)
    tokens = torch.randn(2, 7, K).masked_fill(~model.token_mask, float("nan"))
    states = torch.tensor([1, 1])
    clean = model.teacher_tokens(tokens, None)
    assert torch.equal(clean, tokens.nan_to_num(0.0))
    protos = model.prototypes(states, tokens=clean)
    assert not torch.allclose(protos[0], protos[1])  # same state, other tokens: prototypes per checkpoint
    changed = clean.clone()
    changed[0, 4] += 1.0  # token 4 enters the input at position 4 + 3 = 7 >= L: no prototype may change
    assert torch.equal(model.prototypes(states, tokens=changed), protos)
    changed[0, 1] += 1.0  # enters at position 4: prototypes 0..3 unchanged, 4.. changed
    after = model.prototypes(states, tokens=changed)
    assert torch.equal(after[0, :4], protos[0, :4]) and not torch.allclose(after[0, 4:], protos[0, 4:])
    batches = []
    model.backbone.register_forward_hook(lambda m, a, o: batches.append(a[0].shape[0]))
    loss = model(tokens, states, diffusion_batch=1000, generator=torch.Generator().manual_seed(0))
    assert batches == [2] and torch.isfinite(loss)
    loss.backward()
    assert model.token_input.proj.weight.grad.abs().sum() > 0 and model.token_input.start.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="coupled generator needs tokens"):
        model.prototypes(states)


def test_teacher_tokens_noise_and_dropout():
    model = make(coupling_noise=0.5, coupling_dropout=0.5)
    tokens = torch.randn(64, 7, K).masked_fill(~make().token_mask, float("nan"))
    out = model.teacher_tokens(tokens, torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    assert (out[torch.isnan(tokens)] == 0).all()  # padding stays 0
    dropped = (out == 0).all(dim=-1).float().mean()
    assert 0.35 < float(dropped) < 0.65
    kept = ~(out == 0).all(dim=-1)
    diff = (out - tokens.nan_to_num(0.0))[kept][:, :3]  # the first 3 entries are real in every token
    assert 0.1 < float(diff.std()) < 0.5  # std uniform in [0, 0.5]: rms about 0.29
    again = model.teacher_tokens(tokens, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


@pytest.mark.parametrize(("chunk_tokens", "backbone"), [(1, "mamba2"), (2, "mamba2"), (256, "mamba2"), (2, "lstm")])
def test_sampling_feeds_back_the_generated_tokens(chunk_tokens, backbone):
    """The prototypes used block by block are those of one teacher-forced pass over the generated model."""
    model = make(backbone=backbone)
    sampler = build_sampler("ddim", schedule=model.schedule, steps=4)
    seen = []
    frozen_condition = type(model.denoiser.frozen()).condition

    def spy(self, cond):
        seen.append(cond.clone())
        return frozen_condition(self, cond)

    type(model.denoiser.frozen()).condition = spy
    try:
        out = model.generate(state=2, sampler=sampler, generator=torch.Generator().manual_seed(0),
                             chunk_tokens=chunk_tokens)  # fmt: skip
    finally:
        type(model.denoiser.frozen()).condition = frozen_condition
    assert out.shape == (7, K) and torch.equal(torch.isnan(out), ~model.token_mask)
    used = torch.cat(seen)
    with torch.no_grad():
        expected = model.prototypes(torch.tensor([2]), tokens=out.nan_to_num(0.0)[None])[0]
    assert torch.allclose(used, expected, atol=1e-5)
    again = model.generate(state=2, sampler=sampler, generator=torch.Generator().manual_seed(0),
                           chunk_tokens=chunk_tokens)  # fmt: skip
    assert torch.equal(out.nan_to_num(), again.nan_to_num())
    assert model.training  # the mode is restored


def test_batched_coupled_sampling_equals_one_at_a_time():
    model = make(task_condition="head", head_tokens=2, task_bits=4)
    sampler = build_sampler("ddpm", schedule=model.schedule, steps=3)
    tasks = [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]]
    states = [0, 2, 1]

    def run(idx):
        chunks = model.sample_batch(states=[states[i] for i in idx], tasks=[tasks[i] for i in idx], sampler=sampler,
                                    generators=[torch.Generator().manual_seed(10 + i) for i in idx],
                                    chunk_tokens=2)  # fmt: skip
        return torch.cat([x for _, x in chunks], dim=1)

    together = run([0, 1, 2])
    for i in range(3):
        assert torch.equal(together[i].nan_to_num(), run([i])[0].nan_to_num())
    assert not torch.allclose(together[0].nan_to_num(), together[2].nan_to_num())
    with pytest.raises(ValueError, match="task"):
        list(model.sample_batch(states=[0], sampler=sampler, generators=[None]))


def test_pipeline_train_resume_generate(tmp_path, token_dir, tiny_gen, tiny_train):
    gcfg = {**tiny_gen, "coupling": "autoregressive", "coupling_block": 2}
    tcfg = {**tiny_train, "steps": 4, "save_every": 2}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_generator(token_dir=token_dir, out_dir=straight, generator_cfg=gcfg, train_cfg=tcfg, device="cpu")
    train_generator(token_dir=token_dir, out_dir=resumed, generator_cfg=gcfg, train_cfg=tcfg, device="cpu",
                    stop_after=2)  # fmt: skip
    assert (resumed / "resume" / "state.pt").is_file()
    train_generator(token_dir=token_dir, out_dir=resumed, generator_cfg=gcfg, train_cfg=tcfg, device="cpu")
    a = (straight / "train_log.csv").read_text().splitlines()
    b = (resumed / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in a] == [r.split(",")[:3] for r in b]  # step, loss, lr
    model, cfg = load_generator(straight)
    assert model.coupled and cfg["generator"]["coupling"] == "autoregressive"
    outs = [tmp_path / "gen" / f"model_{i}.safetensors" for i in range(3)]
    one = [tmp_path / "one" / f"model_{i}.safetensors" for i in range(3)]
    gen_cfg = {"steps": 3, "chunk_tokens": 3, "seed": 5}
    generate_models(generator_dir=straight, token_dir=token_dir, out_paths=outs,
                    generate_cfg={**gen_cfg, "batch_size": 3}, device="cpu")  # fmt: skip
    generate_models(generator_dir=straight, token_dir=token_dir, out_paths=one,
                    generate_cfg={**gen_cfg, "batch_size": 1}, device="cpu")  # fmt: skip
    for x, y in zip(outs, one):
        assert x.read_bytes() == y.read_bytes()
