"""Snakemake adapter: sample models for the evaluated tasks from a task-conditioned generator (rpg.generate)."""

from pathlib import Path

from rpg.evaluate.tasks import generate_task_models
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    models = sm.params.models
    if sorted(m["path"] for m in models) != sorted(sm.output):
        raise RuntimeError("the generation plan does not match the rule's outputs")
    generate_task_models(
        generator_dir=Path(sm.input.model).parent,
        token_dir=sm.input.tokens,
        tasks=[m["task"] for m in models],
        out_paths=[m["path"] for m in models],
        generate_cfg=sm.params.generate,
        device=sm.params.device,
    )
