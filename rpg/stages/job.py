"""Adapter between a Snakemake job and a stage: typed settings, the rule's log, leftover temporary files.

A thin workflow script does::

    with snakemake_job(snakemake, "train_generator") as settings:
        train.train_generator(settings, tokens_dir=snakemake.input.tokens, out_dir=...)

The settings of the job's (experiment, zoo) are resolved from ``snakemake.config`` (execution settings such as
threads and the device come from there, never from params) and must give back the rule's ``params.settings``;
a difference means the config changed after the DAG was built, and the job stops rather than mix the two.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rpg.config import ZooSettings, zoo_settings
from rpg.io import remove_stale_temps
from rpg.runtime import stage_logging
from rpg.stages.params import stage_params

log = logging.getLogger("rpg.stages")


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


@contextlib.contextmanager
def snakemake_job(smk: Any, stage: str | None = None) -> Iterator[ZooSettings | None]:
    """Run a stage inside a Snakemake job: log to the rule's log file (appending, one header per attempt), remove
    stale temporary files of the outputs, and yield the typed settings of the job's (experiment, zoo) (None for
    jobs without ``exp``/``zoo`` wildcards, such as the report)."""
    with stage_logging(smk.log[0], smk.threads):
        removed = remove_stale_temps(
            [p for p in smk.output if not Path(p).is_dir()],
            recursive_dirs=[p for p in smk.output if Path(p).is_dir()],
        )
        for path in removed:
            log.info("removed a temporary file left by an interrupted attempt: %s", path)
        settings = None
        wildcards = dict(smk.wildcards.items())
        if "exp" in wildcards and "zoo" in wildcards:
            settings = zoo_settings(smk.config, wildcards["exp"], wildcards["zoo"])
            if stage is not None and hasattr(smk.params, "settings"):
                expected = _plain(stage_params(settings, stage))
                if expected != _plain(smk.params.settings):
                    raise RuntimeError(
                        f"the configuration changed after the workflow was planned ({stage} of "
                        f"{wildcards['exp']}/{wildcards['zoo']}): rerun snakemake"
                    )
        yield settings
