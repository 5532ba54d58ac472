"""The token store of a zoo: layout.parquet, index.parquet, reference.safetensors, shards.

``write_token_store`` streams over the checkpoints twice: a statistics pass (checks every
file, builds the :class:`Layout`) and a token pass that writes one shard at a time, one
checkpoint at a time (shards are streamed to disk in safetensors format, so memory holds
one checkpoint, never a whole shard or zoo). ``TokenStore`` reads it back, memory-mapping
the shards.

Shards hold key ``tokens`` [n, L, k] in float64 (default; tokenize -> detokenize is
bit-exact) or float32 (half the disk; NOT bit-exact, ~1e-7 relative error after
un-normalising).

``SHA256SUMS`` records the digest of every file of the store (shards hashed as they are written);
``TokenStore`` checks each file against it when it first reads it (:func:`rpg.io.verify_file`), and
``write_token_store`` checks every checkpoint against the digests of its run folder as it reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rpg.config import recipe
from rpg.errors import RPGInputError
from rpg.io import (
    DIGESTS_FILE,
    SafetensorsStreamWriter,
    atomic_path,
    load_safetensors,
    read_safetensors_metadata,
    read_table,
    save_safetensors,
    verify_file,
    write_digests,
)
from rpg.runtime import fault_point, progress
from rpg.tokens.layout import Layout, LayoutBuilder, is_generated, select_entries
from rpg.tokens.tokenizer import detokenize, tokenize
from rpg.zoo.models import build_model

log = logging.getLogger(__name__)

LAYOUT_FILE = "layout.parquet"
INDEX_FILE = "index.parquet"
REFERENCE_FILE = "reference.safetensors"
STATE_MODES = ("run", "checkpoint")
SHARD_DTYPES = {"float64": (torch.float64, "F64"), "float32": (torch.float32, "F32")}
INDEX_COLUMNS = ["checkpoint", "shard", "row", "run", "state", "step", "val_accuracy", "task"]


def shard_names(num_checkpoints: int, shard_size: int) -> list[str]:
    """File names of the shards holding ``num_checkpoints`` checkpoints, ``shard_size`` per shard."""
    if int(shard_size) < 1:
        raise RPGInputError(f"tokens.shard_size must be a positive integer, got {shard_size!r}")
    return [f"shard_{i:05d}.safetensors" for i in range(math.ceil(int(num_checkpoints) / int(shard_size)))]


def write_token_store(
    checkpoint_paths: Iterable[str | Path],
    out_dir: str | Path,
    *,
    token_size: int | str,
    shard_size: int,
    state: str = "run",
    dtype: str = "float64",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """Tokenize a zoo of checkpoint files into ``out_dir`` (see module docstring).

    ``state``: "run" gives each training run one permutation state (its rank among the
    zoo's run ids), "checkpoint" gives each checkpoint its own. ``include``/``exclude``: glob patterns of the
    entries to generate (partial generation, :mod:`rpg.tokens.layout`); the others are copied from the first
    checkpoint (the reference). ``token_size="auto"``: chosen from the first checkpoint's generated entries by
    :func:`rpg.config.recipe.token_size` (the choice and its reason go into the store's metadata, ``recipe``). Bad
    input raises RPGInputError naming the file; files this call wrote are then
    removed again.
    """
    paths = [Path(p) for p in checkpoint_paths]
    out_dir = Path(out_dir)
    if state not in STATE_MODES:
        raise RPGInputError(f"tokens.state must be one of {STATE_MODES}, got {state!r}")
    if dtype not in SHARD_DTYPES:
        raise RPGInputError(f"tokens.dtype must be one of {tuple(SHARD_DTYPES)}, got {dtype!r}")
    names = shard_names(len(paths), shard_size)
    if not paths:
        raise RPGInputError("empty zoo: no checkpoint files given", out_dir)

    # Pass 1: check every checkpoint, accumulate statistics, remember the metadata.
    builder: LayoutBuilder | None = None
    reference: dict[str, torch.Tensor] = {}
    first_meta: dict[str, Any] = {}
    chosen: dict[str, Any] = {}  # recipe values chosen for "auto" settings
    records: list[dict[str, Any]] = []
    for i, path in enumerate(progress(paths, desc="token statistics", total=len(paths))):
        tensors, meta = load_safetensors(path)
        if i == 0:
            first_meta = meta
            if token_size == recipe.AUTO:
                order = _entry_order(tensors, meta, path)
                selected = select_entries(order, include, exclude)
                sizes = [tensors[n].numel() for n in order if n in selected and is_generated(tensors[n])]
                token_size, reason = recipe.token_size(sizes)
                chosen["token_size"] = {"value": token_size, "reason": reason}
                log.info("tokens.token_size auto: %d (%s)", token_size, reason)
            builder = LayoutBuilder(token_size=token_size, order=_entry_order(tensors, meta, path), include=include,
                                    exclude=exclude)  # fmt: skip
        else:
            _check_same_arch(meta, first_meta, path, paths[0])
        builder.add(tensors, source=path)
        if i == 0:
            reference = {n: t for n, t in tensors.items() if not builder.generates(n)}
        records.append(_index_record(path, meta))
        del tensors
    assert builder is not None
    layout = builder.finish()
    states, num_states = _states(records, state)

    store_meta = {
        "kind": "tokens",
        "arch": first_meta.get("arch"),
        "arch_kwargs": first_meta.get("arch_kwargs", {}),
        "num_classes": first_meta.get("num_classes"),
        "token_size": layout.token_size,
        "num_tokens": layout.num_tokens,
        "num_parameters": layout.num_parameters,
        "num_checkpoints": len(paths),
        "num_states": num_states,
        "state": state,
        "dtype": dtype,
        "shard_size": int(shard_size),
        "include": None if include is None else list(include),
        "exclude": list(exclude),
        "num_copied": len(reference),
        "state_dict_keys": layout.names,
    }
    if chosen:
        store_meta["recipe"] = chosen
    log.info(
        "tokenizing %d checkpoints: %d generated layers, %d parameters -> %d tokens of %d, %d shard(s)",
        len(paths),
        layout.num_layers,
        layout.num_parameters,
        layout.num_tokens,
        layout.token_size,
        len(names),
    )

    # Pass 2: tokens, one shard and one checkpoint at a time; remove our files on any error. The content hash
    # covers every token written, the layout and the index (what a generator trained on this store depends on).
    hasher, digests = hashlib.sha256(), {}
    hasher.update(layout.to_frame().to_json().encode())
    hasher.update(json.dumps([[r["checkpoint"], r["run"], r["task"]] for r in records] + [states]).encode())
    written: list[Path] = []
    created_dir = not out_dir.exists()
    bar = progress(total=len(paths), desc="tokenizing")
    try:
        for s, name in enumerate(names):
            rows = range(s * int(shard_size), min(len(paths), (s + 1) * int(shard_size)))
            for r in rows:
                records[r]["shard"], records[r]["row"] = name, r - rows.start

            def chunks(rows: range = rows) -> Iterable[torch.Tensor]:
                for r in rows:
                    tensors, _ = load_safetensors(paths[r])
                    yield tokenize(tensors, layout, source=paths[r])
                    bar.update(1)

            shard_meta = {
                "kind": "token_shard",
                "shard": s,
                "first_checkpoint": rows.start,
                "num_rows": len(rows),
                # per row: the checkpoint's task vector (conditional zoos) or null, as in index.parquet
                "tasks": [records[r]["task"] for r in rows],
            }
            digests[name] = _write_token_shard(
                out_dir / name,
                chunks(),
                shape=(len(rows), layout.num_tokens, layout.token_size),
                dtype=dtype,
                metadata=shard_meta,
                hasher=hasher,
            )
            written.append(out_dir / name)
            fault_point("tokenize", s + 1)
        for name in sorted(reference):
            hasher.update(name.encode() + reference[name].reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        store_meta["content_hash"] = hasher.hexdigest()
        digests[REFERENCE_FILE] = save_safetensors(reference, out_dir / REFERENCE_FILE, store_meta)
        written.append(out_dir / REFERENCE_FILE)
        layout.save(out_dir / LAYOUT_FILE)
        written.append(out_dir / LAYOUT_FILE)
        _write_index(records, states, out_dir / INDEX_FILE)
        written.append(out_dir / INDEX_FILE)
        written.append(out_dir / DIGESTS_FILE)
        write_digests(out_dir, [*names, REFERENCE_FILE, LAYOUT_FILE, INDEX_FILE], known=digests)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        if created_dir and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise
    finally:
        bar.close()


def _entry_order(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: Path) -> list[str]:
    """The architecture's state_dict order (safetensors files do not keep it).

    From metadata ``state_dict_keys`` if present, else from the architecture built on the
    meta device (``rpg.zoo.models.build_model``), else the file's own order.
    """
    keys = meta.get("state_dict_keys")
    if isinstance(keys, list) and sorted(keys) == sorted(tensors):
        return [str(k) for k in keys]
    arch = meta.get("arch")
    if arch:
        try:
            with torch.device("meta"):
                names = list(build_model(arch, dict(meta.get("arch_kwargs") or {})).state_dict())
            if sorted(names) == sorted(tensors):
                return names
            log.warning("%s: keys differ from a fresh %r model; using the file's entry order", path, arch)
        except Exception as exc:  # unknown arch, zoo code absent, ...: order is a nicety
            log.warning("%s: cannot rebuild %r for its entry order (%s); using the file's order", path, arch, exc)
    else:
        log.warning("%s: no state_dict_keys/arch metadata; using the file's entry order", path)
    return list(tensors)


def _check_same_arch(meta: Mapping[str, Any], first: Mapping[str, Any], path: Path, first_path: Path) -> None:
    for key in ("arch", "arch_kwargs"):
        if meta.get(key) != first.get(key):
            raise RPGInputError(
                f"checkpoint of another architecture: {key} {meta.get(key)!r} differs from "
                f"{first.get(key)!r} of the zoo's first checkpoint {first_path}",
                path,
            )


def _index_record(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    def num(key: str, cast, default):
        value = meta.get(key)
        try:
            return default if value is None else cast(value)
        except (TypeError, ValueError) as exc:
            raise RPGInputError(f"metadata {key!r} is not a number: {value!r}", path) from exc

    task = meta.get("task")
    if task is not None:
        if not isinstance(task, list) or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in task):
            raise RPGInputError(f"metadata 'task' must be a list of numbers or null, got {task!r}", path)
        # binary task vectors stay ints; a continuous family's task vector holds floats (rpg.tasks.continuous)
        task = [int(b) if float(b).is_integer() else float(b) for b in task]
    if "run" not in meta:
        log.warning("%s: no 'run' in metadata; counted as run 0", path)
    return {
        "checkpoint": str(path),
        "run": num("run", int, 0),
        "step": num("step", int, -1),
        "val_accuracy": num("val_accuracy", float, float("nan")),
        "task": task,
    }


def _states(records: Sequence[Mapping[str, Any]], mode: str) -> tuple[list[int], int]:
    """Permutation state per checkpoint and the number of states."""
    if mode == "checkpoint":
        return list(range(len(records))), len(records)
    runs = sorted({r["run"] for r in records})
    rank = {run: i for i, run in enumerate(runs)}
    return [rank[r["run"]] for r in records], len(runs)


def _task_type(records: Sequence[Mapping[str, Any]]):
    """The task column's item type: int64 when every task vector is integral (binary tasks), else float64."""
    import pyarrow as pa

    tasks = [t for r in records if (t := r.get("task")) is not None]
    return pa.int64() if all(isinstance(b, int) for t in tasks for b in t) else pa.float64()


def _write_index(records: Sequence[Mapping[str, Any]], states: Sequence[int], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("checkpoint", pa.string()),
            ("shard", pa.string()),
            ("row", pa.int64()),
            ("run", pa.int64()),
            ("state", pa.int64()),
            ("step", pa.int64()),
            ("val_accuracy", pa.float64()),
            ("task", pa.list_(_task_type(records))),
        ]
    )
    columns = {c: [r.get(c) for r in records] for c in INDEX_COLUMNS}
    if schema.field("task").type.value_type == pa.float64():
        columns["task"] = [None if t is None else [float(b) for b in t] for t in columns["task"]]
    columns["state"] = list(states)
    table = pa.table(columns, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _write_token_shard(
    path: Path,
    chunks: Iterable[torch.Tensor],
    *,
    shape: tuple[int, int, int],
    dtype: str,
    metadata: dict,
    hasher: Any | None = None,
) -> str:
    """Stream [L, k] token matrices into one safetensors file with key ``tokens`` of ``shape`` (a shard never sits
    in memory whole); ``hasher`` also gets the bytes of every token. Returns the file's SHA-256."""
    torch_dtype, _ = SHARD_DTYPES[dtype]
    with SafetensorsStreamWriter(path, [("tokens", shape, torch_dtype)], metadata) as out:
        for chunk in chunks:
            if tuple(chunk.shape) != shape[1:]:
                raise ValueError(f"token matrix of shape {list(chunk.shape)}, expected {list(shape[1:])}")
            data = chunk.to(torch_dtype).contiguous()
            if hasher is not None:  # little-endian bytes, as in the file (the writer refuses other machines)
                hasher.update(memoryview(data.numpy()).cast("B"))
            out.write("tokens", data)
    return out.digest


class TokenStore:
    """Read access to a token directory written by :func:`write_token_store`.

    ``.tokens(rows)`` reads rows (0 .. len-1, in index order) from memory-mapped shards.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise RPGInputError("token directory does not exist", self.directory)
        for name in (LAYOUT_FILE, INDEX_FILE, REFERENCE_FILE):
            if not (self.directory / name).is_file():
                raise RPGInputError(f"incomplete token store: {name} is missing", self.directory)
        self._handles: dict[str, Any] = {}

    @cached_property
    def layout(self) -> Layout:
        verify_file(self.directory / LAYOUT_FILE)
        return Layout.load(self.directory / LAYOUT_FILE)

    @cached_property
    def index(self):
        """A row per checkpoint: checkpoint, shard, row (in shard), run, state, step, val_accuracy, task."""
        verify_file(self.directory / INDEX_FILE)
        df = read_table(self.directory / INDEX_FILE)
        missing = [c for c in INDEX_COLUMNS if c not in df.columns]
        if missing:
            raise RPGInputError(f"index lacks columns {missing}", self.directory / INDEX_FILE)
        return df

    @cached_property
    def meta(self) -> dict[str, Any]:
        """Store metadata: arch, arch_kwargs, num_classes, token_size, num_states, state, dtype, ..."""
        meta = read_safetensors_metadata(self.directory / REFERENCE_FILE)
        verify_file(self.directory / REFERENCE_FILE)  # the copied entries are read later, entry by entry
        return meta

    @cached_property
    def reference(self) -> dict[str, torch.Tensor]:
        """The copied (non-generated) entries, from the zoo's first checkpoint."""
        return load_safetensors(self.directory / REFERENCE_FILE)[0]

    @property
    def num_states(self) -> int:
        return int(self.meta["num_states"])

    @property
    def content_hash(self) -> str:
        """SHA-256 of the tokens, layout and index, written with the store (stores of older versions: "")."""
        return str(self.meta.get("content_hash", ""))

    def __len__(self) -> int:
        return len(self.index)

    @cached_property
    def _locations(self) -> tuple[list[str], np.ndarray]:
        shards = self.index["shard"].astype(str).tolist()
        for name in sorted(set(shards)):
            if not (self.directory / name).is_file():
                raise RPGInputError("token shard is missing (rerun tokenization)", self.directory / name)
        return shards, self.index["row"].to_numpy(dtype=np.int64)

    def _shard(self, name: str):
        handle = self._handles.get(name)
        if handle is None:
            from safetensors import safe_open

            path = self.directory / name
            if not path.is_file():
                raise RPGInputError("token shard is missing (rerun tokenization)", path)
            verify_file(path)  # once, streamed, before the shard is memory-mapped
            try:
                handle = safe_open(str(path), framework="pt")
                shape = tuple(handle.get_slice("tokens").get_shape())
            except Exception as exc:
                raise RPGInputError(f"unreadable token shard ({exc})", path) from exc
            if shape[1:] != (self.layout.num_tokens, self.layout.token_size):
                raise RPGInputError(f"shard tokens have shape {list(shape)}, the layout needs [n, L, k]", path)
            self._handles[name] = handle
        return handle

    def tokens(
        self, rows: Sequence[int] | torch.Tensor | np.ndarray, *, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Tokens [b, L, k] (NaN padding) of checkpoints ``rows`` (positions in ``index``)."""
        shards, in_shard = self._locations
        rows = [int(r) for r in (rows.tolist() if hasattr(rows, "tolist") else rows)]
        out = torch.empty((len(rows), self.layout.num_tokens, self.layout.token_size), dtype=dtype)
        for i, r in enumerate(rows):
            if not 0 <= r < len(shards):
                raise IndexError(f"row {r} out of range for a token store of {len(shards)} checkpoints")
            j = int(in_shard[r])
            out[i] = self._shard(shards[r]).get_slice("tokens")[j : j + 1][0]
        return out

    def checkpoint_state_dict(self, row: int) -> dict[str, torch.Tensor]:
        """The detokenized state_dict of checkpoint ``row`` (exact with float64 shards)."""
        return detokenize(self.tokens([row], dtype=torch.float64)[0], self.layout, self.reference)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: reopen shards lazily
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state
