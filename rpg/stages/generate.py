"""Stage 4, generation: one job per batch of models (a directory), so adding models generates only new ones.

A batch directory's ``SHA256SUMS`` records the digest of each model; evaluation checks them as it reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rpg.config import ZooSettings
from rpg.errors import RPGInputError
from rpg.generator.sampling import generate_models
from rpg.io import write_digests

MODEL_PATTERN = "model_*.safetensors"


def model_name(index: int) -> str:
    """File name of generated model ``index``: ``model_<iii>.safetensors``."""
    return f"model_{index:03d}.safetensors"


def generate(
    settings: ZooSettings,
    *,
    generator_dir: str | Path,
    tokens_dir: str | Path,
    out_dir: str | Path,
    indices: Sequence[int],
) -> None:
    """Sample the models ``indices`` of the zoo's generated set (model i: seed ``generate.seed + i``) into
    ``out_dir/model_<iii>.safetensors``."""
    out_dir = Path(out_dir)
    generate_models(generator_dir=generator_dir, token_dir=tokens_dir, indices=list(indices),
                    out_paths=[out_dir / model_name(i) for i in indices], generate_cfg=settings.generate,
                    device=settings.device)  # fmt: skip
    write_digests(out_dir)


def batch_models(batch_dirs: Sequence[str | Path]) -> list[Path]:
    """The model files of generation batch directories, in order (a batch without models is an error)."""
    paths = []
    for d in map(Path, batch_dirs):
        found = sorted(d.glob(MODEL_PATTERN))
        if not found:
            raise RPGInputError("generation batch holds no models; rebuild it with `snakemake <dir> --force`", d)
        paths += found
    return paths
