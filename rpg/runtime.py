"""Run-time helpers shared by all stages: logging, progress bars, seeds, devices, threads."""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("rpg")


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_file`` (a Snakemake ``log:`` path)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, **kw):
    """A tqdm progress bar on stderr (Snakemake scripts redirect stderr to the rule's log)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, mininterval=2.0, **kw)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch.Generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; otherwise the given device string."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def set_threads(n: int | None) -> None:
    """Limit torch intra-op threads (Snakemake's ``threads``) so parallel jobs do not oversubscribe."""
    if n:
        torch.set_num_threads(max(1, int(n)))
        os.environ.setdefault("OMP_NUM_THREADS", str(n))


class stage_logging:
    """Context for a pipeline stage: stderr (progress bars) and logging go to ``log_file``.

    Used by the Snakemake scripts so that every stage writes its own log file; exceptions are logged with
    their traceback before they propagate (and fail the job).
    """

    def __init__(self, log_file: str | Path, threads: int | None = None) -> None:
        self.log_file = Path(log_file)
        self.threads = threads

    def __enter__(self) -> logging.Logger:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.log_file, "w", buffering=1)
        self._stderr = sys.stderr
        sys.stderr = self._stream
        setup_logging(None)
        set_threads(self.threads)
        return log

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            log.error("stage failed: %s", exc, exc_info=(exc_type, exc, tb))
        logging.getLogger().handlers.clear()
        sys.stderr = self._stderr
        self._stream.close()
