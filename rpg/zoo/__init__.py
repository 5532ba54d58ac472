"""Target architectures (small built-in CNNs and timm models), checkpoint I/O and collection."""

from rpg.zoo.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from rpg.zoo.models import BUILTIN_ARCHS, build_model, count_parameters, load_initial_weights

__all__ = [
    "BUILTIN_ARCHS",
    "build_model",
    "check_compatible",
    "count_parameters",
    "load_checkpoint",
    "load_initial_weights",
    "save_checkpoint",
]
