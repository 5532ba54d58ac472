"""Stage 3, training the recurrent diffusion generator on a token store (resumable; DDP when train.nproc > 1)."""

from __future__ import annotations

from pathlib import Path

from rpg.config import ZooSettings
from rpg.generator.trainer import STATE_FILE, train_generator
from rpg.io import remove_stale_temps


def train(settings: ZooSettings, *, tokens_dir: str | Path, out_dir: str | Path) -> None:
    """Train the zoo's generator; ``out_dir`` gets model.safetensors, config.json and train_log.csv."""
    remove_stale_temps([Path(out_dir) / STATE_FILE])
    train_generator(token_dir=tokens_dir, out_dir=out_dir, generator_cfg=settings.generator,
                    train_cfg=settings.train, device=settings.device)  # fmt: skip
