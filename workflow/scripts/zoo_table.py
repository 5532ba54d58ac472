"""Snakemake adapter: the table of all checkpoints of a zoo with their accuracy."""

from rpg.runtime import stage_logging
from rpg.zoo.collect import write_zoo_table

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    write_zoo_table(list(sm.input), sm.output[0])
