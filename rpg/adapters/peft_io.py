"""Our adapter checkpoints to and from PEFT folders (``adapter_model.safetensors`` + ``adapter_config.json``).

An adapter checkpoint stores the tensors under the names PEFT saves them with, so the conversion is a copy of the
tensors plus the config that :func:`rpg.adapters.spec.peft_config` makes from the spec. A PEFT folder written here
loads with ``PeftModel.from_pretrained(base, folder)`` (``base``: the causal LM, or for classification
``SentenceClassifier(encoder, num_labels)``, see :mod:`rpg.adapters.base`).

:func:`import_peft_adapter` is the other way: a folder of an existing PEFT LoRA/DoRA adapter becomes a checkpoint of
ours (for bringing your own adapter zoo).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rpg.adapters.spec import AdapterSpec, peft_config, resolve_base
from rpg.config import ADAPTER_ARCH
from rpg.errors import RPGInputError
from rpg.io import atomic_dir
from rpg.zoo.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
CONFIG_FILE = "adapter_config.json"
# LoraConfig keys whose non-default values an AdapterSpec cannot express
_UNSUPPORTED = {"use_rslora": False, "bias": "none", "rank_pattern": {}, "alpha_pattern": {}, "fan_in_fan_out": False,
                "layer_replication": None, "lora_bias": False}  # fmt: skip


def peft_config_dict(spec: AdapterSpec) -> dict[str, Any]:
    """The content of ``adapter_config.json`` for ``spec``."""
    cfg = peft_config(spec, inference=True).to_dict()
    try:
        cfg["base_model_name_or_path"] = str(resolve_base(spec.base))
    except RPGInputError:
        cfg["base_model_name_or_path"] = spec.base
    return json.loads(json.dumps(cfg, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))


def write_peft_dir(state: Mapping[str, torch.Tensor], spec: AdapterSpec, out_dir: str | Path) -> None:
    """Write a PEFT folder (weights + config) atomically: it appears whole or not at all."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    config = peft_config_dict(spec)
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_peft_dir(adapter_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, adapter_config)`` of a PEFT folder; RPGInputError naming the file that is missing or bad."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RPGInputError(f"not a PEFT adapter folder ({CONFIG_FILE} is missing)", adapter_dir)
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise RPGInputError(f"invalid JSON ({exc})", config_path) from exc
    weights = adapter_dir / WEIGHTS_FILE
    try:
        if weights.is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(weights))
        elif (adapter_dir / LEGACY_WEIGHTS_FILE).is_file():
            weights = adapter_dir / LEGACY_WEIGHTS_FILE
            tensors = torch.load(weights, map_location="cpu", weights_only=True)
        else:
            raise RPGInputError(f"no {WEIGHTS_FILE} (or {LEGACY_WEIGHTS_FILE})", adapter_dir)
    except RPGInputError:
        raise
    except Exception as exc:
        raise RPGInputError(f"unreadable adapter weights ({type(exc).__name__}: {exc})", weights) from exc
    if not isinstance(tensors, Mapping) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise RPGInputError("adapter weights are not a mapping of names to tensors", weights)
    return dict(tensors), config


def spec_from_peft_config(
    config: Mapping[str, Any],
    *,
    where: str | Path,
    base: str | None = None,
    task: str | None = None,
    num_labels: int | None = None,
    max_length: int = 128,
) -> AdapterSpec:
    """The spec of a PEFT LoRA/DoRA config (``base``/``task``/``num_labels`` override what the config says)."""
    if config.get("peft_type", "LORA") != "LORA":
        raise RPGInputError(f"only LoRA and DoRA adapters are supported, got {config.get('peft_type')}", where)
    for key, default in _UNSUPPORTED.items():
        value = config.get(key, default)
        if value is not None and value != default:
            raise RPGInputError(f"adapter setting {key}={config.get(key)!r} is not supported", where)
    targets = config.get("target_modules")
    if isinstance(targets, str) or not targets:
        raise RPGInputError(f"target_modules must be a list of module names, got {targets!r}", where)
    layers = config.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    if task is None:
        task = "causal_lm" if config.get("task_type") == "CAUSAL_LM" else "classification"
    base = base or config.get("base_model_name_or_path")
    if not base:
        raise RPGInputError("the adapter names no base model; pass base=", where)
    try:
        return AdapterSpec(
            base=str(base), method="dora" if config.get("use_dora") else "lora", rank=int(config["r"]),
            alpha=float(config.get("lora_alpha", 8)), dropout=float(config.get("lora_dropout", 0.0)),
            target_modules=tuple(sorted(targets)), layers=None if layers is None else tuple(int(i) for i in layers),
            task=task, num_labels=int(num_labels or 0), max_length=max_length,
        )  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise RPGInputError(f"cannot describe this adapter: {exc}", where) from exc


def import_peft_adapter(
    adapter_dir: str | Path,
    out_path: str | Path,
    *,
    base: str | None = None,
    task: str | None = None,
    num_labels: int | None = None,
    meta: Mapping[str, Any] | None = None,
    check: bool = True,
) -> AdapterSpec:
    """Write the PEFT adapter in ``adapter_dir`` as a checkpoint of ours at ``out_path``; returns its spec.

    ``meta`` adds metadata (run, seed, step, index, val_accuracy, ...). With ``check`` the tensor names and shapes
    are compared with a PEFT model of the spec (this loads the base model once per process).
    """
    state, config = read_peft_dir(adapter_dir)
    spec = spec_from_peft_config(config, where=adapter_dir, base=base, task=task, num_labels=num_labels)
    if check:
        from rpg.adapters.model import adapter_shapes

        expected = adapter_shapes(spec)
        if sorted(expected) != sorted(state):
            missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
            raise RPGInputError(f"adapter tensors do not match its config (missing {missing[:3]}, extra {extra[:3]})",
                                adapter_dir)  # fmt: skip
        for k, (shape, _) in expected.items():
            if tuple(state[k].shape) != shape:
                raise RPGInputError(f"{k} has shape {tuple(state[k].shape)}, the config says {shape}", adapter_dir)
        state = {k: state[k] for k in expected}  # the model's order
    full_meta = {"kind": "checkpoint", "arch": ADAPTER_ARCH, "arch_kwargs": spec.to_kwargs(), "run": 0, "seed": 0,
                 "step": 0, "index": 0, "val_accuracy": None, "task": None, "num_classes": spec.num_labels,
                 "source": str(adapter_dir), **dict(meta or {})}  # fmt: skip
    save_checkpoint(out_path, state, full_meta)
    return spec


def checkpoint_to_peft_dir(checkpoint: str | Path, out_dir: str | Path) -> AdapterSpec:
    """Write the adapter checkpoint (collected or generated) ``checkpoint`` as a PEFT folder ``out_dir``."""
    state, meta = load_checkpoint(checkpoint)
    if meta.get("arch") != ADAPTER_ARCH:
        raise RPGInputError(f"not an adapter checkpoint (arch {meta.get('arch')!r})", checkpoint)
    spec = AdapterSpec.from_kwargs(meta.get("arch_kwargs") or {}, where=checkpoint)
    write_peft_dir(state, spec, out_dir)
    return spec


__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "checkpoint_to_peft_dir",
    "import_peft_adapter",
    "peft_config_dict",
    "read_peft_dir",
    "spec_from_peft_config",
    "write_peft_dir",
]
