"""Generator sizes (tiny / small / base / large) and the typed :class:`GeneratorConfig`.

A config is a preset plus overrides: ``generator_config({"preset": "tiny", "dim": 128})``. The token size k is
a property of the token store; ``token_size`` here is only a check (None: take the store's).
PAPER_TOKEN_SIZE lists the token size the paper pairs with each size, for the ``tokens`` block of a config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rpg.generator.backbones import BACKBONES
from rpg.generator.position import POSITION_KINDS

TASK_CONDITIONS = (None, "all", "head")
PREDICTIONS = ("epsilon", "sample")

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"dim": 256, "d_state": 32, "num_layers": 2, "denoiser_channels": [1, 32, 64, 128, 64, 32, 1]},
    "small": {"dim": 4096, "d_state": 128, "num_layers": 2, "denoiser_channels": [1, 32, 64, 128, 64, 32, 1]},
    "base": {"dim": 8192, "d_state": 128, "num_layers": 2, "denoiser_channels": [1, 32, 64, 128, 64, 32, 1]},
    # not fixed by the paper: base width with a wider denoiser, meant for 16384-long tokens (>50M parameters)
    "large": {"dim": 8192, "d_state": 128, "num_layers": 2, "denoiser_channels": [1, 64, 128, 256, 128, 64, 1]},
}
PAPER_TOKEN_SIZE = {"tiny": 256, "small": 8192, "base": 8192, "large": 16384}


@dataclass
class GeneratorConfig:
    """Everything needed to rebuild the generator network (besides the token layout and number of states)."""

    preset: str = "tiny"
    backbone: str = "mamba2"  # mamba2 | lstm | transformer
    dim: int = 256  # recurrent width D
    num_layers: int = 2
    d_state: int = 32  # Mamba2 state size N
    headdim: int = 64  # Mamba2 head width P
    expand: int = 2
    chunk_size: int = 64  # SSD chunk length (64 was fastest on CPU at D=256)
    scan: str = "auto"  # auto | torch | mamba_ssm
    transformer_heads: int = 8
    position: str = "sin2d"  # sin2d | sin1d | learned | sin2d+learned | sin1d+learned
    denoiser_channels: list[int] = field(default_factory=lambda: [1, 32, 64, 128, 64, 32, 1])
    denoiser_kernel: int = 7
    time_dim: int = 128
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "epsilon"  # what the denoiser predicts: epsilon (the paper) | sample (x0)
    task_condition: str | None = None  # None | "all" (every position) | "head" (last head_tokens positions)
    task_bits: int = 10
    head_tokens: int = 8
    token_size: int | None = None  # None: the token store's

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"generator.backbone {self.backbone!r} unknown; choose one of {BACKBONES}")
        if self.position not in POSITION_KINDS:
            raise ValueError(f"generator.position {self.position!r} unknown; choose one of {POSITION_KINDS}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"generator.prediction {self.prediction!r} unknown; choose one of {PREDICTIONS}")
        if self.task_condition not in TASK_CONDITIONS:
            raise ValueError(f"generator.task_condition {self.task_condition!r}; choose one of {TASK_CONDITIONS}")
        for name in ("dim", "num_layers", "d_state", "headdim", "expand", "chunk_size", "num_timesteps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"generator.{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def backbone_kwargs(self) -> dict[str, Any]:
        if self.backbone == "mamba2":
            return {"d_state": self.d_state, "headdim": self.headdim, "expand": self.expand,
                    "chunk_size": self.chunk_size, "scan": self.scan}  # fmt: skip
        if self.backbone == "transformer":
            return {"heads": self.transformer_heads}
        return {}


def generator_config(cfg: Mapping[str, Any] | GeneratorConfig | None = None) -> GeneratorConfig:
    """GeneratorConfig from a preset name (``cfg['preset']``, default tiny) plus the other keys as overrides."""
    if isinstance(cfg, GeneratorConfig):
        return cfg
    cfg = dict(cfg or {})
    preset = cfg.get("preset", "tiny")
    if preset not in PRESETS:
        raise ValueError(f"generator.preset {preset!r} unknown; choose one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(GeneratorConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown generator config keys {unknown}; known keys: {sorted(known)}")
    return GeneratorConfig(**{**PRESETS[preset], **cfg, "preset": preset})
