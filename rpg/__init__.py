"""RPG: recurrent diffusion for large-scale parameter generation (arXiv 2501.11587).

The package holds all logic of the pipeline; the Snakemake workflow only calls it. The public API
(:mod:`rpg.api`) is importable from here: ``rpg.load_generator``, ``rpg.load_model``, ``rpg.evaluate_model``,
``rpg.export_model`` and ``rpg.Generator``. Nothing is imported eagerly, so ``import rpg`` is cheap: the API
module (and torch) load on first use of one of these names.
"""

__version__ = "0.1.0"

__all__ = ["Generator", "__version__", "evaluate_model", "export_model", "load_generator", "load_model"]
_API = {"Generator", "evaluate_model", "export_model", "load_generator", "load_model"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("rpg.api"), name)
    raise AttributeError(f"module 'rpg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
