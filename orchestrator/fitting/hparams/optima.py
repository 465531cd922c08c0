"""Each design point's optimal learning rate (and batch size) and optimal loss, from its trials.

A point is the trials that share ``point_id`` (a tuned sweep: the trial's content hash without
lr and batch), or, in a table without one, the runs of one (N, D). Along one axis the optimum
is the vertex of a parabola in ln(value) of ln(loss), as Chinchilla's IsoFLOP parabolas are in
ln N: the loss basin is quadratic in ln lr near its bottom (Li et al. 2025, "Predictable Scale:
Part I", fig. 3; shared/BENCHMARK.md's landscape is exactly that), so the parabola through the
best trial and its neighbours averages their seed noise instead of keeping the luckiest trial.

**Bracketing.** A vertex is trusted only between tried values. A point whose best finished
trial is at an end of what finished is *not bracketed*: the optimum lies beyond the edge, at an
unknown distance, and the point is left out of the hyperparameter laws (listed, with the side,
so that the search can be extended). Treating it as censored instead (a Tobit-style fit that
uses "lr* > edge") would need a model of how far beyond the edge the optimum lies, which is
the law being fitted; leaving it out costs only that point, and the laws' notes check the
fitted law against it afterwards (orchestrator.fitting.hparams.laws). A diverged trial (NaN loss: a learning
rate too high) is never the best, but it bounds the search from above: a best at the top of
the finished learning rates with a diverged one above it is bracketed *by divergence*; its
vertex is clamped to the finished range, i.e. at most the highest finished lr.

**Two axes.** When a point tried several batch sizes, a quadratic surface in (ln lr, ln B) of
ln loss is fitted to the runs nearest the best (the tilt term matters: a larger batch wants a
larger learning rate, so the lr of the best batch row is not lr* when that row is not B*). It
is used when it is determined (rank 6), opens upwards (positive definite Hessian) and its
vertex lies inside the box of the runs it was fitted to; otherwise each axis is read along the
lines through the best trial (lr at the best's batch, batch at the best's lr), which is the
one-axis-at-a-time design of orchestrator.planning.tuning, and failing that the best run.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workers.store import TrialStatus

__all__ = ["Method", "PointOptimum", "point_optima", "trials_runs", "RUN_COLUMNS", "levels", "parabola"]

RUN_COLUMNS = ("point", "name", "n", "n_total", "d", "lr", "batch", "loss", "status", "budget")
WINDOW = math.log(3.0)  # half-width in ln lr of a parabola's fit: the best's neighbours at 2x, all of a finer search
SURFACE_RUNS = 12  # nearest runs to the best a surface is fitted to (a 3x3 block and a few beyond)
SAME = 1e-9  # values equal to 9 digits in ln are one value (a CSV's rounding)
# A trial this far above (in ln loss) what its neighbours allow is a spike, not the basin: 0.5 %,
# against a trial's noise of ~0.07 % (0.002 nats at L = 3) and 0.28 % for a 2x miss of lr*.
BUMP = 0.005


class Method(str, enum.Enum):
    """How a point's optimum was found; the value is what the text and the JSON print."""

    SURFACE = "surface"  # quadratic surface in (ln lr, ln B) of ln loss
    PARABOLA = "parabola"  # parabola in ln lr of ln loss through the best trials
    DIVERGENCE = "parabola, bounded by divergence"  # the best finished lr is the highest; a higher one diverged
    LINES = "lines through the best"  # two axes, surface unusable: a parabola along each line through the best
    EDGE = "edge"  # the best is at an end of the tried values: not bracketed
    TOO_FEW = "too few values"  # fewer than three finished values: nothing to bracket
    NONE = "no finished trial"


