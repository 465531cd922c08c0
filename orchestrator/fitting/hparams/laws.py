"""Hyperparameter laws: ln y = ln coef + n_exp ln N + d_exp ln D, fitted to the points' optima.

The form is the Step Law's (Li et al. 2025, "Predictable Scale: Part I": lr* = 1.79 N^-0.713
D^0.307, B* = 0.58 D^0.571, N without embeddings), fitted by least squares in logs.

**A variable the points cannot identify** (fewer than MIN_LEVELS distinct values of it among
them, or ln N and ln D nearly collinear, |corr| > COLLINEAR, as along one IsoFLOP budget where
D = C/6N) gets no exponent: it is fixed at 0 and the law is fitted in the other variable, which
then absorbs the dropped one's effect along the design's direction; a note says so. When both
are collinear the law keeps N for the learning rate and D for the batch (the variables the
Step Law's exponents are largest in). An exponent that *is* identified but whose 95 % interval
covers 0 is kept, not dropped: dropping it after looking would make the intervals too narrow;
a note says the law is flat in it.

**Intervals.** A sweep has tens of points, not thousands of runs. Percentile intervals of a
bootstrap over so few points are too narrow (they ignore that the scatter itself is estimated:
t against normal quantiles, 1.44 against 1.28 for 80 % at 6 degrees of freedom), and resampling
residuals evenly spreads the noise of the noisier points (lower losses at larger scale, a
coarser search) over all of them. The draws are a wild bootstrap (Rademacher signs on the
leverage-adjusted residuals r_i / sqrt(1 - h_i); Wu 1986, Davison & Hinkley 1997 ch. 6) with each
draw's deviation from the fit scaled by sqrt(dof / chi2_dof), which turns its normal-like spread
into a t with the fit's degrees of freedom. Points found differently are not equally precise
(optima read along two lines scatter 1.8x as far as a surface's), so where a sweep has several
kinds the fit is weighted by each kind's own scatter (feasible generalised least squares,
``_group_weights``). On 200 simulated tuned sweeps of 20 points (bench/bench_hparams_fit.py),
the 80 % intervals of lr* a decade of compute past the largest budget covered the truth 79 % of
the time (lr searched), 79 % (lr then batch searched; B* 76.5 %) and 77 % (5 x 5 grids; B*
75.5 %), and 78.5-80 % with 2 % of trials spiked; on 9-point sweeps 78-79 %. A pairs bootstrap
over the points covered 71-78 %, resampling residuals 73 % on the grids.

**Outliers.** A point whose optimum lies more than OUTLIER_Z robust sd off the law fitted to
the others is left out (a spiked trial the point's own fit could not see moves its vertex by up
to a step), and the intervals keep at least the robust scale of all the points' residuals. The
threshold is high because per-point errors are heavy-tailed even without spikes (kurtosis 6
for three-trial parabolas): at 3.5 the coverage fell to 73-75 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import InsufficientData
from orchestrator.fitting import LEVELS, residual_scale

__all__ = ["PowerLawFit", "fit_power_law", "summary", "MIN_POINTS", "MIN_LEVELS", "COLLINEAR", "NMap"]

MIN_POINTS = 3  # a law of one variable (2 parameters) with one degree of freedom to judge it by
MIN_LEVELS = 3  # distinct values of a variable before its exponent is fitted
COLLINEAR = 0.98  # |corr(ln N, ln D)| above this: one exponent only (its variance would inflate 25x)
OUTLIER_Z = 5.0  # a point this many robust sd off the law is left out (one outlying trial moves a parabola)
NAMES = ("coef", "n_exp", "d_exp")
SYMBOL = {"lr": "lr*", "batch": "B*"}


def summary(draws: np.ndarray, estimate: float) -> dict:
    """{estimate, "80%": [lo, hi], "95%": [lo, hi]} from draws (percentiles; NaN draws left out)."""
    x = np.asarray(draws, float)
    x = x[~np.isnan(x)]  # an infinite draw (a t draw's far tail, overflowed) still counts
    out = {"estimate": float(estimate)}
    for lv in LEVELS:
        lo, hi = np.percentile(x, [50 * (1 - lv), 50 * (1 + lv)]) if len(x) else (math.nan, math.nan)
        out[f"{round(100 * lv)}%"] = [float(lo), float(hi)]
    return out


@dataclass
class PowerLawFit:
    """A fitted hyperparameter law with its draws (``draws[:, 0]`` is ln coef)."""

    what: str  # "lr" or "batch"
    beta: np.ndarray  # ln coef, n_exp, d_exp (a fixed exponent is 0)
    draws: np.ndarray = field(repr=False)  # (n_draws, 3)
    free: tuple[str, ...]  # the variables fitted: "n", "d"
    n_points: int
    residual_sd: float  # of ln y
    dof: int
    n_kind: str = "nonembed"  # which N: "nonembed", "total" (workers.config.PowerRule.n)
    notes: list[str] = field(default_factory=list)
    dropped: tuple[int, ...] = ()  # indices (into the points given) left out as outliers
    points: tuple[str, ...] = ()  # the points given, by id, where the caller names them
    # "points": a regression over the points' optima; "joint": the landscape fitted to every
    # trial (orchestrator.fitting.hparams.landscape), with ``trials`` trials
    method: str = "points"
    trials: int = 0

    @property
    def coef(self) -> float:
        return float(math.exp(self.beta[0]))

    @property
    def n_exp(self) -> float:
        return float(self.beta[1])

    @property
    def d_exp(self) -> float:
        return float(self.beta[2])

    def log_at(self, n, d) -> np.ndarray:
        return self.beta[0] + self.beta[1] * np.log(n) + self.beta[2] * np.log(d)

    def log_draws_at(self, n, d) -> np.ndarray:
        """ln y at (n, d) for every draw: scalars, or arrays as long as the draws (paired)."""
        b = self.draws
        return b[:, 0] + b[:, 1] * np.log(n) + b[:, 2] * np.log(d)

    def at(self, n: float, d: float, n_draws=None, d_draws=None) -> dict:
        """The law's value at (n, d) with its intervals; ``n_draws``/``d_draws``: draws of the
        point itself (a compute-optimal N_opt, D_opt), paired with the law's."""
        est = float(np.exp(self.log_at(n, d)))
        with np.errstate(over="ignore"):
            return summary(np.exp(self.log_draws_at(n if n_draws is None else n_draws, d if d_draws is None else d_draws)), est)

    def intervals(self) -> dict:
        out = {}
        for j, name in enumerate(NAMES):
            if j and NAMES[j][0] not in self.free:
                out[name] = {"estimate": 0.0, "80%": [0.0, 0.0], "95%": [0.0, 0.0], "fixed": True}
                continue
            x = self.draws[:, j]
            with np.errstate(over="ignore"):
                out[name] = summary(np.exp(x), self.coef) if j == 0 else summary(x, float(self.beta[j]))
        return out

    def formula(self) -> str:
        n = "N_nonembed" if self.n_kind == "nonembed" else "N"
        terms = [f"{self.coef:.4g}"] + [f"{v}^{e:+.3f}" for v, e, f in ((n, self.n_exp, "n"), ("D", self.d_exp, "d"))
                                       if f in self.free]
        return f"{SYMBOL.get(self.what, self.what)} = " + " * ".join(terms)

    def rule(self):
        """As a recipe's rule (workers.config.PowerRule), e.g. for a spec's ``train.lr``."""
        from workers.config import PowerRule

        return PowerRule(coef=self.coef, n_exp=self.n_exp, d_exp=self.d_exp,
                         n="nonembed" if self.n_kind == "nonembed" else "total")

    def to_json(self) -> dict:
        return {**self.intervals(), "formula": self.formula(), "n": self.n_kind, "n_draws": len(self.draws),
                "fixed": [f"{v}_exp" for v in ("n", "d") if v not in self.free], "n_points": self.n_points,
                "residual_sd_ln": self.residual_sd, "dof": self.dof, "notes": self.notes,
                "outliers": [self.points[i] if i < len(self.points) else i for i in self.dropped]}


