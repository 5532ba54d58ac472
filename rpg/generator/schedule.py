"""Diffusion noise schedule (linear betas), forward noising and the masked denoising loss.

The schedule is independent of the network: :func:`denoising_loss` takes the network as a function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rpg.config.blocks import PREDICTIONS


class DiffusionSchedule:
    """Linear beta schedule from ``beta_start`` to ``beta_end`` over ``num_timesteps`` steps (float64 tables)."""

    def __init__(self, *, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if num_timesteps < 1 or not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"bad schedule: T={num_timesteps}, betas {beta_start}..{beta_end}")
        self.num_timesteps = num_timesteps
        self.betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps ``t`` [N], shaped [N, 1, ...] to broadcast against ``like``."""
        a = self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype)
        return a.reshape(-1, *([1] * (like.ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
        a = self.alpha_bar(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def epsilon(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
        """The noise estimate implied by a network ``output`` of the given ``prediction`` type.

        ``epsilon``: the output itself. ``sample``: the output is x0, so eps = (x_t - sqrt(a) x0) / sqrt(1 - a).
        ``v``: the output is v = sqrt(a) eps - sqrt(1 - a) x0, so eps = sqrt(a) v + sqrt(1 - a) x_t.
        Samplers work with epsilon; this lets them drive any kind of network.
        """
        if prediction == "epsilon":
            return output
        a = self.alpha_bar(t, x_t)
        if prediction == "sample":
            return (x_t - a.sqrt() * output) / (1 - a).sqrt()
        if prediction == "v":
            return a.sqrt() * output + (1 - a).sqrt() * x_t
        raise ValueError(f"unknown prediction type {prediction!r} ({', '.join(PREDICTIONS)})")

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at timesteps ``t`` (float64)."""
        a = self.alphas_cumprod.to(t.device)[t]
        return a / (1 - a)

    def loss_weights(self, t: torch.Tensor, prediction: str, weighting: str, gamma: float = 5.0) -> torch.Tensor:
        """Per-sample loss weights. ``min_snr`` (Hang et al. 2023) caps the SNR at ``gamma`` so that nearly clean
        timesteps do not dominate: min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) for x0,
        min(SNR, gamma) / (SNR + 1) for v. ``none``: all ones."""
        if weighting == "none":
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        if weighting != "min_snr":
            raise ValueError(f"unknown loss weighting {weighting!r} (none or min_snr)")
        snr = self.snr(t)
        capped = snr.clamp(max=gamma)
        return {"epsilon": capped / snr, "sample": capped, "v": capped / (snr + 1)}[prediction]


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over the entries where ``mask`` is True; ``weights`` [N] scale each row's errors."""
    mask = mask.to(pred.dtype)
    err = (pred - target).square() * mask
    if weights is not None:
        err = err * weights.to(err.dtype).reshape(-1, *([1] * (err.ndim - 1)))
    return err.sum() / mask.sum().clamp(min=1)


def denoising_loss(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    schedule: DiffusionSchedule,
    *,
    generator: torch.Generator | None = None,
    prediction: str = "epsilon",
    weighting: str = "none",
    gamma: float = 5.0,
) -> torch.Tensor:
    """Denoising loss for a batch of tokens x0 [N, k] holding NaN at padding.

    NaN padding is set to 0 before noising and excluded from the loss; every token gets its own timestep.
    ``net(x_t, t)`` predicts the noise (``prediction="epsilon"``, the paper's choice), the clean tokens
    (``"sample"``: x0 prediction, which converges in far fewer steps on small CPU budgets) or the velocity ``v``.
    ``weighting``: per-timestep loss weights (:meth:`DiffusionSchedule.loss_weights`).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {prediction!r} ({', '.join(PREDICTIONS)})")
    mask = ~torch.isnan(x0)
    x0 = torch.nan_to_num(x0, nan=0.0)
    t = torch.randint(schedule.num_timesteps, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    pred = net(schedule.add_noise(x0, noise, t), t)
    if prediction == "epsilon":
        target = noise
    elif prediction == "sample":
        target = x0
    else:
        a = schedule.alpha_bar(t, x0)
        target = a.sqrt() * noise - (1 - a).sqrt() * x0
    weights = None if weighting == "none" else schedule.loss_weights(t, prediction, weighting, gamma)
    return masked_mse(pred.float(), target.float(), mask, weights)
