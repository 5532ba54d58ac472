"""RPG: recurrent diffusion for large-scale parameter generation (arXiv 2501.11587).

The package holds all logic of the pipeline; the Snakemake workflow only calls it.
Nothing is imported eagerly here, so ``import rpg`` is cheap.
"""

__version__ = "0.1.0"