def _identifiable(ln_n, ln_d, what: str, label: str) -> tuple[list[str], list[str]]:
    """The variables whose exponents the points determine, and notes on the others."""
    from orchestrator.fitting.hparams.optima import levels

    lv = {"n": levels(np.exp(ln_n)), "d": levels(np.exp(ln_d))}
    free = [v for v in ("n", "d") if lv[v] >= MIN_LEVELS]
    notes = [f"{label}: {lv[v]} distinct {v.upper()} among the {len(ln_n)} points (fewer than {MIN_LEVELS}): "
             f"{v}_exp fixed at 0, fitted in {'D' if v == 'n' else 'N'} only" for v in ("n", "d") if v not in free]
    if len(free) == 2:
        r = float(np.corrcoef(ln_n, ln_d)[0, 1])
        if abs(r) > COLLINEAR:
            keep = "n" if what == "lr" else "d"
            drop = "d" if keep == "n" else "n"
            free = [keep]
            notes.append(f"{label}: ln N and ln D are nearly collinear among the points (corr {r:+.3f}), so their "
                         f"exponents cannot be told apart: {drop}_exp fixed at 0, and {keep}_exp also carries "
                         f"{drop.upper()}'s effect along the design's direction")
    return free, notes


def fit_power_law(n, d, y, what: str = "lr", *, n_boot: int = 1000, seed: int = 0, n_kind: str = "nonembed",
                  label: str | None = None, names=None, groups=None) -> PowerLawFit:
    """y = coef N^n_exp D^d_exp by least squares in logs, with ``n_boot`` t-scaled wild-bootstrap
    draws (module docstring). InsufficientData below MIN_POINTS points. ``names``: the points'
    names, for the note on outliers; ``groups``: how each point's optimum was found (weighted by
    each kind's scatter: _group_weights)."""
    ln_n, ln_d, ly = (np.log(np.asarray(v, float)) for v in (n, d, y))
    label = label or f"the {SYMBOL.get(what, what)} law"
    k = len(ly)
    if k < MIN_POINTS:
        raise InsufficientData(f"{label} needs at least {MIN_POINTS} points with a bracketed optimum; have {k}")
    free, notes = _identifiable(ln_n, ln_d, what, label)
    while k < len(free) + 2:  # keep a degree of freedom to estimate the scatter with
        drop = free.pop(-1 if what == "lr" else 0)
        notes.append(f"{label}: {k} points cannot fit {len(free) + 2} parameters with a degree of freedom left: "
                     f"{drop}_exp fixed at 0")
    cols = {"n": ln_n, "d": ln_d}
    X_all = np.stack([np.ones(k)] + [cols[v] for v in free], axis=1)
    keep = _without_outliers(X_all, ly)
    w = np.sqrt(_group_weights(X_all[keep], ly[keep], None if groups is None else np.asarray(groups)[keep]))
    X, ly_kept = X_all[keep] * w[:, None], ly[keep] * w  # weighted least squares, as ordinary on scaled rows
    b, *_ = np.linalg.lstsq(X, ly_kept, rcond=None)
    fitted = X @ b
    r = ly_kept - fitted
    dof = len(ly_kept) - X.shape[1]
    s = float(np.sqrt(r @ r / dof))
    draws = _t_wild_bootstrap(X, fitted, r, b, dof, n_boot, seed)
    if not keep.all() and s > 0:
        # Leaving points out trims the scatter's tails, which would narrow the intervals below the
        # truth's: their spread is kept at least at the robust scale of every point's residual.
        spread = residual_scale(ly - X_all @ b, X.shape[1]) / float(np.sqrt((r / w) @ (r / w) / dof))
        draws = b[None, :] + (draws - b[None, :]) * max(1.0, spread)
    s = float(np.sqrt((r / w) @ (r / w) / dof))  # the scatter in ln y, unweighted
    full = np.zeros(3)
    full_draws = np.zeros((len(draws), 3))
    for j, v in enumerate(["c"] + free):
        col = 0 if v == "c" else (1 if v == "n" else 2)
        full[col], full_draws[:, col] = b[j], draws[:, j]
    law = PowerLawFit(what, full, full_draws, tuple(free), int(keep.sum()), s, dof, n_kind, notes,
                      tuple(int(i) for i in np.flatnonzero(~keep)))
    if law.dropped:
        which = f": {', '.join(str(names[i]) for i in law.dropped[:3])}" if names is not None else ""
        law.notes.append(f"{label}: {len(law.dropped)} of the {k} points left out as outliers, their optimum more "
                         f"than {OUTLIER_Z:g} robust sd of the scatter off the law fitted to the others{which}")
    for v in free:
        lo, hi = law.intervals()[f"{v}_exp"]["95%"]
        if lo <= 0 <= hi:
            law.notes.append(f"{label} is flat in {v.upper()} within its uncertainty ({v}_exp = "
                             f"{law.beta[1 if v == 'n' else 2]:+.3f}, 95 % interval [{lo:+.3f}, {hi:+.3f}] covers 0); "
                             "the exponent is kept, so the intervals stay honest")
    if s < 1e-9:  # rounding-level scatter: the points lie on the law
        law.notes.append(f"{label} fits its {k} points exactly: its intervals have zero width and show no uncertainty")
    return law


