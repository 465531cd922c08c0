"""The hyperparameter laws fitted jointly to every trial, not to one optimum per point.

A point's own optimum (orchestrator.fitting.hparams.optima) rests on its three or four trials
near the bottom of a broad basin: a 2x miss of lr* costs ~0.3 % of the loss, of the order of
one trial's noise at high loss, so points at small scale (loss 4-8, noise up to 0.05 nats)
give optima off by 1.5x or more, and an unweighted regression over the points' optima gives
them the weight of the precise ones. Here the whole landscape is one model (the form of
shared/BENCHMARK.md's worlds and of Li et al. 2025's fits near the optimum):

    ln L_ij = m_i + k_lr u_ij^2 + k_B v_ij^2 + k_x u_ij v_ij,
    u = ln lr - ln lr*(N_i, D_i),   v = ln B - ln B*(N_i, D_i),   ln lr* = c + n_exp ln N + d_exp ln D

fitted to every finished trial within WINDOW of its point's best (where the basin is
quadratic), with one free level m_i per point (profiled out: variable projection), shared
curvatures, and the two power laws. Each point then counts by how sharply its trials pin its
optimum down, and the curvature that turns loss differences into distances is estimated from
all points at once.

- Noise grows with the loss (shared/BENCHMARK.md: 0.002 nats at L <= 3 to 0.05 at L >= 7):
  trials are weighted by 1/sd, the sd of ln L modelled as exp(a + b ln L) and fitted to the
  squared residuals (two reweighting passes).
- A spiked trial (a run gone wrong) is downweighted by a soft-L1 loss on the standardised
  residuals (scipy's least_squares).
- Intervals: the sandwich covariance with the points as clusters (a point's trials share its
  level), scaled by G / (G - p) for G points and p parameters, and draws from a multivariate t
  with G - p degrees of freedom, as orchestrator.fitting.hparams.laws does for the per-point fit.
- A variable the points cannot identify gets no exponent, by laws._identifiable's rule.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from orchestrator.fitting.hparams.laws import MIN_POINTS, PowerLawFit, _identifiable
from orchestrator.fitting import robust_sd
from workers.store import TrialStatus

__all__ = ["fit_landscape", "WINDOW"]

WINDOW = math.log(5.0)  # in ln lr and ln B around the point's best trial
SOFT_L1_SCALE = 2.5  # standardised residuals beyond this are downweighted (a spike, not the basin)
REWEIGHT = 2  # passes of the noise model


def _design(runs: pd.DataFrame, axes: tuple[str, ...]):
    ok = runs[(runs["status"] == TrialStatus.COMPLETED.value) & np.isfinite(runs["loss"]) & (runs["loss"] > 0)]
    ok = ok[(ok["lr"] > 0) & (ok["batch"] > 0)]
    best = ok.loc[ok.groupby("point")["loss"].idxmin(), ["point", "lr", "batch"]].set_index("point")
    near = np.ones(len(ok), bool)
    for col in ("lr", "batch"):
        near &= np.abs(np.log(ok[col].to_numpy(float) / best.loc[ok["point"], col].to_numpy(float))) <= WINDOW
    ok = ok[near]
    varied = ok.groupby("point")[["lr", "batch"]].nunique()
    keep = varied[[("lr" if a == "lr" else "batch") for a in axes]].min(axis=1) >= 3
    return ok[ok["point"].isin(keep[keep].index)]


class _Model:
    """The joint model over the trials ``t`` of ``points``: its parameter layout (each law's
    ln coef and free exponents, then the curvatures), its profiled residuals, a start."""

    def __init__(self, t: pd.DataFrame, axes: tuple[str, ...]):
        self.t, self.axes = t, axes
        self.points = list(dict.fromkeys(t["point"]))
        self.g = pd.Categorical(t["point"], categories=self.points).codes
        pts = t.groupby("point", sort=False)[["n", "d"]].median().loc[self.points]
        self.ln_n, self.ln_d = np.log(pts["n"].to_numpy(float)), np.log(pts["d"].to_numpy(float))
        self.free, self.notes = {}, {}
        for a in axes:
            self.free[a], self.notes[a] = _identifiable(self.ln_n, self.ln_d, a,
                                                        f"the {'lr*' if a == 'lr' else 'B*'} law (joint fit)")
        self.y = np.log(t["loss"].to_numpy(float))
        self.x = {a: np.log(t[a].to_numpy(float)) for a in ("lr", "batch")}
        self.cols = {"n": self.ln_n[self.g], "d": self.ln_d[self.g]}
        self.sizes = np.bincount(self.g, minlength=len(self.points)).astype(float)
        self.layout = [(a, v) for a in axes for v in ["c"] + list(self.free[a])]
        self.curv = ["k_lr"] * ("lr" in axes) + ["k_b"] * ("batch" in axes) + ["k_x"] * (len(axes) == 2)

    def unpack(self, theta) -> tuple[dict, dict]:
        laws: dict = {a: {} for a in self.axes}
        for (a, v), value in zip(self.layout, theta):
            laws[a][v] = value
        return laws, dict(zip(self.curv, theta[len(self.layout):]))

    def profiled(self, theta, w) -> np.ndarray:
        """Weighted residuals of ln L with each point's level at its weighted mean (variable projection)."""
        laws, k = self.unpack(theta)
        dev = {a: self.x[a] - (law["c"] + sum(law.get(v, 0.0) * self.cols[v] for v in ("n", "d")))
               for a, law in laws.items()}
        u, v = dev.get("lr", 0.0), dev.get("batch", 0.0)
        e = self.y - (k.get("k_lr", 0.0) * u ** 2 + k.get("k_b", 0.0) * v ** 2 + k.get("k_x", 0.0) * u * v)
        level = np.bincount(self.g, weights=e * w ** 2, minlength=len(self.points)) / np.bincount(self.g, weights=w ** 2)
        return (e - level[self.g]) * w

    def start(self) -> tuple[np.ndarray, np.ndarray]:
        """(start, lower bounds): the laws flat at the points' median best value; curvatures 0.005."""
        best = self.t.loc[self.t.groupby("point")["loss"].idxmin()]
        theta = [float(np.log(best[a]).median()) if v == "c" else 0.0 for a, v in self.layout]
        theta += [0.0 if c == "k_x" else 0.005 for c in self.curv]
        lower = [-np.inf] * len(self.layout) + [-np.inf if c == "k_x" else 1e-7 for c in self.curv]
        return np.array(theta), np.array(lower)


