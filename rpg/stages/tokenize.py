"""Stage 2, tokenization: a zoo's checkpoints -> layout/index tables, reference entries and token shards."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rpg.config import ZooSettings
from rpg.stages.collect import run_checkpoints
from rpg.tokens.store import write_token_store


def tokenize(settings: ZooSettings, *, run_dirs: Sequence[str | Path], out_dir: str | Path) -> None:
    """Tokenize the checkpoints of ``run_dirs`` (run or task-group directories) into the token store ``out_dir``."""
    t = settings.tokens
    write_token_store(run_checkpoints(run_dirs), out_dir, token_size=t.token_size, shard_size=t.shard_size,
                      state=t.state, dtype=t.dtype, include=t.include, exclude=t.exclude)  # fmt: skip
