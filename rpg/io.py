"""Safe artefact I/O: atomic writes, safetensors with JSON metadata, Parquet/JSON tables, digests.

Every writer writes to a temporary file in the destination folder and renames it into
place, so an interrupted stage never leaves a half-written artefact behind. No pickle.

A write that fails for lack of space (ENOSPC, EDQUOT) removes its temporary file and raises
:class:`~rpg.errors.RPGDiskFullError` naming the folder and the bytes the file needed.

Integrity: a stage that writes a folder of artefacts records their SHA-256 in ``SHA256SUMS`` there
(:func:`write_digests`, the format of ``sha256sum``: ``cd <folder> && sha256sum -c SHA256SUMS`` checks them by
hand); readers check a file against it before they use it (:func:`verify_file`, one streamed read, done once per
file and process), and a mismatch raises RPGInputError naming the file, both digests and the command that rebuilds
it. Folders written before digests existed have no SHA256SUMS and are read unchecked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from rpg.errors import RPGDiskFullError, RPGInputError

META_KEY = "rpg"
DIGEST = "sha256"
DIGESTS_FILE = "SHA256SUMS"
REBUILD_PREFIX = "# rebuild: "


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


def _write(f, data) -> None:
    """Write all of ``data`` (bytes or a memoryview) to the binary file ``f``: the one low-level write of artefact
    data (the disk-full tests replace it)."""
    f.write(data)


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, RPGDiskFullError) or not isinstance(exc, OSError):
        return False
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, nbytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    On any error the temporary file is removed; a full disk (ENOSPC/EDQUOT) is raised as RPGDiskFullError naming
    the folder and ``nbytes``, the size of the file when the writer knows it (else the bytes written so far).
    """
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
    except BaseException as exc:
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)
        if _disk_full(exc):
            free = shutil.disk_usage(path.parent).free
            raise RPGDiskFullError(path, needed=nbytes, written=written, free=free) from exc
        raise


def write_bytes(path: str | Path, data) -> str:
    """Write ``data`` (bytes or a buffer) to ``path`` atomically; returns its SHA-256."""
    view = memoryview(data).cast("B")
    with atomic_path(path, nbytes=view.nbytes) as tmp, open(tmp, "wb") as f:
        _write(f, view)
    return hashlib.sha256(view).hexdigest()


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
) -> str:
    """Write ``tensors`` atomically (the bytes of ``safetensors.torch.save_file``); ``metadata`` (JSON-serialisable)
    goes in the header. Returns the file's SHA-256."""
    if any(v.dtype not in _SAFETENSORS_DTYPES for v in tensors.values()):  # float8 and the like: safetensors writes
        from safetensors.torch import save_file

        header = {META_KEY: json.dumps(dict(metadata or {}), sort_keys=True)}
        with atomic_path(path) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=header)
            return file_digest(tmp)
    with SafetensorsStreamWriter(path, [(k, v.shape, v.dtype) for k, v in tensors.items()], metadata) as out:
        for name in _save_file_order({k: v.dtype for k, v in tensors.items()}):  # file order: hashed as written
            out.write(name, tensors[name])
    return out.digest


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
    """Load all tensors and the JSON metadata, the file checked against its folder's digests (:func:`verify_file`);
    corrupt or truncated files raise RPGInputError."""
    from safetensors.torch import load_file

    meta = read_safetensors_metadata(path)
    verify_file(path)
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


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file, streamed (about 1 s per GB on one core, docs/cluster.md)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, DIGEST).hexdigest()


