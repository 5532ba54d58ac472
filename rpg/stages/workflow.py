"""Workflow-level checks that look at results/ (run by the Snakefile at start)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from rpg.config import ZooSettings
from rpg.stages.collect import source_runs


def missing_intermediates(settings: Mapping[str, Mapping[str, ZooSettings]], root: Path) -> Iterator[str]:
    """Warnings for stage outputs that exist while an input they were made from is missing.

    Snakemake does not rebuild a missing intermediate when what was made from it is up to date ("Nothing to be
    done"), so a deleted checkpoint directory or token store would go unnoticed; each warning says how to rebuild.
    """
    for exp, zoos in settings.items():
        for zoo, s in zoos.items():
            base = root / "results" / exp
            tokens = base / "tokens" / zoo
            chains = [(base / "generator" / zoo / "model.safetensors", [tokens])]
            if not s.is_task_zoo:
                runs = len(source_runs(s)) if s.is_source_zoo else s.runs
                chains.append((tokens, [base / "zoo" / zoo / f"run{r}" for r in range(runs)]))
            for made, sources in chains:
                if not made.exists():
                    continue
                for src in sources:
                    if not src.exists():
                        yield (
                            f"{src.relative_to(root)} is missing, but {made.relative_to(root)}, made from it, exists; "
                            f"Snakemake does not rebuild a missing intermediate on its own. Rebuild it with "
                            f"`snakemake --cores all {src.relative_to(root)}`; the stages after it then rerun on the "
                            "next run (their inputs are newer)."
                        )