@dataclass
class PointOptimum:
    """One design point's optimum. ``n`` is N as the hyperparameter laws count it, ``n_total``
    the law fit's N. ``loss_opt`` is the fitted minimum (parabola or surface) where the optimum
    is bracketed and the objective is "parabola": three or more trials' noise averaged, and free
    of the selection bias of the minimum of noisy trials (which is low by about 0.85 sd for three
    trials near the bottom); else the best trial's loss (``loss_fitted`` False), an upper bound of
    the point's optimum by the penalty of the miss."""

    point: str
    name: str
    n: float
    n_total: float
    d: float
    budget: float
    n_trials: int
    n_diverged: int
    lr_opt: float  # nan without a finished trial
    loss_opt: float
    loss_fitted: bool
    method: Method
    lr_bracketed: bool
    lr_edge: str = ""  # "low" or "high" where lr is not bracketed
    batch_opt: float | None = None  # None: the point tried one batch size
    batch_bracketed: bool = False
    batch_edge: str = ""
    why: str = ""  # why a surface was not used, when it was tried
    batch_fixed: float | None = None  # the batch of a point that tried one (its median)
    lr_range: tuple[float, float] = (math.nan, math.nan)  # the finished trials' lowest and highest lr
    batch_range: tuple[float, float] = (math.nan, math.nan)
    # Two axes: the surface's tilt (d ln lr* / d ln B, d ln B* / d ln lr), or the lines' readings
    # (ln lr* along the best's batch row, that row's ln B, ln B* along its lr column, its ln lr).
    tilt: tuple[float, float] | None = None
    lines: tuple[float, float, float, float] | None = None

    def to_json(self) -> dict:
        return {k: (v.value if isinstance(v, Method) else v) for k, v in self.__dict__.items()}


def levels(x, tol: float = math.log(1.1)) -> int:
    """Distinct values of a positive array, values within ``tol`` in ln (10 %) counting as one:
    the sizes of one design point drift with a model's shape and a batch's rounding."""
    v = np.sort(np.log(np.asarray(x, float)))
    return 0 if not len(v) else 1 + int((np.diff(v) > tol).sum())


def trials_runs(trials: pd.DataFrame) -> pd.DataFrame:
    """A sweep's trials table as runs (RUN_COLUMNS): N of the laws is n_params_nonembed, the
    count the recipe's rules use for a GPT (n_params where it is null: a simulated trial has one
    count); points by point_id (by (N, D) where the table has none)."""
    t = trials
    num = lambda c: pd.to_numeric(t[c], errors="coerce").astype(float) if c in t else pd.Series(np.nan, index=t.index)  # noqa: E731
    n_total = num("n_params")
    n = num("n_params_nonembed").where(lambda s: s > 0, n_total) if "n_params_nonembed" in t else n_total
    runs = pd.DataFrame({
        "point": t["point_id"] if "point_id" in t else None,
        "name": t["name"].astype(str) if "name" in t else [f"row {i}" for i in range(len(t))],
        "n": n, "n_total": n_total, "d": num("tokens"), "lr": num("lr"), "batch": num("batch_tokens"),
        "loss": num("eval_loss"), "status": t["status"].astype(str) if "status" in t else TrialStatus.COMPLETED.value,
        "budget": num("budget").fillna(0.0)}).reset_index(drop=True)
    return with_points(runs)


def with_points(runs: pd.DataFrame) -> pd.DataFrame:
    """``point`` filled in where missing: the runs of one (N, D), to 9 digits."""
    key = [f"N={a:.9g} D={b:.9g}" for a, b in zip(runs["n_total"], runs["d"])]
    point = runs["point"] if "point" in runs else pd.Series(None, index=runs.index)
    runs["point"] = [str(p) if isinstance(p, str) and p else k for p, k in zip(point, key)]
    return runs


def point_optima(runs: pd.DataFrame, objective: str = "parabola") -> list[PointOptimum]:
    """One PointOptimum per point of ``runs`` (RUN_COLUMNS), ordered by (N, D). ``objective``
    "best" takes each point's loss from its best trial (the spec's tune.objective)."""
    out = [_point(g, objective) for _, g in runs.groupby("point", sort=False)]
    _correct_lines(out)
    return sorted(out, key=lambda p: (p.n_total, p.d, p.point))


