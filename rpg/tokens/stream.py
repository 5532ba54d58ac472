"""Streaming detokenization: token chunks -> a safetensors state_dict file, without the whole model in memory.

:func:`write_streamed_state_dict` takes the tokens of one model as consecutive chunks ``(first token, [n, k])``
(e.g. from :meth:`rpg.generator.model.RPGModel.sample_chunks`), un-normalises each chunk and writes the finished
pieces of every layer straight into the output file (:class:`rpg.io.SafetensorsStreamWriter`: header first from
the layout's shapes and dtypes). The copied (non-generated) entries are read one at a time from the reference.
Memory holds one chunk of tokens, never the [L, k] tokens or the state_dict of the model. The values are
bit-identical to :func:`rpg.tokens.tokenizer.detokenize` (the same float64 operations, element by element) and
the file is byte-identical to ``save_safetensors(detokenize(...))``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from rpg.errors import RPGInputError
from rpg.io import SafetensorsStreamWriter
from rpg.tokens.layout import LayerSpec, Layout, dtype_from_name, dtype_name, inverse_transform
from rpg.tokens.tokenizer import _ZERO_SNAP


def denormalize(values: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
    """Normalised values of (a piece of) layer ``spec`` -> raw values in the layer's dtype.

    Element-wise and identical to :func:`rpg.tokens.tokenizer.detokenize`: scale and shift in float64, snap
    values within float64 resolution of zero to 0, invert the layer's transform, cast.
    """
    y = values.to(torch.float64, copy=True).mul_(spec.std).add_(spec.mean)
    if spec.transform == "none" and spec.mean != 0.0:
        y.masked_fill_(y.abs() <= _ZERO_SNAP * abs(spec.mean), 0.0)
    return inverse_transform(y, spec.transform, spec.scale).to(dtype_from_name(spec.dtype))


class _PieceSplitter:
    """Push-style splitting of consecutive token chunks into (layer, normalised values) pieces, padding cropped."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.next_token, self.layer = 0, 0

    def push(self, start: int, tokens: torch.Tensor) -> Iterator[tuple[LayerSpec, torch.Tensor]]:
        layout, k = self.layout, self.layout.token_size
        if start != self.next_token:
            raise ValueError(f"token chunks must be consecutive: expected token {self.next_token}, got {start}")
        if tokens.ndim != 2 or tokens.shape[1] != k or start + tokens.shape[0] > layout.num_tokens:
            raise ValueError(
                f"chunk at token {start} has shape {list(tokens.shape)}; the layout has [{layout.num_tokens}, {k}]"
            )
        flat = tokens.reshape(-1)
        t, stop = start, start + tokens.shape[0]
        while t < stop:
            spec = layout.generated[self.layer]
            layer_stop = spec.first_token + spec.num_tokens
            t_end = min(stop, layer_stop)
            first = (t - spec.first_token) * k
            count = min(spec.numel, (t_end - spec.first_token) * k) - first
            yield spec, flat[(t - start) * k : (t - start) * k + count]
            t = t_end
            self.layer += t == layer_stop
        self.next_token = stop

    def finish(self) -> None:
        if self.next_token != self.layout.num_tokens:
            raise ValueError(f"token chunks stopped at token {self.next_token} of {self.layout.num_tokens}")


def layer_pieces(
    chunks: Iterable[tuple[int, torch.Tensor]], layout: Layout
) -> Iterator[tuple[LayerSpec, torch.Tensor]]:
    """Split consecutive token chunks into (layer, normalised values) pieces, padding cropped, in order.

    ``chunks`` must cover tokens 0..L-1 in order without gaps: (first token index, tokens [n, k]).
    """
    splitter = _PieceSplitter(layout)
    for start, tokens in chunks:
        yield from splitter.push(start, tokens)
    splitter.finish()


class StreamedStateDict:
    """Push-style :func:`write_streamed_state_dict`: open with ``with``, ``write(start, tokens)`` every chunk.

    Several can be open at once (batched generation writes one file per model of the batch). The copied entries
    are written when the block opens; the file appears atomically when it closes after the last token, and any
    error (or missing tokens) leaves no file.
    """

    def __init__(
        self,
        path: str | Path,
        layout: Layout,
        reference: Mapping[str, torch.Tensor],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.layout, self.reference = layout, reference
        entries = [(s.name, s.shape, dtype_from_name(s.dtype)) for s in layout.layers]
        self._out = SafetensorsStreamWriter(path, entries, metadata)
        self._splitter = _PieceSplitter(layout)

    def __enter__(self) -> StreamedStateDict:
        self._out.__enter__()
        try:
            for spec in self.layout.layers:
                if not spec.generated:
                    self._out.write(spec.name, _reference_entry(self.reference, spec))
        except BaseException as exc:
            self._out.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, start: int, tokens: torch.Tensor) -> None:
        """Tokens ``start:start + n`` ([n, k], normalised, NaN at padding) of the model."""
        for spec, values in self._splitter.push(start, tokens):
            self._out.write(spec.name, denormalize(values, spec))

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._splitter.finish()
            except ValueError as err:
                self._out.__exit__(type(err), err, err.__traceback__)
                raise
        self._out.__exit__(exc_type, exc, tb)


def write_streamed_state_dict(
    path: str | Path,
    chunks: Iterable[tuple[int, torch.Tensor]],
    layout: Layout,
    reference: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write the state_dict of token ``chunks`` (see :func:`layer_pieces`) to ``path`` as it is produced.

    ``reference`` gives the copied (non-generated) entries; it is read entry by entry (a lazy mapping such as
    :class:`LazyTensors` keeps them on disk until written). The file appears atomically when complete; any
    error (bad chunk, non-finite values raised by the producer, ...) leaves no file.
    """
    with StreamedStateDict(path, layout, reference, metadata) as out:
        for start, tokens in chunks:
            out.write(start, tokens)


def _reference_entry(reference: Mapping[str, torch.Tensor], spec: LayerSpec) -> torch.Tensor:
    try:
        ref = reference[spec.name]
    except KeyError:
        raise RPGInputError(f"reference lacks the copied (non-generated) entry {spec.name!r}") from None
    if tuple(ref.shape) != spec.shape or dtype_name(ref.dtype) != spec.dtype:
        raise RPGInputError(f"reference entry {spec.name!r} does not match the layout's shape/dtype")
    return ref


class LazyTensors(Mapping):
    """Read-only mapping over the tensors of a safetensors file, each read from disk when it is asked for."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise RPGInputError("file does not exist", self.path)
        try:
            with safe_open(str(self.path), framework="pt") as f:
                self._keys = list(f.keys())
        except Exception as exc:
            raise RPGInputError(f"not a readable safetensors file ({exc})", self.path) from exc

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        if name not in self._keys:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
