"""The numerics of comparing variants (orchestrator.fitting.variants): frontiers L*(C) and their
inverse, compute multipliers, crossovers, and intervals from draws of the laws. Everything is
batched over rows of law parameters (the bootstrap's draws), so a thousand draws cost one
array operation per step.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import numpy as np

from orchestrator.fitting import LEVELS
from orchestrator.fitting.bootstrap import Interval
from orchestrator.fitting.discrepancy import field_parameter_cov
from orchestrator.fitting.forms.base import LawForm
from orchestrator.fitting.forms.predict import grid_x

__all__ = ["Frontier", "PowerFrontier", "GridFrontier", "frontier", "log_multiplier", "multipliers", "log_crossover",
           "quantities", "with_field", "evaluate", "interval", "field_cov", "CROSS_SPAN", "QUANTITIES"]

CROSS_SPAN = 1000.0  # crossovers are looked for within target / CROSS_SPAN .. target * CROSS_SPAN
CROSS_POINTS = 121  # grid over that span (0.05 decades) bracketing sign changes before bisection
BISECT_ITERS = 40  # the bracket shrinks to 2^-40 of 0.05 decades
TREND_STEP = 0.05  # ln units either side of the target for d ln k / d ln C
GRID_PER_DECADE = 10  # frontiers without a closed form: tabulated this finely ...
GRID_SPAN = 1e8  # ... over target / GRID_SPAN .. target * GRID_SPAN (a report plots 6-7 decades below it)
QUANTITIES = ("log_k", "log_k_lower", "log_k_upper", "trend", "log_crossover")


# --- frontiers ------------------------------------------------------------------------------------


class Frontier(abc.ABC):
    """ln L*(x) of a batch of laws (rows), x the compute C (or N for a law of N alone), and its inverse."""

    @abc.abstractmethod
    def log_loss(self, x) -> np.ndarray:
        """(k, m) for x of shape (m,) (every row) or (k, m) (a row each)."""

    @abc.abstractmethod
    def log_x(self, log_l) -> np.ndarray:
        """ln x where each row's frontier reaches ``log_l`` (k, m); +inf where it never does."""


class PowerFrontier(Frontier):
    """L*(x) = E + G (x / s)^-g. Chinchilla's law at its optimal allocation
    (law.optimal_allocation) is this with s = 6, g = alpha beta / (alpha + beta) and
    G = A r^-alpha + B r^beta, r = (alpha A / beta B)^(1 / (alpha + beta)); the n-only law is
    this with G = A, g = alpha, s = 1. Inverse in closed form: k is exact."""

    def __init__(self, E, G, g, scale: float):
        self.E, self.G, self.g = (np.asarray(v, float)[:, None] for v in (E, G, g))
        self.scale = scale

    def log_loss(self, x):
        with np.errstate(all="ignore"):
            return np.log(self.E + self.G * (np.asarray(x, float) / self.scale) ** -self.g)

    def log_x(self, log_l):
        with np.errstate(all="ignore"):
            gap = np.exp(log_l) - self.E
            out = math.log(self.scale) - np.log(gap / self.G) / self.g
        return np.where(gap > 0, out, np.where(np.isnan(gap), np.nan, np.inf))


