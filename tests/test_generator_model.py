"""RPGModel: prototypes once per distinct (state, task), masked loss on a token subset, chunked generation."""

from __future__ import annotations

import pytest
import torch

from rpg.config import GeneratorConfig
from rpg.generator.model import RPGModel, unique_conditions
from rpg.generator.samplers import build_sampler

torch.set_num_threads(1)
TINY = {"dim": 32, "d_state": 8, "headdim": 16, "chunk_size": 8, "denoiser_channels": [1, 4, 8, 4, 1], "time_dim": 16}
POS = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 1]])  # L = 6
K = 12


def make(**over) -> RPGModel:
    torch.manual_seed(0)
    mask = torch.ones(6, K, dtype=torch.bool)
    mask[2, 7:] = False  # last token of layer 0 is partly padding
    mask[5, 3:] = False
    cfg = GeneratorConfig.parse({**TINY, **over})
    return RPGModel(config=cfg, positions=POS, token_size=K, num_states=3, token_mask=mask)


def tokens_for(model: RPGModel, b: int) -> torch.Tensor:
    tok = torch.randn(b, 6, K)
    return tok.masked_fill(~model.token_mask, float("nan"))


def test_unique_conditions():
    s, t, inv = unique_conditions(torch.tensor([2, 0, 2, 0]), None)
    assert s.tolist() == [0, 2] and t is None and inv.tolist() == [1, 0, 1, 0]
    tasks = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 0]])
    s, t, inv = unique_conditions(torch.tensor([1, 1, 1, 2]), tasks)
    assert len(s) == 3 and torch.equal(t[inv], tasks) and torch.equal(s[inv], torch.tensor([1, 1, 1, 2]))


def test_prototypes_computed_once_per_distinct_state():
    model = make()
    batches = []
    model.backbone.register_forward_hook(lambda m, a, o: batches.append(a[0].shape[0]))
    cond_seen = []
    model.denoiser.register_forward_hook(lambda m, a, o: cond_seen.append(a[2]))
    loss = model(tokens_for(model, 4), torch.tensor([0, 2, 2, 0]), diffusion_batch=1000)
    assert batches == [2]  # two distinct states, not four checkpoints
    assert torch.isfinite(loss)
    assert cond_seen[0].shape == (4 * 6, 32)  # every (non-padding) token of the batch when the subset is large
    loss.backward()
    for name in ("permutation.embedding.weight", "backbone.layers.0.in_proj.weight", "denoiser.convs.0.weight"):
        assert dict(model.named_parameters())[name].grad is not None, name
    protos = model.prototypes(torch.tensor([0, 0, 1]))
    assert protos.shape == (3, 6, 32) and torch.equal(protos[0], protos[1]) and not torch.equal(protos[0], protos[2])


def test_loss_subsets_tokens_and_excludes_all_padding():
    model = make()
    tok = tokens_for(model, 3)
    tok[1, 4] = float("nan")  # a token that is padding throughout is never picked
    seen = []
    model.denoiser.register_forward_hook(lambda m, a, o: seen.append(a[0]))
    model(tok, torch.tensor([0, 1, 2]), diffusion_batch=1000)
    assert seen[-1].shape[0] == 3 * 6 - 1
    model(tok, torch.tensor([0, 1, 2]), diffusion_batch=5, generator=torch.Generator().manual_seed(0))
    assert seen[-1].shape[0] == 5
    a = model(tok, torch.tensor([0, 1, 2]), diffusion_batch=5, generator=torch.Generator().manual_seed(1))
    b = model(tok, torch.tensor([0, 1, 2]), diffusion_batch=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="tokens must be"):
        model(tok[:, :5], torch.tensor([0, 1, 2]), diffusion_batch=5)


@pytest.mark.parametrize("where", ["head", "all"])
def test_task_condition(where):
    model = make(task_condition=where, head_tokens=2, task_bits=4)
    t1, t2 = torch.tensor([[1, 0, 0, 1]]), torch.tensor([[0, 1, 1, 0]])
    p1, p2 = model.prototypes(torch.tensor([0]), t1), model.prototypes(torch.tensor([0]), t2)
    early_same = torch.allclose(p1[:, :4], p2[:, :4])
    assert early_same == (where == "head")  # causal backbone: a task added at the head cannot change earlier tokens
    assert not torch.allclose(p1[:, 4:], p2[:, 4:])
    with pytest.raises(ValueError, match="task"):
        model.prototypes(torch.tensor([0]))
    loss = model(tokens_for(model, 2), torch.tensor([0, 0]), torch.cat([t1, t2]).float(), diffusion_batch=8)
    assert torch.isfinite(loss)


def test_generate_shape_padding_and_determinism():
    model = make()
    sampler = build_sampler("ddim", schedule=model.schedule, steps=5)
    out = [
        model.generate(
            state=1, sampler=sampler, generator=torch.Generator().manual_seed(s), chunk_tokens=4
        ).nan_to_num()
        for s in (0, 0, 1)
    ]
    one = model.generate(state=1, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert one.shape == (6, K)
    assert torch.equal(torch.isnan(one), ~model.token_mask)
    assert torch.isfinite(one[model.token_mask]).all()
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])
    assert model.training  # generate restores the mode
    calls = []
    model.backbone.register_forward_hook(lambda m, a, o: calls.append(1))
    model.generate(state=0, sampler=sampler, chunk_tokens=1)
    assert len(calls) == 1  # prototypes once per model, whatever the chunking