MIN_TILTS = 3  # surfaces before their median tilt corrects the points read along lines


def _correct_lines(points: list[PointOptimum]) -> None:
    """Points read along the lines through their best (a one-axis-at-a-time search) give lr* at
    the best's batch, not at B*, and B* at the best's lr: the basin is tilted (a larger batch
    wants a larger learning rate; k_x < 0 in shared/BENCHMARK.md's landscape moves lr* by 0.52
    per unit of ln B). Where MIN_TILTS points of the sweep determined a surface, their median
    tilt moves both readings to the joint vertex: u = a + t (v - v_row), v = b + s (u - u_col).
    In bench/bench_hparams_fit.py (lr, batch, lr searches) it cut the sd of such points' ln lr*
    error from 0.215 to 0.185 (ln B*: 0.222 to 0.192)."""
    tilts = np.array([p.tilt for p in points if p.tilt is not None])
    if len(tilts) < MIN_TILTS:
        return
    t, s = np.median(tilts, axis=0)
    if not abs(t * s) < 0.9:  # (the vertex of a convex basin has t * s < 1)
        return
    for p in points:
        if p.lines is None:
            continue
        a, v_row, b, u_col = p.lines
        u = (a + t * (b - s * u_col - v_row)) / (1 - t * s)
        p.lr_opt, p.batch_opt = math.exp(u), math.exp(b + s * (u - u_col))
        p.why += f"; corrected by the median tilt of {len(tilts)} surfaces (lr* ~ B^{t:.2f}, B* ~ lr^{s:.2f})"


