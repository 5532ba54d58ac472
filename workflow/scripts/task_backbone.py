"""Snakemake adapter: train the shared backbone of a task zoo on the full problem (rpg.zoo.tasks)."""

from pathlib import Path

from rpg.runtime import stage_logging
from rpg.zoo.tasks import train_backbone

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    train_backbone(
        zoo_cfg=sm.params.zoo,
        data_cfg=sm.params.data,
        out_path=Path(sm.output.backbone),
        table_path=Path(sm.output.table),
        device=sm.params.device,
    )
