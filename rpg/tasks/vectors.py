"""Binary tasks over the classes of a dataset (paper section 4: unseen tasks).

A task is a bit vector over the ``n`` classes (10 for digits): bit ``c`` = 1 means class ``c`` is
positive. The all-zero and all-one vectors are no tasks, which leaves ``2**n - 2`` tasks (1022 for
10 classes). A task's id is the integer whose binary digits are its bits, bit ``c`` weighing ``2**c``
(so ids run from 1 to ``2**n - 2``).

:func:`split_tasks` draws a seeded held-out set (never trained on) and a seen set (all other tasks,
or a seeded sample of them); :func:`relabel` turns a dataset into the binary dataset of a task
(label 1 for positive classes, 0 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from rpg.config import DataConfig
from rpg.data import build_dataset, dataset_info
from rpg.errors import RPGInputError

SPLITS = ("seen", "held_out")


def num_tasks(num_classes: int) -> int:
    """Number of binary tasks over ``num_classes`` classes: ``2**num_classes - 2``."""
    if int(num_classes) < 2:
        raise ValueError(f"binary tasks need at least 2 classes, got {num_classes}")
    return 2 ** int(num_classes) - 2


def all_task_ids(num_classes: int = 10) -> list[int]:
    """Ids of every task over ``num_classes`` classes, ascending (1 .. 2**n - 2)."""
    return list(range(1, num_tasks(num_classes) + 1))


def task_vector(task_id: int, num_classes: int = 10) -> list[int]:
    """The bit vector of task ``task_id`` (bit c = (id >> c) & 1)."""
    task_id = int(task_id)
    if not 1 <= task_id <= num_tasks(num_classes):
        raise ValueError(f"task id {task_id} out of range 1..{num_tasks(num_classes)} for {num_classes} classes")
    return [(task_id >> c) & 1 for c in range(int(num_classes))]


def complement_id(task: int, num_classes: int = 10) -> int:
    """The id of the complementary task (every bit flipped): the same task with the two outputs swapped."""
    return (2 ** int(num_classes) - 1) ^ int(task)


def task_id(vector: Sequence[int]) -> int:
    """The id of a task bit vector; raises ValueError for non-binary, all-zero or all-one vectors."""
    bits = [int(b) for b in vector]
    if any(b not in (0, 1) or b != v for b, v in zip(bits, vector)):
        raise ValueError(f"a task vector holds only 0 and 1, got {list(vector)}")
    if all(b == 0 for b in bits) or all(b == 1 for b in bits):
        raise ValueError(f"all-zero and all-one vectors are not tasks: {bits}")
    return sum(b << c for c, b in enumerate(bits))


@dataclass(frozen=True)
class TaskSplit:
    """Seen (training) and held-out (never trained on) task ids, disjoint.

    Held-out ids are ascending; seen ids keep the order of the seeded permutation, so that a larger ``seen``
    count only appends tasks (and the workflow's collection groups of a smaller count stay valid).
    """

    num_classes: int
    seen: tuple[int, ...]
    held_out: tuple[int, ...]

    def __post_init__(self) -> None:
        overlap = sorted(set(self.seen) & set(self.held_out))
        if overlap:
            raise ValueError(f"tasks {overlap[:5]} are both seen and held out")

    def ids(self, split: str) -> tuple[int, ...]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.seen if split == "seen" else self.held_out

    def vectors(self, split: str) -> list[list[int]]:
        return [task_vector(t, self.num_classes) for t in self.ids(split)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "num_tasks": num_tasks(self.num_classes),
            "seen": list(self.seen),
            "held_out": list(self.held_out),
            "held_out_vectors": self.vectors("held_out"),
        }


def split_tasks(
    *,
    num_classes: int = 10,
    seen: int | str = "all",
    held_out: int = 20,
    seed: int = 0,
    held_out_tasks: Sequence[Sequence[int]] | None = None,
) -> TaskSplit:
    """A seeded split of all tasks into held-out and seen tasks, holding out complementary pairs.

    A task and its complement (every class's bit flipped) are the same task with the outputs swapped, so a held-out
    task whose complement was seen would not be unseen. Held-out tasks therefore come in pairs: one permutation of all
    task ids (``numpy.random.default_rng(seed)``) is walked and each id not yet held out is held out together with its
    complement until ``held_out`` tasks are (``held_out`` is rounded up to even); ``held_out_tasks`` lists held-out
    vectors instead (their complements are held out too). Seen tasks are the next ``seen`` ids of the permutation that
    are not held out (``"all"``: every other task), so a larger ``seen`` starts with the tasks of a smaller one, and
    changing ``seen`` never changes the held-out set.
    """
    ids = all_task_ids(num_classes)
    perm = [ids[i] for i in np.random.default_rng(int(seed)).permutation(len(ids))]
    if held_out_tasks is not None:
        try:
            fixed = [task_id(v) for v in held_out_tasks]
        except ValueError as exc:
            raise RPGInputError(str(exc), "config tasks.held_out_tasks") from exc
        if any(len(v) != num_classes for v in held_out_tasks):
            raise RPGInputError(f"held-out task vectors need {num_classes} bits", "config tasks.held_out_tasks")
        if len(set(fixed)) != len(fixed):
            raise RPGInputError("held-out tasks repeat", "config tasks.held_out_tasks")
        chosen = set(fixed) | {complement_id(t, num_classes) for t in fixed}
    else:
        if not 0 <= int(held_out) < len(ids) - 1:
            raise RPGInputError(f"tasks.held_out must be in 0..{len(ids) - 2}, got {held_out}", "config tasks")
        chosen = set()
        for t in perm:
            if len(chosen) >= int(held_out):
                break
            if t not in chosen:
                chosen |= {t, complement_id(t, num_classes)}
    rest = [t for t in perm if t not in chosen]
    if seen == "all":
        seen_ids = rest
    else:
        if isinstance(seen, str) or not 1 <= int(seen) <= len(rest):
            raise RPGInputError(f"tasks.seen must be 'all' or in 1..{len(rest)}, got {seen!r}", "config tasks")
        seen_ids = rest[: int(seen)]
    return TaskSplit(num_classes=int(num_classes), seen=tuple(seen_ids), held_out=tuple(sorted(chosen)))


class BinaryTaskDataset(Dataset):
    """A view of a classification dataset with labels mapped through a task (1 = positive class)."""

    def __init__(self, *, base: Dataset, task: Sequence[int]) -> None:
        self.base = base
        self.task = [int(b) for b in task]

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        x, y = self.base[index]
        return x, self.task[int(y)]


def relabel(dataset: Dataset, task: Sequence[int]) -> Dataset:
    """The binary dataset of ``task`` over ``dataset``: label ``task[y]``.

    In-memory ``TensorDataset`` s stay ``TensorDataset`` s (fast batched loading); other datasets are
    wrapped in :class:`BinaryTaskDataset`.
    """
    task_id(task)  # checks the vector
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        x, y = dataset.tensors
        if int(y.max()) >= len(task) or int(y.min()) < 0:
            raise ValueError(f"labels {int(y.min())}..{int(y.max())} do not fit a {len(task)}-bit task")
        lut = torch.tensor([int(b) for b in task], dtype=torch.long)
        return TensorDataset(x, lut[y.long()])
    return BinaryTaskDataset(base=dataset, task=task)


def build_task_dataset(data_cfg: Mapping[str, Any] | DataConfig, split: str, task: Sequence[int]) -> Dataset:
    """The ``split`` ("train"/"val") of the dataset of ``data_cfg``, relabelled for ``task``."""
    n = dataset_info(data_cfg)["num_classes"]
    if len(task) != n:
        raise RPGInputError(f"a task over this dataset needs {n} bits, got {len(task)}", "config tasks")
    return relabel(build_dataset(data_cfg, split), task)


__all__ = [
    "SPLITS",
    "BinaryTaskDataset",
    "TaskSplit",
    "all_task_ids",
    "build_task_dataset",
    "complement_id",
    "num_tasks",
    "relabel",
    "split_tasks",
    "task_id",
    "task_vector",
]
