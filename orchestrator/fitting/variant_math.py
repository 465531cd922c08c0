"""The numerics of comparing variants (orchestrator.fitting.variants): frontiers and their
inverse, compute multipliers, crossovers, the joint fit with shared exponents, and the choice
between it and separate fits. Everything is batched over rows of law parameters (the
bootstrap's draws), so a thousand draws cost one array operation per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable

import numpy as np
from scipy.linalg import block_diag
from scipy.stats import chi2

from orchestrator.errors import FitError
from orchestrator.fitting import LEVELS
from orchestrator.fitting.bootstrap import Interval, resample_counts
from orchestrator.fitting.diagnostics import held_out_mask
from orchestrator.fitting.discrepancy import estimate_discrepancies, field_parameter_cov
from orchestrator.fitting.forms.base import LawForm
from orchestrator.fitting.forms.builtin import Chinchilla
from orchestrator.fitting.forms.general import FormFit, fit_law, refit_resamples
from orchestrator.fitting.forms.predict import grid_x
from orchestrator.fitting.forms.selection import paired_excess

__all__ = ["Frontier", "frontier", "log_multiplier", "multipliers", "log_crossover", "quantities", "Model",
           "PairModel", "ModelChoice", "SharedExponents", "with_field", "evaluate", "interval", "field_cov", "separate_model",
           "joint_model", "choose_model", "CROSS_SPAN", "EXPONENT_TEST_P"]

CROSS_SPAN = 1000.0  # crossovers are looked for within target / CROSS_SPAN .. target * CROSS_SPAN
CROSS_POINTS = 121  # grid over that span (0.05 decades) bracketing sign changes before bisection
BISECT_ITERS = 40  # the bracket shrinks to 2^-40 of 0.05 decades
TREND_STEP = 0.05  # ln units either side of the target for d ln k / d ln C
GRID_PER_DECADE = 10  # frontiers without a closed form: tabulated this finely ...
GRID_SPAN = 1e6  # ... over target / GRID_SPAN .. target * GRID_SPAN
EXPONENT_TEST_P = 0.05  # a smaller p of the exponent-difference test rejects the joint model
JOINT_RANDOM_STARTS = 32  # Sobol starts of the joint fit's global search, beside the seeded ones
QUANTITIES = ("log_k", "log_k_lower", "log_k_upper", "trend", "log_crossover")


# --- frontiers ------------------------------------------------------------------------------------


class Frontier:
    """ln L*(x) of a batch of laws (rows), x the compute C (or N for a law of N alone), and its inverse."""

    def log_loss(self, x) -> np.ndarray:
        """(k, m) for x of shape (m,) (every row) or (k, m) (a row each)."""
        raise NotImplementedError

    def log_x(self, log_l) -> np.ndarray:
        """ln x where each row's frontier reaches ``log_l`` (k, m); +inf where it never does."""
        raise NotImplementedError


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


class Model(str, Enum):
    JOINT = "joint"  # baseline and variant fitted together, shared alpha and beta
    SEPARATE = "separate"  # each fitted on its own


@dataclass
class PairModel:
    """One model of a (baseline, variant) pair: its parameter vector, bootstrap draws, the residual
    fields' covariance of it, and how a row of them splits into the two laws."""

    model: Model
    forms: tuple[LawForm, LawForm]
    theta: np.ndarray
    draws: np.ndarray | None  # bootstrap draws plus the fields' (``with_field``)
    cov: np.ndarray | None  # the fields' share of the covariance of theta
    split: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    x_t: float

    def frontiers(self, rows: np.ndarray) -> tuple[Frontier, Frontier]:
        zb, zv = self.split(rows)
        return frontier(self.forms[0], zb, self.x_t), frontier(self.forms[1], zv, self.x_t)

    def evaluate(self, fn: Callable[[Frontier, Frontier], np.ndarray]):
        """``evaluate`` of fn(baseline frontier, variant frontier) -> (k, q)."""
        return evaluate(lambda rows: fn(*self.frontiers(rows)), self.theta, self.draws)


def separate_model(base, var, x_t: float, seed: int = 0) -> PairModel:
    """The two fits as they are: draw i of the baseline's bootstrap with draw i of the variant's."""
    p = base.form.n_params
    draws = None
    if base.bootstrap is not None and var.bootstrap is not None:
        n = min(len(base.bootstrap.laws), len(var.bootstrap.laws))
        draws = np.hstack([base.bootstrap.laws[:n], var.bootstrap.laws[:n]])
    X, loss = _stack((base, var))
    jac = block_diag(*(f.form.log_jacobian(f.law.z[None, :], f.fit_inputs)[0] for f in (base, var)))
    resid = np.concatenate([f.law.residuals for f in (base, var)])
    cov = pair_field_cov(jac, X, loss, resid, (base, var))
    return PairModel(Model.SEPARATE, (base.form, var.form), np.concatenate([base.law.z, var.law.z]),
                     with_field(draws, cov, seed), cov, lambda R: (R[:, :p], R[:, p:]), x_t)


