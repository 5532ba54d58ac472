"""Noise schedule, masked loss and the DDPM/DDIM samplers (network passed as a function)."""

from __future__ import annotations

import pytest
import torch

from rpg.generator.samplers import DDIMSampler, DDPMSampler, build_sampler, sample
from rpg.generator.schedule import DiffusionSchedule, denoising_loss, masked_mse

torch.set_num_threads(1)
SCHED = DiffusionSchedule()


def test_schedule_values():
    assert SCHED.num_timesteps == 1000
    assert SCHED.betas[0].item() == pytest.approx(1e-4) and SCHED.betas[-1].item() == pytest.approx(0.02)
    step = torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64)
    assert torch.allclose(SCHED.betas[1:] - SCHED.betas[:-1], step)
    assert SCHED.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    assert SCHED.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)  # standard DDPM value
    x0, noise = torch.ones(3, 4), torch.zeros(3, 4)
    t = torch.tensor([0, 500, 999])
    xt = SCHED.add_noise(x0, noise, t)
    assert torch.allclose(xt[:, 0], SCHED.alphas_cumprod[t].sqrt().float())


def test_masked_loss_ignores_padding():
    pred, target = torch.zeros(2, 4), torch.ones(2, 4)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    pred[~mask] = 100.0
    assert masked_mse(pred, target, mask).item() == pytest.approx(1.0)

    x0 = torch.randn(6, 8)
    x0[:, 5:] = float("nan")
    seen = {}

    def net(xt, t):
        seen["xt"] = xt
        return torch.zeros_like(xt)

    loss = denoising_loss(net, x0, SCHED, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and torch.isfinite(seen["xt"]).all()  # NaN set to 0 before noising
    assert loss.item() == pytest.approx(1.0, abs=0.5)  # E[noise^2] over the 30 real entries


def oracle(x0: torch.Tensor):
    """The exact epsilon for a known x0."""

    def net(xt, t):
        a = SCHED.alpha_bar(t, xt)
        return (xt - a.sqrt() * x0) / (1 - a).sqrt()

    return net


@pytest.mark.parametrize(
    "name,steps,eta", [("ddim", 20, 0.0), ("ddim", 60, 0.5), ("ddpm", 1000, 0.0), ("ddpm", 50, 0.0)]
)
def test_oracle_network_recovers_x0(name, steps, eta):
    x0 = torch.randn(16, 8, dtype=torch.float64)
    sampler = build_sampler(name, schedule=SCHED, steps=steps, eta=eta)
    assert len(sampler.timesteps) == steps and sampler.timesteps[0] == 999
    g = torch.Generator().manual_seed(1)
    out = sample(oracle(x0), torch.randn(16, 8, generator=g, dtype=torch.float64), sampler, generator=g)
    assert torch.allclose(out, x0, atol=1e-8)


def gaussian_eps(mean: float, std: float):
    """Optimal epsilon predictor for data ~ N(mean, std^2) elementwise."""

    def net(xt, t):
        a = SCHED.alpha_bar(t, xt)
        return (1 - a).sqrt() * (xt - a.sqrt() * mean) / (a * std**2 + 1 - a)

    return net


def test_ddim_eta1_all_steps_equals_ddpm_and_statistics():
    net = gaussian_eps(0.7, 0.3)
    outs = {}
    for name, sampler in {"ddpm": DDPMSampler(schedule=SCHED), "ddim": DDIMSampler(schedule=SCHED, eta=1.0)}.items():
        g = torch.Generator().manual_seed(3)
        outs[name] = sample(net, torch.randn(4000, dtype=torch.float64, generator=g)[:, None], sampler, generator=g)
    assert torch.allclose(outs["ddpm"], outs["ddim"], atol=1e-6)  # same noise draws, same posterior
    for x in outs.values():
        assert x.mean().item() == pytest.approx(0.7, abs=0.03) and x.std().item() == pytest.approx(0.3, abs=0.03)
    ddim = build_sampler("ddim", schedule=SCHED, steps=60)
    g = torch.Generator().manual_seed(4)
    x = sample(net, torch.randn(4000, 1, dtype=torch.float64, generator=g), ddim, generator=g)
    assert x.mean().item() == pytest.approx(0.7, abs=0.03) and x.std().item() == pytest.approx(0.3, abs=0.03)


def test_seeded_sampling_is_deterministic_and_errors():
    net = gaussian_eps(0.0, 1.0)
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(5)
        sampler = build_sampler("ddpm", schedule=SCHED, steps=100)
        runs.append(sample(net, torch.randn(10, 3, generator=g), sampler, generator=g))
    assert torch.equal(runs[0], runs[1])
    with pytest.raises(ValueError):
        build_sampler("euler", schedule=SCHED)
    with pytest.raises(ValueError):
        build_sampler("ddim", schedule=SCHED, steps=0)
    with pytest.raises(ValueError):
        DDIMSampler(schedule=SCHED, eta=-1)


@pytest.mark.parametrize("name,steps", [("ddim", 20), ("ddpm", 50)])
def test_sample_prediction_oracle_recovers_x0(name, steps):
    """An x0-predicting network, converted to epsilon by the schedule, drives the same samplers exactly."""
    x0 = torch.randn(16, 8, dtype=torch.float64)
    sampler = build_sampler(name, schedule=SCHED, steps=steps)
    g = torch.Generator().manual_seed(2)

    def net(xt, t):
        return SCHED.epsilon(x0.expand_as(xt), xt, t, "sample")

    out = sample(net, torch.randn(16, 8, generator=g, dtype=torch.float64), sampler, generator=g)
    assert torch.allclose(out, x0, atol=1e-8)
    t = torch.tensor([3] * 16)
    xt = SCHED.add_noise(x0, torch.randn(16, 8, dtype=torch.float64), t)
    assert torch.equal(SCHED.epsilon(xt, xt, t, "epsilon"), xt)
    with pytest.raises(ValueError, match="prediction"):
        SCHED.epsilon(xt, xt, t, "velocity")


def test_sample_prediction_loss_targets_x0():
    x0 = torch.randn(5, 8)
    x0[:, 6:] = float("nan")
    clean = torch.nan_to_num(x0)
    exact = denoising_loss(lambda xt, t: clean, x0, SCHED, prediction="sample")
    assert exact.item() == 0.0
    assert denoising_loss(lambda xt, t: clean + 1.0, x0, SCHED, prediction="sample").item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="prediction"):
        denoising_loss(lambda xt, t: clean, x0, SCHED, prediction="velocity")


