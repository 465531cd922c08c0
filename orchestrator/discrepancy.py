"""Intervals that account for the law's smooth misfit, not only for which runs were drawn.

Real sweeps scatter around a fitted law by 0.003-0.03 nats, and most of that is a smooth
function of (N, D), not independent noise (shared/BENCHMARK.md; Porian et al. 2024). Such a
residual biases the fit the same way in every bootstrap resample, so a bootstrap over runs,
which treats residuals as independent, reports intervals that are too narrow exactly when
the sweep is dense (many nearby runs agree with each other about the same bias).

Here the log-loss residuals of the Approach 3 fit are modelled as a Gaussian process in
(log10 N, log10 D): r ~ N(0, s^2 K_ell + sigma^2 I), hyperparameters by maximum likelihood
(profile likelihood over a grid of the correlated share and length scale; Rasmussen &
Williams 2006, section 5.4). The fit's sampling covariance under that error model is the
sandwich (J^T J)^-1 J^T Sigma J (J^T J)^-1 of the (nearly least-squares) estimator, and the
delta method carries it to a, b, N_opt, D_opt and L*. With independent noise the fitted
correlated share is ~0 and these intervals match the bootstrap's; with a residual field they
are wider. The reported interval is the union of both.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from orchestrator.design import jacobian_fd, log_law_jacobian, squared_exponential
from orchestrator.fit import LawParams, optimal_allocation

__all__ = ["Discrepancy", "estimate_discrepancy", "discrepancy_sd", "Z"]

Z = {0.80: 1.2815515655446004, 0.95: 1.959963984540054}
_ELLS = (0.25, 0.5, 1.0, 2.0)  # decades
_SHARES = np.linspace(0.0, 0.98, 15)  # share of the residual variance that is correlated
_MAX_POINTS = 300  # hyperparameters from a subsample above this (O(n^3) per evaluation)


@dataclass(frozen=True)
class Discrepancy:
    s_r: float  # sd of the smooth residual field, log-loss units
    ell: float  # its length scale, decades of N and D
    sigma: float  # sd of independent noise, log-loss units

    def covariance(self, x: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """Covariance of the residuals at ``x`` (the given rows of it against all of ``x``)."""
        cov = squared_exponential(x[rows], x, self.s_r, self.ell)
        first = range(len(x))[rows]
        cov[np.arange(len(first)), np.asarray(first)] += self.sigma**2  # the block's part of the diagonal
        return cov

    def sandwich(self, x: np.ndarray, b: np.ndarray, block: int = 256) -> np.ndarray:
        """b Sigma b^T for b of shape (k, n), a block of rows at a time: memory O(block n), not
        O(n^2) (10,000 trials would need 800 MB for Sigma alone)."""
        def part(start: int) -> np.ndarray:
            rows = slice(start, start + block)
            return b[:, rows] @ (self.covariance(x, rows) @ b.T)

        starts = range(0, len(x), block)
        if len(starts) == 1:
            return part(0)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # numpy releases the GIL
            return sum(pool.map(part, starts))


def _inliers(resid: np.ndarray) -> np.ndarray:
    med = np.median(resid)
    mad = 1.4826 * np.median(np.abs(resid - med))
    return np.abs(resid - med) <= 4 * max(mad, 1e-12)


def estimate_discrepancy(x: np.ndarray, resid: np.ndarray, seed: int = 0) -> Discrepancy:
    """ML hyperparameters of the residual GP; ``x`` is (n, 2) log10 N and log10 D."""
    keep = _inliers(resid)  # outliers would pass for noise and hide the field
    x, r = x[keep], resid[keep] - np.mean(resid[keep])
    if len(r) > _MAX_POINTS:
        idx = np.random.default_rng(seed).choice(len(r), _MAX_POINTS, replace=False)
        x, r = x[idx], r[idx]
    n = len(r)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    best = (-math.inf, 0.5, 0.0, float(np.var(r)))
    for ell in _ELLS:
        k = np.exp(-0.5 * d2 / ell**2)
        for share in _SHARES:
            a = share * k + (1 - share) * np.eye(n) + 1e-9 * np.eye(n)
            try:
                c = np.linalg.cholesky(a)
            except np.linalg.LinAlgError:
                continue
            z = np.linalg.solve(c, r)
            v = float(z @ z) / n  # profiled total variance
            ll = -0.5 * n * math.log(max(v, 1e-300)) - float(np.log(np.diag(c)).sum())
            if ll > best[0]:
                best = (ll, ell, share, v)
    _, ell, share, v = best
    return Discrepancy(s_r=math.sqrt(share * v), ell=ell, sigma=math.sqrt((1 - share) * v))


def _targets(v: np.ndarray, compute: float) -> np.ndarray:
    p = LawParams.from_vector(v)
    n_opt, d_opt, l_opt = optimal_allocation(p.E, p.A, p.B, p.alpha, p.beta, compute)
    return np.array([p.a, p.b, math.log(n_opt), math.log(d_opt), math.log(l_opt)])


def discrepancy_sd(theta: np.ndarray, n, d, disc: Discrepancy, compute: float) -> dict[str, float]:
    """Standard deviations of a, b (absolute) and ln N_opt, ln D_opt, ln L* at ``compute``."""
    ln_n, ln_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    j = log_law_jacobian(theta, ln_n, ln_d)
    x = np.stack([ln_n, ln_d], axis=1) / math.log(10.0)
    info = j.T @ j + 1e-9 * np.eye(5)
    b = np.linalg.solve(info, j.T)
    cov = disc.sandwich(x, b)
    grads = jacobian_fd(lambda v: _targets(v, compute), theta)
    sd = np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", grads, cov, grads), 0.0))
    return dict(zip(("a", "b", "n_opt", "d_opt", "loss_opt"), (float(s) for s in sd)))
