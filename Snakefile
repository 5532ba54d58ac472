# RPG pipeline: collect checkpoints -> tokenize -> train the recurrent diffusion generator -> generate -> evaluate.
# Configuration: config.yaml (embedded default) or --configfile FILE; keys, defaults and checks: rpg.config
# (schema: rpg/config/config.schema.json).
import os

from snakemake.utils import min_version

min_version("8.0")


if "experiments" not in config:

    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/pdiff.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tasks.smk"
include: "workflow/rules/adapters.smk"
include: "workflow/rules/prompt.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "results/report.html",
        all_summaries(),
        all_peft_exports(),
        all_prompted(),
