"""The p-diff baseline (Wang et al. 2024, "Neural Network Diffusion"): a flat parameter generator.

Unlike RPG, p-diff sees a model as ONE vector: all normalised parameters of the zoo's layout, flattened in
order (padding dropped). An autoencoder compresses that vector to a small latent, and a diffusion model learns
the distribution of the latents:

* :class:`ParamAutoencoder`: a 1D conv encoder (stages of Conv1d stride 2 + BatchNorm + LeakyReLU over the
  whole vector, as in p-diff's released ``OneDimVAE``), a Linear layer from the flattened features to the
  latent, and the mirrored decoder (Linear, ConvTranspose1d stages, a final Conv1d to one channel). p-diff's
  noise augmentation: Gaussian noise of std ``input_noise`` on the input vector and ``latent_noise`` on the
  latent during training only. The latent is standardised per vector (a LayerNorm without weights) so that
  the latent noise keeps its meaning: with an unbounded latent the encoder can scale the noise away, and with
  p-diff's Tanh bound it saturates to binary codes that the latent diffusion cannot reproduce.
* the latent diffusion model: the project's 1D conv denoiser (:class:`rpg.generator.denoiser.ConvDenoiser`)
  over the latent as a one-channel sequence (unconditional); the schedule, loss and
  DDPM/DDIM samplers are :mod:`rpg.generator.schedule` and :mod:`rpg.generator.samplers`.

Every activation of the autoencoder spans the whole flattened model, and its Linear layers have
(model size x latent width / 2^stages x channels) weights: memory grows with the model size, which is why p-diff
runs out of memory at moderate sizes (see benchmarks/scale.py).
"""

from __future__ import annotations

import torch
from torch import nn

from rpg.config import PDiffConfig
from rpg.generator.denoiser import ConvDenoiser
from rpg.generator.samplers import sample
from rpg.generator.schedule import DiffusionSchedule, denoising_loss


class ParamAutoencoder(nn.Module):
    """Autoencoder over a flat parameter vector [B, P] with p-diff's input and latent noise augmentation."""

    def __init__(
        self,
        *,
        num_params: int,
        channels: list[int],
        latent_dim: int,
        kernel_size: int = 7,
        input_noise: float = 0.001,
        latent_noise: float = 0.1,
    ) -> None:
        super().__init__()
        if num_params < 1:
            raise ValueError(f"num_params must be >= 1, got {num_params}")
        self.num_params, self.input_noise, self.latent_noise = int(num_params), input_noise, latent_noise
        stages = len(channels)
        self.padded = -(-self.num_params // 2**stages) * 2**stages  # length divisible by 2^stages
        self.last_length, self.channels = self.padded // 2**stages, list(channels)
        pad = kernel_size // 2
        enc, prev = [], 1
        for c in channels:
            enc += [nn.Conv1d(prev, c, kernel_size, stride=2, padding=pad), nn.BatchNorm1d(c), nn.LeakyReLU()]
            prev = c
        self.encoder = nn.Sequential(*enc)
        features = channels[-1] * self.last_length
        self.to_latent = nn.Linear(features, latent_dim)
        self.from_latent = nn.Linear(latent_dim, features)
        dec = []
        for c_in, c_out in zip(channels[::-1], channels[::-1][1:] + channels[:1]):
            dec += [nn.ConvTranspose1d(c_in, c_out, kernel_size, stride=2, padding=pad, output_padding=1),
                    nn.BatchNorm1d(c_out), nn.ELU()]  # fmt: skip
        self.decoder = nn.Sequential(*dec, nn.Conv1d(channels[0], 1, kernel_size, padding=pad))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P] -> latent [B, latent_dim], standardised per vector (mean 0, RMS 1 over its entries)."""
        if x.ndim != 2 or x.shape[1] != self.num_params:
            raise ValueError(f"autoencoder input must be [B, {self.num_params}], got {tuple(x.shape)}")
        h = nn.functional.pad(x, (0, self.padded - self.num_params))[:, None, :]
        z = self.to_latent(self.encoder(h).flatten(1))
        return nn.functional.layer_norm(z, z.shape[-1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B, latent_dim] -> parameters [B, P]."""
        h = self.from_latent(z).view(z.shape[0], self.channels[-1], self.last_length)
        return self.decoder(h)[:, 0, : self.num_params]

    def forward(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruction loss (MSE to the clean input) with noise on the input and on the latent."""
        noisy = x + self.input_noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = self.encode(noisy)
        z = z + self.latent_noise * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return nn.functional.mse_loss(self.decode(z), x)


class PDiffModel(nn.Module):
    """Autoencoder + latent denoiser + schedule; latents are standardised (stored mean/std) for diffusion."""

    def __init__(self, *, config: PDiffConfig, num_params: int) -> None:
        super().__init__()
        self.config = config
        self.autoencoder = ParamAutoencoder(
            num_params=num_params, channels=config.channels, latent_dim=config.latent_dim,
            kernel_size=config.kernel_size, input_noise=config.input_noise, latent_noise=config.latent_noise,
        )  # fmt: skip
        self.denoiser = ConvDenoiser(
            token_size=config.latent_dim, cond_dim=1, channels=config.denoiser_channels,
            kernel_size=config.denoiser_kernel, time_dim=config.time_dim,
        )  # fmt: skip
        self.schedule = DiffusionSchedule(
            num_timesteps=config.num_timesteps, beta_start=config.beta_start, beta_end=config.beta_end
        )
        self.register_buffer("latent_mean", torch.zeros(config.latent_dim))
        self.register_buffer("latent_std", torch.ones(()))

    def eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise of standardised latents ``x`` [N, latent_dim] at timesteps ``t`` [N] (no condition:
        the denoiser's condition input is a constant zero, its projection a learned bias)."""
        return self.denoiser(x, t, torch.zeros(x.shape[0], 1, device=x.device, dtype=x.dtype))

    @torch.no_grad()
    def set_latent_stats(self, latents: torch.Tensor) -> None:
        """Standardise latents with their per-dimension mean and one global std (from the training latents)."""
        self.latent_mean.copy_(latents.mean(0))
        self.latent_std.copy_((latents - latents.mean(0)).std().clamp(min=1e-6))

    def diffusion_loss(self, latents: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising loss on raw latents [N, latent_dim] (standardised here)."""
        x0 = (latents - self.latent_mean) / self.latent_std
        return denoising_loss(self.eps, x0, self.schedule, generator=generator)

    @torch.no_grad()
    def sample(self, num: int, *, sampler, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` flat normalised parameter vectors [num, P] (reverse diffusion, then decode)."""
        was_training = self.training
        self.eval()
        try:
            device = self.latent_std.device
            noise = torch.randn(num, self.config.latent_dim, generator=generator, device=device)
            z = sample(self.eps, noise, sampler, generator=generator) * self.latent_std + self.latent_mean
            return self.autoencoder.decode(z)
        finally:
            self.train(was_training)
