"""Checkpoint files: one ``.safetensors`` per checkpoint, metadata as JSON in its header.

Metadata keys (see the project brief): kind, arch, arch_kwargs, run, seed, step, index,
val_accuracy, task, num_classes.

safetensors does not keep the order of entries (it sorts them), so :func:`save_checkpoint`
also stores the state_dict order under ``state_dict_keys`` and :func:`load_checkpoint` gives
the entries back in that order (the architecture's order) and removes the key from ``meta``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rpg.errors import RPGInputError
from rpg.io import load_safetensors, save_safetensors

REQUIRED_KEYS = ("kind", "arch", "arch_kwargs")
ORDER_KEY = "state_dict_keys"


def save_checkpoint(path: str | Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write ``state_dict`` with ``meta`` atomically (no partial file on failure)."""
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {missing}")
    meta = {**meta, ORDER_KEY: list(state_dict)}
    tensors, seen = {}, set()
    for name, value in state_dict.items():
        value = value.detach().cpu()
        ptr = value.untyped_storage().data_ptr()
        tensors[name] = value.clone() if ptr in seen else value  # safetensors refuses shared storage
        seen.add(ptr)
    save_safetensors(tensors, path, metadata=meta)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)``; a missing, truncated or corrupt file raises RPGInputError naming it."""
    state, meta = load_safetensors(path)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise RPGInputError(f"not an rpg checkpoint (metadata lacks {missing})", path)
    order = meta.pop(ORDER_KEY, None)
    if order is not None:
        if sorted(order) != sorted(state):
            raise RPGInputError("stored entry order does not match the stored tensors", path)
        state = {k: state[k] for k in order}
    return state, meta


def check_compatible(
    state_dict: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], path: str | Path
) -> None:
    """Raise RPGInputError naming ``path`` unless keys, shapes and dtypes match ``reference``.

    The order of entries is not compared (a plain safetensors load sorts them).
    """
    missing = [k for k in reference if k not in state_dict]
    if missing:
        raise RPGInputError(f"missing entry {missing[0]!r} ({len(missing)} missing in all)", path)
    extra = [k for k in state_dict if k not in reference]
    if extra:
        raise RPGInputError(f"unexpected entry {extra[0]!r} ({len(extra)} unexpected in all)", path)
    for name, ref in reference.items():
        t = state_dict[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise RPGInputError(f"entry {name!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}", path)
        if t.dtype != ref.dtype:
            raise RPGInputError(f"entry {name!r} has dtype {t.dtype}, expected {ref.dtype}", path)


def state_digest(model: torch.nn.Module) -> str:
    """A digest of a model's state_dict (names, shapes, dtypes and bytes): equal digests, equal weights. Evaluators
    use it to reuse the last result for the same weights."""
    h = hashlib.blake2b(digest_size=16)
    for name, value in model.state_dict().items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
