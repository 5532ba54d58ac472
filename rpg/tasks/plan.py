"""The plan of a task zoo: its split into seen and held-out tasks, collection groups, evaluated tasks, file names.

Tasks are collected in groups (``group_size`` tasks per job), so a cluster fans out while a laptop runs a few dozen
jobs rather than a thousand. :class:`TaskZooPlan` fixes the split, the groups and the file names that the workflow,
the collection and the evaluation share; it is cheap to build (no data is read).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rpg.config import ContinuousTasksConfig, DataConfig, TasksConfig
from rpg.data import dataset_info
from rpg.errors import RPGInputError
from rpg.tasks.vectors import TaskSplit, split_tasks, task_vector


def task_seed(seed: int, task_id: int) -> int:
    """The seed of task ``task_id``'s head init and data order (the same whether seen or held out)."""
    return int(seed) * 10_007 + int(task_id)


# ---------------------------------------------------------------------------------------------------------
# plan: split, groups, evaluated tasks, file names


@dataclass(frozen=True)
class TaskGroup:
    """Tasks collected by one job. ``name`` carries the number of tasks, which fixes the job's outputs."""

    split: str
    index: int
    task_ids: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"group{self.index:03d}-{len(self.task_ids)}tasks"

    def checkpoint_names(self, checkpoints_per_task: int) -> list[str]:
        """File names (relative to the zoo folder), task-major: member j of the group, checkpoint i."""
        return [
            member_checkpoint(self.split, self.name, j, i)
            for j in range(len(self.task_ids))
            for i in range(checkpoints_per_task)
        ]


def member_checkpoint(split: str, group: str, member: int, ckpt: int) -> str:
    """``<split>/<group>/member<jj>_ckpt<ii>.safetensors``: checkpoint ``ckpt`` of the group's ``member``-th task."""
    return f"{split}/{group}/member{member:02d}_ckpt{ckpt:02d}.safetensors"


def generated_name(split: str, k: int, m: int) -> str:
    """Generated model ``m`` for the ``k``-th evaluated task of ``split`` (relative to generated/<zoo>/)."""
    return f"{split}/task{k:02d}_model{m:02d}.safetensors"


class GroupedTasks:
    """What a plan's task groups answer, binary task ids and continuous task values alike (``groups`` and
    ``checkpoints_per_task`` are the plan's fields)."""

    groups: dict[str, list[TaskGroup]]
    checkpoints_per_task: int

    def group(self, split: str, name: str) -> TaskGroup:
        for g in self.groups[split]:
            if g.name == name:
                return g
        raise KeyError(f"no task group {split}/{name}")

    def checkpoint_names(self, split: str) -> list[str]:
        return [n for g in self.groups[split] for n in g.checkpoint_names(self.checkpoints_per_task)]

    def _member_checkpoints(self, split: str, task) -> list[str] | None:
        """Checkpoint names of the task with id (or value) ``task`` in ``split``, or None if no group holds it."""
        for g in self.groups[split]:
            if task in g.task_ids:
                j = g.task_ids.index(task)
                return [member_checkpoint(split, g.name, j, i) for i in range(self.checkpoints_per_task)]
        return None


