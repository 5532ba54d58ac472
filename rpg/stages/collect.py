"""Stage 1, checkpoint collection: one job per training run (a directory of checkpoints), and the zoo table.

Classification and detection data have their own training loops (:mod:`rpg.zoo.collect`,
:mod:`rpg.zoo.collect_detection`); a zoo with a ``source`` is imported from a folder instead, one job per run
(:mod:`rpg.zoo.source`), into the same run directory layout. A run directory's ``SHA256SUMS`` records the digest
of every file the job wrote (:func:`rpg.io.write_digests`); tokenization and evaluation check each checkpoint
against it as they read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from rpg.config import ZooSettings
from rpg.errors import RPGInputError
from rpg.io import read_table, write_digests
from rpg.zoo import collect, collect_detection, source

RUN_TABLE = collect.RUN_TABLE
TABLES = (RUN_TABLE, "group.csv")  # the table of a run directory, of a task group directory (rpg.tasks.collect)


def collect_run(settings: ZooSettings, *, run: int, out_dir: str | Path) -> None:
    """Train run ``run`` of the zoo; ``out_dir`` gets ``ckpt_<iii>.safetensors`` for every checkpoint and run.csv
    (adapter zoos: also ``peft_<iii>/``, each checkpoint in PEFT format)."""
    out_dir = Path(out_dir)
    s = settings
    if s.is_source_zoo:
        raise RPGInputError("a source zoo is imported (import_run), not collected", f"config zoos.{s.zoo}.source")
    if s.adapter is not None:
        from rpg.adapters.collect import collect_adapter_run
        from rpg.adapters.spec import adapter_spec

        collect_adapter_run(
            spec=adapter_spec(s.adapter, s.data), collect=s.collect, data=s.data, run=run,
            out_paths=[out_dir / collect.checkpoint_name(i) for i in range(s.collect.checkpoints)],
            table_path=out_dir / RUN_TABLE, device=s.device,
        )  # fmt: skip
        write_digests(out_dir)
        return
    loop = collect_detection.collect_detection_run if s.data.is_detection else collect.collect_run
    loop(
        arch=s.arch, arch_kwargs=s.arch_kwargs, init=s.init, collect=s.collect, data=s.data, run=run,
        out_paths=[out_dir / collect.checkpoint_name(i) for i in range(s.collect.checkpoints)],
        table_path=out_dir / RUN_TABLE, device=s.device,
    )  # fmt: skip
    write_digests(out_dir)


def source_runs(settings: ZooSettings) -> list[source.SourceRun]:
    """The runs of a source zoo (a cheap directory scan, run by the workflow at start); [] for other zoos."""
    return source.list_source_runs(settings.source) if settings.source is not None else []


def import_run(settings: ZooSettings, *, run: int, out_dir: str | Path) -> None:
    """Import run ``run`` of a source zoo into ``out_dir`` (checked ``ckpt_<iii>.safetensors`` and run.csv)."""
    s = settings
    if s.source is None:
        raise RPGInputError("the zoo has no source folder to import", f"config zoos.{s.zoo}.source")
    source.import_run(source=s.source, arch=s.arch, arch_kwargs=s.arch_kwargs, run=run, out_dir=out_dir)
    write_digests(out_dir)


def run_checkpoints(run_dirs: Sequence[str | Path]) -> list[Path]:
    """The checkpoint files of run (or task group) directories, in order, each checked against the directory's
    table (run.csv / group.csv).

    A checkpoint that the table lists but that is missing raises RPGInputError naming it and how to rebuild it.
    """
    paths: list[Path] = []
    for run_dir in map(Path, run_dirs):
        table_path = next((run_dir / t for t in TABLES if (run_dir / t).is_file()), run_dir / RUN_TABLE)
        table = read_table(table_path)
        for name in table["path"].map(lambda p: Path(str(p)).name):
            path = run_dir / name
            if not path.is_file():
                raise RPGInputError(
                    f"checkpoint listed in {table_path.name} is missing; rebuild it with "
                    f"`snakemake {run_dir} --force` and rerun the stages after it", path)  # fmt: skip
            paths.append(path)
    return paths


def zoo_table(run_dirs: Sequence[str | Path], out_path: str | Path) -> None:
    """The table of all checkpoints of a zoo (path, run, seed, step, index, val_accuracy) from their metadata."""
    collect.write_zoo_table(run_checkpoints(run_dirs), out_path)


def table_paths(table_path: str | Path) -> list[Path]:
    """The checkpoint paths listed in a zoo table (checkpoints.csv), in order."""
    return [Path(str(p)) for p in pd.read_csv(table_path)["path"]]
