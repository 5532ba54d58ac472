"""Typed configuration blocks: the one home of every default and value check.

A block is a dataclass deriving from :class:`Block` whose fields are declared with :func:`option` (default,
bounds or choices, a description, and whether the value changes a stage's result). :meth:`Block.parse` turns a
plain mapping (read from YAML) into a block and checks every value against its field's annotation and bounds;
any problem raises :class:`ConfigError` naming the full key path, the bad value and what is allowed.

``result=False`` marks execution settings (threads, devices, log intervals, batch sizes of evaluation): they
never reach a rule's ``params``, so changing them never reruns finished work (:func:`result_dict`).
The JSON schema of the configuration is generated from the same declarations (:func:`json_schema`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal, TypeVar

B = TypeVar("B", bound="Block")
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")  # YAML 1.1 reads 3e-5 as text


class ConfigError(ValueError):
    """A config value is wrong. ``path`` is the full key path (``experiments.digits.train.lr``)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"config key '{path}': {problem}")


def option(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    doc: str = "",
    result: bool = True,
    neutral: Any = dataclasses.MISSING,
    min: float | None = None,  # noqa: A002 (names as in JSON schema)
    max: float | None = None,  # noqa: A002
    gt: float | None = None,
    items_min: float | None = None,
    items_max: float | None = None,
    items_gt: float | None = None,
    ref: type[Block] | None = None,
) -> Any:
    """A dataclass field with the metadata the checks, the schema and the rerun logic read.

    ``min``/``max`` are inclusive bounds, ``gt`` an exclusive lower bound; ``items_*`` bound every item of a list.
    ``result=False``: an execution setting that does not change the outputs (no rerun when it changes).
    ``neutral``: the value at which a result setting does nothing (what the code did before the option existed); it
    is left out of the params at that value, so that adding the option reruns no finished job.
    ``ref``: a block whose keys a plain mapping field takes (overrides merged before checking); for the schema.
    """
    meta = {"doc": doc, "result": result, "neutral": neutral, "min": min, "max": max, "gt": gt,
            "items_min": items_min, "items_max": items_max, "items_gt": items_gt, "ref": ref}  # fmt: skip
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Block:
    """Base of the typed config blocks (dataclasses). Subclasses may override :meth:`defaults_for` and
    :meth:`problems`."""

    doc: ClassVar[str] = ""

    @classmethod
    def defaults_for(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults that depend on other keys of ``data`` (e.g. a size preset); they override the fields' own."""
        return {}

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, problem) pairs for rules that involve several fields; none by default."""
        return iter(())

    def inactive_keys(self) -> set[str]:
        """Result settings that do nothing given the block's other values (e.g. validation settings while
        validation is off): :func:`result_dict` leaves them out, so adding or changing them reruns nothing."""
        return set()

    @classmethod
    def parse(cls: type[B], data: Mapping[str, Any] | B | None = None, path: str = "") -> B:
        """The block from a plain mapping (or the block itself), every value checked; raises ConfigError."""
        if isinstance(data, cls):
            return data
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or cls.__name__, f"must be a mapping of keys to values, got {_show(data)}")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(_join(path, str(unknown[0])), f"unknown key; allowed keys: {', '.join(sorted(fields))}")
        hints = typing.get_type_hints(cls)
        values = {**cls.defaults_for(data), **data}
        kwargs = {}
        for name, f in fields.items():
            where = _join(path, name)
            if name not in values:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ConfigError(where, "required key is missing")
                continue
            value = _convert(values[name], hints[name], where)
            _check_bounds(value, f.metadata, where)
            kwargs[name] = value
        block = cls(**kwargs)
        for key, problem in block.problems():
            raise ConfigError(_join(path, key), problem)
        return block

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain data (nested blocks as dicts)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: B, **changes: Any) -> B:
        """A copy with ``changes``, checked like :meth:`parse`."""
        return type(self).parse({**self.to_dict(), **changes})


def result_dict(block: Block) -> dict[str, Any]:
    """The fields of ``block`` that change a result (nested blocks recursively): what goes into a rule's params."""
    out = {}
    inactive = block.inactive_keys()
    for f in dataclasses.fields(block):  # type: ignore[arg-type]
        if not f.metadata.get("result", True) or f.name in inactive:
            continue
        value = getattr(block, f.name)
        if f.metadata.get("neutral", dataclasses.MISSING) is not dataclasses.MISSING and value == f.metadata["neutral"]:
            continue
        out[f.name] = result_dict(value) if isinstance(value, Block) else canonical(value)
    return out