class GridFrontier(Frontier):
    """A frontier without a closed form, tabulated GRID_PER_DECADE points a decade around the
    target (``column(x)`` -> ln L* of every row at x) and interpolated linearly in (ln x, ln L*).
    L* cannot rise with compute (the same N can train on more tokens), so the table is made
    non-increasing; a row with a NaN anywhere is NaN. Beyond the table the inverse is +inf."""

    def __init__(self, column: Callable[[float], np.ndarray], x_t: float):
        m = int(round(2 * math.log10(GRID_SPAN) * GRID_PER_DECADE)) + 1
        self.lx = math.log(x_t) + np.linspace(-math.log(GRID_SPAN), math.log(GRID_SPAN), m)
        ll = np.stack([column(math.exp(v)) for v in self.lx], axis=1)
        bad = ~np.isfinite(ll).all(axis=1)
        self.ll = np.where(bad[:, None], np.nan, np.minimum.accumulate(np.where(bad[:, None], 0.0, ll), axis=1))

    def log_loss(self, x):
        lq = np.log(np.broadcast_to(np.asarray(x, float), (len(self.ll), np.shape(x)[-1])))
        j = np.clip(np.searchsorted(self.lx, lq), 1, len(self.lx) - 1)
        y0, y1 = np.take_along_axis(self.ll, j - 1, 1), np.take_along_axis(self.ll, j, 1)
        t = (lq - self.lx[j - 1]) / (self.lx[j] - self.lx[j - 1])
        return np.where((lq < self.lx[0]) | (lq > self.lx[-1]), np.nan, y0 + t * (y1 - y0))

    def log_x(self, log_l):
        above = (self.ll[:, None, :] > log_l[:, :, None]).sum(-1)  # rows non-increasing: first index at or below
        j = np.clip(above, 1, len(self.lx) - 1)
        y0, y1 = np.take_along_axis(self.ll, j - 1, 1), np.take_along_axis(self.ll, j, 1)
        with np.errstate(all="ignore"):
            t = np.where(y1 < y0, (y0 - log_l) / (y0 - y1), 0.0)
        out = self.lx[j - 1] + t * (self.lx[j] - self.lx[j - 1])
        out = np.where(above == 0, np.nan, np.where(above == len(self.lx), np.inf, out))  # off the table
        return np.where(np.isnan(log_l) | np.isnan(self.ll[:, :1]), np.nan, out)


def frontier(form: LawForm, Z, x_t: float) -> Frontier:
    """The compute-optimal frontier (for a law of N alone, the loss over N) of ``form`` at each
    row of internal vectors ``Z``; ``x_t`` centres a tabulated frontier."""
    Z = np.atleast_2d(np.asarray(Z, float))
    if form.name in ("chinchilla", "data-constrained"):  # data-constrained's optimum is Chinchilla's, fresh data
        A, B, E = np.exp(Z[:, 0]), np.exp(Z[:, 1]), np.exp(Z[:, 2])
        al, be = Z[:, 3], Z[:, 4]
        with np.errstate(all="ignore"):
            log_r = (np.log(al * A) - np.log(be * B)) / (al + be)
            G = A * np.exp(-al * log_r) + B * np.exp(be * log_r)
            return PowerFrontier(E, G, al * be / (al + be), 6.0)
    if form.name == "n-only":
        return PowerFrontier(np.exp(Z[:, 1]), np.exp(Z[:, 0]), Z[:, 2], 1.0)
    if "D" in form.inputs:
        return GridFrontier(lambda c: np.log(form.optimum(Z, c)[2]), x_t)
    return GridFrontier(lambda n: form.log_loss(Z, {"N": np.array([n])})[:, 0], x_t)


def log_multiplier(fb: Frontier, fv: Frontier, x) -> np.ndarray:
    """ln k at each x: the variant reaches the baseline's L*(x) at k x (+inf: never)."""
    x = np.asarray(x, float)
    return fv.log_x(fb.log_loss(x)) - np.log(x)


def multipliers(form: LawForm, Z_base, Z_var, computes) -> np.ndarray:
    """k (rows, len(computes)) of the variant laws ``Z_var`` against the baseline laws
    ``Z_base`` (internal vectors of ``form``, row i against row i)."""
    computes = np.asarray(computes, float)
    x_t = float(np.exp(np.log(computes).mean()))
    return np.exp(log_multiplier(frontier(form, Z_base, x_t), frontier(form, Z_var, x_t), computes))


