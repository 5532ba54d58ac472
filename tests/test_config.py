"""Config validation: defaults filled, unknown keys and wrong values rejected with the key named."""

from pathlib import Path

import pytest
import yaml

from rpg.config import ConfigError, deep_merge, resolve_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def minimal(**zoo):
    return {"experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": {"arch": "cnn_s", **zoo}}}}}


@pytest.mark.parametrize("path", [ROOT / "config.yaml", ROOT / "tests" / "config_tiny.yaml", *sorted((ROOT / "configs").glob("*.yaml"))])
def test_shipped_configs_validate(path):
    resolved = resolve_config(yaml.safe_load(path.read_text()), SCHEMA)
    assert resolved
    for zoos in resolved.values():
        for settings in zoos.values():
            assert settings["tokens"]["token_size"] >= 1
            assert settings["generate"]["num_models"] >= 1


def test_defaults_filled():
    s = resolve_config(minimal(), SCHEMA)["e"]["z"]
    assert s["runs"] == 2 and s["collect"]["checkpoints"] == 50
    assert s["tokens"] == {"token_size": 64, "shard_size": 256, "state": "run", "dtype": "float64"}
    assert s["generate"]["sampler"] == "ddim" and s["data"]["image_size"] == 8


def test_zoo_overrides_experiment_blocks():
    cfg = minimal(tokens={"token_size": 16})
    cfg["experiments"]["e"]["tokens"] = {"token_size": 32, "state": "checkpoint"}
    s = resolve_config(cfg, SCHEMA)["e"]["z"]
    assert s["tokens"]["token_size"] == 16 and s["tokens"]["state"] == "checkpoint"


@pytest.mark.parametrize(
    "cfg, key, needle",
    [
        (minimal(tokens={"state": "layer"}), "experiments.e.zoos.z.tokens.state", "allowed values: run, checkpoint"),
        (minimal(tokens={"bogus": 1}), "experiments.e.zoos.z.tokens", "'bogus' was unexpected"),
        (minimal(runs=0), "experiments.e.zoos.z.runs", "minimum"),
        (minimal(collect={"optimizer": "lbfgs"}), "experiments.e.zoos.z.collect.optimizer", "allowed values: sgd, adamw"),
        (minimal(generate={"sampler": "euler"}), "experiments.e.zoos.z.generate.sampler", "ddim"),
    ],
)
def test_bad_values_name_the_key(cfg, key, needle):
    with pytest.raises(ConfigError) as err:
        resolve_config(cfg, SCHEMA)
    assert key in str(err.value) and needle in str(err.value)


def test_unknown_top_level_and_missing_root():
    with pytest.raises(ConfigError, match="'extra' was unexpected"):
        validate_config({**minimal(), "extra": 1}, SCHEMA)
    cfg = minimal()
    cfg["experiments"]["e"]["data"] = {"name": "imagefolder"}
    with pytest.raises(ConfigError, match="experiments.e.data.root"):
        validate_config(cfg, SCHEMA)


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    out = deep_merge(base, {"a": {"b": 3}})
    assert out == {"a": {"b": 3, "c": 2}} and base == {"a": {"b": 1, "c": 2}}
