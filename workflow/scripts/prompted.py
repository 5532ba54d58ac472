"""Snakemake adapter: weights from a prompt, made by the experiment's task zoo and evaluated (rpg.stages.prompt)."""

from pathlib import Path

from rpg.stages import prompt
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm, "prompted"):
    settings = prompt.settings_for(sm.config, sm.wildcards.exp)
    prompt.prompted(settings, prompt=sm.params.prompt, backbone_path=sm.input.backbone, tokens_dir=sm.input.tokens,
                    generator_dir=Path(sm.input.model).parent, plan_path=sm.input.plan,
                    out_dir=Path(sm.output.summary).parent)  # fmt: skip