MIN_GROUP = 5  # points of one kind before its own scatter weights them


def _group_weights(X: np.ndarray, y: np.ndarray, groups) -> np.ndarray:
    """1 / the scatter of each group of points about the unweighted fit (feasible generalised
    least squares), normalised to mean 1; equal weights without groups, or for a group of fewer
    than MIN_GROUP points (the pooled scatter). Points found differently are not equally precise:
    in bench/bench_hparams_fit.py's lr-then-batch searches, optima read along two lines scatter
    1.8x as far in ln lr* as those of a surface."""
    if groups is None or len(set(groups)) < 2:
        return np.ones(len(y))
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    r2 = (y - X @ b) ** 2 * len(y) / max(len(y) - X.shape[1], 1)
    pooled = float(r2.mean())
    var = np.full(len(y), pooled)
    for g in set(groups):
        m = groups == g
        if m.sum() >= MIN_GROUP:
            var[m] = max(float(r2[m].mean()), 1e-3 * pooled)
    w = 1.0 / np.maximum(var, 1e-300)
    return w / w.mean()


def _without_outliers(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points to fit: those within OUTLIER_Z robust sd (stats.residual_scale, from the median
    absolute residual) of the least-squares law through the kept ones; two rounds, so a point
    that an outlier pulled the first fit away from comes back, and never fewer than p + 2."""
    keep = np.ones(len(y), bool)
    p = X.shape[1]
    for _ in range(2):
        b, *_ = np.linalg.lstsq(X[keep], y[keep], rcond=None)
        r = y - X @ b
        new = np.abs(r) <= OUTLIER_Z * residual_scale(r[keep], p)
        if new.sum() < p + 2 or (new == keep).all():
            break
        keep = new
    return keep


def _t_wild_bootstrap(X, fitted, r, b, dof, n_boot, seed) -> np.ndarray:
    """(n_boot, p) draws of the coefficients (module docstring); none when n_boot is 0 (no
    intervals, as the joint fit's: not the fit itself as one draw, an interval of zero width)."""
    if n_boot <= 0:
        return np.empty((0, len(b)))
    rng = np.random.default_rng(seed)
    h = np.einsum("ij,ji->i", X, np.linalg.pinv(X))  # leverages
    # Wild bootstrap (Rademacher signs on r_i / sqrt(1 - h_i), HC2): each point keeps its own
    # residual's size, so points whose optima are noisier (lower losses at larger scale, a
    # coarser search) weigh on the intervals where they lie; resampling residuals iid spread
    # that noise evenly and covered 73 % on 5 x 5 grids (bench/bench_hparams_fit.py).
    adj = r / np.sqrt(np.clip(1 - h, 1e-6, None))
    e = adj[None, :] * rng.choice([-1.0, 1.0], size=(n_boot, len(r)))
    dev = e @ np.linalg.pinv(X).T  # (n_boot, p): refit of fitted + resampled residuals, less the fit
    scale = np.sqrt(dof / rng.chisquare(dof, size=n_boot))
    return b[None, :] + dev * scale[:, None]


@dataclass
class NMap:
    """The law fit's N (total parameters) to the hyperparameter laws' N (non-embedding, for a
    GPT), from the points' own pairs: interpolated in logs inside their range; beyond it the
    embedding count (total - non-embedding, which grows as the width, about N^(1/3)) follows a
    power law in N fitted to the points, so its share keeps shrinking with N instead of being
    extrapolated at a fixed ratio. Identity when every point's two counts agree."""

    total: np.ndarray
    rule: np.ndarray

    @property
    def identity(self) -> bool:
        return bool(np.allclose(self.total, self.rule, rtol=1e-9))

    def __call__(self, n_total):
        n = np.asarray(n_total, float)
        if self.identity or not len(self.total):
            return n
        order = np.argsort(self.total)
        lt, lr = np.log(self.total[order]), np.log(self.rule[order])
        ln = np.log(n)
        out = np.exp(np.interp(ln, lt, lr))
        embed = self.total - self.rule
        ok = embed > 0
        if ok.sum() >= 2 and np.ptp(np.log(self.total[ok])) > 0:
            slope, icpt = np.polyfit(np.log(self.total[ok]), np.log(embed[ok]), 1)
            beyond = (ln < lt[0]) | (ln > lt[-1])
            far = np.maximum(n - np.exp(icpt + slope * ln), 0.01 * n)
            out = np.where(beyond, far, out)
        return out
