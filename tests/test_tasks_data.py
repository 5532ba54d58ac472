"""Binary tasks over the classes of a dataset (rpg.tasks.vectors)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from rpg.errors import RPGInputError
from rpg.tasks.vectors import (
    BinaryTaskDataset,
    all_task_ids,
    build_task_dataset,
    complement_id,
    num_tasks,
    relabel,
    split_tasks,
    task_id,
    task_vector,
)

DIGITS = {"name": "digits", "image_size": 8, "val_fraction": 0.25, "split_seed": 0}


def test_there_are_1022_tasks_without_all_zero_and_all_one():
    ids = all_task_ids(10)
    assert num_tasks(10) == len(ids) == 1022
    vectors = {tuple(task_vector(t)) for t in ids}
    assert len(vectors) == 1022
    assert (0,) * 10 not in vectors and (1,) * 10 not in vectors
    assert all(len(v) == 10 and set(v) <= {0, 1} for v in vectors)


def test_id_and_vector_round_trip_with_bit_c_for_class_c():
    assert task_vector(1) == [1] + [0] * 9  # only class 0 positive
    assert task_vector(2**9) == [0] * 9 + [1]  # only class 9 positive
    for t in (1, 5, 511, 1022):
        assert task_id(task_vector(t)) == t
    with pytest.raises(ValueError):
        task_vector(0)
    with pytest.raises(ValueError):
        task_vector(1023)
    for bad in ([0] * 10, [1] * 10, [0, 2] + [0] * 8, [0.5] + [1] * 9):
        with pytest.raises(ValueError):
            task_id(bad)


def test_split_is_seeded_disjoint_and_nested():
    a = split_tasks(seen=80, held_out=20, seed=0)
    b = split_tasks(seen=80, held_out=20, seed=0)
    c = split_tasks(seen=80, held_out=20, seed=1)
    assert a == b and a != c
    assert len(a.seen) == 80 and len(a.held_out) == 20
    assert not set(a.seen) & set(a.held_out)
    assert list(a.held_out) == sorted(a.held_out) and len(set(a.seen)) == 80
    full = split_tasks(seen="all", held_out=20, seed=0)
    assert len(full.seen) == 1002 and full.held_out == a.held_out  # held-out set independent of `seen`
    assert full.seen[:80] == a.seen  # a larger seen set starts with the smaller one (collection groups stay valid)
    assert split_tasks(seen=200, held_out=20, seed=0).seen[:80] == a.seen
    assert a.vectors("held_out") == [task_vector(t) for t in a.held_out]
    assert a.to_dict()["num_tasks"] == 1022
    # held out in complementary pairs: no held-out task's complement (its outputs swapped) is ever seen
    assert {complement_id(t) for t in a.held_out} == set(a.held_out)
    assert not {complement_id(t) for t in full.held_out} & set(full.seen)
    assert len(split_tasks(seen=10, held_out=5, seed=0).held_out) == 6  # rounded up to pairs


def test_split_with_explicit_held_out_tasks_and_errors():
    held = [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0, 0, 0, 0, 1]]
    s = split_tasks(seen="all", held_out=5, seed=3, held_out_tasks=held)
    listed = {task_id(v) for v in held}
    assert set(s.held_out) == listed | {complement_id(t) for t in listed}  # with their complements
    assert len(s.seen) == 1018 and not set(s.seen) & set(s.held_out)
    with pytest.raises(RPGInputError, match="held_out_tasks"):
        split_tasks(held_out_tasks=[[1] * 10])
    with pytest.raises(RPGInputError, match="repeat"):
        split_tasks(held_out_tasks=[held[0], held[0]])
    with pytest.raises(RPGInputError, match="tasks.seen"):
        split_tasks(seen=1003, held_out=20)
    with pytest.raises(ValueError, match="both seen and held out"):
        type(s)(num_classes=10, seen=(1, 2), held_out=(2,))


def test_relabel_tensor_dataset_and_generic_dataset():
    x = torch.arange(20, dtype=torch.float32).reshape(10, 1, 1, 2)
    y = torch.arange(10)
    task = [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    rel = relabel(TensorDataset(x, y), task)
    assert isinstance(rel, TensorDataset)
    assert rel.tensors[1].tolist() == task and torch.equal(rel.tensors[0], x)

    class Plain(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return x[i], int(y[i])

    wrapped = relabel(Plain(), task)
    assert isinstance(wrapped, BinaryTaskDataset)
    assert [wrapped[i][1] for i in range(10)] == task
    with pytest.raises(ValueError):
        relabel(TensorDataset(x, y), [1, 0, 1])  # 3 bits for 10 classes


def test_build_task_dataset_on_digits():
    task = task_vector(0b0000000011)  # digits 0 and 1 positive
    val = build_task_dataset(DIGITS, "val", task)
    assert len(val) == 450
    frac = float(val.tensors[1].float().mean())
    assert 0.15 < frac < 0.25  # about 2 of 10 classes
    with pytest.raises(RPGInputError, match="10 bits"):
        build_task_dataset(DIGITS, "val", [1, 0])
