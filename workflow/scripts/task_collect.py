"""Snakemake adapter: train the classifiers of one group of tasks and save their checkpoints (rpg.zoo.tasks)."""

from rpg.runtime import stage_logging
from rpg.zoo.tasks import collect_task_group

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    collect_task_group(
        zoo_cfg=sm.params.zoo,
        data_cfg=sm.params.data,
        backbone_path=sm.input.backbone,
        split=sm.wildcards.split,
        group=sm.wildcards.group,
        task_ids=sm.params.task_ids,
        out_paths=list(sm.output.checkpoints),
        table_path=sm.output.table,
        device=sm.params.device,
    )
