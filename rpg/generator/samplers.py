"""DDPM and DDIM samplers in the style of diffusers schedulers (``set_timesteps`` / ``step``).

A sampler only knows the noise schedule; the network is passed to :func:`sample` as a function
``net(x_t, t) -> eps``. Noise is drawn only where the step has a positive variance, in the same order for both
samplers, so DDIM with eta=1 over all timesteps reproduces DDPM for the same generator. With a sequence of
generators (one per entry of the batch's first dimension), entry i draws its noise from generator i only, so a
batch of models gets the same noise as each model sampled alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rpg.config.blocks import SAMPLERS
from rpg.generator.schedule import DiffusionSchedule

# one generator for the whole batch, or one per entry of its first dimension (batched generation: one per model)
Generators = torch.Generator | Sequence[torch.Generator | None] | None


class _Sampler:
    def __init__(self, *, schedule: DiffusionSchedule) -> None:
        self.schedule = schedule
        self.timesteps = torch.arange(schedule.num_timesteps - 1, -1, -1)
        self._prev: dict[int, int] = {}
        self.set_timesteps(schedule.num_timesteps)

    def set_timesteps(self, num_steps: int) -> None:
        """Choose ``num_steps`` timesteps, evenly spaced from T-1 down ("trailing" spacing)."""
        T = self.schedule.num_timesteps
        if not 1 <= num_steps <= T:
            raise ValueError(f"number of sampling steps must be in 1..{T}, got {num_steps}")
        ts = torch.round(T - torch.arange(num_steps, dtype=torch.float64) * (T / num_steps)).long() - 1
        self.timesteps = torch.unique_consecutive(ts.clamp(min=0))
        prev = self.timesteps.tolist()[1:] + [-1]
        self._prev = dict(zip(self.timesteps.tolist(), prev))

    def _alphas(self, t: int) -> tuple[float, float]:
        """(alpha_bar_t, alpha_bar_prev) with alpha_bar_prev = 1 after the last step."""
        ac = self.schedule.alphas_cumprod
        prev = self._prev[int(t)]
        return float(ac[int(t)]), float(ac[prev]) if prev >= 0 else 1.0

    @staticmethod
    def _noise(x: torch.Tensor, generator: Generators) -> torch.Tensor:
        """Noise like ``x``; with a sequence of generators, ``x[i]`` gets its noise from ``generator[i]``."""
        if generator is None or isinstance(generator, torch.Generator):
            return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
        return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator])


class DDPMSampler(_Sampler):
    """Ancestral sampling with the posterior variance ("fixed_small"); any subset of timesteps."""

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, *, generator: Generators = None):
        a_t, a_prev = self._alphas(t)
        beta = 1.0 - a_t / a_prev  # the effective beta between t and prev (the schedule's beta for all steps)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        mean = (a_prev**0.5 * beta / (1 - a_t)) * x0 + ((1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)) * x
        var = (1 - a_prev) / (1 - a_t) * beta
        return mean + var**0.5 * self._noise(x, generator) if var > 0 else mean


class DDIMSampler(_Sampler):
    """DDIM (Song et al. 2021): eta=0 deterministic, eta=1 the DDPM posterior variance."""

    def __init__(self, *, schedule: DiffusionSchedule, eta: float = 0.0) -> None:
        if eta < 0:
            raise ValueError(f"DDIM eta must be >= 0, got {eta}")
        self.eta = eta
        super().__init__(schedule=schedule)

    def step(self, eps: torch.Tensor, t: int, x: torch.Tensor, *, generator: Generators = None):
        a_t, a_prev = self._alphas(t)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        std = self.eta * var**0.5
        out = a_prev**0.5 * x0 + max(1 - a_prev - std**2, 0.0) ** 0.5 * eps
        return out + std * self._noise(x, generator) if std > 0 else out


def build_sampler(name: str, *, schedule: DiffusionSchedule, steps: int | None = None, eta: float = 0.0) -> _Sampler:
    """``name`` in SAMPLERS; ``steps`` defaults to all T timesteps."""
    if name == "ddpm":
        sampler: _Sampler = DDPMSampler(schedule=schedule)
    elif name == "ddim":
        sampler = DDIMSampler(schedule=schedule, eta=eta)
    else:
        raise ValueError(f"sampler {name!r} unknown; choose one of {SAMPLERS}")
    sampler.set_timesteps(schedule.num_timesteps if steps is None else steps)
    return sampler


def sample(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    sampler: _Sampler,
    *,
    generator: Generators = None,
) -> torch.Tensor:
    """Run the reverse process from ``noise`` (x_T) to x_0; ``net(x_t, t [N]) -> eps``."""
    x = noise
    for t in sampler.timesteps.tolist():
        eps = net(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        x = sampler.step(eps.to(x.dtype), t, x, generator=generator)
    return x
