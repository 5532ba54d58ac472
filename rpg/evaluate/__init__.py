"""Evaluation stage: accuracy, similarity (IoU of wrong sets), novelty (distance) and baselines.

Modules: :mod:`~rpg.evaluate.similarity` (IoU, RMS distances), :mod:`~rpg.evaluate.baselines`
(noise, interpolation, averaging, BatchNorm re-estimation), :mod:`~rpg.evaluate.summary`
(summary numbers and checks), :mod:`~rpg.evaluate.plots` (PNG plots and captions) and
:mod:`~rpg.evaluate.evaluate` (:func:`evaluate_zoo`, the stage's entry point).
"""

from rpg.evaluate.evaluate import evaluate_zoo

__all__ = ["evaluate_zoo"]