# --- the joint model --------------------------------------------------------------------------------


class SharedExponents(LawForm):
    """L = E_v + A_v/N^alpha + B_v/D^beta, v the run's variant (input V: 0, 1, ...): Chinchilla's
    form with the exponents shared. Internal vector (alpha, beta, then ln A_v, ln B_v, ln E_v
    for each v); ``law_vectors`` gives one variant's Chinchilla vector."""

    name = "chinchilla-shared-exponents"
    formula = "L = E_v + A_v/N^alpha + B_v/D^beta"
    inputs = frozenset({"N", "D", "V"})

    def __init__(self, n_variants: int, starts=()):
        a, b, e, al, be = Chinchilla.params
        self.params = (al, be) + tuple(replace(p, name=f"{p.name}_{v}") for v in range(n_variants) for p in (a, b, e))
        self.starts = [np.asarray(s, float) for s in starts]

    @property
    def has_optimum(self) -> bool:
        return False  # each variant's optimum is Chinchilla's, of law_vectors

    def seeds(self, chinchilla):
        return self.starts

    def _terms(self, Z, X):
        Z = np.atleast_2d(Z)
        col = 2 + 3 * np.asarray(X["V"], int)
        ln, ld = np.log(X["N"]), np.log(X["D"])
        return Z[:, col] - Z[:, :1] * ln, Z[:, col + 1] - Z[:, 1:2] * ld, Z[:, col + 2], col, ln, ld

    def log_loss(self, Z, X):
        t0, t1, t2, *_ = self._terms(Z, X)
        return np.logaddexp(np.logaddexp(t0, t1), t2)

    def log_jacobian(self, Z, X, f0=None):
        t0, t1, t2, col, ln, ld = self._terms(Z, X)
        f = np.logaddexp(np.logaddexp(t0, t1), t2)
        p0, p1, p2 = np.exp(t0 - f), np.exp(t1 - f), np.exp(t2 - f)
        J = np.zeros(t0.shape + (self.n_params,))
        idx = np.arange(t0.shape[1])
        J[:, :, 0], J[:, :, 1] = -p0 * ln, -p1 * ld
        J[:, idx, col], J[:, idx, col + 1], J[:, idx, col + 2] = p0, p1, p2
        return J

    def law_vectors(self, Z, v: int) -> np.ndarray:
        Z = np.atleast_2d(Z)
        return np.column_stack([Z[:, 2 + 3 * v:5 + 3 * v], Z[:, :2]])


def _shared_starts(X: dict, loss: np.ndarray, exponents, n_variants: int) -> list[np.ndarray]:
    """Joint starting vectors: for each (alpha, beta), every variant's E, A, B by least squares in
    relative error (variable projection, as law.fit_approach3 seeds its search)."""
    out = []
    for al, be in exponents:
        z = [al, be]
        for v in range(n_variants):
            m = X["V"] == v
            M = np.column_stack([X["N"][m] ** -al, X["D"][m] ** -be, np.ones(m.sum())]) / loss[m][:, None]
            coef = np.maximum(np.linalg.lstsq(M, np.ones(m.sum()), rcond=None)[0], 1e-6)
            z.extend(np.log(coef))
        out.append(np.array(z))
    return out


def _fit_shared(parts: list[tuple[dict, np.ndarray]], exponents) -> tuple[FormFit, dict, np.ndarray]:
    """The joint fit of ``parts`` ((inputs, losses) per variant, the baseline first)."""
    X = {k: np.concatenate([p[0][k] for p in parts]) for k in ("N", "D")}
    X["V"] = np.concatenate([np.full(len(p[1]), v) for v, p in enumerate(parts)])
    loss = np.concatenate([p[1] for p in parts])
    form = SharedExponents(len(parts), _shared_starts(X, loss, exponents, len(parts)))
    return fit_law(form, X, loss, chinchilla={}, n_random=JOINT_RANDOM_STARTS), X, loss


def _exponents(fits) -> list[tuple[float, float]]:
    pairs = [(float(f.law.z[3]), float(f.law.z[4])) for f in fits]
    return pairs + [tuple(np.mean(pairs, axis=0))]


