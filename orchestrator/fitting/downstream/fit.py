"""Every task of a table: fitted, calibrated against a held-out size, and predicted.

:func:`fit_downstream` draws one set of bootstrap run counts for the whole ladder, so a
resample is the same ladder for every task and both steps; fits each task
(orchestrator.fitting.downstream.chain.fit_task); skips a task that cannot be fitted (constant
accuracy, too few runs) with a note while the others go on; and measures each task's
extrapolation sds by refitting without the largest size (chain.calibrate).

One held-out size per task is a noisy estimate of how a task's law drifts, and the drift is
partly shared (every task is the same ladder), so each task's tau^2 is the mean of its own and
the mean over the tasks; a task whose check could not be made gets the mean, and a ladder
where no check could be made (fewer than 4 sizes) gets PRIOR_TAU1, PRIOR_TAU2 with a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import FitError
from orchestrator.fitting.downstream.chain import (HOLDOUT_RESAMPLES, SKIP_SHARE, TaskFit, calibrate, draws, fit_task, interval,
                                                   task_data)
from orchestrator.fitting.downstream.extras import baseline_predictions, emergence, fit_baselines

__all__ = ["DownstreamFit", "fit_downstream", "predict", "PRIOR_TAU1", "PRIOR_TAU2"]

# Extrapolation sds per decade when no held-out check can be made: of the order the checks
# find on the OLMo-like bench ladder (docs/benchmarks.md, "Downstream").
PRIOR_TAU1 = 0.03  # log task loss
PRIOR_TAU2 = 0.02  # accuracy


@dataclass
class DownstreamFit:
    """Per-task fits of a table of evaluations (``tasks``), the tasks skipped with their reason,
    and what the predictions need: the accuracy's unit, the bootstrap's size and seed."""

    tasks: list[TaskFit]
    skipped: dict[str, str]
    source: str
    acc_scale: float = 1.0
    n_boot: int = 0
    seed: int = 0
    n_runs: int = 0
    notes: list[str] = field(default_factory=list)

    def task(self, name: str) -> TaskFit:
        return next(t for t in self.tasks if t.task == name)


def _pool(tasks: list[TaskFit], notes: list[str]) -> None:
    """Each task's tau^2: halfway between its own held-out estimate and the tasks' mean."""
    checked = [t for t in tasks if t.holdout is not None]
    if not checked:
        for t in tasks:
            t.tau1, t.tau2 = PRIOR_TAU1, PRIOR_TAU2
        if tasks:
            notes.append(f"no held-out check (it needs 4 sizes and 5 runs below the largest): extrapolation sds are "
                         f"the defaults, {PRIOR_TAU1} in log task loss and {PRIOR_TAU2} in accuracy per decade")
        return
    mean1 = float(np.mean([t.holdout["tau1_sq"] for t in checked]))
    mean2 = float(np.mean([t.holdout["tau2_sq"] for t in checked]))
    for t in tasks:
        own1 = t.holdout["tau1_sq"] if t.holdout else mean1
        own2 = t.holdout["tau2_sq"] if t.holdout else mean2
        t.tau1, t.tau2 = math.sqrt(0.5 * (own1 + mean1)), math.sqrt(0.5 * (own2 + mean2))


def fit_downstream(data, *, n_boot: int = 1000, seed: int = 0, skip: float = SKIP_SHARE,
                   calibrated: bool = True) -> DownstreamFit:
    """Fit every task of ``data`` (orchestrator.fitting.downstream.table.DownstreamData).
    FitError when the table has fewer than 3 runs or no task can be fitted."""
    from orchestrator.fitting.bootstrap import resample_counts

    frame = data.frame
    runs = list(dict.fromkeys(frame["run"].astype(str)))
    if len(runs) < 3:
        raise FitError(f"{data.source}: {len(runs)} run{'s' if len(runs) != 1 else ''}; the two-step fit needs at least 3 "
                       "(different N and D) to fit a task-loss law")
    counts = resample_counts(len(runs), n_boot, seed)
    column = {r: i for i, r in enumerate(runs)}
    fits, skipped = [], {}
    for name in data.tasks:
        td = task_data(frame, name, skip)
        try:
            tf = fit_task(td, counts[:, [column[r] for r in td.runs]], seed)
        except (FitError, np.linalg.LinAlgError, ValueError) as e:
            skipped[name] = str(e)
            continue
        if calibrated:
            tf.holdout = calibrate(tf, n_boot=min(n_boot, HOLDOUT_RESAMPLES), seed=seed)
        tf.extras["emergence"] = emergence(tf)
        tf.extras["baselines"] = fit_baselines(tf)
        fits.append(tf)
    if not fits:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise FitError(f"{data.source}: no task could be fitted ({reasons})")
    notes = list(data.notes)
    if calibrated:
        _pool(fits, notes)
    return DownstreamFit(fits, skipped, data.source, data.acc_scale, n_boot, seed, len(runs), notes)


def predict(fit: DownstreamFit, n, d, labels=None) -> list[dict]:
    """One object per (point, task), points in the given order: task loss and accuracy, each
    ``{"estimate", "80%", "95%"}`` (accuracy in the input's unit), and the baselines'."""
    n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
    labels = labels if labels is not None else [f"point {i}" for i in range(len(n))]
    per_task = []
    for i, tf in enumerate(fit.tasks):
        rng = np.random.default_rng([fit.seed, i, 20261207])
        (l_est, a_est), (l_draw, a_draw) = draws(tf, n, d, rng)
        base = baseline_predictions(tf, n, d)
        per_task.append((tf, l_est, a_est, l_draw, a_draw, base))
    out = []
    s = fit.acc_scale
    for j in range(len(n)):
        for tf, l_est, a_est, l_draw, a_draw, base in per_task:
            out.append({
                "point": labels[j], "task": tf.task, "n": float(n[j]), "d": float(d[j]),
                "task_loss": interval(l_est[j], l_draw[:, j]),
                "accuracy": interval(a_est[j], a_draw[:, j], s),
                "baselines": {k: (float(v[j]) * s if v is not None else None) for k, v in base.items()},
                "beyond_ladder_decades": float(np.hypot(*[max(x, 0.0) for x in
                                                          (math.log10(n[j]) - tf.ladder[0],
                                                           math.log10(d[j]) - tf.ladder[1])])),
            })
    return out
