"""Configuration: typed blocks (the one home of defaults and value checks), resolution per (experiment, zoo).

:mod:`~rpg.config.typed` (Block, option, ConfigError, result_dict, canonical), :mod:`~rpg.config.blocks` (the stage
blocks), :mod:`~rpg.config.pipeline` (experiments, zoos, :func:`resolve_config`), :mod:`~rpg.config.schema` (the
generated JSON schema, shipped as ``config.schema.json``).
"""

from rpg.config.blocks import (
    ADAPTER_ARCH,
    PRESETS,
    AdapterConfig,
    CollectConfig,
    ContinuousTasksConfig,
    DataConfig,
    DigitsDetectionConfig,
    EvaluateConfig,
    GenerateConfig,
    GeneratorConfig,
    PDiffConfig,
    PromptConfig,
    SourceConfig,
    TaskEvaluateConfig,
    TasksConfig,
    TokensConfig,
    TrainConfig,
)
from rpg.config.pipeline import PipelineConfig, ZooSettings, deep_merge, resolve_config, zoo_settings
from rpg.config.typed import Block, ConfigError, canonical, option, result_dict

__all__ = [
    "ADAPTER_ARCH",
    "PRESETS",
    "AdapterConfig",
    "Block",
    "CollectConfig",
    "ConfigError",
    "DataConfig",
    "DigitsDetectionConfig",
    "EvaluateConfig",
    "GenerateConfig",
    "GeneratorConfig",
    "PDiffConfig",
    "PipelineConfig",
    "PromptConfig",
    "SourceConfig",
    "ContinuousTasksConfig",
    "TaskEvaluateConfig",
    "TasksConfig",
    "TokensConfig",
    "TrainConfig",
    "ZooSettings",
    "canonical",
    "deep_merge",
    "option",
    "resolve_config",
    "result_dict",
    "zoo_settings",
]
