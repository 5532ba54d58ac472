"""The ``nn.Module`` of one adapter checkpoint: its state_dict is the adapter, the base is shared by the process.

``arch: rpg.adapters.model:build_adapter_model`` with the adapter's ``arch_kwargs`` (:class:`AdapterSpec`) is how
the pipeline builds the model of an adapter checkpoint (:func:`rpg.zoo.models.build_model`), loads its tensors
(``load_state_dict(strict=True)``), moves it (``.to(device)``) and reads it back (``state_dict()``): all of that
touches only the adapter tensors, under the names PEFT saves them with. Building a model is cheap, whatever the size
of the base: the frozen base is loaded once per process and spec, with the adapter injected
(:func:`shared_runner`), and :meth:`AdapterModel.activate` copies a model's tensors into it before it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from rpg.adapters.base import build_peft_model
from rpg.adapters.spec import AdapterSpec

log = logging.getLogger(__name__)

_RUNNERS: dict[str, nn.Module] = {}
_SHAPES: dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]] = {}


def live_tensors(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of a PEFT model under their saved names, sharing storage with its parameters."""
    from peft import get_peft_model_state_dict

    return dict(get_peft_model_state_dict(peft_model))


def shared_runner(spec: AdapterSpec, device: torch.device | str = "cpu") -> nn.Module:
    """The process's PEFT model of ``spec`` (built once, frozen, eval mode), on ``device``."""
    key = spec.key()
    runner = _RUNNERS.get(key)
    if runner is None:
        log.info("loading the base model %s for %s adapters", spec.base, spec.method)
        runner = build_peft_model(spec, seed=0, inference=True)
        for p in runner.parameters():
            p.requires_grad_(False)
        runner.eval()
        _RUNNERS[key] = runner
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if next(runner.parameters()).device != device:
        runner.to(device)
        runner._rpg_live = None  # the moved parameters have new storage
    return runner


def adapter_shapes(spec: AdapterSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the adapter tensors of ``spec``, in the model's order."""
    key = spec.key()
    if key not in _SHAPES:
        _SHAPES[key] = {k: (tuple(v.shape), v.dtype) for k, v in live_tensors(shared_runner(spec)).items()}
    return _SHAPES[key]


def release_runners() -> None:
    """Forget the shared base models (frees their memory)."""
    _RUNNERS.clear()


class AdapterModel(nn.Module):
    """The adapter tensors of one checkpoint, as parameters of nested modules named after their PEFT keys."""

    def __init__(self, *, spec: AdapterSpec, shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        super().__init__()
        self.spec = spec
        self._keys = list(shapes)
        for name, (shape, dtype) in shapes.items():
            *path, leaf = name.split(".")
            module: nn.Module = self
            for part in path:
                child = module._modules.get(part)
                if child is None:
                    child = nn.Module()
                    module.add_module(part, child)
                module = child
            module.register_parameter(leaf, nn.Parameter(torch.zeros(shape, dtype=dtype), requires_grad=False))

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The adapter tensors in PEFT's order (a module lists its own tensors before its children's)."""
        out = super().state_dict(*args, **kwargs)
        if args or kwargs.get("destination") is not None:
            return out
        prefix = kwargs.get("prefix", "")
        ordered = type(out)((prefix + k, out[prefix + k]) for k in self._keys)
        if hasattr(out, "_metadata"):
            ordered._metadata = out._metadata
        return ordered

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return self.state_dict()

    @torch.no_grad()
    def activate(self) -> nn.Module:
        """The shared PEFT model of the spec, on this model's device, holding this model's adapter tensors."""
        runner = shared_runner(self.spec, self.device)
        live = getattr(runner, "_rpg_live", None)
        if live is None:
            live = live_tensors(runner)
            runner._rpg_live = live
        for name, value in self.state_dict().items():
            live[name].copy_(value)
        return runner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The shared model's forward with these adapter weights (classification: logits)."""
        return self.activate()(*args, **kwargs)


def build_adapter_model(**arch_kwargs: Any) -> AdapterModel:
    """The model of an adapter checkpoint (zero tensors; load its state_dict): the entry point of adapter zoos."""
    spec = AdapterSpec.from_kwargs(arch_kwargs)
    return AdapterModel(spec=spec, shapes=adapter_shapes(spec))


__all__ = ["AdapterModel", "adapter_shapes", "build_adapter_model", "live_tensors", "release_runners", "shared_runner"]
