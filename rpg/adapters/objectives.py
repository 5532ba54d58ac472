"""What an adapter is trained and scored on: one objective per task kind, shared by collection and evaluation.

- :class:`ClassificationObjective` (text data): cross-entropy of the head's logits; outputs are class probabilities.
- :class:`ChoiceObjective` (commonsense data): the negative log-likelihood of the right option's continuation;
  outputs are the softmax of the options' scores (padded with zeros to the largest number of options).

Both keep their tokenized splits (and cached frozen layers) for the life of the object, so scoring many models of one
zoo tokenizes each split once. Where a split begins with the test split (the probe split: text data appends the
hardest sentences to the test sentences; commonsense data probes on the test items themselves), ``predict`` takes the
model's test predictions (``test=``) and scores only the samples after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rpg.adapters.base import load_tokenizer
from rpg.adapters.inputs import Encoded, classify, continuation_logprobs, encode_split, lm_loss
from rpg.adapters.spec import AdapterSpec
from rpg.config import DataConfig
from rpg.data import build_dataset
from rpg.runtime import progress


@dataclass
class Predictions:
    """Per-sample output distributions [N, C], the right answers [N] and, for mixtures, each sample's task."""

    outputs: torch.Tensor
    labels: torch.Tensor
    groups: list[str] | None = None

    @property
    def failures(self) -> torch.Tensor:
        return self.outputs.argmax(dim=1) != self.labels

    def metrics(self) -> dict[str, float]:
        """``accuracy`` (over tasks: the mean of the per-task accuracies) and ``accuracy_<task>`` per task."""
        right = (~self.failures).float()
        if not self.groups or len(set(self.groups)) < 2:
            return {"accuracy": float(right.mean())}
        per = {}
        for g in dict.fromkeys(self.groups):
            mask = torch.tensor([x == g for x in self.groups])
            per[f"accuracy_{g}"] = float(right[mask].mean())
        return {"accuracy": sum(per.values()) / len(per), "accuracy_all": float(right.mean()), **per}


class ClassificationObjective:
    """Text classification with a head on the pooled encoder output."""

    def __init__(self, *, spec: AdapterSpec, data: DataConfig, device: torch.device, batch_size: int = 128) -> None:
        self.spec, self.data, self.device, self.batch_size = spec, data, device, int(batch_size)
        self.tokenizer = load_tokenizer(spec.base)
        self._splits: dict[str, Encoded] = {}
        self._texts: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
        self._prefix: dict[str, int] = {}  # split -> how many leading samples are the test split's

    def split(self, model: nn.Module, split: str) -> Encoded:
        if split not in self._splits:
            ds = build_dataset(self.data, split)
            self._texts[split] = (tuple(ds.texts), tuple(ds.targets.tolist()))
            self._splits[split] = encode_split(
                model, self.tokenizer, ds.texts, ds.targets.tolist(), first=self.spec.first_layer,
                max_length=self.spec.max_length, batch_size=self.batch_size, device=self.device,
            )  # fmt: skip
        return self._splits[split]

    def num_samples(self, model: nn.Module, split: str) -> int:
        return len(self.split(model, split))

    def loss(self, model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        enc = self.split(model, "train")
        index = index.to(enc.labels.device)
        logits = classify(model, enc, index, first=self.spec.first_layer)
        return F.cross_entropy(logits.float(), enc.labels[index])

    def _test_prefix(self, model: nn.Module, split: str) -> int:
        """How many leading samples of ``split`` are the test split's, in order (0: it does not begin with it)."""
        if split not in self._prefix:
            for name in (split, "test"):
                self.split(model, name)
            (texts, labels), (test_texts, test_labels) = self._texts[split], self._texts["test"]
            n = len(test_texts)
            self._prefix[split] = n if texts[:n] == test_texts and labels[:n] == test_labels else 0
        return self._prefix[split]

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, *, test: Predictions | None = None) -> Predictions:
        """Class probabilities of ``split``; ``test``: this model's test predictions, reused where ``split``
        begins with the test split."""
        enc = self.split(model, split)
        first = self._test_prefix(model, split) if test is not None and split != "test" else 0
        probs = [test.outputs[:first]] if first else []
        for start in range(first, len(enc), self.batch_size):
            logits = classify(model, enc, slice(start, min(len(enc), start + self.batch_size)),
                              first=self.spec.first_layer)  # fmt: skip
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
        return Predictions(torch.cat(probs), enc.labels.cpu())


class ChoiceObjective:
    """Multiple choice scored by the likelihood of each option under a causal LM."""

    def __init__(self, *, spec: AdapterSpec, data: DataConfig, device: torch.device, batch_size: int = 16) -> None:
        self.spec, self.data, self.device, self.batch_size = spec, data, device, int(batch_size)
        self.tokenizer = load_tokenizer(spec.base)
        self._splits: dict[str, Sequence] = {}
        self._same: dict[str, bool] = {}  # split -> whether it holds the test split's items

    def split(self, model: nn.Module | None, split: str):
        if split not in self._splits:
            self._splits[split] = build_dataset(self.data, split)
        return self._splits[split]

    def num_samples(self, model: nn.Module | None, split: str) -> int:
        return len(self.split(model, split))

    def loss(self, model: nn.Module, index: torch.Tensor) -> torch.Tensor:
        items = self.split(model, "train")
        pairs = [items[int(i)].options[items[int(i)].label] for i in index]
        return lm_loss(model, self.tokenizer, pairs, max_length=self.spec.max_length, device=self.device)

    def _same_as_test(self, model: nn.Module | None, split: str) -> bool:
        """Whether ``split`` holds the test split's items, in order."""
        if split not in self._same:
            a, b = self.split(model, split), self.split(model, "test")
            self._same[split] = len(a) == len(b) and all(a[i] == b[i] for i in range(len(a)))
        return self._same[split]

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, *, test: Predictions | None = None) -> Predictions:
        """Option probabilities of ``split``; ``test``: this model's test predictions, reused where ``split`` holds
        the same items as the test split."""
        items = self.split(model, split)
        if test is not None and split != "test" and self._same_as_test(model, split):
            return test
        width = max(len(it.options) for it in items)
        rows = []
        starts = range(0, len(items), self.batch_size)
        for start in progress(starts, desc=f"score {split}", total=len(starts), leave=False):
            chunk = [items[i] for i in range(start, min(len(items), start + self.batch_size))]
            pairs = [p for it in chunk for p in it.options]
            scores = continuation_logprobs(model, self.tokenizer, pairs, max_length=self.spec.max_length,
                                           device=self.device, mean=self.spec.score == "mean").cpu()  # fmt: skip
            pos = 0
            for it in chunk:
                row = torch.zeros(width)
                row[: len(it.options)] = torch.softmax(scores[pos : pos + len(it.options)], dim=0)
                rows.append(row)
                pos += len(it.options)
        labels = torch.tensor([it.label for it in items], dtype=torch.long)
        return Predictions(torch.stack(rows), labels, [it.task for it in items])


def make_objective(spec: AdapterSpec, data: DataConfig, *, device: torch.device, batch_size: int):
    """The objective of ``spec``'s task kind on ``data``."""
    cls = ClassificationObjective if spec.task == "classification" else ChoiceObjective
    return cls(spec=spec, data=data, device=device, batch_size=batch_size)


__all__ = ["ChoiceObjective", "ClassificationObjective", "Predictions", "make_objective"]
