"""Checks of a configuration at start, before any job runs (a dry run fails on them too).

Value types and bounds are checked when the config is parsed (:mod:`rpg.config`); here come the checks that look
outside the config: architecture names (built-in, entry point or timm), dataset folders and annotation files, the
evaluator against the kind of data, the folders of source zoos (not empty), and the task bits of a task-conditioned
generator against the dataset's classes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

from rpg.adapters.spec import check_base
from rpg.config import ZooSettings
from rpg.data import commonsense, dataset_info
from rpg.data.detection import check_detection_data
from rpg.data.imagefolder import check_root
from rpg.errors import RPGInputError
from rpg.tasks.plan import plan_task_zoo
from rpg.zoo.models import check_arch
from rpg.zoo.source import list_source_runs

# the data whose files are checked at start, by data.name
DATA_CHECKS = {"imagefolder": check_root, "coco": check_detection_data, "commonsense": commonsense.check_root}


def check_settings(resolved: Mapping[str, Mapping[str, ZooSettings]]) -> list[str]:
    """Problems of the resolved settings, each naming the config key (empty: all good)."""
    problems: list[str] = []
    checked_data: set[str] = set()
    for exp, zoos in resolved.items():
        for zoo, s in zoos.items():
            where = f"experiments.{exp}.zoos.{zoo}"
            try:
                check_arch(s.arch)
            except RPGInputError as exc:
                problems.append(f"config key '{where}.arch': {exc.problem}")
            if s.init != "random" and not s.is_source_zoo and not Path(s.init).expanduser().is_file():
                problems.append(f"config key '{where}.init': initial weights file {s.init} does not exist")
            if s.data.name in DATA_CHECKS and exp not in checked_data:
                checked_data.add(exp)
                try:
                    DATA_CHECKS[s.data.name](s.data)
                except RPGInputError as exc:
                    problems.append(f"config key 'experiments.{exp}.data.root': {exc}")
                    continue
            problems += _evaluator_problems(s, where)
            if s.adapter is not None:
                problems += _adapter_problems(s, where)
            if s.source is not None:
                try:
                    list_source_runs(s.source)
                except RPGInputError as exc:
                    problems.append(f"config key '{where}.source.path': {exc}")
            if s.tasks is not None:
                try:
                    plan_task_zoo(s.tasks, s.data)
                except (RPGInputError, ValueError) as exc:
                    problems.append(f"config key '{where}.tasks': {exc}")
            if s.is_continuous_task_zoo and s.tasks.continuous is not None and s.generator.task_condition is not None:
                from rpg.tasks.continuous import feature_dim

                dim = feature_dim(s.tasks.continuous)
                if s.generator.task_bits != dim:
                    problems.append(
                        f"config key '{where}.generator.task_bits': {s.generator.task_bits}, but the task vector of "
                        f"features '{s.tasks.continuous.features}' has {dim} values"
                    )
            elif s.tasks is not None and s.generator.task_condition is not None:
                classes = dataset_info(s.data)["num_classes"]
                if s.generator.task_bits != classes:
                    problems.append(
                        f"config key '{where}.generator.task_bits': {s.generator.task_bits}, but the dataset has "
                        f"{classes} classes"
                    )
    return problems


def _evaluator_problems(s: ZooSettings, where: str) -> list[str]:
    evaluator = s.evaluate.evaluator
    if s.data.is_detection and evaluator == "classification":
        return [f"config key '{where}.evaluate.evaluator': {s.data.name} is detection data; set evaluate.evaluator: "
                "detection (or a package.module:function of your own)"]  # fmt: skip
    if not s.data.is_detection and evaluator == "detection":
        return [f"config key '{where}.evaluate.evaluator': the detection evaluator needs detection data "
                f"(digits_detection or coco), the experiment has {s.data.name}"]  # fmt: skip
    if ":" in evaluator:
        from rpg.evaluate.evaluators import load_function  # only for a user's evaluator (imports the evaluation)

        try:
            load_function(evaluator)
        except RPGInputError as exc:
            return [f"config key '{where}.evaluate.evaluator': {exc.problem}"]
    return []


def _adapter_problems(s: ZooSettings, where: str) -> list[str]:
    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        return [f"config key '{where}.adapter': adapter zoos need {' and '.join(missing)} (pip install '.[adapters]')"]
    try:
        check_base(s.adapter.base)
    except RPGInputError as exc:
        return [f"config key '{where}.adapter.base': {exc}"]
    return []
