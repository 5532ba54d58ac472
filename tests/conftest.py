"""Shared fixtures: a tiny fake zoo and its token store, tiny generator/training configs, a trained generator, and
the tiny pipelines run to the end through Snakemake (built once per session, only when a selected test asks).

The fake zoo holds checkpoints of a linear + BatchNorm "architecture" (arch "fake"): every kind of entry the
tokenizer treats differently (weights, biases, BN weights, running_var, an integer buffer), in two runs.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from rpg.generator.trainer import train_generator
from rpg.io import save_safetensors
from rpg.tokens.store import write_token_store

sys.path.insert(0, str(Path(__file__).parent))  # tests/snakemake_helpers.py
from snakemake_helpers import snakemake  # noqa: E402

torch.set_num_threads(1)
CONFIGS = Path(__file__).parent / "configs"

TINY_GENERATOR = {"preset": "tiny", "dim": 32, "d_state": 8, "headdim": 16, "chunk_size": 8,
                  "denoiser_channels": [1, 4, 8, 4, 1], "time_dim": 16}  # fmt: skip
TINY_TRAIN = {"steps": 6, "batch_size": 2, "diffusion_batch": 16, "lr": 1e-3, "warmup_steps": 2, "save_every": 2,
              "log_every": 2, "seed": 0, "ema_decay": 0.9}  # fmt: skip
FAKE_KEYS = ["fc.weight", "fc.bias", "bn.weight", "bn.running_var", "bn.num_batches_tracked", "head.weight"]


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (README's test command): one worker more than CPU cores. The end-to-end tests spend part of their
    time waiting on subprocesses (Snakemake's jobs, the Slurm cluster's status checks), and a third worker on 2 cores
    fills it (docs/development.md has the timings)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


def _make_token_store(root: Path, *, runs: int = 2, per_run: int = 3, tasks: bool = False, token_size: int = 16):
    """A zoo of tiny fake checkpoints tokenized into ``root/tokens`` (checkpoints in ``root/zoo/run<r>``)."""
    paths = []
    for r in range(runs):
        g = torch.Generator().manual_seed(100 + r)
        base = {"fc.weight": torch.randn(8, 5, generator=g), "fc.bias": torch.randn(8, generator=g),
                "bn.weight": 1 + 0.1 * torch.randn(8, generator=g), "bn.running_var": torch.rand(8, generator=g) + 0.5,
                "bn.num_batches_tracked": torch.tensor(7), "head.weight": torch.randn(3, 8, generator=g)}  # fmt: skip
        for s in range(per_run):
            sd = {k: v + 0.01 * s * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                  for k, v in base.items()}  # fmt: skip
            task = [int(b) for b in torch.randint(0, 2, (10,), generator=g)] if tasks else None
            meta = {"kind": "checkpoint", "arch": "fake", "arch_kwargs": {}, "run": r, "seed": r, "step": s, "index": s,
                    "val_accuracy": 0.5, "task": task, "num_classes": 3, "state_dict_keys": FAKE_KEYS}  # fmt: skip
            path = root / "zoo" / f"run{r}" / f"ckpt_{s:03d}.safetensors"
            save_safetensors(sd, path, meta)
            paths.append(path)
    write_token_store(paths, root / "tokens", token_size=token_size, shard_size=4)
    return root / "tokens"


@pytest.fixture(scope="session")
def tiny_gen() -> dict:
    """A tiny generator config (width 32, a 4/8 denoiser): seconds to train on a CPU."""
    return dict(TINY_GENERATOR)


@pytest.fixture(scope="session")
def tiny_train() -> dict:
    """A 6-step training config with EMA and a resumable save every 2 steps."""
    return dict(TINY_TRAIN)


@pytest.fixture(scope="session")
def make_token_store():
    """The factory: ``make_token_store(root, runs=2, per_run=3, tasks=False, token_size=16) -> token dir``."""
    return _make_token_store


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory) -> Path:
    """A token store of the fake zoo (2 runs x 3 checkpoints, tokens of 16), shared by the whole session."""
    return _make_token_store(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="session")
def trained_generator(tmp_path_factory):
    """``(root, token_dir, generator_dir)``: a generator trained 3 steps on the fake zoo (root/zoo holds it)."""
    root = tmp_path_factory.mktemp("gen")
    tokens = _make_token_store(root)
    train_generator(token_dir=tokens, out_dir=root / "generator", generator_cfg=TINY_GENERATOR,
                    train_cfg={**TINY_TRAIN, "steps": 3}, device="cpu")  # fmt: skip
    return root, tokens, root / "generator"


def _finished_run(tmp_path_factory, config: Path):
    """``config`` run to the end in a new working directory; after the session, a check that no test wrote into it.

    Under pytest-xdist (``-n``) the workers share one run: the first to ask builds it under a file lock in the
    session's common temporary folder, the others wait for it and read it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # .../pytest-N/popen-gw0 -> .../pytest-N, shared by the workers
    workdir, done = base / f"{config.stem}_run", base / f"{config.stem}_run.done"
    with FileLock(str(base / f"{config.stem}_run.lock")):
        if not done.exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a build that failed in another worker
            workdir.mkdir()
            snakemake("--cores", "2", "--configfile", str(config), "--directory", str(workdir))
            done.touch()
    files = lambda: {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in workdir.rglob("*") if p.is_file()}
    before = files()
    yield workdir
    assert files() == before, f"a test wrote into the shared run {workdir}: copy it first (snakemake_helpers.copy_run)"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The working directory of tests/configs/tiny.yaml run to the end (``--cores 2``), shared by the session's slow
    tests: read it, never run Snakemake in it; to rerun or change anything, copy it (``copy_run``) first."""
    yield from _finished_run(tmp_path_factory, CONFIGS / "tiny.yaml")


@pytest.fixture(scope="session")
def tasks_tiny_run(tmp_path_factory):
    """The same for tests/configs/tasks_tiny.yaml (the unseen-task experiment)."""
    yield from _finished_run(tmp_path_factory, CONFIGS / "tasks_tiny.yaml")
