"""Stage 3, training the recurrent diffusion generator on a token store (resumable; DDP when train.nproc > 1)."""

from __future__ import annotations

from pathlib import Path

from rpg.config import ConfigError, ZooSettings
from rpg.generator.trainer import STATE_FILE, train_generator
from rpg.io import remove_stale_temps


def train(settings: ZooSettings, *, tokens_dir: str | Path, out_dir: str | Path) -> None:
    """Train the zoo's generator; ``out_dir`` gets model.safetensors, config.json and train_log.csv.

    With ``train.validate_every`` the sampled models are scored on the val split of the experiment's data with the
    zoo's evaluator (``evaluate.evaluator``).
    """
    remove_stale_temps([Path(out_dir) / STATE_FILE])
    validation = None
    if settings.train.validate_every is not None:
        if settings.generator.task_condition is not None:
            key = f"experiments.{settings.experiment}.zoos.{settings.zoo}.train.validate_every"
            raise ConfigError(key, "validation by sampling does not support task-conditioned generators (task zoos)")
        validation = {"data": settings.data, "evaluator": settings.evaluate.evaluator,
                      "batch_size": settings.evaluate.batch_size}  # fmt: skip
    train_generator(token_dir=tokens_dir, out_dir=out_dir, generator_cfg=settings.generator,
                    train_cfg=settings.train, device=settings.device, validation=validation)  # fmt: skip