def joint_model(base, var, x_t: float, seed: int = 0) -> tuple[PairModel | None, dict | str]:
    """The joint model (None for forms other than Chinchilla's) and its held-out errors against
    the separate fits' ({"joint", "separate", "n"}), or why they could not be had."""
    if base.form.name != "chinchilla" or var.form.name != "chinchilla":
        return None, "the joint fit (shared alpha, beta) is of Chinchilla's form only"
    parts = [(f.fit_inputs, f.used["eval_loss"].to_numpy(float)) for f in (base, var)]
    try:
        fit, X, loss = _fit_shared(parts, _exponents((base, var)))
    except FitError as e:
        return None, f"the joint fit failed: {e}"
    form = fit.form
    draws = None
    if base.bootstrap is not None and var.bootstrap is not None:
        # Each half resamples its own runs, as the separate fits do (the same counts: draw i of
        # the joint model refits the resample behind draw i of each separate fit).
        n = min(len(base.bootstrap.laws), len(var.bootstrap.laws))
        counts = np.hstack([resample_counts(len(p[1]), n, f.bootstrap.seed) for p, f in zip(parts, (base, var))])
        draws = refit_resamples(fit, X, loss, counts)
    cov = pair_field_cov(fit.form.log_jacobian(fit.z[None, :], X)[0], X, loss, fit.residuals, (base, var))
    pair = PairModel(Model.JOINT, (Chinchilla(), Chinchilla()), fit.z, with_field(draws, cov, seed), cov,
                     lambda R: (form.law_vectors(R, 0), form.law_vectors(R, 1)), x_t)
    return pair, _held_out(base, var, parts)


POOL_FIELDS = True


def _stack(fits) -> tuple[dict, np.ndarray]:
    """The fits' runs as one set of inputs (V: the variant's index) and losses."""
    X = {k: np.concatenate([f.fit_inputs[k] if k in f.fit_inputs else np.ones(len(f.used)) for f in fits])
         for k in ("N", "D")}
    X["V"] = np.concatenate([np.full(len(f.used), v) for v, f in enumerate(fits)])
    return X, np.concatenate([f.used["eval_loss"].to_numpy(float) for f in fits])


def pair_field_cov(jac: np.ndarray, X: dict, loss: np.ndarray, resid: np.ndarray, fits) -> np.ndarray | None:
    """The residual fields' share of a pair model's parameter covariance: the sandwich of
    discrepancy.field_parameter_cov over both variants' runs (``jac``: the model's log Jacobian
    there), one field per variant, independent of each other."""
    if any(f.discrepancy_targets is None for f in fits):
        return None  # analyse fitted no residual model (no bootstrap, or too few runs): nor does the pair
    x = grid_x(X)
    if POOL_FIELDS:
        far = np.column_stack([1e3 * X["V"], np.zeros(len(loss))])  # no correlation across variants
        disc = estimate_discrepancies(np.zeros(jac.shape[1]), x + far, loss, resid, jac=jac)[-1]
        discs = [disc] * len(fits)
    else:
        discs = [f.discrepancy_targets for f in fits]
    if all(d is None for d in discs):
        return None
    b = np.linalg.solve(jac.T @ jac + 1e-9 * np.eye(jac.shape[1]), jac.T)
    cov = np.zeros((jac.shape[1],) * 2)
    for v, disc in enumerate(discs):
        m = X["V"] == v
        if disc is not None:
            cov += replace(disc, sigma=0.0).sandwich(x[m], loss[m], b[:, m])
    return cov


def _held_out(base, var, parts) -> dict | str:
    """Errors (predicted - observed, nats) on each fit's top budget of refits without it: the
    separate fits' and the joint fit's."""
    masks = []
    for f, (X, loss) in zip((base, var), parts):
        used = f.used
        compute = used["flops"].to_numpy(float) if "flops" in used else 6 * X["N"] * X["D"]
        out = held_out_mask(compute, used["budget"].to_numpy(float))
        if (~out).sum() < MIN_RUNS_REFIT or not out.any():
            return f"too few runs below the top budget to refit without it ({(~out).sum()})"
        masks.append(out)
    sub = lambda X, idx: {k: v[idx] for k, v in X.items()}  # noqa: E731
    try:
        sep = np.concatenate([fit_law(Chinchilla(), sub(X, ~o), loss[~o]).predict(sub(X, o)) - loss[o]
                              for (X, loss), o in zip(parts, masks)])
        fit, _, _ = _fit_shared([(sub(X, ~o), loss[~o]) for (X, loss), o in zip(parts, masks)],
                                _exponents((base, var)))
        Xo = {k: np.concatenate([X[k][o] for (X, _), o in zip(parts, masks)]) for k in ("N", "D")}
        Xo["V"] = np.concatenate([np.full(o.sum(), v) for v, o in enumerate(masks)])
        joint = fit.predict(Xo) - np.concatenate([loss[o] for (_, loss), o in zip(parts, masks)])
    except FitError as e:
        return f"a refit without the top budget failed: {e}"
    return {"joint": joint, "separate": sep}


