"""Token layout: which state_dict entries are generated, how each is normalised, where its tokens lie.

A :class:`Layout` has one row per state_dict entry, in state_dict order. Floating-point
entries with more than one element are *generated*: each is one "layer", normalised with
a fixed per-layer (mean, std) averaged over the zoo, flattened, NaN-padded to a multiple
of the token size k and cut into ``ceil(numel / k)`` tokens. All other entries (integer
buffers, scalars) are copied from a reference checkpoint. BatchNorm ``running_var`` is
first mapped to ``log(v / c + 0.05)`` with ``c = 0.95 * mean(v)`` (docs/method.md).

Partial generation: ``include`` / ``exclude`` glob patterns over the entry names (``fnmatch``: ``*`` matches any
text, dots included; ``head.*``, ``*.bn*.running_*``) narrow the generated entries to those matching an include
pattern (all when ``include`` is None) and no exclude pattern. Entries left out behave like integer buffers: they
are copied from the reference checkpoint. A pattern that matches no entry is an error (a typo would otherwise
silently change what is generated).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from rpg.errors import RPGInputError
from rpg.io import atomic_path

log = logging.getLogger(__name__)

LOGVAR_OFFSET = 0.05  # v' = log(v / c + LOGVAR_OFFSET)
LOGVAR_SCALE_FACTOR = 0.95  # c = LOGVAR_SCALE_FACTOR * mean(v), averaged over the zoo
LOGVAR_MIN = 1e-3  # inverse: clip(exp(v') - LOGVAR_OFFSET, min=LOGVAR_MIN) * c
STD_EPS = 1e-12  # a zoo-averaged std below STD_EPS * max(1, |mean|) is replaced by 1.0
TRANSFORMS = ("none", "logvar")
_META_KEY = b"rpg"
_COLUMNS = [
    "name", "shape", "dtype", "numel", "generated", "layer_index", "mean", "std",
    "transform", "scale", "first_token", "num_tokens",
]  # fmt: skip


def is_generated(tensor: torch.Tensor) -> bool:
    """True for entries the generator produces: floating point with more than one element."""
    return tensor.is_floating_point() and tensor.numel() > 1


def select_entries(names: Sequence[str], include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> set[str]:
    """The names matching one of ``include`` (every name when None) and none of ``exclude`` (glob patterns).

    A pattern matching no name raises RPGInputError naming it.
    """
    for key, patterns in (("tokens.include", include or ()), ("tokens.exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise RPGInputError(
                    f"{key} pattern {pattern!r} matches no state_dict entry (entries: {_few(list(names))})"
                )
    chosen = {n for n in names if include is None or any(fnmatch.fnmatchcase(n, p) for p in include)}
    return {n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)}


RUNNING_STATS = ("running_mean", "running_var")


def transform_for(name: str) -> str:
    """'logvar' for BatchNorm running variances, 'none' otherwise."""
    return "logvar" if name.endswith("running_var") else "none"


def forward_transform(x: torch.Tensor, transform: str, scale: float) -> torch.Tensor:
    """Map raw float64 values into the space that is normalised (identity or log-variance)."""
    if transform == "logvar":
        return torch.log(x / scale + LOGVAR_OFFSET)
    return x


def inverse_transform(y: torch.Tensor, transform: str, scale: float) -> torch.Tensor:
    """Inverse of :func:`forward_transform` (running_var: clipped at ``LOGVAR_MIN * c``)."""
    if transform == "logvar":
        return torch.clamp(torch.exp(y) - LOGVAR_OFFSET, min=LOGVAR_MIN) * scale
    return y


def dtype_from_name(name: str) -> torch.dtype:
    """'float32' -> torch.float32 (names as written by ``str(dtype)`` without 'torch.')."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise RPGInputError(f"unknown dtype {name!r} in layout")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class LayerSpec:
    """One state_dict entry. Non-generated rows have layer_index -1, first_token -1, num_tokens 0."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    generated: bool
    layer_index: int
    mean: float
    std: float
    transform: str
    scale: float
    first_token: int
    num_tokens: int


@dataclass(frozen=True)
class Layout:
    """All state_dict entries in order plus the token geometry of the generated ones."""

    token_size: int
    layers: tuple[LayerSpec, ...]
    num_checkpoints: int = 0  # how many checkpoints the statistics were averaged over

    def __post_init__(self) -> None:
        if not isinstance(self.token_size, int) or self.token_size < 1:
            raise ValueError(f"token_size must be a positive integer, got {self.token_size!r}")
        next_token = 0
        for i, spec in enumerate(self.generated):
            if spec.layer_index != i or spec.first_token != next_token:
                raise ValueError(f"layout row {spec.name!r}: tokens are not contiguous")
            if spec.num_tokens != math.ceil(spec.numel / self.token_size):
                raise ValueError(f"layout row {spec.name!r}: wrong token count")
            if spec.transform not in TRANSFORMS:
                raise ValueError(f"layout row {spec.name!r}: unknown transform {spec.transform!r}")
            next_token += spec.num_tokens

    # --- geometry -------------------------------------------------------------------------
    @cached_property
    def generated(self) -> tuple[LayerSpec, ...]:
        """Rows of the generated entries (the token "layers"), in order."""
        return tuple(s for s in self.layers if s.generated)

    @cached_property
    def names(self) -> list[str]:
        return [s.name for s in self.layers]

    @property
    def num_layers(self) -> int:
        """Number of generated layers (the layer index runs over these)."""
        return len(self.generated)

    @cached_property
    def num_tokens(self) -> int:
        """L, the token sequence length."""
        return int(sum(s.num_tokens for s in self.generated))

    @cached_property
    def num_parameters(self) -> int:
        """Number of generated scalars (padding excluded)."""
        return int(sum(s.numel for s in self.generated))

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        counts = np.array([s.num_tokens for s in self.generated], dtype=np.int64)
        first = np.array([s.first_token for s in self.generated], dtype=np.int64)
        numel = np.array([s.numel for s in self.generated], dtype=np.int64)
        return counts, first, numel

    def positions(self) -> torch.Tensor:
        """LongTensor [L, 2]: (layer index among generated layers, token index within the layer)."""
        counts, first, _ = self._arrays
        layer = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        within = np.arange(self.num_tokens, dtype=np.int64) - np.repeat(first, counts)
        return torch.from_numpy(np.stack([layer, within], axis=1))

    def token_lengths(self) -> torch.Tensor:
        """LongTensor [L]: number of real (non-padding) entries of each token."""
        counts, first, numel = self._arrays
        within = np.arange(self.num_tokens, dtype=np.int64) - np.repeat(first, counts)
        lengths = np.minimum(self.token_size, np.repeat(numel, counts) - within * self.token_size)
        return torch.from_numpy(lengths)

    def token_mask(self) -> torch.Tensor:
        """BoolTensor [L, k]: True where an entry is real, False for NaN padding."""
        return torch.arange(self.token_size)[None, :] < self.token_lengths()[:, None]

    def running_stats_tokens(self) -> torch.Tensor:
        """BoolTensor [L]: True for the tokens of BatchNorm running statistics (running_mean, running_var)."""
        counts, _, _ = self._arrays
        is_stat = np.array([s.name.endswith(RUNNING_STATS) for s in self.generated], dtype=bool)
        return torch.from_numpy(np.repeat(is_stat, counts))

    # --- checks ---------------------------------------------------------------------------
    def check_state_dict(
        self,
        state_dict: Mapping[str, torch.Tensor],
        source: str | Path | None = None,
        *,
        generated_only: bool = False,
    ) -> None:
        """Raise RPGInputError (naming ``source``) if keys, shapes or dtypes differ from the layout."""
        specs = self.generated if generated_only else self.layers
        check_entries(state_dict, [(s.name, s.shape, s.dtype) for s in specs], source, exact=not generated_only)

    # --- I/O ------------------------------------------------------------------------------
    def to_frame(self):
        """A pandas DataFrame with one row per state_dict entry (columns as in layout.parquet)."""
        import pandas as pd

        rows = [{c: getattr(s, c) for c in _COLUMNS} for s in self.layers]
        df = pd.DataFrame(rows, columns=_COLUMNS)
        df["shape"] = [list(s.shape) for s in self.layers]
        return df

    @classmethod
    def from_frame(cls, df, *, token_size: int, num_checkpoints: int = 0) -> Layout:
        missing = [c for c in _COLUMNS if c not in df.columns]
        if missing:
            raise RPGInputError(f"layout table lacks columns {missing}")
        cols = {c: df[c].tolist() for c in _COLUMNS}
        layers = tuple(
            LayerSpec(
                name=str(cols["name"][i]),
                shape=tuple(int(d) for d in cols["shape"][i]),
                dtype=str(cols["dtype"][i]),
                numel=int(cols["numel"][i]),
                generated=bool(cols["generated"][i]),
                layer_index=int(cols["layer_index"][i]),
                mean=float(cols["mean"][i]),
                std=float(cols["std"][i]),
                transform=str(cols["transform"][i]),
                scale=float(cols["scale"][i]),
                first_token=int(cols["first_token"][i]),
                num_tokens=int(cols["num_tokens"][i]),
            )
            for i in range(len(df))
        )
        return cls(token_size=int(token_size), layers=layers, num_checkpoints=int(num_checkpoints))

    def save(self, path: str | Path) -> None:
        """Write layout.parquet (token_size etc. in the Parquet schema metadata)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        meta = {
            "token_size": self.token_size,
            "num_checkpoints": self.num_checkpoints,
            "num_tokens": self.num_tokens,
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

    @classmethod
    def load(cls, path: str | Path) -> Layout:
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise RPGInputError("layout file does not exist", path)
        try:
            table = pq.read_table(path)
            meta = json.loads((table.schema.metadata or {})[_META_KEY])
            return cls.from_frame(
                table.to_pandas(),
                token_size=meta["token_size"],
                num_checkpoints=meta.get("num_checkpoints", 0),
            )
        except RPGInputError as exc:
            raise RPGInputError(exc.problem, path) from exc
        except Exception as exc:
            raise RPGInputError(f"unreadable layout ({type(exc).__name__}: {exc})", path) from exc


def check_entries(
    state_dict: Mapping[str, torch.Tensor],
    expected: Sequence[tuple[str, tuple[int, ...], str]],
    source: str | Path | None = None,
    *,
    exact: bool = True,
) -> None:
    """Raise RPGInputError unless ``state_dict`` holds exactly (or, exact=False, at least) ``expected``."""
    names = {n for n, _, _ in expected}
    missing = [n for n, _, _ in expected if n not in state_dict]
    extra = [n for n in state_dict if n not in names] if exact else []
    if missing or extra:
        raise RPGInputError(
            f"state_dict keys differ from the zoo's: missing {_few(missing)}, unexpected {_few(extra)}",
            source,
        )
    for name, shape, dtype in expected:
        t = state_dict[name]
        if tuple(t.shape) != tuple(shape):
            raise RPGInputError(f"entry {name!r} has shape {list(t.shape)}, the zoo's is {list(shape)}", source)
        if dtype_name(t.dtype) != dtype:
            raise RPGInputError(f"entry {name!r} has dtype {dtype_name(t.dtype)}, the zoo's is {dtype}", source)


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}]" if names else "none"


