"""Snakemake adapter: the HTML report over all experiments and zoos (rpg.report)."""

from rpg.report import build_report
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    build_report(experiments=sm.params.evaluations, out_html=sm.output[0])