MIN_RUNS_REFIT = 10  # runs below the top budget for the held-out refits (2 per Chinchilla parameter)


@dataclass
class ModelChoice:
    """Which model the multiplier comes from, and the evidence (module docstring of variants)."""

    model: Model
    reason: str
    held_out_rms: dict[str, float] | None = None  # nats, per model
    excess: float = math.nan  # mean held-out squared error of the joint model above the separate fits'
    excess_se: float = math.nan
    n_held_out: int = 0
    exponent_p: float = math.nan  # p-value of the separate fits' exponent differences
    exponent_diff: tuple[float, float] = (math.nan, math.nan)  # (alpha_v - alpha_b, beta_v - beta_b)

    def to_json(self) -> dict:
        fin = lambda x: float(x) if math.isfinite(x) else None  # noqa: E731
        return {"model": self.model.value, "reason": self.reason,
                "held_out_rms_nats": self.held_out_rms, "excess_nats2": fin(self.excess),
                "excess_se": fin(self.excess_se), "n_held_out": self.n_held_out,
                "exponent_diff": {"alpha": fin(self.exponent_diff[0]), "beta": fin(self.exponent_diff[1])},
                "exponent_p": fin(self.exponent_p),
                "rule": (f"joint when its held-out squared error is within one SE of the separate fits' and the "
                         f"exponent difference test gives p >= {EXPONENT_TEST_P:g}")}

    def text(self) -> str:
        out = f"model: {self.model.value} ({self.reason}"
        if self.held_out_rms:
            out += (f"; held-out RMS {self.held_out_rms['joint']:.4f} nats joint, {self.held_out_rms['separate']:.4f} "
                    f"separate, on {self.n_held_out} runs")
        if math.isfinite(self.exponent_p):
            out += (f"; exponents differ by {self.exponent_diff[0]:+.3f} (alpha), {self.exponent_diff[1]:+.3f} (beta), "
                    f"p = {self.exponent_p:.2g}")
        return out + ")"


def _robust_cov(x: np.ndarray) -> np.ndarray:
    """Covariance of draws winsorised at their 2.5th and 97.5th percentiles: an exponent's
    bootstrap has a few draws in other basins, which would swamp a plain covariance."""
    x = x[np.isfinite(x).all(axis=1)]
    lo, hi = np.percentile(x, [2.5, 97.5], axis=0)
    return np.atleast_2d(np.cov(np.clip(x, lo, hi), rowvar=False))


def exponent_test(base, var, sep: PairModel) -> tuple[float, tuple[float, float]]:
    """p-value of alpha and beta being equal in the two laws (Wald, chi^2 with 2 degrees of
    freedom; covariance: both bootstraps' plus both fields'), and the differences."""
    d = var.law.z[3:5] - base.law.z[3:5]
    if sep.draws is None or len(sep.draws) < 10:
        return math.nan, (float(d[0]), float(d[1]))
    p = base.form.n_params
    cov = _robust_cov(sep.draws[:, 3:5]) + _robust_cov(sep.draws[:, p + 3:p + 5])  # the fields included
    try:
        w = float(d @ np.linalg.solve(cov, d))
    except np.linalg.LinAlgError:
        return math.nan, (float(d[0]), float(d[1]))
    return float(chi2.sf(w, 2)), (float(d[0]), float(d[1]))


def choose_model(base, var, sep: PairModel, held: dict | str) -> ModelChoice:
    """Joint or separate (module docstring of variants): separate unless both tests pass."""
    if isinstance(held, str):
        return ModelChoice(Model.SEPARATE, held)
    excess, se = paired_excess(held["joint"], held["separate"])
    rms = {k: float(np.sqrt(np.mean(v**2))) for k, v in held.items()}
    p, diff = exponent_test(base, var, sep)
    common = dict(held_out_rms=rms, excess=excess, excess_se=se, n_held_out=len(held["joint"]), exponent_p=p,
                  exponent_diff=diff)
    if excess > se:
        return ModelChoice(Model.SEPARATE, "the joint fit extrapolates worse than the separate fits, beyond noise",
                           **common)
    if p < EXPONENT_TEST_P:
        return ModelChoice(Model.SEPARATE, "the exponents differ", **common)
    return ModelChoice(Model.JOINT, "shared exponents: held-out error within noise, exponent difference not "
                       "significant" if math.isfinite(p) else "shared exponents: held-out error within noise",
                       **common)
