"""The p-diff baseline's stages: training on the zoo's token store, and one job per sampled model (a batch
directory, its models' digests in SHA256SUMS)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rpg.config import ZooSettings
from rpg.io import write_digests
from rpg.pdiff.trainer import generate_pdiff, train_pdiff
from rpg.stages.generate import model_name


def train(settings: ZooSettings, *, tokens_dir: str | Path, out_dir: str | Path) -> None:
    """Train p-diff; ``out_dir`` gets model.safetensors, config.json and train_log.csv."""
    train_pdiff(token_dir=tokens_dir, out_dir=out_dir, pdiff_cfg=settings.pdiff, device=settings.device)


def generate(
    settings: ZooSettings, *, pdiff_dir: str | Path, tokens_dir: str | Path, out_dir: str | Path, indices: Sequence[int]
) -> None:
    """Sample the p-diff models ``indices`` (model i: seed ``generate.seed + i``) into ``out_dir``."""
    out_dir = Path(out_dir)
    generate_pdiff(pdiff_dir=pdiff_dir, token_dir=tokens_dir, out_paths=[out_dir / model_name(i) for i in indices],
                   indices=list(indices), generate_cfg=settings.generate, pdiff_cfg=settings.pdiff,
                   device=settings.device)  # fmt: skip
    write_digests(out_dir)
