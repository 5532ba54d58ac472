"""What each rule's ``params`` carry: the settings that change the rule's result, and nothing else.

Snakemake reruns a job whose params changed, so params hold only result-relevant values (``result_dict``): threads,
devices, log intervals and counts of sibling jobs (how many runs, how many generated models) stay out, and a job
that makes one run or one model does not see settings of the others. Stage code receives the full typed settings
of its (experiment, zoo) and :func:`rpg.stages.job.snakemake_job` checks that they give back the same params.

Params are canonical (:func:`rpg.config.canonical`): equal settings give an equal ``repr`` however the config is
written (key order, ``2`` or ``2.0`` for a float option), so reformatting the config reruns nothing. The params of
every rule of the test and default configs are pinned in ``tests/golden/params.json``: a change to them reruns
finished work of users who upgrade, and updating that file is a deliberate act (tests/test_params.py says how).
"""

from __future__ import annotations

from typing import Any

from rpg.config import ZooSettings, canonical, result_dict

STAGES = (
    "collect_run", "import_run", "task_backbone", "tokenize", "train_generator", "generate", "evaluate", "train_pdiff",
    "generate_pdiff", "collect_task_group", "generate_tasks", "evaluate_tasks", "export_peft", "prompted",
)  # fmt: skip


TEXT_DATA_KEYS = ("task", "tasks", "text_sizes", "max_items")  # read by text and commonsense data only
TEXT_DATA_RESULT = ("name", "root", "split_seed", *TEXT_DATA_KEYS)  # all that text and commonsense data read
DETECTION_DATA_KEYS = ("annotations", "images", "hflip", "synthetic")  # read by detection data only


def _data(s: ZooSettings) -> dict[str, Any]:
    """The data block's result settings, only those the kind of data reads (image classification: neither the text
    nor the detection keys, so adding those changed no existing zoo's params; text data: not the image keys)."""
    out = result_dict(s.data)
    if s.data.name in ("text", "commonsense"):
        return {k: v for k, v in out.items() if k in TEXT_DATA_RESULT}
    skip = TEXT_DATA_KEYS if s.data.is_detection else TEXT_DATA_KEYS + DETECTION_DATA_KEYS
    return {k: v for k, v in out.items() if k not in skip}


def _zoo(s: ZooSettings) -> dict[str, Any]:
    out = {"arch": s.arch, "arch_kwargs": canonical(s.arch_kwargs), "init": s.init}
    if s.adapter is not None:
        out["adapter"] = result_dict(s.adapter)
    return out


def stage_params(settings: ZooSettings, stage: str) -> dict[str, Any]:
    """The result-relevant settings of ``stage`` for one (experiment, zoo), as plain data."""
    s = settings
    if stage in ("collect_run", "task_backbone"):
        return {**_zoo(s), "collect": result_dict(s.collect), "data": _data(s)}
    if stage == "import_run":
        return {"arch": s.arch, "arch_kwargs": canonical(s.arch_kwargs),
                "source": None if s.source is None else result_dict(s.source)}  # fmt: skip
    if stage == "tokenize":
        return {"tokens": result_dict(s.tokens)}
    if stage == "train_generator":
        out = {"generator": result_dict(s.generator), "train": result_dict(s.train)}
        if s.train.validate_every is not None:  # validation scores sampled models: the data and the evaluator count
            out.update(data=_data(s), evaluator=s.evaluate.evaluator)
        return out
    if stage in ("generate", "generate_tasks"):
        return {"generate": result_dict(s.generate)}
    if stage == "evaluate":
        return {"evaluate": result_dict(s.evaluate), "data": _data(s)}
    if stage == "train_pdiff":
        return {"pdiff": result_dict(s.pdiff)}
    if stage == "generate_pdiff":
        return {"pdiff": result_dict(s.pdiff), "generate": result_dict(s.generate)}
    if stage == "collect_task_group":
        assert s.tasks is not None
        return {**_zoo(s), "tasks": s.tasks.collection(), "data": _data(s)}
    if stage == "evaluate_tasks":
        assert s.tasks is not None
        tasks = {k: v for k, v in result_dict(s.tasks).items() if k != "prompt"}  # the prompt block: prompted only
        return {"tasks": tasks, "data": _data(s)}
    if stage == "export_peft":
        return {}
    if stage == "prompted":  # the task zoo's recipe (reference), its generation, the prompt rule
        out = {**_zoo(s), "generate": result_dict(s.generate), "data": _data(s)}
        if s.tasks is not None:
            out.update(tasks=s.tasks.collection(), prompt=result_dict(s.tasks.prompt))
        return out
    raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")


def zoo_stages(settings: ZooSettings) -> list[str]:
    """The stages (rule families of :data:`STAGES`) whose jobs the workflow runs for one (experiment, zoo); the
    prompted stage for a task zoo (the one an experiment's prompts use)."""
    s = settings
    if s.is_continuous_task_zoo:  # no prompts: a prompt names a class subset (a binary task)
        return ["task_backbone", "collect_task_group", "tokenize", "train_generator", "generate_tasks",
                "evaluate_tasks"]  # fmt: skip
    if s.is_task_zoo:
        return ["task_backbone", "collect_task_group", "tokenize", "train_generator", "generate_tasks",
                "evaluate_tasks", "prompted"]  # fmt: skip
    out = ["import_run" if s.is_source_zoo else "collect_run", "tokenize", "train_generator", "generate", "evaluate"]
    if s.pdiff.enabled:
        out += ["train_pdiff", "generate_pdiff"]
    if s.is_adapter_zoo:
        out.append("export_peft")
    return out
