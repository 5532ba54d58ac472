"""Tiny randomly initialised transformers models saved to a folder (a BERT encoder, a LLaMA causal LM), with
tokenizers built from a word list, and tiny commonsense task files: what the adapter tests run on, in seconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from rpg.data.text import TASKS

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def text_words() -> list[str]:
    """Every word (and punctuation mark) the templated text tasks can use, sorted."""
    import random

    words: set[str] = set()
    for task in TASKS.values():
        for label in range(len(task.class_names)):
            for seed in range(200):
                for form in task.forms(random.Random(seed), label):
                    words.update(re.findall(r"\w+|[^\w\s]", form()))
    return sorted(words)


def tiny_bert(path: Path, *, layers: int = 3, hidden: int = 32) -> Path:
    """A random BERT encoder (``layers`` layers of width ``hidden``) with a word-level BERT tokenizer at ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = SPECIALS + text_words()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(path / "vocab.txt")).save_pretrained(str(path))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(str(path))
    return path


def tiny_llama(path: Path, *, words: list[str], layers: int = 2, hidden: int = 32) -> Path:
    """A random LLaMA causal LM with a word-level fast tokenizer (``words`` plus specials) at ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", *sorted(set(words))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")  # fmt: skip
    fast.save_pretrained(str(path))
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=2, pad_token_id=3)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    return path


def commonsense_files(root: Path, *, n: int = 12) -> tuple[Path, list[str]]:
    """Tiny task files under ``root``: BoolQ (train/test .jsonl) and PIQA (train/val/test .json) records whose
    answer is the option that repeats a word of the question. Returns ``(root, every word used)``."""
    colours = ["red", "green", "blue", "black", "white", "pink"]
    boolq, piqa = [], []
    for i in range(n):
        a, b = colours[i % 6], colours[(i + 1) % 6]
        boolq.append({"question": f"is the ball {a}", "passage": f"the ball is {a if i % 2 else b}",
                      "answer": bool(i % 2)})  # fmt: skip
        piqa.append({"goal": f"paint it {a}", "sol1": f"use {a} paint" if i % 2 else f"use {b} paint",
                     "sol2": f"use {b} paint" if i % 2 else f"use {a} paint", "label": 0 if i % 2 else 1})  # fmt: skip
    (root / "boolq").mkdir(parents=True, exist_ok=True)
    (root / "piqa").mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", boolq), ("test", boolq[: n // 2])):
        (root / "boolq" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, rows in (("train", piqa), ("val", piqa[: n // 3]), ("test", piqa[n // 3 :])):
        (root / "piqa" / f"{name}.json").write_text(json.dumps(rows))
    words = colours + "is the ball Question : ? Answer no yes paint it use".split()
    return root, words
