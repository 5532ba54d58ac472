"""Configuration: validation against the JSON schema, defaults, and per-zoo resolution.

The workflow's schema (workflow/schemas/config.schema.yaml) is the single source of defaults. An experiment's
``tokens``/``generator``/``train``/``generate``/``evaluate``/``pdiff`` blocks apply to all its zoos; a zoo may override
keys of any of them. :func:`resolve_config` returns, for every (experiment, zoo), one flat, fully-defaulted dict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

STAGE_BLOCKS = ("tokens", "generator", "train", "generate", "evaluate", "pdiff")
DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is wrong; the message names the key and, where known, the allowed values."""


def typed_config(cls, cfg: Mapping[str, Any] | Any | None, block: str):
    """An instance of the dataclass ``cls`` from a plain dict (or ``cfg`` itself if already one).

    Unknown keys raise ValueError naming the ``block`` and the known keys.
    """
    import dataclasses

    if isinstance(cfg, cls):
        return cfg
    cfg = dict(cfg or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown {block} config keys {unknown}; known keys: {sorted(known)}")
    return cls(**cfg)


def load_schema(path: str | Path = DEFAULT_SCHEMA) -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def _validator(schema: dict):
    import jsonschema

    base = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(name, copy.deepcopy(prop["default"]))
        yield from base.VALIDATORS["properties"](validator, properties, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def _check(instance: Any, schema: dict, root: dict, where: str) -> None:
    """Validate ``instance`` (filling defaults in place) against ``schema`` resolved within ``root``."""
    full = dict(schema)
    full["$defs"] = root.get("$defs", {})
    errors = sorted(_validator(full).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("\n".join(_describe(e, where) for e in errors))


def _describe(error, where: str) -> str:
    key = ".".join([where, *map(str, error.absolute_path)]).strip(".") or "<root>"
    msg = f"config key '{key}': {error.message}"
    if error.validator == "enum":
        msg += f" (allowed values: {', '.join(map(str, error.validator_value))})"
    return msg


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A copy of ``base`` with ``override`` merged in recursively (override wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate_config(config: Mapping, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """A validated, defaulted copy of ``config``; raises ConfigError naming the offending key."""
    schema = load_schema(schema_path)
    cfg = copy.deepcopy(dict(config))
    _check(cfg, schema, schema, "")
    for exp_name, exp in cfg["experiments"].items():
        data = exp["data"]
        if data["name"] == "imagefolder" and not data.get("root"):
            raise ConfigError(f"config key 'experiments.{exp_name}.data.root': required for imagefolder data")
    return cfg


def _typed(settings: dict, where: str) -> None:
    """Check the generator/train/generate blocks against their typed configs and fill every default."""
    import dataclasses

    from rpg.generate import generate_config
    from rpg.generator.presets import generator_config
    from rpg.pdiff.model import pdiff_config
    from rpg.train import train_config

    typed = (("generator", generator_config), ("train", train_config), ("generate", generate_config),
             ("pdiff", pdiff_config))  # fmt: skip
    for block, build in typed:
        try:
            settings[block] = dataclasses.asdict(build(settings[block]))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config key '{where}.{block}': {exc}") from exc


def resolve_config(config: Mapping, schema_path: str | Path = DEFAULT_SCHEMA) -> dict[str, dict[str, dict]]:
    """{experiment: {zoo: settings}} with experiment blocks merged into each zoo, all defaults filled."""
    schema = load_schema(schema_path)
    cfg = validate_config(config, schema_path)
    resolved: dict[str, dict[str, dict]] = {}
    for exp_name, exp in cfg["experiments"].items():
        resolved[exp_name] = {}
        for zoo_name, zoo in exp["zoos"].items():
            zoo = dict(zoo)
            settings = {
                "experiment": exp_name,
                "zoo": zoo_name,
                "device": exp["device"],
                "data": exp["data"],
            }
            for block in STAGE_BLOCKS:
                merged = deep_merge(exp[block], zoo.pop(block, None) or {})
                where = f"experiments.{exp_name}.zoos.{zoo_name}.{block}"
                _check(merged, {"$ref": f"#/$defs/{block}"}, schema, where)
                settings[block] = merged
            _typed(settings, f"experiments.{exp_name}.zoos.{zoo_name}")
            settings.update(zoo)
            resolved[exp_name][zoo_name] = settings
    return resolved
