"""The RPG model: (position + permutation state [+ task]) -> recurrent backbone -> prototypes -> denoiser.

The paper's mode (``generator.coupling: none``): the recurrent input depends only on (state, task), so prototypes
are computed once per distinct (state, task) of a batch and gathered per checkpoint; at generation once per model.
Tokens are denoised in chunks.

``generator.coupling: autoregressive``: the input at position i also holds a projection of the model's token at
i - m (m = ``generator.coupling_block``; a learned start vector for i < m), so a token's prototype depends on the
weights of the same model in the blocks before its own. Training feeds the checkpoint's own tokens (teacher
forcing, with noise and dropout on them) and computes prototypes per checkpoint; sampling goes block by block:
the backbone reads the block's positions and the generated tokens of the previous block, carrying its recurrent
state across blocks, and the block's tokens are denoised together (in chunks of ``chunk_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from rpg.config import GeneratorConfig
from rpg.generator.backbones import build_backbone
from rpg.generator.denoiser import ConvDenoiser
from rpg.generator.permutation import PermutationState
from rpg.generator.position import PositionEmbedding
from rpg.generator.samplers import sample
from rpg.generator.schedule import DiffusionSchedule, denoising_loss


def unique_conditions(
    states: torch.Tensor, tasks: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Distinct (state, task) pairs: (states [S], tasks [S, bits] | None, inverse [B] into them)."""
    if tasks is None:
        uniq, inverse = torch.unique(states, return_inverse=True)
        return uniq, None, inverse
    # float keys: a continuous task vector (rpg.tasks.continuous) must not be truncated to integers
    keys = torch.cat([states[:, None].to(torch.float64), tasks.to(torch.float64)], dim=1)
    uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
    return uniq[:, 0].to(states.dtype), uniq[:, 1:].to(tasks.dtype), inverse


