"""What each rule's ``params`` carry: the settings that change the rule's result, and nothing else.

Snakemake reruns a job whose params changed, so params hold only result-relevant values (``result_dict``): threads,
devices, log intervals and counts of sibling jobs (how many runs, how many generated models) stay out, and a job
that makes one run or one model does not see settings of the others. Stage code receives the full typed settings
of its (experiment, zoo) and :func:`rpg.stages.job.snakemake_job` checks that they give back the same params.
"""

from __future__ import annotations

from typing import Any

from rpg.config import ZooSettings, result_dict

STAGES = (
    "collect_run", "import_run", "task_backbone", "tokenize", "train_generator", "generate", "evaluate", "train_pdiff",
    "generate_pdiff", "collect_task_group", "generate_tasks", "evaluate_tasks",
)  # fmt: skip


def _zoo(s: ZooSettings) -> dict[str, Any]:
    return {"arch": s.arch, "arch_kwargs": s.arch_kwargs, "init": s.init}


def stage_params(settings: ZooSettings, stage: str) -> dict[str, Any]:
    """The result-relevant settings of ``stage`` for one (experiment, zoo), as plain data."""
    s = settings
    if stage in ("collect_run", "task_backbone"):
        return {**_zoo(s), "collect": result_dict(s.collect), "data": result_dict(s.data)}
    if stage == "import_run":
        return {"arch": s.arch, "arch_kwargs": s.arch_kwargs,
                "source": None if s.source is None else result_dict(s.source)}  # fmt: skip
    if stage == "tokenize":
        return {"tokens": result_dict(s.tokens)}
    if stage == "train_generator":
        return {"generator": result_dict(s.generator), "train": result_dict(s.train)}
    if stage in ("generate", "generate_tasks"):
        return {"generate": result_dict(s.generate)}
    if stage == "evaluate":
        return {"evaluate": result_dict(s.evaluate), "data": result_dict(s.data)}
    if stage == "train_pdiff":
        return {"pdiff": result_dict(s.pdiff)}
    if stage == "generate_pdiff":
        return {"pdiff": result_dict(s.pdiff), "generate": result_dict(s.generate)}
    if stage == "collect_task_group":
        assert s.tasks is not None
        return {**_zoo(s), "tasks": s.tasks.collection(), "data": result_dict(s.data)}
    if stage == "evaluate_tasks":
        assert s.tasks is not None
        return {"tasks": result_dict(s.tasks), "data": result_dict(s.data)}
    raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
