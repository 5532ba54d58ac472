"""The frozen base model of an adapter zoo, read from a local folder only, and fresh PEFT models on it.

- ``classification``: :class:`SentenceClassifier`, the encoder (``AutoModel``) with a linear head on its mean-pooled
  output (the pooling of sentence-transformers models such as all-MiniLM-L6-v2). The head is trained with the
  adapter and listed in PEFT's ``modules_to_save``, so it is part of the checkpoint, of the generated weights and of
  the PEFT folder: ``PeftModel.from_pretrained(SentenceClassifier(encoder, num_labels), folder)`` is the classifier.
- ``causal_lm``: ``AutoModelForCausalLM``; the adapter is the whole task-specific part.

The base runs without dropout (its dropout modules stay in eval mode), so its frozen layers give the same features
every time and can be cached (:mod:`rpg.adapters.inputs`); the adapter's own dropout is ``adapter.dropout``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from torch import nn

from rpg.adapters.spec import AdapterSpec, peft_config, resolve_base
from rpg.errors import RPGInputError

log = logging.getLogger(__name__)


class SentenceClassifier(nn.Module):
    """A transformers encoder and a linear head on the attention-masked mean of its last hidden states."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), int(num_labels))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        h = out.last_hidden_state
        if attention_mask is None:
            pooled = h.mean(dim=1)
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return self.head(pooled.to(self.head.weight.dtype))


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@functools.lru_cache(maxsize=4)
def load_tokenizer(base: str):
    """The tokenizer of the base model (cached); causal LMs without a pad token pad with their end-of-sequence."""
    from transformers import AutoTokenizer

    path = resolve_base(base)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, ...
        raise RPGInputError(f"cannot read the tokenizer ({type(exc).__name__}: {exc})", path) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def load_base(spec: AdapterSpec) -> nn.Module:
    """A fresh copy of the frozen base model of ``spec`` (classification: with a new head), on the CPU."""
    from transformers import AutoModel, AutoModelForCausalLM

    path = resolve_base(spec.base)
    cls = AutoModelForCausalLM if spec.task == "causal_lm" else AutoModel
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, dtype=_dtype(spec.dtype))
    except Exception as exc:
        raise RPGInputError(f"cannot load the base model ({type(exc).__name__}: {exc})", path) from exc
    if spec.task == "classification":
        model = SentenceClassifier(model, spec.num_labels)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def build_peft_model(spec: AdapterSpec, *, seed: int, inference: bool = False) -> nn.Module:
    """A PEFT model of ``spec`` with freshly initialised adapter (and head) weights, seeded by ``seed``."""
    from peft import get_peft_model

    base = load_base(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if spec.task == "classification":
            base.head.reset_parameters()
        try:
            model = get_peft_model(base, peft_config(spec, inference=inference))
        except ValueError as exc:  # e.g. target modules that the model does not have
            raise RPGInputError(f"cannot put the adapter on {spec.base}: {exc}", "config adapter") from exc
    return model


def freeze_base_dropout(model: nn.Module) -> None:
    """Eval mode for every dropout of the frozen base (the adapter's lora_dropout keeps the model's mode)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout) and "lora_dropout" not in name:
            module.eval()


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def base_path(spec: AdapterSpec) -> Path:
    return resolve_base(spec.base)


__all__ = [
    "SentenceClassifier",
    "base_path",
    "build_peft_model",
    "freeze_base_dropout",
    "load_base",
    "load_tokenizer",
    "trainable_parameters",
]
