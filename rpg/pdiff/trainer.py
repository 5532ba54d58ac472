"""Training and generation stages of the p-diff baseline, on the same token store as RPG.

The training data are the zoo's normalised parameters from the token store (tokens with the padding dropped,
so exactly RPG's per-layer normalisation), one flat vector per checkpoint. Training has two stages, as in
p-diff: the autoencoder (``ae_steps``, reconstruction loss with input/latent noise), then, on the latents of all
checkpoints (encoded without noise), the latent diffusion model (``steps``, epsilon-prediction loss). Both use
AdamW with linear warm-up and cosine decay and seeded batches. Outputs of :func:`train_pdiff`:
``model.safetensors`` (weights + latent statistics), ``config.json`` and ``train_log.csv`` (stage, step, loss,
lr, time). :func:`generate_pdiff` samples latents (DDPM/DDIM), decodes them and writes one checkpoint-like
safetensors file per model, loadable with strict=True like RPG's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rpg.config import GenerateConfig, PDiffConfig
from rpg.errors import RPGInputError
from rpg.generator.samplers import build_sampler
from rpg.io import load_safetensors, read_json, save_safetensors, write_json, write_table
from rpg.optim import batch_rows, warmup_cosine
from rpg.pdiff.model import PDiffModel
from rpg.runtime import progress, resolve_device, set_threads
from rpg.tokens.store import REFERENCE_FILE, TokenStore
from rpg.tokens.stream import LazyTensors, write_streamed_state_dict

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOG_FILE = "train_log.csv"


def flat_parameters(store, rows: Sequence[int] | None = None) -> torch.Tensor:
    """Normalised parameters [n, P] (float32) of checkpoints ``rows`` (default all): tokens without padding."""
    rows = list(range(len(store))) if rows is None else list(rows)
    mask = store.layout.token_mask()
    out = torch.empty(len(rows), store.layout.num_parameters)
    for i in range(0, len(rows), 64):
        out[i : i + 64] = store.tokens(rows[i : i + 64])[:, mask]
    return out


def _optimizer(params, lr: float, cfg: PDiffConfig, total: int):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    warmup = min(cfg.warmup_steps, max(1, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, lr=1.0, warmup=warmup, total=total))
    return opt, sched


def _fit(name: str, loss_fn, params: list, *, steps: int, lr: float, cfg: PDiffConfig, history: dict, t0: float):
    """A plain training loop: ``loss_fn(step)`` -> loss; AdamW, warm-up + cosine, gradient clipping."""
    opt, sched = _optimizer(params, lr, cfg, steps)
    for step in progress(range(steps), desc=f"p-diff {name}", total=steps):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        lr_now = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"p-diff {name} loss is {value} at step {step + 1}; lower the learning rate?")
        for key, v in zip(history, (name, step + 1, value, lr_now, round(time.perf_counter() - t0, 3))):
            history[key].append(v)
        if (step + 1) % max(1, steps // 10) == 0:
            log.info("p-diff %s step %d/%d loss %.5f", name, step + 1, steps, value)


def train_pdiff(
    *,
    token_dir: str | Path,
    out_dir: str | Path,
    pdiff_cfg: Mapping[str, Any] | PDiffConfig,
    device: str = "auto",
) -> dict[str, Any]:
    """Train the p-diff autoencoder and latent diffusion model on a token store; returns config.json's dict."""
    import pandas as pd

    cfg = PDiffConfig.parse(pdiff_cfg, "pdiff")
    set_threads(cfg.threads)
    dev = resolve_device(device)
    store = TokenStore(token_dir)
    data = flat_parameters(store).to(dev)
    n, num_params = data.shape
    torch.manual_seed(cfg.seed)
    model = PDiffModel(config=cfg, num_params=num_params).to(dev)
    ae = model.autoencoder
    log.info("p-diff on %d checkpoints of %d parameters: autoencoder %d weights (latent %d), denoiser %d weights",
             n, num_params, sum(p.numel() for p in ae.parameters()), cfg.latent_dim,
             sum(p.numel() for p in model.denoiser.parameters()))  # fmt: skip
    gen = torch.Generator(dev)
    history: dict[str, list] = {"stage": [], "step": [], "loss": [], "lr": [], "time": []}
    t0 = time.perf_counter()

    def ae_loss(step: int) -> torch.Tensor:
        rows = batch_rows(step, batch_size=cfg.ae_batch_size, num_checkpoints=n, seed=cfg.seed)
        gen.manual_seed(cfg.seed * 1_000_003 + step)
        return ae(data[rows], generator=gen)

    ae.train()
    _fit("autoencoder", ae_loss, list(ae.parameters()), steps=cfg.ae_steps, lr=cfg.ae_lr, cfg=cfg,
         history=history, t0=t0)  # fmt: skip

    ae.eval()
    with torch.no_grad():
        latents = torch.cat([ae.encode(data[i : i + 256]) for i in range(0, n, 256)])
        recon = torch.cat([ae.decode(latents[i : i + 256]) for i in range(0, n, 256)])
        recon_rms = float((recon - data).square().mean().sqrt())
    model.set_latent_stats(latents)
    log.info("autoencoder reconstruction RMS error %.4f (normalised units)", recon_rms)

    def diffusion_loss(step: int) -> torch.Tensor:
        rows = batch_rows(step, batch_size=cfg.batch_size, num_checkpoints=n, seed=cfg.seed + 1)
        gen.manual_seed((cfg.seed + 1) * 1_000_003 + step)
        return model.diffusion_loss(latents[rows], generator=gen)

    model.denoiser.train()
    _fit("diffusion", diffusion_loss, list(model.denoiser.parameters()), steps=cfg.steps, lr=cfg.lr, cfg=cfg,
         history=history, t0=t0)  # fmt: skip

    out_dir = Path(out_dir)
    save_safetensors(model.state_dict(), out_dir / MODEL_FILE, {"kind": "pdiff", "num_params": num_params})
    losses = pd.DataFrame(history)
    info = {
        "pdiff": cfg.to_dict(),
        "num_params": num_params,
        "num_checkpoints": n,
        "num_tokens": store.layout.num_tokens,
        "token_size": store.layout.token_size,
        "token_dir": str(store.directory),
        "tokens_meta": {k: store.meta.get(k) for k in ("arch", "arch_kwargs", "num_classes")},
        "reconstruction_rms": recon_rms,
        "final_loss": {s: float(g["loss"].iloc[-1]) for s, g in losses.groupby("stage")},
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(info, out_dir / CONFIG_FILE)
    write_table(losses, out_dir / LOG_FILE)
    return info


def load_pdiff(pdiff_dir: str | Path, *, device: str | torch.device = "cpu") -> tuple[PDiffModel, dict[str, Any]]:
    """The trained p-diff model (eval mode) and its config.json."""
    pdiff_dir = Path(pdiff_dir)
    info = read_json(pdiff_dir / CONFIG_FILE)
    tensors, _ = load_safetensors(pdiff_dir / MODEL_FILE)
    try:
        model = PDiffModel(config=PDiffConfig.parse(info["pdiff"]), num_params=int(info["num_params"]))
        model.load_state_dict(tensors, strict=True)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise RPGInputError(f"cannot rebuild the p-diff model ({exc})", pdiff_dir) from exc
    return model.to(device).eval(), info


def generate_pdiff(
    *,
    pdiff_dir: str | Path,
    token_dir: str | Path,
    out_paths: Sequence[str | Path],
    generate_cfg: Mapping[str, Any] | GenerateConfig | None = None,
    pdiff_cfg: Mapping[str, Any] | PDiffConfig | None = None,
    device: str = "auto",
    indices: Sequence[int] | None = None,
) -> None:
    """Write one p-diff model per path; model i (``indices``, default 0, 1, ...) uses seed ``generate.seed + i``.

    Sampler: the p-diff config's ``sampler`` (default DDPM, as p-diff) with ``sampling_steps`` (null: all
    timesteps) and ``eta``; with ``sampler: null`` the zoo's ``generate`` block (sampler, steps, eta) as RPG.
    The sampling keys come from ``pdiff_cfg`` when given (the current config), else from the trained model's.
    """
    gen_cfg = GenerateConfig.parse(generate_cfg, "generate")
    dev = resolve_device(device)
    store = TokenStore(token_dir)
    layout, store_meta = store.layout, store.meta
    model, info = load_pdiff(pdiff_dir, device=dev)
    cfg = model.config if pdiff_cfg is None else PDiffConfig.parse(pdiff_cfg, "pdiff")
    set_threads(cfg.threads or gen_cfg.threads)
    if model.autoencoder.num_params != layout.num_parameters:
        raise RPGInputError(f"p-diff model {pdiff_dir} has {model.autoencoder.num_params} parameters, "
                            f"this token store {layout.num_parameters}", token_dir)  # fmt: skip
    if cfg.sampler is None:
        sampler_name, steps, eta = gen_cfg.sampler, gen_cfg.steps, gen_cfg.eta
    else:
        sampler_name, steps, eta = cfg.sampler, cfg.sampling_steps, cfg.eta
    sampler = build_sampler(sampler_name, schedule=model.schedule, steps=steps, eta=eta)
    mask = layout.token_mask()
    reference = LazyTensors(store.directory / REFERENCE_FILE)
    out_paths = [Path(p) for p in out_paths]
    indices = list(range(len(out_paths))) if indices is None else [int(i) for i in indices]
    for i, path in progress(list(zip(indices, out_paths)), desc="generate p-diff", total=len(out_paths)):
        start = time.perf_counter()
        seed = gen_cfg.seed + i
        flat = model.sample(1, sampler=sampler, generator=torch.Generator(dev).manual_seed(seed))[0].cpu()
        if not bool(torch.isfinite(flat).all()):
            raise FloatingPointError(f"p-diff produced non-finite weights for model {i}")
        tokens = torch.full((layout.num_tokens, layout.token_size), float("nan"))
        tokens[mask] = flat
        meta = {
            "kind": "generated", "method": "pdiff", "arch": store_meta.get("arch"),
            "arch_kwargs": store_meta.get("arch_kwargs", {}), "num_classes": store_meta.get("num_classes"),
            "run": None, "seed": seed, "step": None, "index": i, "val_accuracy": None, "task": None,
            "generator": str(pdiff_dir), "state": None, "sampler": sampler_name,
            "sampling_steps": len(sampler.timesteps), "sample_seed": seed, "state_dict_keys": layout.names,
        }  # fmt: skip
        write_streamed_state_dict(path, [(0, tokens)], layout, reference, meta)
        log.info("p-diff model %d -> %s in %.2f s", i, path, time.perf_counter() - start)
