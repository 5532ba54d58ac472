"""Stage 5, evaluation of one zoo: originals, generated models, p-diff models and baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpg.config import ZooSettings
from rpg.evaluate import evaluate_zoo
from rpg.stages.collect import run_checkpoints
from rpg.stages.generate import batch_models


def evaluate(
    settings: ZooSettings,
    *,
    tokens_dir: str | Path,
    run_dirs: Sequence[str | Path],
    generated: Sequence[str | Path],
    pdiff: Sequence[str | Path] = (),
    generator_dir: str | Path | None,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Evaluate the zoo; ``out_dir`` gets table.csv/.parquet, summary.json and the plots. Returns the summary.

    ``run_dirs``: the zoo's run (or task group) directories; ``generated``/``pdiff``: generation batch directories.
    """
    return evaluate_zoo(
        data_cfg=settings.data, token_dir=tokens_dir, checkpoint_paths=run_checkpoints(run_dirs),
        generated_paths=batch_models(generated), pdiff_paths=batch_models(pdiff), generator_dir=generator_dir,
        out_dir=out_dir, evaluate_cfg=settings.evaluate, device=settings.device,
    )  # fmt: skip
