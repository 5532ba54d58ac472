"""The whole configuration: experiments of zoos, and the resolved settings of every (experiment, zoo).

An experiment's ``tokens``/``generator``/``train``/``generate``/``evaluate``/``pdiff`` blocks apply to all its zoos; a
zoo may override any of their keys in a block of the same name. :func:`resolve_config` merges them and returns, for
every (experiment, zoo), one typed :class:`ZooSettings`; the experiment's ``seed`` shifts the seed of every stage,
so that one key reruns the whole pipeline with new randomness.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rpg.config.blocks import (
    ADAPTER_ARCH,
    AdapterConfig,
    CollectConfig,
    DataConfig,
    EvaluateConfig,
    GenerateConfig,
    GeneratorConfig,
    PDiffConfig,
    SourceConfig,
    TasksConfig,
    TokensConfig,
    TrainConfig,
)
from rpg.config.typed import Block, ConfigError, option

STAGE_BLOCKS = {
    "tokens": TokensConfig,
    "generator": GeneratorConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "pdiff": PDiffConfig,
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?|mps)$")
SEED_STRIDE = 10_007  # experiment seed s adds s * SEED_STRIDE to the seed of every stage


def _override(block: str) -> Any:
    return option(None, ref=STAGE_BLOCKS[block], doc=f"overrides of the experiment's {block} block (same keys)")


@dataclass
class ZooConfig(Block):
    doc = "A zoo: one architecture, its checkpoint collection, and overrides of the experiment's stage blocks."

    arch: str | None = option(None, doc="builtin (cnn_s, cnn_m) or a timm model name; adapter zoos: leave out")
    arch_kwargs: dict = option(factory=dict, doc="keyword arguments of the architecture (timm: create_model)")
    init: str = option("random", doc="random, or a path to a local weights file (.safetensors, .pt, .pth)")
    runs: int = option(2, min=1, doc="independent training runs (permutation basins); a source zoo has the source's")
    collect: CollectConfig = option(factory=CollectConfig)
    source: SourceConfig | None = option(None, doc="bring your own zoo: checkpoints from a folder, not collected")
    tasks: TasksConfig | None = option(None, doc="makes this zoo a task zoo (unseen-task experiment)")
    adapter: AdapterConfig | None = option(
        None, doc="makes this zoo an adapter zoo (LoRA/DoRA on a transformers model)"
    )
    tokens: dict | None = _override("tokens")
    generator: dict | None = _override("generator")
    train: dict | None = _override("train")
    generate: dict | None = _override("generate")
    evaluate: dict | None = _override("evaluate")
    pdiff: dict | None = _override("pdiff")

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.source is not None and self.tasks is not None:
            yield "source", "a task zoo collects its own checkpoints; a zoo has either source or tasks"
        if self.adapter is None and not self.arch:
            yield "arch", "required (unless the zoo has an adapter block)"
        if self.adapter is not None and self.arch:
            yield "arch", "an adapter zoo takes its architecture from its adapter block; leave arch out"
        if self.adapter is not None and self.tasks is not None:
            yield "adapter", "a zoo is an adapter zoo or a task zoo, not both"
        if self.adapter is not None and self.source is not None:
            yield "adapter", "adapter zoos are collected by the pipeline; a zoo has either source or adapter"


@dataclass
class ExperimentConfig(Block):
    doc = "An experiment: a dataset and zoos; results go to results/<experiment>/."

    data: DataConfig = option()
    zoos: dict[str, ZooConfig] = option(doc="zoos by name")
    device: str = option("auto", result=False, doc="auto = cuda when available, else cpu")
    seed: int = option(0, doc="shifts the seed of every stage (collection, training, generation, evaluation)")
    tokens: TokensConfig = option(factory=TokensConfig)
    generator: dict = option(factory=dict, ref=GeneratorConfig, doc="the generator block (a preset plus overrides)")
    train: TrainConfig = option(factory=TrainConfig)
    generate: GenerateConfig = option(factory=GenerateConfig)
    evaluate: EvaluateConfig = option(factory=EvaluateConfig)
    pdiff: PDiffConfig = option(factory=PDiffConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        adapter_data = self.data.name in ("text", "commonsense")
        for name, zoo in self.zoos.items():
            if adapter_data != (zoo.adapter is not None):
                yield f"zoos.{name}", f"{self.data.name} data needs {'' if adapter_data else 'no '}adapter block"
            elif zoo.adapter is not None and (zoo.adapter.task == "classification") != (self.data.name == "text"):
                yield f"zoos.{name}.adapter.task", f"{zoo.adapter.task} does not fit {self.data.name} data"
        if not DEVICE.match(self.device):
            yield "device", f"got {self.device!r}; allowed: auto, cpu, cuda, cuda:<index>, mps"
        if not self.zoos:
            yield "zoos", "needs at least one zoo"
        for name in self.zoos:
            if not NAME.match(name):
                yield f"zoos.{name}", "a zoo name uses letters, digits, '_' and '-' and starts with a letter or digit"


@dataclass
class PipelineConfig(Block):
    doc = (
        "Configuration of the RPG pipeline. An experiment is a named entry under `experiments`; its results go to "
        "results/<experiment>/."
    )

    experiments: dict[str, ExperimentConfig] = option(doc="experiments by name")
    prompt: str | None = option(
        None, doc="a sentence made into weights by each task zoo (results/<exp>/prompted/<slug>/; --config prompt=...)"
    )
    prompts: list[str] = option(factory=list, doc="more such sentences")

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.experiments:
            yield "experiments", "needs at least one experiment"
        for name in self.experiments:
            if not NAME.match(name):
                yield f"experiments.{name}", "an experiment name uses letters, digits, '_' and '-'"


@dataclass
class ZooSettings(Block):
    """Everything the stages of one (experiment, zoo) use: the zoo's own keys and its merged stage blocks."""

    experiment: str = option()
    zoo: str = option()
    data: DataConfig = option()
    arch: str = option()
    arch_kwargs: dict = option(factory=dict)
    init: str = option("random")
    runs: int = option(2, min=1)
    collect: CollectConfig = option(factory=CollectConfig)
    source: SourceConfig | None = option(None)
    tokens: TokensConfig = option(factory=TokensConfig)
    generator: GeneratorConfig = option(factory=GeneratorConfig)
    train: TrainConfig = option(factory=TrainConfig)
    generate: GenerateConfig = option(factory=GenerateConfig)
    evaluate: EvaluateConfig = option(factory=EvaluateConfig)
    pdiff: PDiffConfig = option(factory=PDiffConfig)
    tasks: TasksConfig | None = option(None)
    adapter: AdapterConfig | None = option(None)
    device: str = option("auto", result=False)

    @property
    def is_task_zoo(self) -> bool:
        return self.tasks is not None

    @property
    def is_continuous_task_zoo(self) -> bool:
        """A task zoo of a continuous family (tasks.family other than binary: rpg.tasks.continuous)."""
        return self.tasks is not None and self.tasks.is_continuous

    @property
    def is_source_zoo(self) -> bool:
        """A zoo brought from a folder (imported, not collected)."""
        return self.source is not None

    @property
    def is_adapter_zoo(self) -> bool:
        return self.adapter is not None


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A copy of ``base`` with ``override`` merged in recursively (override wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _raw_block(raw: Mapping, key: str) -> dict:
    value = raw.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


def resolve_config(config: Mapping[str, Any]) -> dict[str, dict[str, ZooSettings]]:
    """{experiment: {zoo: ZooSettings}}: every value checked and typed, defaults filled; raises ConfigError.

    Zoo-level blocks override keys of the experiment's blocks. Each problem names its key where it was written
    (``experiments.<e>.<block>.<key>`` or ``experiments.<e>.zoos.<z>.<block>.<key>``).
    """
    pipeline = PipelineConfig.parse(config)
    raw_exps = config["experiments"]
    resolved: dict[str, dict[str, ZooSettings]] = {}
    for exp_name, exp in pipeline.experiments.items():
        raw_exp = raw_exps[exp_name]
        GeneratorConfig.parse(exp.generator, f"experiments.{exp_name}.generator")
        resolved[exp_name] = {}
        for zoo_name, zoo in exp.zoos.items():
            where = f"experiments.{exp_name}.zoos.{zoo_name}"
            raw_zoo = raw_exp["zoos"][zoo_name]
            blocks = {}
            for block, cls in STAGE_BLOCKS.items():
                merged = deep_merge(_raw_block(raw_exp, block), _raw_block(raw_zoo, block))
                blocks[block] = cls.parse(merged, f"{where}.{block}")
            settings = ZooSettings(
                experiment=exp_name,
                zoo=zoo_name,
                data=exp.data,
                arch=zoo.arch or ADAPTER_ARCH,
                arch_kwargs=zoo.arch_kwargs,
                init=zoo.init,
                runs=zoo.runs,
                collect=zoo.collect,
                source=zoo.source,
                tasks=zoo.tasks,
                adapter=zoo.adapter,
                device=exp.device,
                **blocks,
            )
            resolved[exp_name][zoo_name] = _seeded(settings, exp.seed)
    return resolved


def _seeded(settings: ZooSettings, seed: int) -> ZooSettings:
    """``settings`` with the experiment seed added to the seed of every stage (seed 0: unchanged)."""
    if not seed:
        return settings
    shift = seed * SEED_STRIDE
    for block in ("collect", "train", "generate", "evaluate", "pdiff"):
        cfg = getattr(settings, block)
        cfg.seed = cfg.seed + shift
    if settings.tasks is not None:
        settings.tasks.seed += shift
    return settings


def zoo_settings(config: Mapping[str, Any], experiment: str, zoo: str) -> ZooSettings:
    """The resolved settings of one (experiment, zoo); ConfigError when the config does not have it."""
    resolved = resolve_config(config)
    try:
        return resolved[experiment][zoo]
    except KeyError:
        raise ConfigError(f"experiments.{experiment}.zoos.{zoo}", "no such experiment and zoo in the config") from None


__all__ = [
    "ExperimentConfig",
    "PipelineConfig",
    "STAGE_BLOCKS",
    "ZooConfig",
    "ZooSettings",
    "deep_merge",
    "resolve_config",
    "zoo_settings",
]
