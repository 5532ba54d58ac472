"""Safe artefact I/O: atomic writes, safetensors with JSON metadata, Parquet/JSON tables.

Every writer writes to a temporary file in the destination folder and renames it into
place, so an interrupted stage never leaves a half-written artefact behind. No pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from rpg.errors import RPGInputError

META_KEY = "rpg"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; artefacts are shared (clusters, reports)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write ``tensors`` atomically; ``metadata`` (JSON-serialisable) goes in the header."""
    from safetensors.torch import save_file

    header = {META_KEY: json.dumps(dict(metadata or {}), sort_keys=True)}
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)


def read_safetensors_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors file written by :func:`save_safetensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise RPGInputError("file does not exist", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise RPGInputError(f"not a readable safetensors file ({exc})", path) from exc
    try:
        return json.loads(header.get(META_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise RPGInputError(f"corrupt metadata in header ({exc})", path) from exc


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load all tensors and the JSON metadata; corrupt or truncated files raise RPGInputError."""
    from safetensors.torch import load_file

    meta = read_safetensors_metadata(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise RPGInputError(f"truncated or corrupt safetensors file ({exc})", path) from exc
    return tensors, meta


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RPGInputError("file does not exist", path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RPGInputError(f"invalid JSON ({exc})", path) from exc


def write_table(df, path: str | Path) -> None:
    """Write a pandas DataFrame as Parquet or CSV, chosen by the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{path}: unknown table format (use .parquet or .csv)")


def read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise RPGInputError("file does not exist", path)
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:
        raise RPGInputError(f"unreadable table ({exc})", path) from exc


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
