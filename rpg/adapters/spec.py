"""What an adapter is: :class:`AdapterSpec`, the ``arch_kwargs`` of every checkpoint of an adapter zoo.

The spec names the base model (as configured: a folder or ``package:<module>``, resolved on the machine that reads
it), the method (LoRA or DoRA), rank, alpha, target modules and layers, the task kind and its number of labels.
Everything needed to rebuild the model of a checkpoint, or to write its PEFT ``adapter_config.json``, is in it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rpg.config import AdapterConfig, DataConfig
from rpg.errors import RPGInputError

PACKAGE_PREFIX = "package:"
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter's description; :meth:`to_kwargs` is what checkpoints store as ``arch_kwargs``."""

    base: str
    method: str = "lora"
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")
    layers: tuple[int, ...] | None = None
    task: str = "classification"
    num_labels: int = 0
    max_length: int = 128
    dtype: str = "float32"
    score: str = "sum"

    def __post_init__(self) -> None:
        if self.method not in ("lora", "dora"):
            raise ValueError(f"adapter method must be lora or dora, got {self.method!r}")
        if self.task not in ("classification", "causal_lm"):
            raise ValueError(f"adapter task must be classification or causal_lm, got {self.task!r}")
        if self.task == "classification" and self.num_labels < 2:
            raise ValueError(f"a classification adapter needs num_labels >= 2, got {self.num_labels}")
        if self.dtype not in DTYPES:
            raise ValueError(f"adapter dtype must be one of {DTYPES}, got {self.dtype!r}")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], where: str | Path = "arch_kwargs") -> AdapterSpec:
        """The spec from checkpoint ``arch_kwargs``; RPGInputError naming ``where`` when they are no adapter's."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown or "base" not in kwargs:
            raise RPGInputError(f"not an adapter description (unknown keys {unknown} or no 'base')", where)
        values = dict(kwargs)
        values["target_modules"] = tuple(values.get("target_modules") or ())
        if values.get("layers") is not None:
            values["layers"] = tuple(int(i) for i in values["layers"])
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise RPGInputError(f"bad adapter description: {exc}", where) from exc

    def to_kwargs(self) -> dict[str, Any]:
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        out["layers"] = None if self.layers is None else list(self.layers)
        return out

    def key(self) -> str:
        """A string naming the spec (cache key)."""
        return json.dumps(self.to_kwargs(), sort_keys=True)

    @property
    def first_layer(self) -> int:
        """The lowest adapted layer (0 when every layer is adapted)."""
        return min(self.layers) if self.layers else 0


def adapter_spec(adapter: AdapterConfig, data: DataConfig) -> AdapterSpec:
    """The spec of a zoo's adapter block on its data (the number of labels comes from a text task)."""
    num_labels = 0
    if adapter.task == "classification":
        from rpg.data import dataset_info

        num_labels = int(dataset_info(data)["num_classes"])
    return AdapterSpec(
        base=adapter.base, method=adapter.method, rank=adapter.rank, alpha=float(adapter.alpha),
        dropout=float(adapter.dropout), target_modules=tuple(adapter.target_modules),
        layers=None if adapter.layers is None else tuple(adapter.layers), task=adapter.task, num_labels=num_labels,
        max_length=adapter.max_length, dtype=adapter.dtype, score=adapter.score,
    )  # fmt: skip


def resolve_base(base: str) -> Path:
    """The local folder of a base model: ``base`` itself, or for ``package:<module>`` the folder the package ships
    (its ``get_model_path()`` or ``MODEL_DIR``). RPGInputError when there is no transformers model there."""
    if base.startswith(PACKAGE_PREFIX):
        name = base[len(PACKAGE_PREFIX) :]
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise RPGInputError(f"cannot import the model package {name!r}: {exc}", "config adapter.base") from exc
        getter = getattr(module, "get_model_path", None)
        path = Path(getter()) if callable(getter) else Path(getattr(module, "MODEL_DIR", Path(module.__file__).parent))
    else:
        path = Path(base).expanduser()
    if not (path / "config.json").is_file():
        raise RPGInputError("no transformers model here (config.json is missing)", path)
    return path


def check_base(base: str) -> None:
    """RPGInputError unless ``base`` resolves to a local model folder (for the checks at start)."""
    resolve_base(base)


def peft_config(spec: AdapterSpec, *, inference: bool = False):
    """The ``peft.LoraConfig`` of ``spec`` (DoRA: ``use_dora``; classification: the head in ``modules_to_save``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.target_modules),
        layers_to_transform=None if spec.layers is None else list(spec.layers), use_dora=spec.method == "dora",
        modules_to_save=["head"] if spec.task == "classification" else None,
        task_type="CAUSAL_LM" if spec.task == "causal_lm" else None, bias="none", inference_mode=inference,
    )  # fmt: skip


__all__ = ["AdapterSpec", "adapter_spec", "check_base", "peft_config", "resolve_base"]
