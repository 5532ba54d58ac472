"""Snakemake adapter: train the classifiers of one group of tasks and save their checkpoints (rpg.stages.tasks)."""

from rpg.stages import tasks
from rpg.stages.job import snakemake_job
from rpg.tasks.plan import plan_task_zoo

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "collect_task_group") as settings:
    plan = plan_task_zoo(settings.tasks, settings.data)
    if list(plan.group(sm.wildcards.split, sm.wildcards.group).task_ids) != list(sm.params.task_ids):
        raise RuntimeError("the task plan changed after the workflow was planned: rerun snakemake")
    tasks.collect_group(settings, plan=plan, backbone_path=sm.input.backbone, split=sm.wildcards.split,
                        group=sm.wildcards.group, out_dir=sm.output[0])  # fmt: skip