@pytest.mark.parametrize("name,steps", [("ddim", 20), ("ddpm", 50)])
def test_v_prediction_oracle_recovers_x0_and_its_loss_is_zero(name, steps):
    """v = sqrt(a) eps - sqrt(1 - a) x0: an oracle v-network drives the samplers to x0 exactly."""
    x0 = torch.randn(16, 8, dtype=torch.float64)
    sampler = build_sampler(name, schedule=SCHED, steps=steps)
    g = torch.Generator().manual_seed(3)

    def v_of(xt, t):  # the exact v of x_t for this x0
        a = SCHED.alpha_bar(t, xt)
        eps = (xt - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0

    net = lambda xt, t: SCHED.epsilon(v_of(xt, t), xt, t, "v")  # noqa: E731
    out = sample(net, torch.randn(16, 8, generator=g, dtype=torch.float64), sampler, generator=g)
    assert torch.allclose(out, x0, atol=1e-8)
    gen = torch.Generator().manual_seed(4)
    x32 = x0.float()
    loss = denoising_loss(lambda xt, t: v_of(xt.double(), t).float(), x32, SCHED, generator=gen, prediction="v")
    assert loss.item() < 1e-10


def test_min_snr_weighting():
    t = torch.tensor([0, 10, 100, 500, 999])
    snr = SCHED.snr(t)
    assert bool((snr[:-1] > snr[1:]).all())  # noise grows with t
    w_eps = SCHED.loss_weights(t, "epsilon", "min_snr", gamma=5.0)
    assert torch.allclose(w_eps, torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr)
    assert w_eps[0] < 0.01 and w_eps[-1] == 1.0  # nearly clean timesteps are down-weighted, noisy ones kept
    assert torch.allclose(SCHED.loss_weights(t, "sample", "min_snr", 5.0), snr.clamp(max=5.0))
    assert torch.equal(SCHED.loss_weights(t, "epsilon", "none"), torch.ones(5, dtype=torch.float64))
    x0 = torch.randn(6, 4)
    a = denoising_loss(lambda xt, tt: torch.zeros_like(xt), x0, SCHED, generator=torch.Generator().manual_seed(0))
    b = denoising_loss(lambda xt, tt: torch.zeros_like(xt), x0, SCHED, generator=torch.Generator().manual_seed(0),
                       weighting="min_snr")  # fmt: skip
    assert b.item() < a.item()  # the same errors, weights <= 1
    with pytest.raises(ValueError, match="weighting"):
        SCHED.loss_weights(t, "epsilon", "p2")
