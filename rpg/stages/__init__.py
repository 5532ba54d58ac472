"""The stage layer: one module per rule family, the only part of the package that the workflow scripts call.

Each stage function takes explicit paths and the typed settings of one (experiment, zoo) and calls the domain
packages (zoo, tokens, generator, pdiff, tasks, evaluate, report). :mod:`~rpg.stages.job` adapts a Snakemake job
(settings from the config, checked against the rule's params; its log; stale temporary files removed);
:mod:`~rpg.stages.params` says which settings each rule's params carry; :mod:`~rpg.stages.checks` checks a
configuration at start (architectures, dataset paths). Nothing is imported here eagerly.
"""
