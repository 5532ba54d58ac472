"""Commonsense multiple-choice tasks read from local JSON files: the data of causal-LM adapter zoos.

Files: ``<root>/<task>/<split>.json`` (a list of records) or ``.jsonl`` (a record per line), split ``train``,
``val`` (also ``validation`` or ``dev``) and ``test``. Without a validation file, a seeded 10% of the training
records make it. A training mixture of all tasks (the DoRA paper's ``commonsense_170k.json``) may sit at
``<root>/train.json``: it is then the training split (and its seeded 10% the validation split) of all tasks.

Every record becomes a :class:`ChoiceItem`: for each answer option a (context, continuation) pair, scored by the
log-likelihood of the continuation given the context, and the index of the right option.

Record formats are recognised by their keys, so the usual files work as they are:

- BoolQ: ``question``, ``passage``, ``answer`` (true/false) or ``label``.
- PIQA: ``goal``, ``sol1``, ``sol2``, ``label``.
- SIQA: ``context``, ``question``, ``answerA``..``answerC``, ``label`` (1-based).
- HellaSwag: ``ctx`` (or ``ctx_a`` + ``ctx_b``), ``endings``, ``label``.
- WinoGrande: ``sentence`` (with ``_``), ``option1``, ``option2``, ``answer`` (1-based); the option fills the blank
  in the context and the rest of the sentence is the continuation (partial scoring).
- ARC-e/c, OBQA: ``question`` (a text or ``{stem, choices}``) or ``question_stem``, ``choices`` (a list of
  ``{text, label}`` or ``{text: [...], label: [...]}``), ``answerKey``.
- The LLM-Adapters format of the DoRA paper's commonsense files: ``instruction`` (ending in
  ``Answer format: a/b/...``), ``answer``; the continuation is the option after "the correct answer is".
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from rpg.config import DataConfig
from rpg.errors import RPGInputError

SPLIT_FILES = {"train": ("train",), "val": ("val", "validation", "dev"), "test": ("test",)}
VAL_FRACTION = 0.1
ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\nthe correct answer is"
)


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question: ``options[i] = (context, continuation)``; ``label`` the right option."""

    task: str
    options: tuple[tuple[str, str], ...]
    label: int


class ChoiceDataset(Dataset):
    """Items are :class:`ChoiceItem`; ``targets`` the right options, ``tasks`` the task of each item."""

    def __init__(self, items: Sequence[ChoiceItem]) -> None:
        self.items = list(items)
        self.targets = [it.label for it in self.items]
        self.tasks = [it.task for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ChoiceItem:
        return self.items[index]


def _same(context: str, choices: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((context, " " + str(c).strip()) for c in choices)


def _letter_index(key: Any, labels: Sequence[str]) -> int:
    key = str(key).strip()
    if key in labels:
        return list(labels).index(key)
    if key.isdigit() and str(int(key)) in labels:
        return list(labels).index(str(int(key)))
    raise ValueError(f"answer {key!r} is none of the options {list(labels)}")


def _choices(raw: Any) -> tuple[list[str], list[str]]:
    if isinstance(raw, Mapping):
        return [str(t) for t in raw["text"]], [str(x) for x in raw["label"]]
    return [str(c["text"]) for c in raw], [str(c["label"]) for c in raw]


def parse_record(record: Mapping[str, Any], task: str) -> ChoiceItem:
    """One record in any of the formats of the module docstring; ValueError when it fits none."""
    r = record
    if "instruction" in r and "answer" in r:
        instruction = str(r["instruction"]) + (f"\n{r['input']}" if r.get("input") else "")
        fmt = instruction.rsplit("Answer format:", 1)
        if len(fmt) != 2:
            raise ValueError("an instruction record needs 'Answer format: a/b/...' at its end")
        choices = [c.strip().rstrip(".") for c in fmt[1].split("/") if c.strip()]
        return ChoiceItem(task, _same(ALPACA.format(instruction=instruction), choices),
                          choices.index(str(r["answer"]).strip()))  # fmt: skip
    if "passage" in r and "question" in r:  # BoolQ
        answer = r["answer"] if "answer" in r else r["label"]
        yes = answer if isinstance(answer, bool) else str(answer).lower() in ("1", "true", "yes")
        q = str(r["question"]).rstrip("?")
        return ChoiceItem(task, _same(f"{r['passage']}\nQuestion: {q}?\nAnswer:", ["no", "yes"]), int(yes))
    if "goal" in r and "sol1" in r:  # PIQA
        return ChoiceItem(task, _same(f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]]), int(r["label"]))
    if "answerA" in r:  # SIQA
        keys = [k for k in ("answerA", "answerB", "answerC") if k in r]
        context = f"Question: {r['context']} {r['question']}\nAnswer:"
        return ChoiceItem(task, _same(context, [r[k] for k in keys]), int(r["label"]) - 1)
    if "endings" in r:  # HellaSwag
        ctx = r["ctx"] if "ctx" in r else f"{r['ctx_a']} {str(r.get('ctx_b', '')).capitalize()}".strip()
        prefix = f"{r['activity_label']}: " if r.get("activity_label") else ""
        return ChoiceItem(task, _same(prefix + str(ctx), r["endings"]), int(r["label"]))
    if "sentence" in r and "option1" in r:  # WinoGrande
        sentence = str(r["sentence"])
        i = sentence.index("_")
        rest = " " + sentence[i + 1 :].strip()
        options = tuple((sentence[:i] + str(r[k]), rest) for k in ("option1", "option2"))
        return ChoiceItem(task, options, int(r["answer"]) - 1)
    if "answerKey" in r:  # ARC, OBQA
        q = r.get("question_stem", r.get("question"))
        raw = r.get("choices")
        if isinstance(q, Mapping):
            q, raw = q["stem"], q["choices"]
        texts, labels = _choices(raw)
        return ChoiceItem(task, _same(f"Question: {q}\nAnswer:", texts), _letter_index(r["answerKey"], labels))
    raise ValueError(f"a record of no known format (keys {sorted(r)})")


