"""Snakemake adapter: write a task zoo's split (seen / held-out tasks, groups, evaluated tasks) as JSON."""

from rpg.io import write_json
from rpg.runtime import stage_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads) as log:
    plan = sm.params.plan
    write_json(plan, sm.output[0])
    log.info("%d seen and %d held-out tasks -> %s", len(plan["seen"]), len(plan["held_out"]), sm.output[0])
