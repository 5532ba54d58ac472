"""Run-time helpers shared by all stages: logging, progress bars, seeds, devices, threads, stop signals, fault
injection."""

from __future__ import annotations

import datetime
import logging
import os
import random
import signal
import socket
import sys
import threading
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


class StopSignals:
    """Catch SIGTERM and SIGINT while a long loop runs, so that it stops at a safe point instead of dying anywhere.

    ``requested`` is the number of the first signal received (0: none); the loop checks it after each unit of work,
    saves what it needs and ends the process (:meth:`exit`). A second signal raises KeyboardInterrupt at once. The
    previous handlers come back when the block ends. Outside the main thread (where Python delivers signals) it
    does nothing. A cluster sends SIGTERM before SIGKILL when it preempts or times out a job (Slurm: KillWait or
    GraceTime seconds later); Ctrl-C sends SIGINT.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopping at once")
        self.requested = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.requested).name if self.requested else ""

    def exit(self) -> None:
        """End the process with status 128 + signal (143 for SIGTERM, 130 for SIGINT), as the signal would."""
        raise SystemExit(128 + self.requested)


FAULT_ENV = "RPG_FAULT"


def fault_point(stage: str, unit: int) -> None:
    """Fault injection for the recovery tests: with ``RPG_FAULT=<stage>:<unit>`` in the environment, the whole
    process group (Snakemake and its jobs) is killed with SIGKILL when ``stage`` finishes unit ``unit`` of its work
    (a checkpoint, a shard, a training step, a model), as ``kill -9`` would; with ``RPG_FAULT=<stage>:<unit>:TERM``
    the stage's own process gets SIGTERM there, as a cluster preempting the job would. A no-op otherwise."""
    spec = os.environ.get(FAULT_ENV)
    if spec == f"{stage}:{unit}":
        sys.stderr.flush()
        os.killpg(os.getpgrp(), signal.SIGKILL)
    elif spec == f"{stage}:{unit}:TERM":
        os.kill(os.getpid(), signal.SIGTERM)


class _Tee:
    """A text stream writing to several files (stderr of a stage: its log and its attempts log)."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:
        return False


def attempts_log(log_file: str | Path) -> Path:
    """``<name>.attempts.log`` beside a stage's log: every attempt, appended, never removed by Snakemake."""
    log_file = Path(log_file)
    return log_file.with_name(f"{log_file.stem}.attempts{log_file.suffix or '.log'}")


class stage_logging:
    """Context for a pipeline stage: stderr (progress bars) and logging go to ``log_file``.

    Used by the Snakemake scripts so that every stage writes its own log file. Snakemake removes a job's log before
    it reruns the job, so everything also goes to :func:`attempts_log`, appended after a header line per attempt
    (time, host, process): a retry keeps the log of the failed attempt. Exceptions are logged with their traceback
    before they propagate (and fail the job).
    """

    def __init__(self, log_file: str | Path, threads: int | None = None) -> None:
        self.log_file = Path(log_file)
        self.threads = threads

    def __enter__(self) -> logging.Logger:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._files = [open(self.log_file, "a", buffering=1), open(attempts_log(self.log_file), "a", buffering=1)]
        self._stream = _Tee(*self._files)
        now = datetime.datetime.now().isoformat(timespec="seconds")
        self._stream.write(f"===== attempt started {now} on {socket.gethostname()} (pid {os.getpid()}) =====\n")
        self._stderr = sys.stderr
        sys.stderr = self._stream
        setup_logging(None)
        set_threads(self.threads)
        return log

    def __exit__(self, exc_type, exc, tb) -> None:
        if isinstance(exc, SystemExit):  # a stop signal (StopSignals): what was saved is logged already
            log.warning("stage stopped with exit status %s", exc.code)
        elif exc is not None:
            log.error("stage failed: %s", exc, exc_info=(exc_type, exc, tb))
        logging.getLogger().handlers.clear()
        sys.stderr = self._stderr
        for f in self._files:
            f.close()