def fit_landscape(runs: pd.DataFrame, axes: tuple[str, ...], n_kind: str = "nonembed", n_draws: int = 1000,
                  seed: int = 0) -> dict[str, PowerLawFit] | None:
    """The laws of ``axes`` ("lr", "batch") fitted jointly (module docstring), as PowerLawFits with
    draws; None when the trials cannot carry the joint model (fewer than MIN_POINTS + 2 points
    with three values of every searched axis near their best, or a basin that does not curve up)."""
    t = _design(runs, axes)
    if t["point"].nunique() < MIN_POINTS + 2:
        return None
    m = _Model(t, axes)
    theta, lower = m.start()
    w = np.ones(len(m.y))
    for i in range(REWEIGHT + 1):
        scale = robust_sd(m.profiled(theta, w)) if i == 0 else 1.0  # later passes: standardised by w
        theta = least_squares(lambda th: m.profiled(th, w) / max(scale, 1e-12), theta, bounds=(lower, np.inf),
                              loss="soft_l1", f_scale=SOFT_L1_SCALE, x_scale="jac").x
        w = _noise_weights(m, theta)
    laws, k = m.unpack(theta)
    if any(abs(v) > (50 if name == "c" else 5) for law in laws.values() for name, v in law.items()):
        return None  # exponents beyond any published law's: too few points to carry the model
    if k.get("k_lr", 1.0) <= 1e-6 or k.get("k_b", 1.0) <= 1e-6 or (
            len(axes) == 2 and 4 * k["k_lr"] * k["k_b"] <= k["k_x"] ** 2):
        return None
    draws = _draws(lambda th: m.profiled(th, w), theta, m.g, len(m.points), n_draws, seed) if n_draws else \
        np.empty((0, len(theta)))
    curvature = ", ".join(f"{c} {k[c]:.4g}" for c in m.curv)
    out = {}
    for a in axes:
        beta, bd = np.zeros(3), np.zeros((len(draws), 3))
        for i, (ax, v) in enumerate(m.layout):
            if ax == a:
                col = {"c": 0, "n": 1, "d": 2}[v]
                beta[col], bd[:, col] = theta[i], draws[:, i]
        out[a] = PowerLawFit(a, beta, bd, tuple(m.free[a]), len(m.points), math.nan, len(m.points) - len(theta),
                             n_kind, m.notes[a] + [f"the {'lr*' if a == 'lr' else 'B*'} law is fitted jointly to "
                                                   f"{len(t)} trials of {len(m.points)} points near their best "
                                                   f"(curvature of ln L: {curvature})"],
                             method="joint", trials=len(t))
    return out


def _noise_weights(m: _Model, theta) -> np.ndarray:
    """1 / sd of each trial's ln L, the sd modelled as exp(a + b ln L) (module docstring): a line
    through ln r^2 of the unweighted residuals (E[ln chi2_1] = -1.27), each point's residuals
    inflated for its fitted level."""
    raw = m.profiled(theta, np.ones(len(m.y))) * np.sqrt(m.sizes / np.maximum(m.sizes - 1, 1))[m.g]
    A = np.stack([np.ones(len(m.y)), m.y], axis=1)
    coef = np.linalg.lstsq(A, np.log(raw ** 2 + 1e-30) + 1.27, rcond=None)[0]
    return 1.0 / np.maximum(np.exp(0.5 * (A @ coef)), 1e-6)


def _draws(residuals, theta, g, n_points, n_draws, seed) -> np.ndarray:
    """Multivariate-t draws around ``theta`` from the cluster-robust sandwich (module docstring)."""
    p = len(theta)
    eps = np.maximum(1.0, np.abs(theta)) / 1e6
    r = residuals(theta)
    J = np.stack([(residuals(theta + e) - residuals(theta - e)) / (2 * h)
                  for e, h in ((np.eye(p)[j] * eps[j], eps[j]) for j in range(p))], axis=1)
    # An M-estimator's sandwich (soft-L1: psi(r) = r / sqrt(1 + (r/c)^2)): a spiked trial enters
    # the scores by its bounded psi, not by its full residual, as it entered the fit.
    z2 = 1.0 + (r / SOFT_L1_SCALE) ** 2
    bread = np.linalg.pinv(J.T @ (J * (z2 ** -1.5)[:, None]))
    scores = np.zeros((n_points, p))
    np.add.at(scores, g, J * (r / np.sqrt(z2))[:, None])
    dof = max(n_points - p, 1)
    cov = bread @ (scores.T @ scores) @ bread * n_points / dof
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(p), cov, size=n_draws, method="eigh")
    return theta + z * np.sqrt(dof / rng.chisquare(dof, size=n_draws))[:, None]
