"""Templated text classification tasks that the pipeline builds itself (no download): the data of adapter zoos.

Each task draws sentences from templates ("forms") filled with seeded word choices. The forms are made so that the
words alone do not give the label away: a sentence often holds words of two classes, and the label follows the
structure ("not", "but", "instead", which clause is the main one). A frozen sentence encoder with a linear head
therefore gets many sentences wrong, and adapting the encoder helps. The last form of every class never appears in
the training split (only in val and test), so the test measures some generalisation and models differ on it.

- ``sentiment`` (negative, positive): reviews with negation and contrast ("I expected X to be dull, but it was great").
- ``topic`` (sports, food, technology, weather): what a sentence is about when it mentions two topics.
- ``intent`` (book, cancel, reschedule, status): requests to a booking assistant that also name another intent
  ("rather than cancelling the table, could you move it?").

Splits ``train``, ``val`` and ``test`` hold ``text_sizes`` sentences per class, all distinct; one seeded stream
(``split_seed`` and the task name) makes them, so a split never shares a sentence with another. The ``probe``
split (for failure-set similarity, which needs models to fail often) is the test split followed by as many
sentences again of the held-out form only, the hardest ones.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from rpg.config import DataConfig
from rpg.errors import RPGInputError

TEXT_SPLITS = ("train", "val", "test", "probe")


class TextDataset(Dataset):
    """Sentences and their class indices; items are ``(sentence, label)``."""

    def __init__(self, *, texts: Sequence[str], labels: Sequence[int], class_names: Sequence[str]) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} sentences for {len(labels)} labels")
        self.texts = list(texts)
        self.targets = torch.as_tensor(list(labels), dtype=torch.long)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.texts[index], int(self.targets[index])


# --- word lists --------------------------------------------------------------------------------------------------

SUBJECTS = ["the movie", "the film", "the restaurant", "the hotel", "the service", "our trip", "the concert",
            "the book", "the new phone", "the meal", "the show", "the museum", "the game", "the lecture", "the album",
            "the tour", "the course", "the app", "the play", "the café"]  # fmt: skip
OTHERS = ["parking", "weather", "music", "lighting", "price", "queue", "ticket", "seat", "menu", "trailer"]
POSITIVE = ["good", "great", "wonderful", "excellent", "delightful", "pleasant", "amazing", "superb", "enjoyable",
            "fantastic", "lovely", "brilliant", "charming", "impressive"]  # fmt: skip
NEGATIVE = ["bad", "terrible", "awful", "boring", "disappointing", "poor", "dreadful", "horrible", "mediocre",
            "unpleasant", "dull", "annoying", "tedious", "bland"]  # fmt: skip
ADVERBS = ["really", "quite", "truly", "rather", "very", "simply", "honestly", "surprisingly"]

TOPICS = {
    "sports": ["football", "the tennis final", "the marathon", "basketball", "the swimming race", "the cycling tour",
               "the hockey match", "the league table", "the world cup", "the boxing fight"],
    "food": ["the pasta recipe", "sushi", "the new bakery", "vegetable soup", "the cheese board", "chocolate cake",
             "the spice market", "grilled fish", "the breakfast menu", "fresh bread"],
    "technology": ["the new laptop", "software updates", "the smartphone launch", "artificial intelligence",
                   "the graphics card", "cloud storage", "the operating system", "electric cars", "the robot",
                   "the chip factory"],
    "weather": ["the storm", "heavy rain", "the heatwave", "snowfall", "the forecast", "strong winds", "the fog",
                "the drought", "thunder and lightning", "the cold front"],
}  # fmt: skip
PEOPLE = ["we", "my friends", "the team", "my parents", "the students", "our neighbours", "the reporters", "they"]
TIMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "the weekend", "tomorrow", "next week",
         "tonight", "the morning", "the evening", "march", "april"]  # fmt: skip
ITEMS = ["table", "flight", "hotel room", "appointment", "train ticket", "haircut", "rental car", "tour", "massage",
         "meeting room", "dentist visit", "bike rental", "cooking class", "boat trip", "tennis court"]  # fmt: skip


# --- tasks ---------------------------------------------------------------------------------------------------------

Forms = Callable[[random.Random, int], list[Callable[[], str]]]  # (rng, label) -> sentence makers of that class


def _sentiment(rng: random.Random, label: int) -> list[Callable[[], str]]:
    good, bad = rng.choice(POSITIVE), rng.choice(NEGATIVE)
    same, other = (good, bad) if label == 1 else (bad, good)  # same: of the label's polarity
    subj, thing, adv = rng.choice(SUBJECTS), rng.choice(OTHERS), rng.choice(ADVERBS)
    return [
        lambda: f"{subj} was {adv} {same}.",
        lambda: f"{subj} was not {other} at all.",
        lambda: f"i expected {subj} to be {other}, but it was {same}.",
        lambda: f"{subj} was {same}, although the {thing} was {other}.",
        lambda: f"nobody could say {subj} was {other}.",
        lambda: f"{subj} could have been {other}, yet it turned out {same}.",
        lambda: f"the {thing} was {other}, but {subj} itself was {adv} {same}.",
        lambda: f"i would not call {subj} {other}; it was {same}.",
    ]


def _topic(rng: random.Random, label: int) -> list[Callable[[], str]]:
    names = list(TOPICS)
    main = rng.choice(TOPICS[names[label]])
    side = rng.choice(TOPICS[rng.choice([n for n in names if n != names[label]])])
    who, when = rng.choice(PEOPLE), rng.choice(TIMES)
    return [
        lambda: f"{who} talked about {main} on {when}.",
        lambda: f"the article on {side} was short, so i read the one about {main} instead.",
        lambda: f"forget {side}, today's news is all about {main}.",
        lambda: f"{main} is what the meeting was about, not {side}.",
        lambda: f"{who} planned to discuss {side}, but ended up arguing about {main}.",
        lambda: f"after a word on {side}, the whole podcast covered {main}.",
        lambda: f"the headline mentions {side}, yet the story is really about {main}.",
    ]


INTENTS = {
    "book": (["book", "reserve", "arrange"], ["booking", "reserving", "arranging"]),
    "cancel": (["cancel", "call off", "drop"], ["cancelling", "calling off", "dropping"]),
    "reschedule": (["move", "reschedule", "postpone"], ["moving", "rescheduling", "postponing"]),
    "status": (["check", "confirm", "verify"], ["checking", "confirming", "verifying"]),
}


def _intent(rng: random.Random, label: int) -> list[Callable[[], str]]:
    names = list(INTENTS)
    verbs, _ = INTENTS[names[label]]
    other_verbs, other_ing = INTENTS[rng.choice([n for n in names if n != names[label]])]
    k = rng.randrange(3)
    v, o, o_ing = verbs[k], other_verbs[rng.randrange(3)], other_ing[rng.randrange(3)]
    item, when = rng.choice(ITEMS), rng.choice(TIMES)
    return [
        lambda: f"i want to {v} my {item} for {when}.",
        lambda: f"please {v} the {item} on {when}, do not {o} it.",
        lambda: f"i don't want to {o} my {item}, i need to {v} it.",
        lambda: f"rather than {o_ing} the {item}, could you {v} it for {when}?",
        lambda: f"could you {v} my {item} instead of {o_ing} it?",
        lambda: f"forget about {o_ing}; just {v} the {item} for {when}.",
    ]


@dataclass(frozen=True)
class TextTask:
    """A task: its class names and the sentence forms of each class (the last form is held out of training)."""

    name: str
    class_names: tuple[str, ...]
    forms: Forms

    def sentence(self, rng: random.Random, label: int, split: str) -> str:
        forms = self.forms(rng, label)
        usable = forms[:-1] if split == "train" else forms[-1:] if split == "hard" else forms
        return usable[rng.randrange(len(usable))]()


TASKS: dict[str, TextTask] = {
    "sentiment": TextTask("sentiment", ("negative", "positive"), _sentiment),
    "topic": TextTask("topic", tuple(TOPICS), _topic),
    "intent": TextTask("intent", tuple(INTENTS), _intent),
}


def text_task(name: str) -> TextTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown text task {name!r}; tasks: {', '.join(TASKS)}") from None


@functools.lru_cache(maxsize=16)
def _splits(task: str, sizes: tuple[int, int, int], seed: int) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    spec = text_task(task)
    rng = random.Random(f"{task}:{seed}")
    seen: set[str] = set()
    out: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
    for split, n in zip(("train", "val", "test", "hard"), (*sizes, sizes[2])):
        rows: list[tuple[str, int]] = []
        for label in range(len(spec.class_names)):
            made, tries = 0, 0
            while made < n:
                tries += 1
                if tries > 200 * n:
                    raise RPGInputError(
                        f"text task {task}: cannot make {n} distinct sentences of class {label}; lower the sizes",
                        "config data.text_sizes",
                    )
                sentence = spec.sentence(rng, label, split)
                if sentence in seen:
                    continue
                seen.add(sentence)
                rows.append((sentence, label))
                made += 1
        rng.shuffle(rows)
        out[split] = (tuple(r[0] for r in rows), tuple(r[1] for r in rows))
    hard = out.pop("hard")
    out["probe"] = (out["test"][0] + hard[0], out["test"][1] + hard[1])
    return out


def build_text(cfg: DataConfig, split: str) -> TextDataset:
    """The ``split`` (train, val, test or probe) of the text task of ``cfg`` (see the module docstring)."""
    if split not in TEXT_SPLITS:
        raise ValueError(f"split must be one of {TEXT_SPLITS}, got {split!r}")
    spec = text_task(str(cfg.task))
    texts, labels = _splits(spec.name, tuple(int(n) for n in cfg.text_sizes), int(cfg.split_seed))[split]
    return TextDataset(texts=texts, labels=labels, class_names=spec.class_names)


def text_info(cfg: DataConfig) -> dict[str, int]:
    return {"num_classes": len(text_task(str(cfg.task)).class_names), "in_chans": 0, "image_size": 0}


__all__ = ["TASKS", "TEXT_SPLITS", "TextDataset", "TextTask", "build_text", "text_info", "text_task"]