class LayoutBuilder:
    """Streaming statistics: ``add`` one state_dict (checkpoint) at a time, then ``finish``.

    Mean and std of every generated layer are computed per checkpoint (float64) and averaged
    over the zoo. For running_var layers the raw values are kept (they are small: one value
    per channel) until the zoo-wide scale c is known.
    """

    def __init__(
        self,
        *,
        token_size: int,
        order: Sequence[str] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        if not isinstance(token_size, int) or isinstance(token_size, bool) or token_size < 1:
            raise RPGInputError(f"token_size must be a positive integer, got {token_size!r}")
        self.token_size = token_size
        self._order = list(order) if order is not None else None
        self._include = None if include is None else list(include)
        self._exclude = list(exclude)
        self._entries: list[tuple[str, tuple[int, ...], str, bool]] | None = None
        self._sum_mean: dict[str, float] = {}
        self._sum_std: dict[str, float] = {}
        self._logvar_values: dict[str, list[torch.Tensor]] = {}
        self.num_checkpoints = 0

    def add(self, state_dict: Mapping[str, torch.Tensor], source: str | Path | None = None) -> None:
        """Check ``state_dict`` against the first one and accumulate its per-layer statistics."""
        if self._entries is None:
            order = self._order if self._order is not None else list(state_dict)
            if sorted(order) != sorted(state_dict):
                raise RPGInputError("state_dict keys do not match the given entry order", source)
            try:
                selected = select_entries(order, self._include, self._exclude)
            except RPGInputError as exc:
                raise RPGInputError(exc.problem, source) from None
            self._entries = [
                (n, tuple(state_dict[n].shape), dtype_name(state_dict[n].dtype),
                 is_generated(state_dict[n]) and n in selected)
                for n in order
            ]  # fmt: skip
            if not any(g for *_, g in self._entries):
                raise RPGInputError("no entry to generate: tokens.include/exclude leave no floating-point entry with "
                                    "more than one element", source)  # fmt: skip
        else:
            check_entries(state_dict, [(n, s, d) for n, s, d, _ in self._entries], source)
        for name, _, _, generated in self._entries:
            if not generated:
                continue
            x = state_dict[name].detach().reshape(-1).to(device="cpu", dtype=torch.float64)
            if not bool(torch.isfinite(x).all()):
                raise RPGInputError(f"entry {name!r} holds NaN or infinite values", source)
            if transform_for(name) == "logvar":
                if bool((x < 0).any()):
                    raise RPGInputError(f"entry {name!r} (a running variance) has negative values", source)
                self._sum_mean[name] = self._sum_mean.get(name, 0.0) + float(x.mean())
                self._logvar_values.setdefault(name, []).append(x.clone())
            else:
                std, mean = torch.std_mean(x)
                self._sum_mean[name] = self._sum_mean.get(name, 0.0) + float(mean)
                self._sum_std[name] = self._sum_std.get(name, 0.0) + float(std)
        self.num_checkpoints += 1

    def generates(self, name: str) -> bool:
        """Whether entry ``name`` is generated (known after the first :meth:`add`)."""
        if self._entries is None:
            raise RuntimeError("no state_dict added yet")
        return any(n == name and g for n, _, _, g in self._entries)

    def finish(self) -> Layout:
        """The Layout with zoo-averaged statistics."""
        if self._entries is None:
            raise RPGInputError("empty zoo: no state_dicts to build a layout from")
        n = self.num_checkpoints
        k = self.token_size
        layers: list[LayerSpec] = []
        first_token = 0
        layer_index = 0
        for name, shape, dtype, generated in self._entries:
            numel = math.prod(shape)
            if not generated:
                layers.append(LayerSpec(name, shape, dtype, numel, False, -1, 0.0, 1.0, "none", 1.0, -1, 0))
                continue
            transform = transform_for(name)
            scale = 1.0
            if transform == "logvar":
                scale = LOGVAR_SCALE_FACTOR * self._sum_mean[name] / n
                if not (math.isfinite(scale) and scale > 0):
                    scale = 1.0
                sum_mean = sum_std = 0.0
                clipped = sum(int((x < LOGVAR_MIN * scale).sum()) for x in self._logvar_values[name])
                if clipped:
                    log.warning(
                        "%s: %d values below %g * c are raised to that floor on detokenization",
                        name,
                        clipped,
                        LOGVAR_MIN,
                    )
                for x in self._logvar_values[name]:
                    std, mean = torch.std_mean(forward_transform(x, transform, scale))
                    sum_mean, sum_std = sum_mean + float(mean), sum_std + float(std)
                mean, std = sum_mean / n, sum_std / n
            else:
                mean, std = self._sum_mean[name] / n, self._sum_std[name] / n
            if not (math.isfinite(std) and std >= STD_EPS * max(1.0, abs(mean))):
                std = 1.0
            num_tokens = math.ceil(numel / k)
            layers.append(
                LayerSpec(
                    name,
                    shape,
                    dtype,
                    numel,
                    True,
                    layer_index,
                    mean,
                    std,
                    transform,
                    scale,
                    first_token,
                    num_tokens,
                )
            )
            first_token += num_tokens
            layer_index += 1
        self._logvar_values.clear()
        return Layout(token_size=k, layers=tuple(layers), num_checkpoints=n)


def build_layout(
    state_dicts: Iterable[Mapping[str, torch.Tensor]],
    *,
    token_size: int,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> Layout:
    """Layout of a zoo given as state_dicts (consumed once, one at a time); order = first dict's order;
    ``include``/``exclude``: partial generation (module docstring)."""
    builder = LayoutBuilder(token_size=token_size, include=include, exclude=exclude)
    for sd in state_dicts:
        builder.add(sd)
    return builder.finish()