def _read_records(path: Path) -> list[Mapping[str, Any]]:
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RPGInputError(f"invalid JSON ({exc})", path) from exc
    if isinstance(data, Mapping):  # {"data": [...]} and similar wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise RPGInputError("expected a list of records (or one record per line in .jsonl)", path)
    return data


def split_file(root: str | Path, task: str, split: str) -> Path | None:
    """The file of ``task``'s ``split`` under ``root`` (None when there is none)."""
    for stem in SPLIT_FILES[split]:
        for suffix in (".json", ".jsonl"):
            path = Path(root) / task / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def mixture_file(root: str | Path) -> Path | None:
    """``<root>/train.json(l)``, a training mixture of all tasks, when there is one."""
    for suffix in (".json", ".jsonl"):
        if (Path(root) / f"train{suffix}").is_file():
            return Path(root) / f"train{suffix}"
    return None


def check_root(cfg: DataConfig) -> None:
    """RPGInputError unless every task has a training file under ``root`` (or there is a training mixture)."""
    if not Path(str(cfg.root)).is_dir():
        raise RPGInputError("the commonsense data folder does not exist", cfg.root)
    if mixture_file(str(cfg.root)) is not None:
        return
    for task in cfg.tasks:
        if split_file(str(cfg.root), task, "train") is None:
            raise RPGInputError(f"no {task}/train.json or {task}/train.jsonl (nor a train.json mixture)", cfg.root)


def _task_items(cfg: DataConfig, task: str, split: str) -> list[ChoiceItem]:
    root = Path(str(cfg.root))
    records: list[tuple[Path, int, Mapping[str, Any]]]
    if split in ("train", "val") and (task == "mixture" or split_file(root, task, "val") is None):
        train = split_file(root, task, "train") if task != "mixture" else mixture_file(root)
        if train is None:
            raise RPGInputError(f"no {task}/train.json(l)", root)
        rows = list(enumerate(_read_records(train)))
        random.Random(f"{task}:{cfg.split_seed}").shuffle(rows)
        n_val = max(1, int(round(VAL_FRACTION * len(rows))))
        chosen = rows[:n_val] if split == "val" else rows[n_val:]
        records = [(train, i, r) for i, r in sorted(chosen, key=lambda x: x[0])]
    else:
        path = split_file(root, task, split)
        if path is None:
            raise RPGInputError(f"no {task}/{split}.json(l)", root)
        records = [(path, i, r) for i, r in enumerate(_read_records(path))]
    items = []
    for file, i, record in records:
        try:
            items.append(parse_record(record, task))
        except (KeyError, ValueError, TypeError) as exc:
            raise RPGInputError(f"record {i}: {exc}", file) from exc
    if cfg.max_items is not None and len(items) > cfg.max_items:
        keep = sorted(random.Random(f"{task}:{split}:{cfg.split_seed}").sample(range(len(items)), cfg.max_items))
        items = [items[i] for i in keep]
    return items


def build_commonsense(cfg: DataConfig, split: str) -> ChoiceDataset:
    """The ``split`` (train, val, test; probe = test) of every task of ``cfg``, task after task (train and val: of the
    training mixture when there is one)."""
    if split == "probe":  # no corruptions of text: the probe split is the test split
        split = "test"
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {(*SPLIT_FILES, 'probe')}, got {split!r}")
    if split in ("train", "val") and mixture_file(str(cfg.root)) is not None:
        return ChoiceDataset(_task_items(cfg, "mixture", split))
    return ChoiceDataset([it for task in cfg.tasks for it in _task_items(cfg, task, split)])


def commonsense_info(cfg: DataConfig) -> dict[str, int]:
    return {"num_classes": 0, "in_chans": 0, "image_size": 0}


__all__ = ["ChoiceDataset", "ChoiceItem", "build_commonsense", "check_root", "commonsense_info", "parse_record"]