@dataclass(frozen=True)
class TaskZooPlan(GroupedTasks):
    """Everything the workflow needs to know about a task zoo before running anything."""

    split: TaskSplit
    groups: dict[str, list[TaskGroup]]
    eval_tasks: dict[str, tuple[int, ...]]  # held_out: every held-out task; seen: a seeded sample
    checkpoints_per_task: int

    def task_checkpoints(self, split: str, tid: int) -> list[str]:
        """Checkpoint names of task ``tid`` (all its checkpoints)."""
        names = self._member_checkpoints(split, tid)
        if names is None:
            raise KeyError(f"task {tid} is not a {split} task")
        return names

    def manifest(self, *, zoo_dir: str, generated_dir: str, models_per_task: int) -> list[dict[str, Any]]:
        """A row per evaluated task: split, task_id, task vector, reference checkpoints, generated models."""
        rows = []
        for split in ("held_out", "seen"):
            for k, tid in enumerate(self.eval_tasks[split]):
                rows.append(
                    {
                        "split": split,
                        "task_id": int(tid),
                        "task": task_vector(tid, self.split.num_classes),
                        "reference": [f"{zoo_dir}/{n}" for n in self.task_checkpoints(split, tid)],
                        "generated": [f"{generated_dir}/{generated_name(split, k, m)}" for m in range(models_per_task)],
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.split.to_dict(),
            "checkpoints_per_task": self.checkpoints_per_task,
            "groups": {s: {g.name: list(g.task_ids) for g in gs} for s, gs in self.groups.items()},
            "eval_tasks": {s: list(v) for s, v in self.eval_tasks.items()},
        }


def make_groups(task_ids: Sequence[int], group_size: int, split: str) -> list[TaskGroup]:
    """Consecutive groups of ``group_size`` tasks (the last one may be smaller)."""
    ids = list(task_ids)
    return [
        TaskGroup(split=split, index=g, task_ids=tuple(ids[s : s + group_size]))
        for g, s in enumerate(range(0, len(ids), group_size))
    ]


def plan_task_zoo(tasks_cfg: Mapping[str, Any] | TasksConfig, data_cfg: Mapping[str, Any] | DataConfig) -> TaskZooPlan:
    """The split, collection groups and evaluated tasks of a task zoo (cheap: no data is read).

    A continuous family (``tasks.family`` other than binary) gets a :class:`ContinuousPlan`,
    which has the same interface for the workflow.
    """
    cfg = TasksConfig.parse(tasks_cfg, "tasks")
    if cfg.is_continuous:
        return plan_continuous(cfg)  # type: ignore[return-value]
    num_classes = dataset_info(data_cfg)["num_classes"]
    split = split_tasks(
        num_classes=num_classes,
        seen=cfg.seen,
        held_out=cfg.held_out,
        seed=cfg.seed,
        held_out_tasks=cfg.held_out_tasks,
    )
    n_eval = min(int(cfg.evaluate.seen_tasks), len(split.seen))
    rng = np.random.default_rng([int(cfg.seed), int(cfg.evaluate.seed), 1])
    seen_eval = tuple(sorted(split.seen[i] for i in rng.permutation(len(split.seen))[:n_eval]))
    return TaskZooPlan(
        split=split,
        groups={s: make_groups(split.ids(s), cfg.group_size, s) for s in ("seen", "held_out")},
        eval_tasks={"held_out": split.held_out, "seen": seen_eval},
        checkpoints_per_task=cfg.checkpoints_per_task,
    )


# --- continuous task families (rpg.tasks.continuous): task values instead of class subsets --------------


def task_features(value: float, cfg: ContinuousTasksConfig) -> list[float]:
    """The task vector of value ``value`` (see the module docstring); rounded to 6 digits (a stable JSON key)."""
    v = float(value)
    out = [v / cfg.scale]
    if cfg.features == "fourier":
        r = math.radians(v)
        out += [math.sin(r), math.cos(r), math.sin(2 * r), math.cos(2 * r)]
    return [round(x, 6) for x in out]


def feature_dim(cfg: ContinuousTasksConfig) -> int:
    return len(task_features(0.0, cfg))


def value_seed(seed: int, value: float) -> int:
    """The seed of task value ``value``'s data order (the same whether seen or held out)."""
    return int(seed) * 10_007 + int(round(float(value) * 1000)) % 1_000_003


def value_label(v: float) -> str:
    """A task value as text (a JSON key, a log line): 15.0 -> "15"."""
    return f"{float(v):g}"


@dataclass(frozen=True)
class ContinuousPlan(GroupedTasks):
    """The plan of a continuous task zoo: seen / held-out task values, collection groups, evaluated values.

    Interface of :class:`rpg.tasks.plan.TaskZooPlan` as the workflow uses it; groups hold task values.
    """

    cfg: ContinuousTasksConfig
    family: str
    groups: dict[str, list[TaskGroup]]
    eval_tasks: dict[str, tuple[float, ...]]
    checkpoints_per_task: int

    @property
    def seen(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.cfg.seen)

    @property
    def held_out(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.cfg.held_out)

    def task_checkpoints(self, split: str, value: float) -> list[str]:
        names = self._member_checkpoints(split, float(value))
        if names is None:
            raise KeyError(f"task value {value} is not a {split} value")
        return names

    def inside(self, value: float) -> bool:
        """Whether ``value`` lies inside the seen range (interpolation) rather than beyond it."""
        return min(self.seen) <= float(value) <= max(self.seen)

    def manifest(self, *, zoo_dir: str, generated_dir: str, models_per_task: int) -> list[dict[str, Any]]:
        """A row per evaluated value: split, task_value, task vector, reference checkpoints, generated models."""
        rows = []
        for split in ("held_out", "seen"):
            for k, v in enumerate(self.eval_tasks[split]):
                rows.append(
                    {
                        "split": split,
                        "task_value": float(v),
                        "task": task_features(v, self.cfg),
                        "inside": self.inside(v),
                        "reference": [f"{zoo_dir}/{n}" for n in self.task_checkpoints(split, v)],
                        "generated": [f"{generated_dir}/{generated_name(split, k, m)}" for m in range(models_per_task)],
                    }
                )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "seen": list(self.seen),
            "held_out": list(self.held_out),
            "task_vectors": {value_label(v): task_features(v, self.cfg) for v in self.seen + self.held_out},
            "checkpoints_per_task": self.checkpoints_per_task,
            "groups": {s: {g.name: list(g.task_ids) for g in gs} for s, gs in self.groups.items()},
            "eval_tasks": {s: list(v) for s, v in self.eval_tasks.items()},
        }


def plan_continuous(cfg: TasksConfig) -> ContinuousPlan:
    """The plan of a continuous task zoo (cheap: no data is read). Evaluated: every held-out value and
    ``evaluate.seen_tasks`` seen values spread over the seen range."""
    if cfg.continuous is None:
        raise RPGInputError(f"family {cfg.family!r} needs tasks.continuous (seen, held_out)", "config tasks")
    c = cfg.continuous
    seen = tuple(float(v) for v in c.seen)
    n_eval = min(int(cfg.evaluate.seen_tasks), len(seen))
    picks = sorted({int(round(i)) for i in np.linspace(0, len(seen) - 1, n_eval)}) if n_eval else []
    return ContinuousPlan(
        cfg=c,
        family=cfg.family,
        groups={
            "seen": make_groups(seen, cfg.group_size, "seen"),
            "held_out": make_groups([float(v) for v in c.held_out], cfg.group_size, "held_out"),
        },
        eval_tasks={"held_out": tuple(float(v) for v in c.held_out), "seen": tuple(seen[i] for i in picks)},
        checkpoints_per_task=cfg.checkpoints_per_task,
    )
