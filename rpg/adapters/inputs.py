"""Model inputs of adapter zoos: tokenized sentences with cached frozen layers, and answer options scored by
likelihood.

**Cached frozen layers.** With adapters only on layers ``>= first`` of an encoder (``adapter.layers``), the layers
below give the same hidden states for every adapter: :class:`FrozenPrefix` computes them once per sentence and runs
only the adapted layers afterwards (embeddings and lower layers are swapped for pass-throughs while it runs). This
needs a BERT-style encoder (``embeddings`` and ``encoder.layer``); a self-check against the full forward turns the
cache off (with a warning) where it does not give the same logits.

**Likelihood.** An answer option is a (context, continuation) pair; its score is the log-probability of the
continuation's tokens given the context (summed, or averaged with ``adapter.score: mean``). The model picks the
option with the highest score. Training a causal LM adapter minimises the same negative log-likelihood of the
right option's continuation.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rpg.adapters.base import SentenceClassifier

log = logging.getLogger(__name__)

IGNORE = -100


# --- classification ------------------------------------------------------------------------------------------------


class _PassThrough(nn.Module):
    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class _Embeds(nn.Module):
    def forward(self, input_ids=None, inputs_embeds=None, **kwargs) -> torch.Tensor:
        return inputs_embeds


def _classifier(model: nn.Module) -> SentenceClassifier:
    """The SentenceClassifier inside a PEFT model (or the model itself)."""
    for module in model.modules():
        if isinstance(module, SentenceClassifier):
            return module
    raise TypeError(f"{type(model).__name__} holds no SentenceClassifier")


@dataclass
class Encoded:
    """A tokenized split: ``input_ids``/``attention_mask`` [N, T], ``labels`` [N], and with a cache the hidden
    states [N, T, H] entering the first adapted layer."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    hidden: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def tokenize_texts(tokenizer, texts: Sequence[str], *, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


class FrozenPrefix:
    """Runs the layers ``>= first`` of a PEFT-wrapped :class:`SentenceClassifier` from cached hidden states."""

    def __init__(self, model: nn.Module, first: int) -> None:
        self.model = model
        self.first = int(first)
        clf = _classifier(model)
        self.encoder = clf.encoder
        self.layers = getattr(getattr(self.encoder, "encoder", None), "layer", None)
        self.enabled = self.first > 0 and isinstance(self.layers, nn.ModuleList) and hasattr(self.encoder, "embeddings")
        self.enabled = self.enabled and self.first < len(self.layers)

    @contextlib.contextmanager
    def _swapped(self, indices: Sequence[int], embeddings: bool) -> Iterator[None]:
        saved = {i: self.layers[i] for i in indices}
        saved_emb = self.encoder.embeddings
        try:
            for i in indices:
                self.layers[i] = _PassThrough()
            if embeddings:
                self.encoder.embeddings = _Embeds()
            yield
        finally:
            for i, layer in saved.items():
                self.layers[i] = layer
            self.encoder.embeddings = saved_emb

    @torch.no_grad()
    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The hidden states entering layer ``first`` (the frozen layers below it run once here)."""
        with self._swapped(range(self.first, len(self.layers)), embeddings=False):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The classifier's logits from cached ``hidden`` states (adapted layers, pooling and head only)."""
        with self._swapped(range(self.first), embeddings=True):
            return self.model(inputs_embeds=hidden, attention_mask=attention_mask)

    @torch.no_grad()
    def check(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
        """Whether the cached path gives the full forward's logits on these inputs (turns the cache off if not)."""
        if not self.enabled:
            return False
        try:
            full = self.model(input_ids=input_ids, attention_mask=attention_mask).float()
            cached = self.logits(self.hidden(input_ids, attention_mask), attention_mask).float()
            ok = bool(torch.allclose(full, cached, atol=1e-4, rtol=1e-3))
        except Exception as exc:  # an encoder whose layers take other arguments
            log.warning("cached frozen layers do not work with this encoder (%s); running every layer", exc)
            ok = False
        if not ok:
            log.warning("cached frozen layers differ from the full forward; running every layer")
            self.enabled = False
        return ok


def encode_split(
    model: nn.Module, tokenizer, texts: Sequence[str], labels: Sequence[int], *, first: int, max_length: int,
    batch_size: int, device: torch.device,
) -> Encoded:  # fmt: skip
    """Tokenize a split (and, when the cache works, compute its frozen hidden states once) on ``device``."""
    ids, mask = tokenize_texts(tokenizer, texts, max_length=max_length)
    enc = Encoded(ids.to(device), mask.to(device), torch.as_tensor(list(labels), dtype=torch.long, device=device))
    prefix = FrozenPrefix(model, first)
    if prefix.enabled and prefix.check(enc.input_ids[:4], enc.attention_mask[:4]):
        parts = [prefix.hidden(enc.input_ids[i : i + batch_size], enc.attention_mask[i : i + batch_size])
                 for i in range(0, len(enc), batch_size)]  # fmt: skip
        enc.hidden = torch.cat(parts)
    return enc


def classify(model: nn.Module, enc: Encoded, index: torch.Tensor | slice, *, first: int) -> torch.Tensor:
    """Logits of samples ``index`` of ``enc`` (from the cached hidden states when there are any)."""
    mask = enc.attention_mask[index]
    width = int(mask.sum(dim=1).max())  # trim the split's padding to this batch's longest sentence
    mask = mask[:, :width]
    if enc.hidden is not None:
        return FrozenPrefix(model, first).logits(enc.hidden[index][:, :width], mask)
    return model(input_ids=enc.input_ids[index][:, :width], attention_mask=mask)


# --- causal LM: options scored by likelihood --------------------------------------------------------------------------


def _pair_ids(tokenizer, context: str, continuation: str, max_length: int) -> tuple[list[int], int]:
    """Token ids of context + continuation (cut from the left to ``max_length``) and the continuation's length."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not cont:
        raise ValueError(f"empty continuation after tokenization: {continuation!r}")
    ids = (ctx + cont)[-max_length:]
    return ids, min(len(cont), len(ids) - 1)


def _batch(seqs: Sequence[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def continuation_logprobs(
    model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int, device: torch.device,
    mean: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Log-likelihood of each pair's continuation given its context (one forward pass for all pairs) [P]."""
    encoded = [_pair_ids(tokenizer, c, x, max_length) for c, x in pairs]
    ids, mask = _batch([e[0] for e in encoded], tokenizer.pad_token_id, device)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    out = []
    for i, (seq, n) in enumerate(encoded):
        end = len(seq) - 1  # logp[i, t] scores token t + 1
        s = logp[i, end - n : end].sum()
        out.append(s / n if mean else s)
    return torch.stack(out)


def lm_loss(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int,
            device: torch.device) -> torch.Tensor:  # fmt: skip
    """Mean negative log-likelihood of the continuation tokens of ``pairs`` (the right options)."""
    encoded = [_pair_ids(tokenizer, c, x, max_length) for c, x in pairs]
    ids, mask = _batch([e[0] for e in encoded], tokenizer.pad_token_id, device)
    labels = torch.full_like(ids, IGNORE)
    for i, (seq, n) in enumerate(encoded):
        labels[i, len(seq) - n : len(seq)] = ids[i, len(seq) - n : len(seq)]
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE)


__all__ = ["Encoded", "FrozenPrefix", "classify", "continuation_logprobs", "encode_split", "lm_loss", "tokenize_texts"]
