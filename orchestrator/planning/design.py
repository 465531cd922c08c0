"""Optimal design for the frontier: how much would one more trial at (N, D) sharpen the targets?

The planner's goal is the law's predictions at a target compute C_t (N_opt, D_opt, L*), not
the lowest loss: the question per candidate is how much it shrinks the variance of those
predictions, per FLOP it costs (sequential Bayesian optimal design, Chaloner & Verdinelli
1995, section 2; cost-aware as in Li et al. 2026, "Spend Less, Fit Better").

Model of an observation in log space: log y = f_theta(N, D) + delta(N, D) + noise, with
f the Chinchilla log-sum-exp law in theta = (a, b, e, alpha, beta) by default, or any law form
(orchestrator.fitting.forms.LawForm, ``form=``) in its internal vector, noise i.i.d. with sd
sigma, and delta a smooth model discrepancy: a Gaussian process in (log10 N, log10 D) with
amplitude ``s_r`` and length scale ``ell`` decades. Real sweeps show 0.003-0.03 nats of
smooth residual around a fitted law (Porian et al. 2024; :mod:`orchestrator.fitting.discrepancy`); ignoring it, i.i.d. Fisher
information would let cheap, far-away trials "explain" the large-compute frontier. With it,
information is generalised least squares: I = J^T (s_r^2 K + sigma^2 I)^-1 J, so trials
close to each other in log space share their discrepancy and add little, and the design is
pushed to cover the region, towards the target.

The information of a candidate given the current points (a Schur complement) and the
resulting variance drop of each target (Sherman-Morrison) are closed forms, so thousands of
candidates are scored in one vectorised pass, and pending trials count before their results
arrive (information does not depend on y).

The exact GLS model inverts an n x n covariance: fine for hundreds of trials, not for ten
thousand. :class:`SparseDesignModel` replaces the discrepancy by its values u at a grid of
inducing points (FITC, Snelson & Ghahramani 2006; Quinonero-Candela & Rasmussen 2005), so the
state is the posterior covariance of (theta, u), a few hundred squared, whatever n is; adding
a point is a rank-one update and scoring costs the same at 10 or 10,000 trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.fitting.law import LawParams, compute_optimal
from orchestrator.fitting import Z80

__all__ = ["DesignModel", "SparseDesignModel", "Z80", "jacobian_fd", "law_jacobian", "log_law_jacobian",
           "prior_precision", "squared_exponential", "target_gradients"]

# Weak prior precision on theta = (a, b, e, alpha, beta): keeps the information matrix
# invertible with few points without pulling the estimate (sd 10 on logs, 1 on exponents).
_PRIOR = np.diag([0.01, 0.01, 0.01, 1.0, 1.0])
# For any other law form, whose parameters' scales are not known here: 0.01 on each internal
# parameter (sd 10: on a log parameter a factor e^10, weaker still than Chinchilla's on exponents).
_FORM_PRIOR = 0.01
# Central-difference step (relative) for target gradients through a searched optimum
# (LawForm.optimum's golden section): its ln N_opt is exact only to ~1e-8 (the loss is flat
# there), so 1e-5 steps give gradient errors ~4e-3; 1e-3 gives ~6e-5 (truncation), on
# Chinchilla's form against its closed form. Closed-form optima keep jacobian_fd's 1e-5.
_SEARCH_FD_STEP = 1e-3
_INDUCING_JITTER = 1e-6  # added to K_ZZ's diagonal, relative to s_r^2: keeps it invertible


def log_law_jacobian(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """d log L / d theta for each point (rows), theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    t = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    w = np.exp(t - t.max(axis=0))
    w /= w.sum(axis=0)
    return np.stack([w[0], w[1], w[2], -w[0] * log_n, -w[1] * log_d], axis=1)


