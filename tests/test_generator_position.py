"""Position embeddings and permutation states."""

from __future__ import annotations

import math

import pytest
import torch

from rpg.generator.permutation import PermutationState, pick_state
from rpg.generator.position import PositionEmbedding, sinusoid_1d, sinusoid_2d

torch.set_num_threads(1)


def test_sinusoid_1d_values_interleaved():
    emb = sinusoid_1d(torch.tensor([0, 3]), 8)
    m = torch.arange(4, dtype=torch.float64)
    freq = torch.exp(-2 * m * math.log(10000.0) / 8)
    assert torch.allclose(emb[0, 0::2], torch.zeros(4)) and torch.allclose(emb[0, 1::2], torch.ones(4))
    assert torch.allclose(emb[1, 0::2].double(), torch.sin(3 * freq), atol=1e-6)
    assert torch.allclose(emb[1, 1::2].double(), torch.cos(3 * freq), atol=1e-6)


def test_sinusoid_2d_halves_encode_token_then_layer():
    pos = torch.tensor([[0, 0], [0, 1], [2, 1]])  # (layer i, token j)
    emb = sinusoid_2d(pos, 16)
    assert emb.shape == (3, 16)
    assert torch.equal(emb[:, :8], sinusoid_1d(pos[:, 1], 8))  # j half, frequencies over D/2
    assert torch.equal(emb[:, 8:], sinusoid_1d(pos[:, 0], 8))  # i half
    assert torch.equal(emb[1, 8:], emb[0, 8:]) and not torch.equal(emb[1, :8], emb[0, :8])
    with pytest.raises(ValueError):
        sinusoid_2d(pos, 10)


@pytest.mark.parametrize("kind", ["sin2d", "sin1d", "learned", "sin2d+learned"])
def test_position_embedding_kinds(kind):
    pos = torch.tensor([[0, 0], [0, 1], [1, 0], [2, 0]])
    pe = PositionEmbedding(positions=pos, dim=8, kind=kind)
    table = pe()
    assert table.shape == (4, 8)
    learnable = [p for p in pe.parameters()]
    assert bool(learnable) == ("learned" in kind)
    if kind == "sin2d+learned":  # zero-initialised table: starts equal to the sinusoid
        assert torch.equal(table, sinusoid_2d(pos, 8))
        table.sum().backward()
        assert pe.learned.grad is not None
    if kind == "sin1d":
        assert torch.equal(table, sinusoid_1d(torch.arange(4), 8))
    with pytest.raises(ValueError):
        PositionEmbedding(positions=pos, dim=8, kind="rope")


def test_permutation_state_and_pick():
    ps = PermutationState(num_states=3, dim=4)
    out = ps(torch.tensor([0, 2, 2]))
    assert out.shape == (3, 4) and torch.equal(out[1], out[2]) and not torch.equal(out[0], out[1])
    with pytest.raises(ValueError):
        ps(torch.tensor([3]))
    assert pick_state(3, 1, torch.Generator().manual_seed(0)) == 1
    draws = {pick_state(3, None, torch.Generator().manual_seed(s)) for s in range(40)}
    assert draws == {0, 1, 2}
    with pytest.raises(ValueError):
        pick_state(3, 5, torch.Generator())