def log_crossover(fb: Frontier, fv: Frontier, x_t: float, span: float = CROSS_SPAN) -> np.ndarray:
    """Per row, ln x where the frontiers cross (L*_v = L*_b, k = 1) nearest ``x_t`` within
    x_t / span .. x_t * span; NaN where they do not cross there."""
    lx = math.log(x_t) + np.linspace(-math.log(span), math.log(span), CROSS_POINTS)
    gap = fv.log_loss(np.exp(lx)) - fb.log_loss(np.exp(lx))
    s = np.sign(gap)
    change = (s[:, :-1] * s[:, 1:] <= 0) & np.isfinite(gap[:, :-1]) & np.isfinite(gap[:, 1:])
    dist = np.where(change, np.abs(0.5 * (lx[:-1] + lx[1:]) - math.log(x_t)), np.inf)
    j = dist.argmin(axis=1)
    rows = np.arange(len(gap))
    has = np.isfinite(dist[rows, j])
    lo, hi, s_lo = lx[j], lx[j + 1], s[rows, j]
    for _ in range(BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        gm = (fv.log_loss(np.exp(mid)[:, None]) - fb.log_loss(np.exp(mid)[:, None]))[:, 0]
        left = np.sign(gm) == s_lo  # the crossing lies above mid
        lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
    return np.where(has, 0.5 * (lo + hi), np.nan)


def quantities(fb: Frontier, fv: Frontier, x_t: float) -> np.ndarray:
    """(k, 5) per row: QUANTITIES, ln k at x_t, x_t / 10 and 10 x_t, d ln k / d ln x at x_t
    (central difference, TREND_STEP) and the crossover's ln x."""
    lx = math.log(x_t) + np.array([0.0, -math.log(10), math.log(10), TREND_STEP, -TREND_STEP])
    lk = log_multiplier(fb, fv, np.exp(lx))
    with np.errstate(invalid="ignore"):
        trend = (lk[:, 3] - lk[:, 4]) / (2 * TREND_STEP)
    return np.column_stack([lk[:, 0], lk[:, 1], lk[:, 2], trend, log_crossover(fb, fv, x_t)])


# --- uncertainty ----------------------------------------------------------------------------------


def with_field(draws: np.ndarray | None, cov: np.ndarray | None, seed: int) -> np.ndarray | None:
    """Bootstrap draws of the parameters plus, per draw, an independent draw of the residual
    fields' effect on them, N(0, ``cov``). The bootstrap over runs does not see the fields (they
    bias every resample alike, orchestrator.fitting.discrepancy); the two are independent, so
    their sum is a draw of the whole error. analyse adds the field to each interval in
    quadrature; adding it to the laws instead carries it through the nonlinear quantities here
    as well (an infinite k, whether the frontiers cross at all)."""
    if draws is None or not len(draws) or cov is None:
        return draws
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    root = vecs * np.sqrt(np.maximum(vals, 0.0))
    return draws + np.random.default_rng([seed, len(draws)]).standard_normal(draws.shape) @ root.T


def evaluate(fn: Callable[[np.ndarray], np.ndarray], theta: np.ndarray,
             draws: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``fn`` (rows of parameters -> (k, q)) at the estimate ``theta`` (q,) and at every draw
    with finite parameters (n, q; None without draws)."""
    est = np.asarray(fn(theta[None, :]), float)[0]
    if draws is None or not len(draws):
        return est, None
    draws = draws[np.isfinite(draws).all(axis=1)]
    return est, (np.asarray(fn(draws), float) if len(draws) else None)


def interval(estimate: float, draws: np.ndarray | None) -> Interval:
    """Percentile interval of ``draws`` around ``estimate``: NaN left out, +inf kept (a draw that
    never reaches the loss)."""
    x = np.zeros(0) if draws is None else draws[~np.isnan(draws)]
    if not len(x):
        return Interval(float(estimate), {lv: (math.nan, math.nan) for lv in LEVELS}, 0)
    method = "linear" if np.isfinite(x).all() else "inverted_cdf"  # no arithmetic on inf
    return Interval(float(estimate), {lv: tuple(float(q) for q in np.quantile(
        x, [0.5 * (1 - lv), 0.5 * (1 + lv)], method=method)) for lv in LEVELS}, len(x))


def field_cov(fit) -> np.ndarray | None:
    """The residual field's share of ``fit``'s parameter covariance (the targets' residual model,
    as analyse widens L*); None without one."""
    disc = fit.discrepancy_targets
    if disc is None:
        return None
    X = fit.fit_inputs
    jac = fit.form.log_jacobian(fit.law.z[None, :], X)[0]
    return field_parameter_cov(jac, grid_x(X), fit.used["eval_loss"].to_numpy(float), disc)
