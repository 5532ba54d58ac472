"""Stage 4, generation: one job per batch of models (a directory), so adding models generates only new ones.

A batch directory's ``SHA256SUMS`` records the digest of each model; evaluation checks them as it reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rpg.api import load_generator
from rpg.config import ZooSettings
from rpg.errors import RPGInputError
from rpg.generator.sampling import model_name
from rpg.io import write_digests

MODEL_PATTERN = "model_*.safetensors"

__all__ = ["MODEL_PATTERN", "batch_models", "generate", "model_name"]


def generate(
    settings: ZooSettings,
    *,
    generator_dir: str | Path,
    tokens_dir: str | Path,
    out_dir: str | Path,
    indices: Sequence[int],
) -> None:
    """Sample the models ``indices`` of the zoo's generated set (model i: seed ``generate.seed + i``) into
    ``out_dir/model_<iii>.safetensors``: the public API's :meth:`rpg.api.Generator.sample`, as ``rpg sample``; then
    the batch's ``SHA256SUMS``."""
    generator = load_generator(Path(generator_dir), tokens=tokens_dir, settings=settings)
    generator.sample(indices=list(indices), out_dir=out_dir)
    write_digests(Path(out_dir))


def batch_models(batch_dirs: Sequence[str | Path]) -> list[Path]:
    """The model files of generation batch directories, in order (a batch without models is an error)."""
    paths = []
    for d in map(Path, batch_dirs):
        found = sorted(d.glob(MODEL_PATTERN))
        if not found:
            raise RPGInputError("generation batch holds no models; rebuild it with `snakemake <dir> --force`", d)
        paths += found
    return paths
