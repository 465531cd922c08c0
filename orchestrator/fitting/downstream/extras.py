"""What a task fit says besides the chained prediction: its emergence point and two baselines.

Emergence. Where a task's accuracy first rises visibly above chance: the task loss L_e at which
the fitted sigmoid reaches floor + EMERGENCE_MARGIN (5 points), read off the smooth curve (so
checkpoint noise does not decide it), and the compute at which the step-1 law's
compute-optimal frontier L*(C) falls to L_e. Either may be absent: a sigmoid whose ceiling is
within 5 points of its floor never emerges, and a frontier whose floor E is above L_e never
gets there. Both carry bootstrap intervals from the same resamples as everything else.

Baselines, so a user sees what the two steps buy (Bhagia et al. 2024, section 5.3 compare a
single step from (N, D) and from compute C to accuracy):

* ``one_step``: the sigmoid of the step-1 law's task loss, fitted to the runs' *final*
  checkpoints only (accuracy straight from (N, D), one point per run);
* ``compute_only``: a sigmoid of log10 C (C = 6ND, workers.flops.train_flops) fitted to the final
  checkpoints, the same curve family in compute instead of task loss.

Point estimates only: they are reference lines, not predictions with intervals.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.errors import FitError
from orchestrator.fitting.downstream.sigmoid import fit_sigmoid, natural
from workers.flops import train_flops

__all__ = ["emergence", "fit_baselines", "baseline_predictions", "EMERGENCE_MARGIN"]

EMERGENCE_MARGIN = 0.05  # accuracy above the floor that counts as emerged
C_GRID = np.logspace(10, 34, 241)  # FLOPs over which the frontier is read
BEYOND = 1e35  # an interval end here means "beyond any compute considered (1e34)"


def _emergent_loss(theta: np.ndarray, chance) -> np.ndarray:
    """L_e per row of theta (NaN where the ceiling is within the margin of the floor)."""
    v = natural(np.atleast_2d(theta), chance)
    span = v["ceiling"] - v["floor"]
    with np.errstate(all="ignore"):
        return np.where(span > EMERGENCE_MARGIN, v["L0"] + np.log(span / EMERGENCE_MARGIN - 1.0) / v["k"], np.nan)


def _compute_at(frontier: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Compute at which each row's frontier (k, grid) first falls to its target (k,): NaN where
    it never does, the grid's start where it is already below."""
    out = np.full(len(target), np.nan)
    logc = np.log10(C_GRID)
    for i, (row, t) in enumerate(zip(frontier, target)):
        if not np.isfinite(t) or not np.isfinite(row).any():
            continue
        below = np.flatnonzero(row <= t)
        if not len(below):
            continue
        j = int(below[0])
        if j == 0:
            out[i] = C_GRID[0]
            continue
        a, b = row[j - 1], row[j]  # interpolate in log C between the grid points around the crossing
        out[i] = 10 ** (logc[j - 1] + (logc[j] - logc[j - 1]) * (a - t) / (a - b) if a != b else logc[j])
    return out


def emergence(tf) -> dict:
    """Emergence point of a TaskFit (module docstring): accuracy, task loss, compute, with
    intervals where the bootstrap has draws."""
    from orchestrator.fitting.downstream.chain import interval

    floor = tf.sigmoid.values()["floor"]
    out = {"accuracy": floor + EMERGENCE_MARGIN, "task_loss": None, "compute": None, "note": ""}
    le = float(_emergent_loss(tf.sigmoid.theta, tf.data.chance)[0])
    if not math.isfinite(le):
        out["note"] = f"never: the sigmoid's ceiling is within {EMERGENCE_MARGIN:.2f} of its floor"
        return out
    le_draws = _emergent_loss(tf.sig_draws, tf.data.chance) if len(tf.sig_draws) else np.zeros(0)
    out["task_loss"] = interval(le, le_draws)
    c = float(_compute_at(tf.step1.frontier_loss(C_GRID)[None, :], np.array([le]))[0])
    if not math.isfinite(c):
        out["note"] = "not reached: the task-loss law's compute-optimal frontier stays above this task loss"
        return out
    Z = tf.step1.draws
    c_draws = np.zeros(0)
    if Z is not None and len(Z):
        sub = slice(None, 200)  # 200 draws read the interval's ends well enough, at a fifth of the cost
        c_draws = _compute_at(tf.step1.frontier_loss(C_GRID, Z[sub]), le_draws[sub])
        # A draw whose frontier never gets there counts as beyond the grid (BEYOND FLOPs)
        c_draws = np.where(np.isnan(c_draws), BEYOND, c_draws)
    ci = interval(math.log10(c), np.log10(c_draws))
    out["compute"] = {k: (10 ** v if k == "estimate" else [None if x is None else 10 ** x for x in v])
                      for k, v in ci.items()}
    if c <= C_GRID[0]:
        out["note"] = "emerged before the smallest compute considered (1e10 FLOPs)"
    elif c < float(np.min(train_flops(tf.data.n, tf.data.d))):
        out["note"] = "emerged below the ladder's compute (read off the law's extrapolation downwards)"
    return out


def fit_baselines(tf) -> dict:
    """The two baselines' fitted curves: {"one_step": Sigmoid | None, "compute_only": Sigmoid | None}."""
    td = tf.data
    out = {}
    fitted = tf.step1.predict({"N": td.n, "D": td.d})
    x_c = -np.log10(train_flops(td.n, td.d))  # the sigmoid falls in x: accuracy rises with compute
    for name, x in (("one_step", fitted), ("compute_only", x_c)):
        try:
            out[name] = fit_sigmoid(x, td.acc, td.chance) if np.ptp(td.acc) > 0 else None
        except (FitError, np.linalg.LinAlgError, ValueError):
            out[name] = None
    return out


def baseline_predictions(tf, n, d) -> dict[str, np.ndarray | None]:
    """Each baseline's accuracy at the points (n, d)."""
    curves = tf.extras.get("baselines", {})
    n, d = np.asarray(n, float), np.asarray(d, float)
    x = {"one_step": tf.step1.predict({"N": n, "D": d}), "compute_only": -np.log10(train_flops(n, d))}
    return {k: (curves[k](x[k]) if curves.get(k) is not None else None) for k in ("one_step", "compute_only")}