def draw_tokens(
    present: torch.Tensor, n: int, generator: torch.Generator | None, token_weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(checkpoint, token) indices of a step's diffusion batch: all present tokens (``present`` [B, L], False for
    all-padding ones) when there are at most ``n``, else ``n`` of them without replacement, uniformly or in
    proportion to ``token_weights`` [L]."""
    b_idx, l_idx = present.nonzero(as_tuple=True)
    if b_idx.numel() <= n:
        return b_idx, l_idx
    if token_weights is None:
        pick = torch.randperm(b_idx.numel(), generator=generator, device=present.device)[:n]
    else:
        pick = torch.multinomial(token_weights.to(present.device, torch.float32)[l_idx], n, generator=generator)
    return b_idx[pick], l_idx[pick]


class TaskEncoder(nn.Module):
    """A small MLP from a task vector (binary, or a continuous family's floats) to the recurrent width."""

    def __init__(self, *, bits: int, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(bits, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, tasks: torch.Tensor) -> torch.Tensor:
        return self.net(tasks.float())


class TokenInput(nn.Module):
    """Autoregressive coupling: the backbone input added at position i from the model's token at i - m.

    A Linear(k -> D) of the token (padding as 0) and a learned start vector for the first m positions; both start at
    zero, so an untrained coupled model computes the paper's prototypes.
    """

    def __init__(self, *, token_size: int, dim: int, block: int) -> None:
        super().__init__()
        self.block = block
        self.proj = nn.Linear(token_size, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.start = nn.Parameter(torch.zeros(dim))

    def shifted(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inputs [B, L, D] for whole sequences ``tokens`` [B, L, k] (no NaN): the start vector at the first m
        positions, then the projection of the token m positions before."""
        b, length, _ = tokens.shape
        head = self.start.expand(b, min(self.block, length), -1)
        if length <= self.block:
            return head
        return torch.cat([head, self.proj(tokens[:, : length - self.block])], dim=1)

    def block_input(self, previous: torch.Tensor | None, n: int) -> torch.Tensor:
        """Inputs [n, D] of a block of n positions from the previous block's tokens [>= n, k] (None: the first)."""
        if previous is None:
            return self.start.expand(n, -1)
        return self.proj(previous[:n])


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
        token_lengths: torch.Tensor | None = None,
    ) -> None:
        """``token_mask`` [L, k] (True = real entry, padding last) or ``token_lengths`` [L] (real entries per
        token; memory O(L) instead of O(L k)); neither: no padding."""
        super().__init__()
        if config.token_size is not None and config.token_size != token_size:
            raise ValueError(f"generator.token_size={config.token_size} but the tokens have size {token_size}")
        self.config = config
        self.num_tokens, self.token_size = int(positions.shape[0]), int(token_size)
        self.register_buffer(
            "token_lengths", _token_lengths(token_mask, token_lengths, self.num_tokens, token_size), persistent=False
        )
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
            cond_dim=config.prototype_dim,
            channels=config.denoiser_channels,
            kernel_size=config.denoiser_kernel,
            time_dim=config.time_dim,
        )
        self.schedule = DiffusionSchedule(
            num_timesteps=config.num_timesteps, beta_start=config.beta_start, beta_end=config.beta_end
        )
        self.token_input: TokenInput | None = None  # created last: the paper's mode draws the same initial weights
        if config.coupling == "autoregressive":
            if not hasattr(self.backbone, "forward_stateful"):
                raise ValueError(f"coupling {config.coupling!r} needs a recurrent backbone, got {config.backbone!r}")
            self.token_input = TokenInput(token_size=token_size, dim=config.dim, block=config.coupling_block)

    @property
    def coupled(self) -> bool:
        """Whether tokens see the weights of the same model already generated (``generator.coupling``)."""
        return self.token_input is not None

    @property
    def token_mask(self) -> torch.Tensor:
        """BoolTensor [L, k]: True where a token entry is real (built on demand from ``token_lengths``)."""
        return self.chunk_mask(0, self.num_tokens)

    def chunk_mask(self, start: int, stop: int) -> torch.Tensor:
        """BoolTensor [stop - start, k]: the token mask of tokens ``start:stop``."""
        lengths = self.token_lengths[start:stop]
        return torch.arange(self.token_size, device=lengths.device)[None, :] < lengths[:, None]

    def _check_tasks(self, tasks: torch.Tensor | None, n: int) -> None:
        if self.task_encoder is None:
            if tasks is not None:
                raise ValueError("tasks given but the generator has no task condition (generator.task_condition)")
        elif tasks is None or tuple(tasks.shape) != (n, self.config.task_bits):
            got = None if tasks is None else tuple(tasks.shape)
            want = f"[{n}, {self.config.task_bits}]"
            raise ValueError(f"task-conditioned generator needs tasks of shape {want}, got {got}")

    def prototypes(
        self, states: torch.Tensor, tasks: torch.Tensor | None = None, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[S] states (+ [S, bits] tasks) -> [S, L, D] prototypes. A coupled model also needs each sequence's
        ``tokens`` [S, L, k] (padding as 0; the inputs it is teacher-forced with)."""
        self._check_tasks(tasks, states.shape[0])
        h = self.position()[None] + self.permutation(states)[:, None, :]
        if self.task_encoder is not None:
            h = h + self.task_encoder(tasks)[:, None, :] * self.task_where[None, :, None]
        if self.token_input is not None:
            if tokens is None or tuple(tokens.shape) != (states.shape[0], self.num_tokens, self.token_size):
                got = None if tokens is None else tuple(tokens.shape)
                raise ValueError(f"a coupled generator needs tokens [{states.shape[0]}, {self.num_tokens}, "
                                 f"{self.token_size}] beside the states, got {got}")  # fmt: skip
            h = h + self.token_input.shifted(tokens)
        elif tokens is not None:
            raise ValueError("tokens given but the generator is not coupled (generator.coupling: none)")
        return self.backbone(h)

    def teacher_tokens(self, tokens: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The teacher-forced inputs of a coupled model from checkpoints ``tokens`` [B, L, k] (NaN padding):
        padding set to 0, every token given Gaussian noise of a std drawn uniformly in [0, coupling_noise] and
        zeroed with probability coupling_dropout (padding stays 0)."""
        real = ~torch.isnan(tokens)
        clean = tokens.nan_to_num(0.0)
        b, length, _ = tokens.shape
        cfg = self.config
        out = clean
        if cfg.coupling_noise > 0:
            std = torch.rand(b, length, 1, generator=generator, device=tokens.device) * cfg.coupling_noise
            out = out + std * torch.randn(tokens.shape, generator=generator, device=tokens.device)
        if cfg.coupling_dropout > 0:
            keep = torch.rand(b, length, 1, generator=generator, device=tokens.device) >= cfg.coupling_dropout
            out = out * keep
        return out * real

    def forward(
        self,
        tokens: torch.Tensor,
        states: torch.Tensor,
        tasks: torch.Tensor | None = None,
        *,
        diffusion_batch: int,
        noise_samples: int = 1,
        generator: torch.Generator | None = None,
        token_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training loss for checkpoints ``tokens`` [B, L, k] (NaN padding) with ``states`` [B].

        Prototypes are computed once per distinct (state, task) (coupled: once per checkpoint, from its noisy
        tokens, :meth:`teacher_tokens`); a random subset of ``diffusion_batch`` tokens
        (all-padding tokens excluded) is denoised, each at ``noise_samples`` timesteps with as many noises (its
        own timestep and noise per sample), so one backbone pass serves ``noise_samples`` x ``diffusion_batch``
        denoising samples. The subset is uniform, or drawn without replacement in proportion to ``token_weights``
        [L] (a token of weight w is picked about w times as often as one of weight 1).
        """
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (self.num_tokens, self.token_size):
            raise ValueError(f"tokens must be [B, {self.num_tokens}, {self.token_size}], got {tuple(tokens.shape)}")
        if noise_samples < 1:
            raise ValueError(f"noise_samples must be >= 1, got {noise_samples}")
        self._check_tasks(tasks, tokens.shape[0])
        if self.token_input is not None:  # prototypes per checkpoint: they depend on its tokens
            protos = self.prototypes(states, tasks, self.teacher_tokens(tokens, generator))
            inverse = torch.arange(tokens.shape[0], device=tokens.device)
        else:
            uniq_states, uniq_tasks, inverse = unique_conditions(states, tasks)
            protos = self.prototypes(uniq_states, uniq_tasks)
        b_idx, l_idx = draw_tokens(~torch.isnan(tokens).all(dim=-1), diffusion_batch, generator, token_weights)
        cond = protos[inverse[b_idx], l_idx]
        x0 = tokens[b_idx, l_idx]
        if noise_samples > 1:
            cond, x0 = cond.repeat(noise_samples, 1), x0.repeat(noise_samples, 1)
        return denoising_loss(
            lambda x, t: self.denoiser(x, t, cond),
            x0,
            self.schedule,
            generator=generator,
            prediction=self.config.prediction,
            weighting=self.config.loss_weighting,
            gamma=self.config.min_snr_gamma,
        )

    def epsilon_fn(self, cond: torch.Tensor):
        """The sampler's network function for prototypes ``cond`` [n, D]: (x_t, t) -> predicted noise."""

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = self.denoiser(x, t, cond).float()
            return self.schedule.epsilon(out, x, t, self.config.prediction)

        return eps

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
        out = torch.empty(self.num_tokens, self.token_size)
        for start, x in self.sample_chunks(
            state=state, sampler=sampler, generator=generator, task=task, chunk_tokens=chunk_tokens
        ):
            out[start : start + x.shape[0]] = x
        return out

    @torch.no_grad()
    def sample_chunks(
        self,
        *,
        state: int,
        sampler,
        generator: torch.Generator | None = None,
        task: torch.Tensor | None = None,
        chunk_tokens: int = 256,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Sample one model chunk by chunk: yields (first token index, tokens [n, k] float32 CPU, NaN padding).

        :meth:`sample_batch` with a batch of one model.
        """
        for start, x in self.sample_batch(
            states=[state], sampler=sampler, generators=[generator], tasks=None if task is None else [task],
            chunk_tokens=chunk_tokens, dtype=dtype,
        ):  # fmt: skip
            yield start, x[0]

    @torch.no_grad()
    def sample_batch(
        self,
        *,
        states: Sequence[int],
        sampler,
        generators: Sequence[torch.Generator | None],
        tasks: Sequence[torch.Tensor | Sequence[int]] | None = None,
        chunk_tokens: int = 256,
        dtype: torch.dtype = torch.float32,
        micro_batch: int | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Sample B models at once, chunk by chunk: yields (first token index, tokens [B, n, k] float32 CPU, NaN
        at padding).

        Model b has permutation state ``states[b]`` (and task ``tasks[b]``) and draws all its noise from
        ``generators[b]``, in the order one model alone would, so each model is bit-identical to sampling it in a
        batch of one (on the CPU; see :mod:`rpg.generator.denoiser`). Prototypes are computed once per distinct
        (state, task) (a coupled model: block by block, :meth:`_sample_batch_coupled`); then ``chunk_tokens``
        tokens of every model at a time ([B x chunk_tokens] tokens per
        denoiser step, in micro-batches of ``micro_batch`` tokens) are denoised, so memory holds one chunk of
        tokens per model, never the [L, k] tokens of a model. ``dtype``: the denoiser's compute dtype (bfloat16:
        its convs in bf16 and the backbone under autocast; the sampler's arithmetic stays float32). The mode
        (train/eval) is restored at the end.
        """
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
        if len(generators) != len(states) or (tasks is not None and len(tasks) != len(states)):
            raise ValueError(f"{len(states)} states, {len(generators)} generators and "
                             f"{None if tasks is None else len(tasks)} tasks: one each per model")  # fmt: skip
        was_training = self.training
        self.eval()
        try:
            if self.token_input is not None:
                yield from self._sample_batch_coupled(states=states, sampler=sampler, generators=generators,
                                                      tasks=tasks, chunk_tokens=chunk_tokens, dtype=dtype,
                                                      micro_batch=micro_batch)  # fmt: skip
                return
            device = self.token_lengths.device
            protos, which = self._batch_prototypes(states, tasks, dtype)
            frozen = self.denoiser.frozen()
            if dtype != torch.float32:
                frozen = frozen.to(dtype)
            if micro_batch is None:
                micro_batch = default_micro_batch(self.denoiser, device)
            times: dict[int, torch.Tensor] = {}  # t_emb per timestep, shared by all chunks
            for start in range(0, self.num_tokens, chunk_tokens):
                n = min(chunk_tokens, self.num_tokens - start)
                # per model, like a batch of one: a Linear's rounding may depend on its number of rows
                c = torch.cat([frozen.condition(protos[j][start : start + n].float()) for j in which])
                noise = torch.stack([torch.randn(n, self.token_size, generator=g, device=device) for g in generators])

                eps = self._chunk_epsilon(frozen, c, times=times, micro_batch=micro_batch)
                x = sample(eps, noise, sampler, generator=list(generators))
                mask = self.chunk_mask(start, start + n)
                yield start, x.masked_fill(~mask, float("nan")).cpu()
        finally:
            self.train(was_training)

    def _sample_batch_coupled(self, *, states, sampler, generators, tasks, chunk_tokens: int, dtype: torch.dtype,
                              micro_batch: int | None) -> Iterator[tuple[int, torch.Tensor]]:  # fmt: skip
        """:meth:`sample_batch` for a coupled model: blocks of m = ``coupling_block`` tokens, one after the other.

        For each block and model, the backbone reads the block's positions, the model's state (and task) and the
        model's generated tokens of the previous block (padding as 0), continuing from its recurrent state after
        the previous block; the block's prototypes are then denoised ``chunk_tokens`` at a time (noise drawn per
        model in the order of a batch of one). Memory holds one block of tokens and prototypes per model and the
        backbone's recurrent state, never [L, k] or [L, D]. The backbone runs per model (like a batch of one), so a
        model does not depend on the others of its batch.
        """
        device = self.token_lengths.device
        m = self.config.coupling_block
        frozen = self.denoiser.frozen()
        if dtype != torch.float32:
            frozen = frozen.to(dtype)
        if micro_batch is None:
            micro_batch = default_micro_batch(self.denoiser, device)
        conditions = []  # per model: state embedding [D] and task embedding [D] (or None)
        for b, state in enumerate(states):
            task = None if tasks is None or tasks[b] is None else torch.as_tensor(tasks[b], device=device)
            self._check_tasks(None if task is None else task.reshape(1, -1), 1)
            s = self.permutation(torch.tensor([int(state)], device=device))[0]
            t = None if task is None else self.task_encoder(task.float().reshape(1, -1))[0]
            conditions.append((s, t))
        recurrent: list = [None] * len(states)
        previous: torch.Tensor | None = None  # [B, m, k] the generated tokens of the previous block, padding 0
        times: dict[int, torch.Tensor] = {}
        for first in range(0, self.num_tokens, m):
            n = min(m, self.num_tokens - first)
            pos = self.position.rows(first, first + n)
            protos = []
            for b, (s, t) in enumerate(conditions):
                u = pos + s
                if t is not None:
                    u = u + t * self.task_where[first : first + n, None]
                u = u + self.token_input.block_input(None if previous is None else previous[b], n)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False):
                    p, recurrent[b] = self.backbone.forward_stateful(u[None], recurrent[b])
                protos.append(p[0].float())
            block = torch.zeros(len(states), n, self.token_size, device=device)
            for start in range(first, first + n, chunk_tokens):
                cn = min(chunk_tokens, first + n - start)
                off = start - first
                c = torch.cat([frozen.condition(p[off : off + cn]) for p in protos])
                noise = torch.stack([torch.randn(cn, self.token_size, generator=g, device=device) for g in generators])
                eps = self._chunk_epsilon(frozen, c, times=times, micro_batch=micro_batch)
                x = sample(eps, noise, sampler, generator=list(generators))
                mask = self.chunk_mask(start, start + cn)
                block[:, off : off + cn] = x.masked_fill(~mask, 0.0)
                yield start, x.masked_fill(~mask, float("nan")).cpu()
            previous = block

    def _chunk_epsilon(self, frozen, c: torch.Tensor, *, times: dict[int, torch.Tensor], micro_batch: int):
        """The sampler's network function for one chunk of B models (x [B, n, k], its prototypes' projections
        ``c`` [B n, 1, k]); every row shares the step's timestep, whose embedding is cached in ``times``."""
        k = self.token_size

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            step = int(t[0])
            if step not in times:
                times[step] = frozen.time(step, device=x.device)
            flat = x.reshape(-1, k)
            parts = [frozen(flat[i : i + micro_batch], times[step], c[i : i + micro_batch])
                     for i in range(0, flat.shape[0], micro_batch)]  # fmt: skip
            out = torch.cat(parts).float()
            return self.schedule.epsilon(out, flat, t[:1], self.config.prediction).reshape(x.shape)

        return eps

    def _batch_prototypes(self, states, tasks, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[int]]:
        """Prototypes [L, D] once per distinct (state, task), each computed alone (as for a batch of one model),
        and for every model the index of its prototypes."""
        device = self.token_lengths.device
        keys, which, protos = {}, [], []
        for b, state in enumerate(states):
            task = None if tasks is None or tasks[b] is None else torch.as_tensor(tasks[b], device=device)
            key = (int(state), None if task is None else tuple(float(v) for v in task.reshape(-1)))
            if key not in keys:
                keys[key] = len(protos)
                # no weight-cast cache: at paper scale the bf16 copies of all weights would add gigabytes
                with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=False):
                    p = self.prototypes(torch.tensor([int(state)], device=device),
                                        None if task is None else task.float().reshape(1, -1))[0]  # fmt: skip
                protos.append(p.float())
            which.append(keys[key])
        return protos, which


def default_micro_batch(denoiser: ConvDenoiser, device: torch.device) -> int:
    """Tokens per denoiser call in sampling: all of a step's on a GPU; on a CPU about 4 MB per activation of the
    widest layer (cache-sized pieces are faster than one large batch), at least 2 tokens."""
    if device.type != "cpu":
        return 1 << 30
    widest = max(conv.out_channels for conv in denoiser.convs)
    return max(2, (1 << 20) // (widest * denoiser.token_size))


def build_generator(config: GeneratorConfig, layout, num_states: int) -> RPGModel:
    """The RPG model for a token layout (a ``Layout``, or anything with positions()/token_mask()/token_size)."""
    return RPGModel(
        config=config,
        positions=layout.positions(),
        token_size=layout.token_size,
        num_states=num_states,
        token_mask=layout.token_mask(),
    )


def _token_lengths(mask: torch.Tensor | None, lengths: torch.Tensor | None, num_tokens: int, k: int) -> torch.Tensor:
    """Real entries per token [L] from a prefix mask [L, k] or given lengths (checked)."""
    if mask is not None and lengths is not None:
        raise ValueError("give token_mask or token_lengths, not both")
    if mask is not None:
        if tuple(mask.shape) != (num_tokens, k):
            raise ValueError(f"token_mask must be [{num_tokens}, {k}], got {tuple(mask.shape)}")
        lengths = mask.sum(dim=1)
        if not torch.equal(mask.bool(), torch.arange(k, device=mask.device)[None, :] < lengths[:, None]):
            raise ValueError("token_mask must mark a prefix of each token as real (padding at the end)")
    elif lengths is None:
        lengths = torch.full((num_tokens,), k)
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if tuple(lengths.shape) != (num_tokens,) or bool((lengths < 0).any()) or bool((lengths > k).any()):
        raise ValueError(f"token_lengths must be [{num_tokens}] values in 0..{k}")
    return lengths.clone()
