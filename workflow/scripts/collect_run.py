"""Snakemake adapter: train one run of a zoo and save its checkpoints (rpg.zoo.collect)."""

from pathlib import Path

from rpg.runtime import stage_logging
from rpg.zoo.collect import collect_run

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    collect_run(
        zoo_cfg=sm.params.zoo,
        data_cfg=sm.params.data,
        run=int(sm.wildcards.run),
        out_paths=[Path(p) for p in sm.output.checkpoints],
        table_path=Path(sm.output.table),
        device=sm.params.device,
    )