def jacobian_fd(fn, theta: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """Central-difference Jacobian of the vector function ``fn`` at ``theta`` (rows: outputs),
    steps ``rel`` * max(1, |theta_i|)."""
    cols = []
    for i in range(len(theta)):
        h = rel * max(1.0, abs(theta[i]))
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        with np.errstate(invalid="ignore"):  # inf - inf where a law has no optimum: NaN, dropped by callers
            cols.append((np.asarray(fn(up)) - np.asarray(fn(down))) / (2 * h))
    return np.stack(cols, axis=1)


def target_gradients(theta: np.ndarray, compute: float, form=None) -> np.ndarray:
    """Rows: gradients of ln N_opt(C) and ln L*(C) in theta (Chinchilla's vector, or ``form``'s:
    central differences of its ``targets`` (ln N_opt, ln L*: entries 2 and 4), from its optimum)."""
    if form is not None:
        from orchestrator.fitting.forms.base import LawForm  # lazily: fitting imports this module

        def g(v):  # form.targets(v, compute)[[2, 4]] without its second optimum (at 1.05 C)
            n_opt, _, loss = form.optimum(v[None, :], compute)
            with np.errstate(all="ignore"):  # no optimum: NaN (the planner checks for one first)
                return np.log([n_opt[0], loss[0]])

        searched = getattr(type(form), "optimum", None) is LawForm.optimum
        return jacobian_fd(g, np.asarray(theta, float), _SEARCH_FD_STEP if searched else 1e-5)

    def g(v):
        opt = compute_optimal(LawParams.from_vector(v), compute)
        with np.errstate(all="ignore"):  # a law without an optimum: NaN, and no point scores (the planner checks no_optimum first)
            return np.log([opt["n_opt"], opt["loss"]])

    return jacobian_fd(g, theta)


def law_jacobian(theta: np.ndarray, x: np.ndarray, form=None) -> np.ndarray:
    """d log L / d theta at points ``x`` (rows: log10 N, log10 D): Chinchilla's analytic one, or
    ``form``'s ``log_jacobian`` (n, P)."""
    if form is None:
        ln10 = math.log(10.0)
        return log_law_jacobian(theta, x[:, 0] * ln10, x[:, 1] * ln10)
    return form.log_jacobian(np.asarray(theta, float)[None, :], {"N": 10.0 ** x[:, 0], "D": 10.0 ** x[:, 1]})[0]


def prior_precision(form=None) -> np.ndarray:
    """The weak prior precision on theta: _PRIOR for Chinchilla's vector (``form`` None or
    Chinchilla's), else _FORM_PRIOR on each of the form's parameters."""
    if form is None or form.name == "chinchilla":
        return _PRIOR.copy()
    return _FORM_PRIOR * np.eye(form.n_params)


@dataclass
class DesignModel:
    """GLS information of the points ``x`` (log10 N, log10 D) around the fit ``theta``."""

    theta: np.ndarray
    x: np.ndarray  # (n, 2) in log10 units
    compute: float
    sigma: float  # i.i.d. noise sd in log-loss units
    s_r: float  # discrepancy amplitude in log-loss units
    ell: float  # discrepancy length scale in decades
    weights: tuple[float, float]  # 1 / width^2 for ln N_opt and ln L*
    form: object = None  # a LawForm whose internal vector theta is; None: Chinchilla's own path

    def __post_init__(self):
        self.G = target_gradients(self.theta, self.compute, self.form)
        self._prior = prior_precision(self.form)
        self._refresh()

    def _kern(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return squared_exponential(a, b, self.s_r, self.ell)

    def _jac(self, x: np.ndarray) -> np.ndarray:
        return law_jacobian(self.theta, x, self.form)

    def _refresh(self) -> None:
        n = len(self.x)
        if n:
            sigma_mat = self._kern(self.x, self.x) + self.sigma**2 * np.eye(n)
            self.s_inv = np.linalg.inv(sigma_mat)
            self.J = self._jac(self.x)
            info = self.J.T @ self.s_inv @ self.J + self._prior
        else:
            self.s_inv, self.J = np.zeros((0, 0)), np.zeros((0, len(self._prior)))
            info = self._prior.copy()
        self.cov = np.linalg.inv(info)

    def target_sd(self) -> np.ndarray:
        """Standard deviations of ln N_opt(C_t) and ln L*(C_t)."""
        return np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", self.G, self.cov, self.G), 0.0))

    def gains(self, cand: np.ndarray) -> np.ndarray:
        """Weighted drop in target variance if each candidate (rows, log10 N/D) were added."""
        j = self._jac(cand)
        kappa = self.s_r**2 + self.sigma**2
        if len(self.x):
            k = self._kern(cand, self.x)
            v = k @ self.s_inv
            j_t = j - v @ self.J
            s = kappa - (v * k).sum(axis=1)
        else:
            j_t, s = j, np.full(len(cand), kappa)
        s = np.maximum(s, 1e-12)
        jc = j_t @ self.cov
        q = (jc * j_t).sum(axis=1)
        u = jc @ self.G.T  # (m, 2): g_k^T Cov j~
        w = np.asarray(self.weights)
        return ((u**2) * w).sum(axis=1) / (s + q)

    def add(self, point: np.ndarray) -> None:
        self.x = np.vstack([self.x, np.asarray(point, float)[None, :]])
        self._refresh()


class SparseDesignModel:
    """:class:`DesignModel`'s interface (``target_sd``, ``gains``, ``add``) at any number of points.

    Weights w = (theta, u), u the discrepancy at inducing points Z (a grid spaced ``0.8 ell``
    over the points' box, padded by ``ell``), prior u ~ N(0, K_ZZ). A point's features are
    h = [J, K_xZ K_ZZ^-1] and its noise lambda = sigma^2 + k(x, x) - Q(x, x) (the FITC diagonal:
    the part of the discrepancy the inducing points do not carry counts as independent).
    Posterior precision P = prior + sum h h^T / lambda; the state is C = P^-1. ``form`` as
    :class:`DesignModel`'s.
    """

    def __init__(self, theta: np.ndarray, x: np.ndarray, compute: float, sigma: float, s_r: float, ell: float,
                 weights: tuple[float, float], form=None):
        self.theta, self.sigma, self.s_r, self.ell, self.form = theta, sigma, s_r, ell, form
        self.weights = np.asarray(weights)
        g = target_gradients(theta, compute, form)
        prior = prior_precision(form)
        k = len(prior)
        lo, hi = x.min(axis=0) - ell, x.max(axis=0) + ell
        axes = [np.arange(lo[i], hi[i] + 1e-9, 0.8 * ell) for i in range(2)]
        self.z = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
        m = len(self.z)
        kzz = squared_exponential(self.z, self.z, s_r, ell) + _INDUCING_JITTER * s_r**2 * np.eye(m)
        self._kzz_inv = np.linalg.inv(kzz)
        precision = np.zeros((k + m, k + m))
        precision[:k, :k] = prior
        precision[k:, k:] = self._kzz_inv
        for start in range(0, len(x), 4096):  # bounded memory at any n
            h, lam = self._features(x[start:start + 4096])
            precision += (h / lam[:, None]).T @ h
        self.cov = np.linalg.inv(precision)
        self.gt = np.hstack([g, np.zeros((2, m))])

    def _features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j = law_jacobian(self.theta, x, self.form)
        kxz = squared_exponential(x, self.z, self.s_r, self.ell)
        phi = kxz @ self._kzz_inv
        lam = self.sigma**2 + np.maximum(self.s_r**2 - (phi * kxz).sum(axis=1), 0.0)
        return np.hstack([j, phi]), lam

    def target_sd(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", self.gt, self.cov, self.gt), 0.0))

    def gains(self, cand: np.ndarray) -> np.ndarray:
        h, lam = self._features(cand)
        hc = h @ self.cov
        q = (hc * h).sum(axis=1)
        u = hc @ self.gt.T
        return ((u**2) * self.weights).sum(axis=1) / (lam + q)

    def add(self, point: np.ndarray) -> None:
        h, lam = self._features(np.asarray(point, float)[None, :])
        ch = self.cov @ h[0]
        self.cov -= np.outer(ch, ch) / (lam[0] + h[0] @ ch)


def squared_exponential(a: np.ndarray, b: np.ndarray, s_r: float, ell: float) -> np.ndarray:
    """s_r^2 exp(-|a - b|^2 / (2 ell^2)) between the rows of ``a`` and ``b`` (log10 N, log10 D)."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return s_r**2 * np.exp(-0.5 * d2 / ell**2)
