"""Safe artefact I/O: atomic writes, safetensors with JSON metadata, Parquet/JSON tables.

Every writer writes to a temporary file in the destination folder and renames it into
place, so an interrupted stage never leaves a half-written artefact behind. No pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from rpg.errors import RPGInputError

META_KEY = "rpg"


TEMP_SUFFIX = ".tmp"


def stale_temps(path: str | Path) -> list[Path]:
    """Temporary files that :func:`atomic_path` left for ``path`` (a killed writer cannot remove its own)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}")) if path.parent.is_dir() else []


def remove_stale_temps(paths: Iterable[str | Path], *, recursive_dirs: Iterable[str | Path] = ()) -> list[Path]:
    """Remove leftover temporary files of ``paths`` and every temporary file inside ``recursive_dirs``.

    Stages call this before they start, so a kill -9 during an earlier attempt leaves nothing behind for long.
    Returns the removed files.
    """
    removed = [t for p in paths for t in stale_temps(p)]
    for d in recursive_dirs:
        if Path(d).is_dir():
            removed += sorted(Path(d).rglob(f".*{TEMP_SUFFIX}"))
    for t in removed:
        if t.is_dir():
            shutil.rmtree(t, ignore_errors=True)
        else:
            t.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and some writers (safetensors) replace the file: set the mode on what was written
        os.chmod(tmp_path, 0o644)  # artefacts are shared (clusters, reports)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it replaces ``path`` (a folder) only on success, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        for f in tmp.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent))
            os.replace(path, old / "old")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip


class SafetensorsStreamWriter:
    """Write a safetensors file entry by entry, piece by piece, without ever holding its tensors.

    The header is written first from the known names, shapes and dtypes; ``write(name, piece)`` then appends the
    next piece of an entry's flattened data at its place in the file. The layout of the file (order of the
    entries, offsets, header) is that of ``safetensors.torch.save_file``, so a streamed file is byte-identical to
    the one ``save_safetensors`` writes for the same tensors. The file appears atomically when the ``with`` block
    ends and every entry is complete; on any error (or an incomplete entry) nothing is left behind::

        with SafetensorsStreamWriter(path, [("w", (2, 3), torch.float32)], {"kind": "x"}) as out:
            out.write("w", first_half)
            out.write("w", second_half)
    """

    def __init__(
        self,
        path: str | Path,
        entries: Iterable[tuple[str, Iterable[int], torch.dtype]],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self._entries: dict[str, tuple[tuple[int, ...], torch.dtype, int]] = {}
        for name, shape, dtype in entries:
            if dtype not in _SAFETENSORS_DTYPES:
                raise ValueError(f"entry {name!r}: dtype {dtype} cannot be streamed to safetensors")
            if name in self._entries:
                raise ValueError(f"entry {name!r} given twice")
            shape = tuple(int(d) for d in shape)
            numel = 1
            for d in shape:
                numel *= d
            self._entries[name] = (shape, dtype, numel)
        self._metadata = {META_KEY: json.dumps(dict(metadata or {}), sort_keys=True)}
        self._written = dict.fromkeys(self._entries, 0)  # elements written per entry
        self._file = None
        self._atomic = None

    def _header(self) -> tuple[bytes, dict[str, int]]:
        """The JSON header (padded like safetensors') and each entry's byte offset in the data section."""
        order = _save_file_order({n: dtype for n, (_, dtype, _) in self._entries.items()})
        header: dict[str, Any] = {"__metadata__": self._metadata}
        offsets, pos = {}, 0
        for name in order:
            shape, dtype, numel = self._entries[name]
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            code = _SAFETENSORS_DTYPES[dtype]
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
            offsets[name], pos = pos, pos + nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(8 + len(raw)) % 8)
        self._data_bytes = pos
        return raw, offsets

    def __enter__(self) -> SafetensorsStreamWriter:
        import struct
        import sys

        if sys.byteorder != "little":
            raise RuntimeError("SafetensorsStreamWriter needs a little-endian machine")
        raw, offsets = self._header()
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._file = open(tmp, "r+b")
            self._file.write(struct.pack("<Q", len(raw)))
            self._file.write(raw)
            start = 8 + len(raw)
            self._file.truncate(start + self._data_bytes)
            self._pos = {n: start + off for n, off in offsets.items()}
        except BaseException:
            self._abort(*sys.exc_info())
            raise
        return self

    def write(self, name: str, piece: torch.Tensor) -> None:
        """Append ``piece`` (any shape; its elements in order) to the flattened data of entry ``name``."""
        if self._file is None:
            raise RuntimeError("SafetensorsStreamWriter.write outside its 'with' block")
        if name not in self._entries:
            raise KeyError(f"no entry {name!r} in this file")
        _, dtype, numel = self._entries[name]
        if piece.dtype != dtype:
            raise ValueError(f"entry {name!r} is {dtype}, got a piece of {piece.dtype}")
        n = piece.numel()
        if self._written[name] + n > numel:
            raise ValueError(f"entry {name!r}: {self._written[name] + n} elements written, it has {numel}")
        data = piece.detach().to("cpu").contiguous().reshape(-1)
        if n:
            self._file.seek(self._pos[name])
            self._file.write(memoryview(data.view(torch.uint8).numpy()))
            self._pos[name] = self._file.tell()
        self._written[name] += n

    def missing(self) -> dict[str, int]:
        """Entries not yet complete: {name: elements still to write}."""
        return {n: e[2] - self._written[n] for n, e in self._entries.items() if self._written[n] != e[2]}

    def _abort(self, exc_type, exc, tb) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._atomic is not None:
            self._atomic.__exit__(exc_type, exc, tb)  # removes the temporary file
            self._atomic = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.missing():
            missing = self.missing()
            exc = ValueError(f"{self.path}: incomplete entries {dict(list(missing.items())[:5])} (elements missing)")
            self._abort(type(exc), exc, None)
            raise exc
        if exc_type is not None:
            self._abort(exc_type, exc, tb)
            return
        self._file.close()
        self._file = None
        self._atomic.__exit__(None, None, None)  # rename into place
        self._atomic = None


def _save_file_order(dtypes: Mapping[str, torch.dtype]) -> list[str]:
    """The order in which ``safetensors.torch.save_file`` lays out entries of these names and dtypes.

    Asked from safetensors itself (it sorts by dtype alignment, then name), on one-element stand-ins.
    """
    import struct

    from safetensors.torch import save

    if not dtypes:
        return []
    raw = save({n: torch.zeros(1, dtype=d) for n, d in dtypes.items()})
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    return sorted(header, key=lambda k: header[k]["data_offsets"][0])
