"""What a user should do when the generated models are far below the originals: the evaluation's ``diagnosis``.

The frontier checks compare working models; when the generated mean lies more than ``evaluate.frontier_max_gap``
below the originals' (equal n, test split) they are "not applicable", and this diagnosis says why the models fail
and what to change, from the generator's training log:

* ``ok``: the generated mean is within the tolerance of the originals';
* ``not converged``: the training loss was still falling at the end (as much training again, at the rate of its
  second half in learning-rate time, would lower it by more than :data:`STILL_FALLING`: :func:`loss_trend`), or
  the sampled validation score was still rising: train longer;
* ``plateau``: the loss (and the validation score, where logged) had flattened while the models stay far off: more
  steps will not help; a larger generator, smaller tokens or another recipe might;
* ``unknown``: far off, and no training log to tell which.

Where the zoo has the ``generated_bn`` row (``evaluate.bn_recalibrate_generated``: the same generated weights with
BatchNorm statistics re-estimated on training batches), ``batchnorm`` says how much of the gap those statistics
cost; when re-estimating them recovers more than :data:`BN_RECOVERED`, the message says so whatever the status
(a BatchNorm zoo's generated weights can be good while its generated running statistics are not: more steps or a
larger generator are then not the cheapest fix).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

STILL_FALLING = 0.1  # relative fall of the loss over as much training again (loss_trend) that counts as falling
BN_RECOVERED = 0.01  # generated_bn mean minus generated mean (metric units) above which the statistics are named
STILL_RISING = 0.01  # rise of the validation score (metric units) over the last validations that counts as rising
ADVICE = {
    "ok": "the generated models are within the tolerance of the originals",
    "not converged": (
        "the generator had not converged: its {evidence}; train longer (raise train.steps, or set train.steps: auto "
        "with train.max_steps) and check the validation curve in train_log.csv (docs/tuning.md)"
    ),
    "plateau": (
        "training had flattened ({evidence}) with the generated models far below the originals: more steps will not "
        "help; try a wider generator (generator.dim), smaller tokens (tokens.token_size), a higher learning rate or "
        "epsilon prediction (docs/tuning.md)"
    ),
    "unknown": "no training log to tell whether the generator had converged (docs/tuning.md)",
    "batchnorm": (
        "the generated BatchNorm running statistics cost {cost:.2f} points: the same weights with statistics "
        "re-estimated on training batches score {recalibrated:.2f} (row generated_bn); re-estimate them before using "
        "the models, or weight the statistics' tokens more in training (train.running_stats_weight; docs/tuning.md)"
    ),
}


def loss_trend(train_log: pd.DataFrame | None) -> float | None:
    """Relative change of the loss that as much training again would bring at the rate of the second half of
    training (negative: still falling), or None without a usable log (10 rows or more with a positive loss).

    The rate is measured in learning-rate time, the learning rate summed over the steps (the log's ``lr`` column;
    steps without it): a warm-up + cosine schedule flattens every loss curve at its end, converged or not, and a
    trend read in steps would call a 30-step generator converged. ``exp(slope * T) - 1``, with ``slope`` the
    least-squares slope of the log loss against learning-rate time over the second half of it and ``T`` its total.
    """
    if train_log is None or "loss" not in train_log or len(train_log) < 10:
        return None
    df = train_log.sort_values("step")
    step = df["step"].to_numpy(np.float64)
    lr = df["lr"].to_numpy(np.float64) if "lr" in df else np.ones_like(step)
    lr = np.where(np.isfinite(lr) & (lr >= 0), lr, 0.0)
    tau = np.cumsum(lr * np.diff(step, prepend=0.0))  # each row stands for the steps since the row before
    loss = df["loss"].to_numpy(np.float64)
    ok = np.isfinite(loss) & (loss > 0)
    total = tau[-1]
    late = ok & (tau >= total / 2)
    if ok.sum() < 10 or late.sum() < 5 or total <= 0 or np.ptp(tau[late]) <= 0:
        return None
    slope = np.polyfit(tau[late], np.log(loss[late]), 1)[0]
    return float(np.expm1(slope * total))


def validation_trend(train_log: pd.DataFrame | None) -> float | None:
    """Change of the sampled models' validation score between the mean of the first half of the last four
    validations and their second half (positive: still rising), or None when fewer than four were logged."""
    if train_log is None or "val_score" not in train_log:
        return None
    val = train_log.sort_values("step")["val_score"].to_numpy(np.float64)
    val = val[np.isfinite(val)]
    if len(val) < 4:
        return None
    return float(val[-2:].mean() - val[-4:-2].mean())


def batchnorm(generated: float | None, recalibrated: float | None) -> dict[str, Any] | None:
    """What the generated BatchNorm statistics cost: the ``batchnorm`` block of the diagnosis (None without a
    ``generated_bn`` mean); ``message`` only when re-estimating them recovers more than :data:`BN_RECOVERED`."""
    if generated is None or recalibrated is None:
        return None
    cost = recalibrated - generated
    message = None
    if cost > BN_RECOVERED:
        message = ADVICE["batchnorm"].format(cost=100 * cost, recalibrated=100 * recalibrated)
    return {"generated": generated, "recalibrated": recalibrated, "recovered": cost, "message": message}


def diagnose(
    *, gap: float | None, tolerance: float, train_log: pd.DataFrame | None, generated: float | None = None,
    recalibrated: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The diagnosis block of summary.json (module docstring). ``gap``: originals' mean minus generated mean;
    ``generated`` / ``recalibrated``: the generated models' mean as generated and with re-estimated BatchNorm
    statistics (the ``generated_bn`` row), where the zoo has it."""
    trend, val = loss_trend(train_log), validation_trend(train_log)
    out: dict[str, Any] = {"gap": gap, "tolerance": tolerance, "loss_trend": trend, "validation_trend": val}
    bn = batchnorm(generated, recalibrated)
    if bn is not None:
        out["batchnorm"] = bn
    note = f"; {bn['message']}" if bn and bn["message"] else ""
    if gap is None:
        return {**out, "status": "unknown", "message": "no generated models to diagnose"}
    if gap <= tolerance:
        return {**out, "status": "ok", "message": ADVICE["ok"] + note}
    falling = trend is not None and trend < -STILL_FALLING
    rising = val is not None and val > STILL_RISING
    if falling or rising:
        evidence = []
        if falling:
            evidence.append(
                f"training loss was still falling ({100 * trend:+.1f}% over as much training again at the rate of its "
                "second half)"
            )
        if rising:
            evidence.append(f"sampled models' validation score was still rising ({100 * val:+.1f} points)")
        status, message = "not converged", ADVICE["not converged"].format(evidence=" and its ".join(evidence))
    elif trend is None and val is None:
        status, message = "unknown", ADVICE["unknown"]
    else:
        parts = [f"loss {100 * trend:+.1f}% over as much training again" if trend is not None else None,
                 f"validation score {100 * val:+.1f} points" if val is not None else None]  # fmt: skip
        status, message = "plateau", ADVICE["plateau"].format(evidence=", ".join(p for p in parts if p))
    head = f"generated mean {100 * gap:.2f} points below the originals' (tolerance {100 * tolerance:.2f}): "
    return {**out, "status": status, "message": head + message + note}