def canonical(value: Any) -> Any:
    """``value`` as canonical plain data, as rule params need it (Snakemake compares their ``repr``): a free-form
    mapping (``arch_kwargs``, a mapping written in the config) with its keys sorted, at every depth; tuples as lists;
    a block as a mapping in the order of its fields (fixed by the code, not by how the config is written).

    Numbers are normalised where they are read: a float option holds a float (:func:`_convert` reads ``2`` as
    ``2.0``); values of free-form mappings stay as written (``2`` and ``2.0`` may mean different things to the
    function that gets them)."""
    if isinstance(value, Block):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _describe(tp: Any) -> str:
    """A short human description of an annotation, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, Block):
        return f"a mapping ({tp.__name__})"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against annotation ``tp`` (and converted: integral floats to int, '3e-5' to float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(where, f"must be {_describe(tp)}, got null")
        errors = []
        for option_tp in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option_tp, where)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(where, f"must be {_describe(tp)}, got {_show(value)}")
    if value is None:
        raise ConfigError(where, f"must be {_describe(tp)}, got null")
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(where, f"got {_show(value)}; allowed values: {', '.join(map(str, args))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(where, f"must be true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(where, f"must be an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            return float(value)
        raise ConfigError(where, f"must be a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(where, f"must be a string, got {_show(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"must be {_describe(tp)}, got {_show(value)}")
        item = args[0] if args else Any
        return [v if item is Any else _convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(where, f"must be a mapping, got {_show(value)}")
        if len(args) == 2 and args[1] is not Any:
            return {k: _convert(v, args[1], _join(where, str(k))) for k, v in value.items()}
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Block):
        return tp.parse(value, where)
    if tp is Any:
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r}")


def _check_bounds(value: Any, meta: Mapping[str, Any], where: str) -> None:
    def check(v: Any, lo: float | None, hi: float | None, gt: float | None, at: str) -> None:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return
        if lo is not None and v < lo:
            raise ConfigError(at, f"must be >= {lo:g}, got {v!r}")
        if hi is not None and v > hi:
            raise ConfigError(at, f"must be <= {hi:g}, got {v!r}")
        if gt is not None and not v > gt:
            raise ConfigError(at, f"must be > {gt:g}, got {v!r}")

    check(value, meta.get("min"), meta.get("max"), meta.get("gt"), where)
    if isinstance(value, list):
        for i, v in enumerate(value):
            check(v, meta.get("items_min"), meta.get("items_max"), meta.get("items_gt"), f"{where}[{i}]")


# --- JSON schema ------------------------------------------------------------------------------------------------


def json_schema(root: type[Block], *, title: str = "") -> dict[str, Any]:
    """A JSON schema (draft 2020-12) of ``root`` and every block it contains, from the same declarations."""
    defs: dict[str, Any] = {}
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_block_schema(root, defs)}
    if title:
        schema["title"] = title
    schema["$defs"] = dict(sorted(defs.items()))
    return schema


def _block_schema(cls: type[Block], defs: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = f.metadata
        if meta.get("ref") is not None:  # a partial block: its keys, checked after merging
            prop = {"anyOf": [_type_schema(meta["ref"], defs), {"type": "null"}]}
        else:
            prop = _type_schema(hints[f.name], defs)
        if meta.get("doc"):
            prop["description"] = meta["doc"]
        for key, name in (("min", "minimum"), ("max", "maximum"), ("gt", "exclusiveMinimum")):
            if meta.get(key) is not None:
                _numeric(prop)[name] = meta[key]
        for key, name in (("items_min", "minimum"), ("items_max", "maximum"), ("items_gt", "exclusiveMinimum")):
            if meta.get(key) is not None:
                _numeric(prop.setdefault("items", {}))[name] = meta[key]
        if f.default is not dataclasses.MISSING:
            prop["default"] = canonical(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = canonical(f.default_factory())
        else:
            required.append(f.name)
        if not meta.get("result", True):
            prop["x-rerun"] = False
        props[f.name] = prop
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if cls.doc:
        out["description"] = cls.doc
    if required:
        out["required"] = required
    return out


def _numeric(prop: dict[str, Any]) -> dict[str, Any]:
    """Where bounds go: the property itself, or its numeric branch inside anyOf."""
    for branch in prop.get("anyOf", []):
        if branch.get("type") in ("integer", "number"):
            return branch
    return prop


def _type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return {"type": "null"}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a, defs) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0], defs) if args and args[0] is not Any else {}}
    if origin is dict or tp is dict:
        if len(args) == 2 and args[1] is not Any:
            return {"type": "object", "additionalProperties": _type_schema(args[1], defs)}
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, Block):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placeholder against recursion
            defs[tp.__name__] = _block_schema(tp, defs)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {int: "integer", float: "number", bool: "boolean", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON schema for annotation {tp!r}")
