"""Checks of a configuration at start, before any job runs (a dry run fails on them too).

Value types and bounds are checked when the config is parsed (:mod:`rpg.config`); here come the checks that look
outside the config: architecture names (built-in, entry point or timm), dataset folders, and the task bits of a
task-conditioned generator against the dataset's classes.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from rpg.adapters.spec import check_base
from rpg.config import ZooSettings
from rpg.data import commonsense, dataset_info
from rpg.data.imagefolder import check_root
from rpg.errors import RPGInputError
from rpg.tasks.plan import plan_task_zoo
from rpg.zoo.models import check_arch


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
            if s.data.name in ("imagefolder", "commonsense") and exp not in checked_data:
                checked_data.add(exp)
                try:
                    (check_root if s.data.name == "imagefolder" else commonsense.check_root)(s.data)
                except RPGInputError as exc:
                    problems.append(f"config key 'experiments.{exp}.data.root': {exc}")
                    continue
            if s.adapter is not None:
                problems += _adapter_problems(s, where)
            if s.tasks is not None:
                try:
                    plan_task_zoo(s.tasks, s.data)
                except (RPGInputError, ValueError) as exc:
                    problems.append(f"config key '{where}.tasks': {exc}")
            if s.tasks is not None and s.generator.task_condition is not None:
                classes = dataset_info(s.data)["num_classes"]
                if s.generator.task_bits != classes:
                    problems.append(
                        f"config key '{where}.generator.task_bits': {s.generator.task_bits}, but the dataset has "
                        f"{classes} classes"
                    )
    return problems


def _adapter_problems(s: ZooSettings, where: str) -> list[str]:
    missing = [m for m in ("transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        return [f"config key '{where}.adapter': adapter zoos need {' and '.join(missing)} (pip install '.[adapters]')"]
    try:
        check_base(s.adapter.base)
    except RPGInputError as exc:
        return [f"config key '{where}.adapter.base': {exc}"]
    return []