def write_digests(
    directory: str | Path,
    names: Iterable[str] | None = None,
    *,
    rebuild: str | Path | None = None,
    known: Mapping[str, str] | None = None,
) -> Path:
    """Record the SHA-256 of the files ``names`` of ``directory`` (default: all its files but hidden ones) in
    ``directory/SHA256SUMS`` (``sha256sum`` format). ``known``: digests the writer computed as it wrote (name ->
    hex); the others are read from disk. ``rebuild``: the Snakemake target that rebuilds the folder (default: the
    folder), named in errors."""
    directory, known = Path(directory), dict(known or {})
    if names is None:
        names = [p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")]
    names = [n for n in names if n != DIGESTS_FILE]
    lines = [f"# {DIGEST} of the files of this folder, written by the stage that made them; readers check them",
             f"{REBUILD_PREFIX}{rebuild or directory}"]  # fmt: skip
    lines += [f"{known.get(n) or file_digest(directory / n)}  {n}" for n in sorted(names)]
    path = directory / DIGESTS_FILE
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def read_digests(directory: str | Path) -> tuple[dict[str, str], str] | None:
    """``({name: sha256}, rebuild target)`` from ``directory/SHA256SUMS``; None when the folder has none."""
    path = Path(directory) / DIGESTS_FILE
    if not path.is_file():
        return None
    digests, rebuild = {}, str(directory)
    for line in path.read_text().splitlines():
        if line.startswith(REBUILD_PREFIX):
            rebuild = line[len(REBUILD_PREFIX) :].strip()
        elif line.strip() and not line.startswith("#"):
            digest, _, name = line.partition("  ")
            if len(digest) != 64 or not name:
                raise RPGInputError(f"malformed line {line!r}", path)
            digests[name.lstrip("*")] = digest
    return digests, rebuild


_VERIFIED: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, mtime) -> digest checked


def check_digest(path: str | Path, expected: str, *, rebuild: str | Path, source: str | Path) -> None:
    """Raise RPGInputError unless the SHA-256 of ``path`` is ``expected`` (as recorded in ``source``); the error
    names the file, both digests and the command that rebuilds ``rebuild``. A file is hashed once per process (and
    again when it changes on disk)."""
    path = Path(path)
    if not path.is_file():
        raise RPGInputError("file does not exist", path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == expected:
        return
    found = file_digest(path)
    if found != expected:
        raise RPGInputError(
            f"corrupt or replaced: its {DIGEST} is {found}, but {source} recorded {expected} when it was written; "
            f"rebuild it with `snakemake --cores all {rebuild} --force`, then rerun snakemake for the stages after it",
            path,
        )
    _VERIFIED[key] = expected


def verify_file(path: str | Path) -> bool:
    """Check ``path`` against the SHA256SUMS of its folder (:func:`check_digest`). False when the folder records no
    digests (written before they existed: read unchecked); a file the folder's SHA256SUMS does not list raises
    RPGInputError (it was not written by the stage that made the folder)."""
    path = Path(path)
    recorded = read_digests(path.parent)
    if recorded is None:
        return False
    digests, rebuild = recorded
    if path.name not in digests:
        raise RPGInputError(
            f"not listed in {path.parent / DIGESTS_FILE}: not written by the stage that made this folder; rebuild "
            f"the folder with `snakemake --cores all {rebuild} --force`",
            path,
        )
    check_digest(path, digests[path.name], rebuild=rebuild, source=path.parent / DIGESTS_FILE)
    return True


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
    the one ``safetensors.torch.save_file`` writes for the same tensors. The file appears atomically when the
    ``with`` block ends and every entry is complete; on any error (or an incomplete entry) nothing is left behind.
    ``digest`` is then the file's SHA-256, computed as it is written when the pieces come in file order (else read
    back once before the file is renamed into place)::

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
        self.digest: str | None = None

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

        if sys.byteorder != "little":
            raise RuntimeError("SafetensorsStreamWriter needs a little-endian machine")
        raw, offsets = self._header()
        start = 8 + len(raw)
        self._atomic = atomic_path(self.path, nbytes=start + self._data_bytes)
        self._tmp = self._atomic.__enter__()
        try:
            self._file = open(self._tmp, "r+b")
            head = struct.pack("<Q", len(raw)) + raw
            _write(self._file, head)
            self._hasher, self._hashed = hashlib.sha256(head), start  # in-stream digest while writes are in order
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
            view = memoryview(data.view(torch.uint8).numpy())
            if self._hasher is not None and self._pos[name] == self._hashed:
                self._hasher.update(view)
                self._hashed += view.nbytes
            else:
                self._hasher = None
            self._file.seek(self._pos[name])
            _write(self._file, view)
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
        try:
            self._file.close()
            self._file = None
            if self._hasher is not None and self._hashed == os.path.getsize(self._tmp):
                self.digest = self._hasher.hexdigest()
            else:
                self.digest = file_digest(self._tmp)
        except BaseException:
            self._abort(*sys.exc_info())
            raise
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
