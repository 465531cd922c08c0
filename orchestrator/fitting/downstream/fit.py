"""Every task of a table: fitted, calibrated against a held-out size, and predicted.

:func:`fit_downstream` draws one set of bootstrap run counts for the whole ladder, so a
resample is the same ladder for every task and both steps; fits each task
(orchestrator.fitting.downstream.chain.fit_task); skips a task that cannot be fitted (constant
accuracy, too few runs) with a note while the others go on; and measures each task's
extrapolation sds by refitting without the largest size (chain.calibrate).

A task's held-out check sees 6-8 runs, and the drift it measures is partly shared (every task
is the same ladder), so each task's calibration kappa^2 is the mean of its own and the pooled
one, sum(e^2) / sum(sd^2) over every task's held-out runs; a task whose check could not be made
gets the pooled one, and a ladder where no check can be made (fewer than 4 sizes) keeps the
draws' spread as it is, with a note.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import FitError
from orchestrator.fitting.downstream.chain import (HOLDOUT_RESAMPLES, KAPPA_BOUNDS, SKIP_SHARE, TaskFit, draws,
                                                   fit_task, holdout_errors, holdouts, interval, task_data)
from orchestrator.fitting.downstream.extras import baseline_predictions, emergence, fit_baselines

__all__ = ["DownstreamFit", "fit_downstream", "predict"]


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


MIN_NARROWING_RUNS = 6  # held-out predictions of a task before its intervals may be narrowed (kappa < 1)


def _kappas(tasks: list[TaskFit], key: str) -> list[float] | None:
    """Each task's calibration factor from the held-out errors under ``key`` (module docstring)."""
    checked = [t for t in tasks if t.holdout is not None and t.holdout.get(key) and t.holdout[key]["errors"]]
    if not checked:
        return None
    ratio = lambda h: (float(np.sum(np.square(h["errors"]))), float(np.sum(np.square(h["sds"]))))  # noqa: E731
    e2, s2 = np.sum([ratio(t.holdout[key]) for t in checked], axis=0)
    pooled = e2 / max(s2, 1e-300)
    out = []
    for t in tasks:
        own, n = pooled, 0
        if t in checked:
            e, sd = ratio(t.holdout[key])
            own, n = e / max(sd, 1e-300), len(t.holdout[key]["errors"])
        # Narrowing needs evidence: a held-out refit on a small ladder is itself wide, so a few of its
        # errors inside its spread say little about the full fit's (on the quickstart's 9 runs, 2
        # held-out runs gave x0.7 while the next budget's accuracy missed its intervals by 5 points).
        low = KAPPA_BOUNDS[0] if n >= MIN_NARROWING_RUNS else 1.0
        out.append(float(np.clip(math.sqrt(0.5 * (own + pooled)), low, KAPPA_BOUNDS[1])))
    return out


def _calibrate(fits: list[TaskFit], n_boot: int, seed: int, pool, notes: list[str]) -> None:
    """Held-out refits of every task, then kappa1 (task loss) and kappa2 (accuracy, measured
    with kappa1 applied) for each."""
    def check(tf):
        checks = holdouts(tf, n_boot, seed)
        tf.holdout = {"checks": [c[0] for c in checks], "task_loss": holdout_errors(tf, checks, None, seed)} \
            if checks else None
        return checks

    checks = list(pool.map(check, fits))
    kappa1 = _kappas(fits, "task_loss")
    if kappa1 is None:
        notes.append("no held-out check (it needs 4 sizes, or 4 ratios D/N, and 5 runs left): the intervals are the "
                     "bootstrap's and the noise terms' as they are, not calibrated on an extrapolation")
        return
    for tf, k in zip(fits, kappa1):
        tf.kappa1 = k
    for tf, c in zip(fits, checks):
        if c:
            tf.holdout["accuracy"] = holdout_errors(tf, c, tf.kappa1, seed)
    for tf, k in zip(fits, _kappas(fits, "accuracy") or [1.0] * len(fits)):
        tf.kappa2 = k


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
    counts = resample_counts(len(runs), n_boot, seed) if n_boot > 0 else np.zeros((0, len(runs)))
    column = {r: i for i, r in enumerate(runs)}

    def one(name: str):
        td = task_data(frame, name, skip)
        try:
            tf = fit_task(td, counts[:, [column[r] for r in td.runs]], seed)
        except (FitError, np.linalg.LinAlgError, ValueError) as e:
            return name, str(e)
        tf.extras["emergence"] = emergence(tf)
        tf.extras["baselines"] = fit_baselines(tf)
        return name, tf

    notes = list(data.notes) + (["no resamples (--n-boot 0): estimates without intervals"] if n_boot <= 0 else [])
    # Tasks are independent: one per core (numpy's array loops release the GIL).
    with ThreadPoolExecutor(max_workers=min(len(data.tasks), os.cpu_count() or 1)) as pool:
        done = list(pool.map(one, data.tasks))
        fits = [r for _, r in done if isinstance(r, TaskFit)]
        skipped = {name: r for name, r in done if isinstance(r, str)}
        if calibrated and fits and n_boot > 0:
            _calibrate(fits, min(n_boot, HOLDOUT_RESAMPLES), seed, pool, notes)
    if not fits:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise FitError(f"{data.source}: no task could be fitted ({reasons})")
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