def _finished(g: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(completed runs with a finite positive loss, diverged runs: NaN loss or status diverged)."""
    loss = g["loss"].to_numpy(float)
    ok = (g["status"] == TrialStatus.COMPLETED.value).to_numpy() & np.isfinite(loss) & (loss > 0)
    diverged = (g["status"] == TrialStatus.DIVERGED.value).to_numpy() | (
        (g["status"] == TrialStatus.COMPLETED.value).to_numpy() & ~np.isfinite(loss))
    return g[ok], g[diverged]


def _point(g: pd.DataFrame, objective: str) -> PointOptimum:
    ok, div = _finished(g)
    base = dict(point=str(g["point"].iloc[0]), n=float(np.median(g["n"])), n_total=float(np.median(g["n_total"])),
                d=float(np.median(g["d"])), budget=float(g["budget"].iloc[0]), n_trials=len(g), n_diverged=len(div))
    if not len(ok):
        return PointOptimum(name=str(g["name"].iloc[0]), lr_opt=math.nan, loss_opt=math.nan, loss_fitted=False,
                            method=Method.NONE, lr_bracketed=False, **base)
    best = ok.loc[ok["loss"].idxmin()]
    base["name"] = str(best["name"])
    base["lr_range"] = (float(ok["lr"].min()), float(ok["lr"].max()))
    base["batch_range"] = (float(ok["batch"].min()), float(ok["batch"].max()))
    x, y = np.log(ok["lr"].to_numpy(float)), np.log(ok["loss"].to_numpy(float))
    b = ok["batch"].to_numpy(float)
    if np.isfinite(b).all() and levels(b, SAME) >= 2:
        p = _two_axes(x, np.log(b), y, np.log(div["lr"].to_numpy(float)), np.log(div["batch"].to_numpy(float)), base)
    else:
        lr = _along(x, y, np.log(div["lr"].to_numpy(float)))
        batch = float(np.median(b)) if np.isfinite(b).all() else None
        p = PointOptimum(lr_opt=math.exp(lr.x), loss_opt=math.exp(lr.y), loss_fitted=lr.fitted, method=lr.method,
                         lr_bracketed=lr.bracketed, lr_edge=lr.edge, batch_fixed=batch, **base)
    if objective == "best" or not p.loss_fitted:
        p.loss_opt, p.loss_fitted = float(best["loss"]), False
    return p


@dataclass
class _Axis:
    x: float  # ln of the optimum
    y: float  # ln of the loss there (fitted, or the best's)
    method: Method
    bracketed: bool
    edge: str = ""
    fitted: bool = False


def _unique(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct x (to SAME) with the mean y of their repeats (seeds of one configuration)."""
    key = np.round(x / SAME) * SAME if len(x) else x
    ux, inv = np.unique(key, return_inverse=True)
    my = np.bincount(inv, weights=y) / np.bincount(inv)
    xs = np.bincount(inv, weights=x) / np.bincount(inv)
    return xs, my


def _along(x: np.ndarray, y: np.ndarray, x_div: np.ndarray = np.array([])) -> _Axis:
    """The optimum along one axis (ln values ``x``, ln losses ``y``); ``x_div``: ln values that
    diverged, which bound it from above (module docstring)."""
    ux, uy = _drop_bumps(*_unique(x, y))
    i = int(np.argmin(uy))
    if len(ux) < 3:
        edge = "" if len(ux) == 1 else ("low" if i == 0 else "high")
        return _Axis(ux[i], uy[i], Method.TOO_FEW, False, edge)
    interior = 0 < i < len(ux) - 1
    bounded = i == len(ux) - 1 and bool((x_div > ux[i] + SAME).any())
    if not (interior or bounded):
        return _Axis(ux[i], uy[i], Method.EDGE, False, "low" if i == 0 else "high")
    v = _window_parabola(ux, uy, i) if interior else None
    if v is None:  # the three through the best (bounded: the top three), always convex when interior
        j = min(max(i - 1, 0), len(ux) - 3)
        v = parabola(ux[j:j + 3], uy[j:j + 3], ux[0], ux[-1])
    if v is None:  # three equal losses: the best itself
        v = (ux[i], uy[i])
    return _Axis(v[0], v[1], Method.PARABOLA if interior else Method.DIVERGENCE, True, fitted=True)


def _drop_bumps(ux: np.ndarray, uy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values without bumps: a trial more than BUMP above both of its neighbours cannot be
    the basin (which falls to one minimum and rises on both sides), so it is an outlier (a loss
    spike; shared/BENCHMARK.md's worlds add 0.05-0.3 nats to 2 % of trials), and it would drag a
    parabola's vertex away from it by a third of a step."""
    while len(ux) > 3:
        bump = uy[1:-1] - np.maximum(uy[:-2], uy[2:])
        j = int(np.argmax(bump))
        if bump[j] <= BUMP:
            break
        ux, uy = np.delete(ux, j + 1), np.delete(uy, j + 1)
    return ux, uy


def parabola(x, y, lo: float, hi: float) -> tuple[float, float] | None:
    """Vertex (clamped to [lo, hi]) and value of the least-squares parabola, or None when it
    does not open upwards."""
    a, b, c = np.polyfit(x, y, 2)
    if not a > 0:
        return None
    xv = float(np.clip(-b / (2 * a), lo, hi))
    return xv, float(np.polyval((a, b, c), xv))


def _window_parabola(ux, uy, i) -> tuple[float, float] | None:
    """The least-squares parabola through every value within WINDOW of the best (and at least
    its two neighbours): a refined search's extra trials average more noise than the best
    three would. None when it does not open upwards or its vertex leaves the neighbours' span."""
    w = max(WINDOW, ux[i] - ux[i - 1], ux[i + 1] - ux[i]) + SAME
    near = np.abs(ux - ux[i]) <= w
    if near.sum() <= 3:
        return None
    v = parabola(ux[near], uy[near], -np.inf, np.inf)
    if v is None or not ux[i - 1] <= v[0] <= ux[i + 1]:
        return None
    return v


def _two_axes(x, yb, y, x_div, yb_div, base: dict) -> PointOptimum:
    """A point that tried several batch sizes (module docstring): surface, else lines, else best."""
    surface, why = _surface(x, yb, y)
    if surface is not None:
        vx, vb, vy, tilt = surface
        return PointOptimum(lr_opt=math.exp(vx), loss_opt=math.exp(vy), loss_fitted=True, method=Method.SURFACE,
                            lr_bracketed=True, batch_opt=math.exp(vb), batch_bracketed=True, tilt=tilt, **base)
    i = int(np.argmin(y))
    on_row = np.abs(yb - yb[i]) <= SAME  # the best's batch: its lr line
    on_col = np.abs(x - x[i]) <= SAME  # the best's lr: its batch line
    lr = _along(x[on_row], y[on_row], x_div[np.abs(yb_div - yb[i]) <= SAME])
    bt = _along(yb[on_col], y[on_col])
    method = Method.LINES if lr.bracketed or bt.bracketed else (Method.EDGE if Method.EDGE in (lr.method, bt.method)
                                                              else Method.TOO_FEW)
    # The loss of the line searched last is unknown here; take the lower of the two fitted minima.
    fitted = [a.y for a in (lr, bt) if a.fitted]
    both = lr.bracketed and bt.bracketed
    return PointOptimum(lr_opt=math.exp(lr.x), loss_opt=math.exp(min(fitted) if fitted else y[i]),
                        loss_fitted=bool(fitted), method=method, lr_bracketed=both, lr_edge=lr.edge,
                        batch_opt=math.exp(bt.x), batch_bracketed=both, batch_edge=bt.edge,
                        why=why, lines=(lr.x, yb[i], bt.x, x[i]) if both else None, **base)


def _surface(x, yb, y) -> tuple[tuple | None, str]:
    """The quadratic surface's (ln lr*, ln B*, ln loss*, tilt) through the SURFACE_RUNS runs nearest
    the best (distances in steps of each axis), or None with why it cannot be used."""
    ux, ub = np.unique(np.round(x / SAME)), np.unique(np.round(yb / SAME))
    if len(ux) < 3 or len(ub) < 3:
        return None, f"{min(len(ux), len(ub))} distinct values along one axis (a surface needs 3 along each)"
    sx = float(np.median(np.diff(ux))) * SAME or 1.0
    sb = float(np.median(np.diff(ub))) * SAME or 1.0
    i = int(np.argmin(y))
    dist = np.hypot((x - x[i]) / sx, (yb - yb[i]) / sb)
    near = np.argsort(dist, kind="stable")[:SURFACE_RUNS]
    u, v, z = x[near] - x[i], yb[near] - yb[i], y[near]
    A = np.stack([np.ones_like(u), u, v, u * u, v * v, u * v], axis=1)
    if len(near) < 7 or np.linalg.matrix_rank(A) < 6:
        return None, "the runs near the best do not determine a quadratic surface (too few, or on two lines only)"
    c = np.linalg.lstsq(A, z, rcond=None)[0]
    for _ in range(2):  # a spiked trial (_drop_bumps) bends a surface too: leave out the worst, refit
        r = z - A @ c
        j = int(np.argmax(r))
        if r[j] <= BUMP or len(z) <= 7 or np.linalg.matrix_rank(np.delete(A, j, axis=0)) < 6:
            break
        A, z, u, v = np.delete(A, j, axis=0), np.delete(z, j), np.delete(u, j), np.delete(v, j)
        c = np.linalg.lstsq(A, z, rcond=None)[0]
    H = np.array([[2 * c[3], c[5]], [c[5], 2 * c[4]]])
    if not (H[0, 0] > 0 and np.linalg.det(H) > 0):
        return None, "the fitted surface does not open upwards (its Hessian is not positive definite)"
    vu, vv = np.linalg.solve(H, -c[1:3])
    if not (u.min() <= vu <= u.max() and v.min() <= vv <= v.max()):
        return None, "the fitted surface's vertex lies outside the runs it was fitted to"
    vy = c[0] + c[1] * vu + c[2] * vv + c[3] * vu ** 2 + c[4] * vv ** 2 + c[5] * vu * vv
    tilt = (float(-c[5] / (2 * c[3])), float(-c[5] / (2 * c[4])))  # where each axis's optimum moves with the other
    return (x[i] + vu, yb[i] + vv, float(vy), tilt), ""
