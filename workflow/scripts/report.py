"""Snakemake adapter: the HTML report over all experiments and zoos (rpg.stages.report)."""

from rpg.stages import report
from rpg.stages.job import snakemake_job

sm = snakemake  # noqa: F821 (injected by Snakemake)
with snakemake_job(sm):
    report.report(evaluations=sm.params.evaluations, out_html=sm.output[0])
