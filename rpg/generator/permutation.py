"""Permutation state: a learned vector per run (or per checkpoint), added at every position.

Checkpoints of different runs sit in different permutation-symmetric basins; the state tells the generator
which basin to produce. At generation a state is given or drawn uniformly at random.
"""

from __future__ import annotations

import torch
from torch import nn


class PermutationState(nn.Module):
    """Embedding of ``num_states`` permutation states into width ``dim``."""

    def __init__(self, *, num_states: int, dim: int) -> None:
        super().__init__()
        if num_states < 1:
            raise ValueError(f"num_states must be >= 1, got {num_states}")
        self.num_states = num_states
        self.embedding = nn.Embedding(num_states, dim)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """[S] state indices -> [S, D]."""
        if states.numel() and (int(states.min()) < 0 or int(states.max()) >= self.num_states):
            raise ValueError(f"permutation state out of range 0..{self.num_states - 1}: {states.tolist()}")
        return self.embedding(states)


def pick_state(num_states: int, state: int | None, generator: torch.Generator) -> int:
    """``state`` when given (checked), else uniformly random from a (CPU) ``generator``."""
    if state is None:
        return int(torch.randint(num_states, (1,), generator=generator))
    if not 0 <= int(state) < num_states:
        raise ValueError(f"state {state} out of range 0..{num_states - 1}")
    return int(state)
