"""The typed config layer: defaults filled, every value checked with its key path named, the schema in sync."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from rpg.config import ConfigError, GeneratorConfig, TrainConfig, deep_merge, resolve_config, result_dict
from rpg.config.schema import SCHEMA_FILE, generate_schema

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "config.yaml", *sorted((ROOT / "tests" / "configs").glob("*.yaml")),
           *sorted((ROOT / "configs").glob("*.yaml"))]  # fmt: skip


def minimal(**zoo):
    return {"experiments": {"e": {"data": {"name": "digits"}, "zoos": {"z": {"arch": "cnn_s", **zoo}}}}}


def with_block(block: str, **values):
    cfg = minimal()
    cfg["experiments"]["e"][block] = values
    return cfg


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    raw = yaml.safe_load(path.read_text())
    resolved = resolve_config(raw)
    assert resolved
    for zoos in resolved.values():
        for settings in zoos.values():
            assert settings.tokens.token_size >= 1
            assert settings.generate.num_models >= 1
    jsonschema.validate(raw, generate_schema())  # the generated schema accepts what the typed layer accepts


def test_defaults_filled():
    s = resolve_config(minimal())["e"]["z"]
    assert s.runs == 2 and s.collect.checkpoints == 50
    assert s.tokens.to_dict() == {"token_size": 64, "shard_size": 256, "state": "run", "dtype": "float64",
                                  "include": None, "exclude": []}  # fmt: skip
    assert s.generate.sampler == "ddim" and s.data.image_size == 8
    assert s.train.threads == 1 and s.generate.num_models == 10 and s.generate.steps == 60


def test_zoo_overrides_experiment_blocks():
    cfg = minimal(tokens={"token_size": 16})
    cfg["experiments"]["e"]["tokens"] = {"token_size": 32, "state": "checkpoint"}
    s = resolve_config(cfg)["e"]["z"]
    assert s.tokens.token_size == 16 and s.tokens.state == "checkpoint"


def test_generator_preset_then_overrides():
    g = GeneratorConfig.parse({"preset": "small", "dim": 64})
    assert g.dim == 64 and g.d_state == 128  # the preset's d_state, the override's dim
    assert GeneratorConfig.parse({}).dim == 256


@pytest.mark.parametrize(
    "cfg, key, needle",
    [
        (minimal(tokens={"state": "layer"}), "experiments.e.zoos.z.tokens.state", "allowed values: run, checkpoint"),
        (minimal(tokens={"bogus": 1}), "experiments.e.zoos.z.tokens.bogus", "unknown key"),
        (minimal(runs=0), "experiments.e.zoos.z.runs", "must be >= 1"),
        (
            minimal(collect={"optimizer": "lbfgs"}),
            "experiments.e.zoos.z.collect.optimizer",
            "allowed values: sgd, adamw",
        ),
        (minimal(generate={"sampler": "euler"}), "experiments.e.zoos.z.generate.sampler", "ddim"),
        # the train and generator blocks are typed like the others (strings, fractions, words are refused)
        (with_block("train", steps="20"), "experiments.e.train.steps", "must be an integer or one of 'auto', got '20'"),
        (with_block("train", steps=20.5), "experiments.e.train.steps", "must be an integer or one of 'auto', got 20.5"),
        (with_block("train", steps="many"), "experiments.e.train.steps", "must be an integer"),
        (with_block("train", lr="fast"), "experiments.e.train.lr", "must be a number or one of 'auto', got 'fast'"),
        (with_block("train", ema_decay=1.5), "experiments.e.train.ema_decay", "< 1"),
        (with_block("generator", dim="32"), "experiments.e.generator.dim", "an integer or one of 'auto', got '32'"),
        (with_block("generator", backbone="gru"), "experiments.e.generator.backbone", "mamba2, lstm, transformer"),
        (
            with_block("generator", denoiser_channels=[1, 4, 2, 1]),
            "experiments.e.generator.denoiser_channels",
            "symmetric",
        ),
        (with_block("evaluate", noise_levels=[0.01, -1]), "experiments.e.evaluate.noise_levels[1]", "> 0"),
        (with_block("evaluate", noise_models_per_level=0), "experiments.e.evaluate.noise_models_per_level", ">= 1"),
        (with_block("pdiff", kernel_size=4), "experiments.e.pdiff.kernel_size", "odd"),
        (with_block("generate", steps=0), "experiments.e.generate.steps", ">= 1"),
        (minimal(tasks={"seen": "some"}), "experiments.e.zoos.z.tasks.seen", "'all'"),
        (
            minimal(tasks={"evaluate": {"finetune_epochs": [0, -1]}}),
            "experiments.e.zoos.z.tasks.evaluate.finetune_epochs[1]",
            ">= 0",
        ),
        (minimal(arch=3), "experiments.e.zoos.z.arch", "must be a string"),
    ],
)
def test_bad_values_name_the_key(cfg, key, needle):
    with pytest.raises(ConfigError) as err:
        resolve_config(cfg)
    assert err.value.path == key and needle in str(err.value), str(err.value)


def test_scientific_notation_and_nulls():
    s = resolve_config(with_block("train", lr="3e-5", grad_clip=None))["e"]["z"]  # YAML 1.1 reads 3e-5 as text
    assert s.train.lr == 3e-5 and s.train.grad_clip is None
    assert resolve_config(with_block("generate", steps=None))["e"]["z"].generate.steps is None  # all T


def test_unknown_top_level_and_missing_root():
    with pytest.raises(ConfigError, match="extra"):
        resolve_config({**minimal(), "extra": 1})
    cfg = minimal()
    cfg["experiments"]["e"]["data"] = {"name": "imagefolder"}
    with pytest.raises(ConfigError, match="experiments.e.data.root"):
        resolve_config(cfg)


def test_experiment_seed_shifts_every_stage_seed():
    cfg = minimal()
    base = resolve_config(cfg)["e"]["z"]
    cfg["experiments"]["e"]["seed"] = 2
    shifted = resolve_config(cfg)["e"]["z"]
    for block in ("collect", "train", "generate", "evaluate", "pdiff"):
        assert getattr(shifted, block).seed != getattr(base, block).seed, block
    assert shifted.data.split_seed == base.data.split_seed  # the data split stays fixed


def test_result_dict_leaves_out_execution_settings():
    t = result_dict(TrainConfig.parse({"threads": 4, "log_every": 7, "save_every": 3, "nproc": 2, "gpus": 1}))
    assert not {"threads", "log_every", "save_every", "nproc", "gpus", "preload_max_mb"} & set(t)
    assert {"steps", "lr", "seed", "batch_size", "diffusion_batch"} <= set(t)


def test_shipped_schema_is_generated_from_the_blocks():
    assert json.loads(SCHEMA_FILE.read_text()) == generate_schema(), "run: python -m rpg.config.schema"
    schema = generate_schema()
    train = schema["$defs"]["TrainConfig"]["properties"]
    assert train["steps"]["anyOf"] == [{"type": "integer", "minimum": 1}, {"enum": ["auto"]}]
    assert train["steps"]["default"] == 2000
    assert train["threads"]["x-rerun"] is False  # execution settings are marked
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_block("train", steps="20"), schema)


def test_deep_merge_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    out = deep_merge(base, {"a": {"b": 3}})
    assert out == {"a": {"b": 3, "c": 2}} and base == {"a": {"b": 1, "c": 2}}
