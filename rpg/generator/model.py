"""The RPG model: (position + permutation state [+ task]) -> recurrent backbone -> prototypes -> denoiser.

The recurrent input depends only on (state, task), so prototypes are computed once per distinct (state, task)
of a batch and gathered per checkpoint; at generation once per model. Tokens are denoised in chunks.
"""

from __future__ import annotations

import torch
from torch import nn

from rpg.generator.backbones import build_backbone
from rpg.generator.denoiser import ConvDenoiser
from rpg.generator.permutation import PermutationState
from rpg.generator.position import PositionEmbedding
from rpg.generator.presets import GeneratorConfig
from rpg.generator.samplers import sample
from rpg.generator.schedule import DiffusionSchedule, denoising_loss


def unique_conditions(
    states: torch.Tensor, tasks: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Distinct (state, task) pairs: (states [S], tasks [S, bits] | None, inverse [B] into them)."""
    if tasks is None:
        uniq, inverse = torch.unique(states, return_inverse=True)
        return uniq, None, inverse
    keys = torch.cat([states[:, None].long(), tasks.long()], dim=1)
    uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
    return uniq[:, 0], uniq[:, 1:], inverse


class TaskEncoder(nn.Module):
    """A small MLP from a binary task vector to the recurrent width."""

    def __init__(self, *, bits: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(bits, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, tasks: torch.Tensor) -> torch.Tensor:
        return self.net(tasks.float())


class RPGModel(nn.Module):
    """Recurrent diffusion parameter generator over a fixed token layout (L tokens of size k)."""

    def __init__(
        self,
        *,
        config: GeneratorConfig,
        positions: torch.Tensor,
        token_size: int,
        num_states: int,
        token_mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if config.token_size is not None and config.token_size != token_size:
            raise ValueError(f"generator.token_size={config.token_size} but the tokens have size {token_size}")
        self.config = config
        self.num_tokens, self.token_size = int(positions.shape[0]), int(token_size)
        mask = torch.ones(self.num_tokens, token_size, dtype=torch.bool) if token_mask is None else token_mask
        if tuple(mask.shape) != (self.num_tokens, token_size):
            raise ValueError(f"token_mask must be [{self.num_tokens}, {token_size}], got {tuple(mask.shape)}")
        self.register_buffer("token_mask", mask.bool(), persistent=False)
        self.position = PositionEmbedding(positions=positions, dim=config.dim, kind=config.position)
        self.permutation = PermutationState(num_states=num_states, dim=config.dim)
        self.task_encoder = None
        if config.task_condition is not None:
            self.task_encoder = TaskEncoder(bits=config.task_bits, dim=config.dim)
            head = torch.zeros(self.num_tokens)
            head[-config.head_tokens :] = 1.0
            where = head if config.task_condition == "head" else torch.ones(self.num_tokens)
            self.register_buffer("task_where", where, persistent=False)
        self.backbone = build_backbone(
            config.backbone, dim=config.dim, num_layers=config.num_layers, **config.backbone_kwargs()
        )
        self.denoiser = ConvDenoiser(
            token_size=token_size,
            cond_dim=config.dim,
            channels=config.denoiser_channels,
            kernel_size=config.denoiser_kernel,
            time_dim=config.time_dim,
        )
        self.schedule = DiffusionSchedule(
            num_timesteps=config.num_timesteps, beta_start=config.beta_start, beta_end=config.beta_end
        )

    def _check_tasks(self, tasks: torch.Tensor | None, n: int) -> None:
        if self.task_encoder is None:
            if tasks is not None:
                raise ValueError("tasks given but the generator has no task condition (generator.task_condition)")
        elif tasks is None or tuple(tasks.shape) != (n, self.config.task_bits):
            got = None if tasks is None else tuple(tasks.shape)
            want = f"[{n}, {self.config.task_bits}]"
            raise ValueError(f"task-conditioned generator needs tasks of shape {want}, got {got}")

    def prototypes(self, states: torch.Tensor, tasks: torch.Tensor | None = None) -> torch.Tensor:
        """[S] states (+ [S, bits] tasks) -> [S, L, D] prototypes."""
        self._check_tasks(tasks, states.shape[0])
        h = self.position()[None] + self.permutation(states)[:, None, :]
        if self.task_encoder is not None:
            h = h + self.task_encoder(tasks)[:, None, :] * self.task_where[None, :, None]
        return self.backbone(h)

    def forward(
        self,
        tokens: torch.Tensor,
        states: torch.Tensor,
        tasks: torch.Tensor | None = None,
        *,
        diffusion_batch: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The training loss for checkpoints ``tokens`` [B, L, k] (NaN padding) with ``states`` [B].

        Prototypes are computed once per distinct (state, task); a random subset of ``diffusion_batch`` tokens
        (all-padding tokens excluded) is denoised, each at its own timestep.
        """
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (self.num_tokens, self.token_size):
            raise ValueError(f"tokens must be [B, {self.num_tokens}, {self.token_size}], got {tuple(tokens.shape)}")
        self._check_tasks(tasks, tokens.shape[0])
        uniq_states, uniq_tasks, inverse = unique_conditions(states, tasks)
        protos = self.prototypes(uniq_states, uniq_tasks)
        b_idx, l_idx = (~torch.isnan(tokens).all(dim=-1)).nonzero(as_tuple=True)
        if b_idx.numel() > diffusion_batch:
            pick = torch.randperm(b_idx.numel(), generator=generator, device=tokens.device)[:diffusion_batch]
            b_idx, l_idx = b_idx[pick], l_idx[pick]
        cond = protos[inverse[b_idx], l_idx]
        return denoising_loss(
            lambda x, t: self.denoiser(x, t, cond), tokens[b_idx, l_idx], self.schedule, generator=generator
        )

    @torch.no_grad()
    def generate(
        self,
        *,
        state: int,
        sampler,
        generator: torch.Generator | None = None,
        task: torch.Tensor | None = None,
        chunk_tokens: int = 256,
    ) -> torch.Tensor:
        """One model's tokens [L, k] (float32, CPU, NaN at padding); prototypes once, tokens in chunks."""
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        was_training = self.training
        self.eval()
        device = self.token_mask.device
        tasks = None if task is None else torch.as_tensor(task, device=device).reshape(1, -1)
        protos = self.prototypes(torch.tensor([state], device=device), tasks)[0]
        out = torch.empty(self.num_tokens, self.token_size)
        for start in range(0, self.num_tokens, chunk_tokens):
            cond = protos[start : start + chunk_tokens].float()
            noise = torch.randn(cond.shape[0], self.token_size, generator=generator, device=device)
            x = sample(lambda x, t: self.denoiser(x, t, cond).float(), noise, sampler, generator=generator)
            out[start : start + chunk_tokens] = x.cpu()
        self.train(was_training)
        return out.masked_fill(~self.token_mask.cpu(), float("nan"))
