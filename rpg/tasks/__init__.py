"""Unseen tasks (paper section 4): binary tasks over a dataset's classes, task zoos and their evaluation.

Modules, by concern: :mod:`~rpg.tasks.vectors` (task ids, vectors, the seen/held-out split, relabelled datasets),
:mod:`~rpg.tasks.plan` (groups, evaluated tasks, file names), :mod:`~rpg.tasks.heads` (head surgery),
:mod:`~rpg.tasks.collect` (shared backbone and per-task classifiers), :mod:`~rpg.tasks.evaluate` (generation for
tasks, baselines, fine-tuning from generated weights), :mod:`~rpg.tasks.summary` (numbers, checks, text and HTML)
and :mod:`~rpg.tasks.plots`. Nothing is imported here eagerly.
"""
