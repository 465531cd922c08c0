"""Intervals that account for the law's smooth misfit, not only for which runs were drawn.

Real sweeps scatter around a fitted law by 0.003-0.03 nats, and most of that is a smooth
function of (N, D), not independent noise (Porian et al. 2024). Such a
residual biases the fit the same way in every bootstrap resample, so a bootstrap over runs,
which treats residuals as independent, reports intervals that are too narrow exactly when
the sweep is dense (many nearby runs agree with each other about the same bias).

Here the Approach 3 fit's residuals, in nats, are modelled as a Gaussian process in
(log10 N, log10 D) plus independent noise whose sd grows with the loss level, as seed noise
does (small, high-loss models vary more between seeds):

    e ~ N(0, s^2 K_ell + diag(sigma^2 (L / L_ref)^(2 q))),    L_ref the median loss.

Hyperparameters by restricted maximum likelihood (REML: the likelihood of the residuals with
the law's five linearised directions projected out; Patterson & Thompson 1971, Rasmussen &
Williams 2006, section 2.7), profiled over the total variance on a grid of the correlated
share, the length scale and q. Plain maximum likelihood on the residuals misses most of the
field, since the fit has already absorbed the part of it that looks like the law: on
simulated sweeps with a 0.02-nat field it found none at all in most of them (REML: about
two thirds of it).

Two models come from one pass over the grid. Fields longer than half a decade are hard to
tell from the law's own curvature inside the data, so for a and b (and the misspecification
flag) the length scale is capped at LOCAL_ELL: letting REML pick a 1-decade field makes
Chinchilla's exponent a interval 0.132 wide instead of 0.115 (a = 0.513 +- 0.020 in
Besiroglu et al.). N_opt, D_opt and L* at the target are extrapolations, which exactly such a
long field moves most, so theirs may take any length scale of the grid. On adaptive sweeps of
simulated worlds with a 0.02-nat, 0.7-decade field (40 seeds each of the benchmark's worlds T0-T2, docs/benchmarks.md)
the capped model's 80 % intervals covered N_opt at 1e20 61-75 % of the time and L* 70-78 %,
the uncapped one's 76-80 % and 78-83 %; with a short field the two models are the same. The
posterior mean over the grid instead of its mode (Bayesian model averaging) covered 89-97 %
with intervals 1.5 times as wide.

The field's share of the fit's sampling covariance is the sandwich
(J^T J)^-1 J^T Sigma_f J (J^T J)^-1 of the (nearly least-squares) estimator, Sigma_f the
field's covariance in log units (nats divided by the loss), and the delta method carries it
to a, b, N_opt, D_opt and L*. The bootstrap over runs already sees the independent noise (and
the robust fit's inefficiency under it) but not the field, which biases every resample alike:
the two are independent, so the reported interval widens each side of the bootstrap interval
by the field's, in quadrature (``widen``). On 30 adaptive sweeps per world this covered N_opt
and L* at 1e20 63-87 % of the time where the union of the two intervals covered 63-80 %.
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import solve_triangular
from threadpoolctl import threadpool_limits

from orchestrator.planning.design import jacobian_fd, log_law_jacobian, squared_exponential
from orchestrator.fitting.law import LawParams, optimal_allocation
from orchestrator.fitting import robust_sd

__all__ = ["Discrepancy", "estimate_discrepancies", "discrepancy_sd", "widen", "LOCAL_ELL", "MAX_POINTS"]

_ELLS = (0.25, 0.5, 1.0)  # decades
LOCAL_ELL = 0.5  # the cap for a, b and the misspecification flag (module docstring)
_QS = (0.0, 1.0, 2.0, 3.0, 4.0)  # noise sd grows as L^q (seed noise: q ~ 2.7-3.8 in shared/BENCHMARK.md)
# Share of the residual variance (at the median loss) that is correlated. It stops at 0.9: with
# replicated points and noise that shrinks as L^q, the likelihood has a spurious spike at the
# boundary (0.98 fitted a 0.5-nat field to hard-tier sweeps whose residuals are 0.09 nats).
_SHARES = np.linspace(0.0, 0.9, 15)
# Hyperparameters from a random subsample above this: each REML evaluation is O(n^3), and the
# field's amplitude, length scale and the noise are properties of the (N, D) region, which 300
# runs spread over it sample as well as a million do (the sandwich, which does scale with the
# runs, uses all of them). ``scalesweep fit`` says how many runs REML saw.
MAX_POINTS = 300


@dataclass(frozen=True)
class Discrepancy:
    s_r: float  # sd of the smooth residual field, nats
    ell: float  # its length scale, decades of N and D
    sigma: float  # sd of independent noise at the loss level ``level``, nats
    q: float = 0.0  # the noise sd scales as (L / level)^q
    level: float = 1.0  # reference loss

    def noise_sd(self, loss: np.ndarray) -> np.ndarray:
        return self.sigma * (np.asarray(loss, float) / self.level) ** self.q

    def covariance(self, x: np.ndarray, loss: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """Covariance of the log-loss residuals at ``x`` with losses ``loss`` (the given rows
        of it against all of ``x``)."""
        cov = squared_exponential(x[rows], x, self.s_r, self.ell)
        first = np.asarray(range(len(x))[rows])
        cov[np.arange(len(first)), first] += self.noise_sd(loss[first]) ** 2  # the block's part of the diagonal
        return cov / loss[rows][:, None] / loss[None, :]

    def sandwich(self, x: np.ndarray, loss: np.ndarray, b: np.ndarray, block: int = 256) -> np.ndarray:
        """b Sigma b^T for b of shape (k, n), a block of rows at a time: memory O(block n), not
        O(n^2) (10,000 trials would need 800 MB for Sigma alone). The field alone (sigma 0)
        on more than GRID_MIN_POINTS points is summed on a grid instead (:meth:`_gridded`)."""
        if self.sigma == 0.0 and len(x) > GRID_MIN_POINTS:
            return self._gridded(x, loss, b)

        def part(start: int) -> np.ndarray:
            rows = slice(start, start + block)
            return b[:, rows] @ (self.covariance(x, loss, rows) @ b.T)

        starts = range(0, len(x), block)
        if len(starts) == 1:
            return part(0)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # numpy releases the GIL
            return sum(pool.map(part, starts))


    def _gridded(self, x: np.ndarray, loss: np.ndarray, b: np.ndarray) -> np.ndarray:
        """b Sigma_f b^T of the field alone in O(n + G^3), not O(n^2): 10,000 runs took 6 s
        exactly, a million would take hours.

        Each run's row of b / L is spread over the four nodes of a grid around it with bilinear
        weights (cloud-in-cell, Hockney & Eastwood 1988, 5-2), and the squared-exponential
        kernel, a product of one factor per axis, is applied to the gridded charges as
        K_N Q K_D. With GRID_PER_ELL nodes per length scale the kernel's error across a cell is
        second order: on 10,000 random runs the sds of a, b, N_opt and L* agree with the
        exact sum to 0.02 % (0.25-decade field), 0.05 % (0.5) and 0.13 % (1 decade)."""
        q = b / loss[None, :]
        idx, wts, axes = [], [], []
        for j in range(2):
            lo, hi = float(x[:, j].min()), float(x[:, j].max())
            g = int(min(GRID_MAX, max(2, math.ceil((hi - lo) / self.ell * GRID_PER_ELL) + 1)))
            h = max(hi - lo, 1e-12) / (g - 1)
            t = (x[:, j] - lo) / h
            i0 = np.clip(np.floor(t).astype(int), 0, g - 2)
            idx.append(i0)
            wts.append(t - i0)
            axes.append(lo + h * np.arange(g))
        g0, g1 = len(axes[0]), len(axes[1])
        Q = np.zeros((len(q), g0 * g1))
        for c0, c1 in itertools.product((0, 1), (0, 1)):
            node = (idx[0] + c0) * g1 + idx[1] + c1
            w = (wts[0] if c0 else 1 - wts[0]) * (wts[1] if c1 else 1 - wts[1])
            for k in range(len(q)):
                Q[k] += np.bincount(node, weights=q[k] * w, minlength=g0 * g1)
        K0, K1 = (np.exp(-0.5 * (a[:, None] - a[None, :]) ** 2 / self.ell**2) for a in axes)
        Q = Q.reshape(len(q), g0, g1)
        T = K0[None] @ Q @ K1[None]  # the kernel applied to every charge map
        return self.s_r**2 * np.einsum("kij,lij->kl", Q, T)


GRID_MIN_POINTS = 2_000  # above this, the field's sandwich is summed on a grid (Discrepancy._gridded)
GRID_PER_ELL = 12  # grid nodes per length scale
GRID_MAX = 512  # nodes per axis at most: 0.25-decade fields over 10 decades still get 12 per length scale


def _inliers(resid: np.ndarray) -> np.ndarray:
    med = np.median(resid)
    return np.abs(resid - med) <= 4 * max(robust_sd(resid), 1e-12)


def estimate_discrepancies(theta: np.ndarray, x: np.ndarray, loss: np.ndarray, resid: np.ndarray,
                           seed: int = 0, caps=(LOCAL_ELL, max(_ELLS)), jac: np.ndarray | None = None
                           ) -> list[Discrepancy]:
    """REML hyperparameters of the residual model, one model for each length-scale cap in
    ``caps`` (its length scale at most the cap), from one pass over the grid. ``x`` is (n, 2)
    log10 N and log10 D, ``loss`` the observed losses and ``resid`` the fit's log residuals
    (log predicted - log observed). ``jac``: the fitted form's log Jacobian at the runs (n, P),
    whose directions REML projects out; default Chinchilla's at ``theta``."""
    keep = _inliers(resid)  # outliers would pass for noise and hide the field
    jac = None if jac is None else jac[keep]
    x, loss, resid = x[keep], loss[keep], resid[keep]
    if len(resid) > MAX_POINTS:
        idx = np.random.default_rng(seed).choice(len(resid), MAX_POINTS, replace=False)
        x, loss, resid = x[idx], loss[idx], resid[idx]
        jac = None if jac is None else jac[idx]
    n = len(resid)
    e = resid * loss  # nats
    ln10 = math.log(10.0)
    j = (log_law_jacobian(theta, x[:, 0] * ln10, x[:, 1] * ln10) if jac is None else jac) * loss[:, None]  # nats
    level = float(np.median(loss))
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    m = n - j.shape[1]
    if m < 3:  # too few runs to tell a field from noise
        return [Discrepancy(s_r=0.0, ell=min(LOCAL_ELL, cap), sigma=float(np.std(e)), level=level) for cap in caps]
    best = {cap: (-math.inf, min(LOCAL_ELL, cap), 0.0, 0.0, float(np.var(e))) for cap in caps}
    ells = [ell for ell in _ELLS if ell <= max(caps)]
    # 225 factorisations of at most 300 x 300: BLAS threads only wait on each other here (0.3 s
    # on one thread; 3-6 s with two threads on two busy cores).
    kernels = {ell: np.exp(-0.5 * d2 / ell**2) for ell in ells}
    with threadpool_limits(1, user_api="blas"):
        for ell, q, share in itertools.product(ells, _QS, _SHARES):
            a = share * kernels[ell] + np.diag((1 - share) * (loss / level) ** (2 * q) + 1e-9)
            try:
                c = np.linalg.cholesky(a)
            except np.linalg.LinAlgError:
                continue
            cj, ce = (solve_triangular(c, v, lower=True, check_finite=False) for v in (j, e))
            qj, rj = np.linalg.qr(cj)
            res = ce - qj @ (qj.T @ ce)  # whitened residuals, the law's directions projected out
            v = float(res @ res) / m  # profiled total variance
            ll = (-0.5 * m * math.log(max(v, 1e-300)) - float(np.log(np.diag(c)).sum())
                  - float(np.log(np.abs(np.diag(rj)) + 1e-300).sum()))
            for cap in caps:
                if ell <= cap and ll > best[cap][0]:
                    best[cap] = (ll, ell, q, share, v)
    out = []
    for cap in caps:
        _, ell, q, share, v = best[cap]
        out.append(Discrepancy(s_r=math.sqrt(share * v), ell=ell, sigma=math.sqrt((1 - share) * v), q=q, level=level))
    return out


def _targets(v: np.ndarray, compute: float) -> np.ndarray:
    p = LawParams.from_vector(v)
    n_opt, d_opt, l_opt = optimal_allocation(p.E, p.A, p.B, p.alpha, p.beta, compute)
    with np.errstate(all="ignore"):  # a law without an optimum (alpha or A at 0): NaN sds
        return np.array([p.a, p.b, *np.log([n_opt, d_opt, l_opt])])


def field_parameter_cov(jac: np.ndarray, x: np.ndarray, loss, disc: Discrepancy) -> np.ndarray:
    """The smooth field's share of the fit's parameter covariance (P, P): the sandwich of the
    (nearly least-squares) estimator with the form's log Jacobian ``jac`` (n, P) at the runs."""
    info = jac.T @ jac + 1e-9 * np.eye(jac.shape[1])
    b = np.linalg.solve(info, jac.T)
    return replace(disc, sigma=0.0).sandwich(x, np.asarray(loss, float), b)


def discrepancy_sd(theta: np.ndarray, n, d, loss, disc: Discrepancy, compute: float, form=None,
                   X: dict | None = None) -> dict[str, float]:
    """Standard deviations that the smooth field (not the noise) gives a, b (absolute) and
    ln N_opt, ln D_opt, ln L* at ``compute``. ``form`` (orchestrator.fitting.forms; default
    Chinchilla's, theta then its five-vector) with its inputs ``X`` at the runs."""
    ln_n, ln_d = np.log(np.asarray(n, float)), np.log(np.asarray(d, float))
    j = log_law_jacobian(theta, ln_n, ln_d) if form is None else form.log_jacobian(theta[None, :], X)[0]
    x = np.stack([ln_n, ln_d], axis=1) / math.log(10.0)
    cov = field_parameter_cov(j, x, loss, disc)
    targets = (lambda v: _targets(v, compute)) if form is None else (lambda v: form.targets(v, compute))
    grads = jacobian_fd(targets, theta)
    sd = np.sqrt(np.maximum(np.einsum("ki,ij,kj->k", grads, cov, grads), 0.0))
    return dict(zip(("a", "b", "n_opt", "d_opt", "loss_opt"), (float(s) for s in sd)))


def widen(estimate: float, lo: float, hi: float, half: float, log: bool) -> tuple[float, float]:
    """The bootstrap interval [lo, hi] of ``estimate`` widened on each side by a field interval
    of half-width ``half`` (in log units when ``log``), the two added in quadrature."""
    if log:
        if not (estimate > 0 and lo > 0 and math.isfinite(estimate)):
            return lo, hi  # no optimum to widen around (a degenerate law): left as the bootstrap's
        below, above = math.log(estimate / lo), math.log(hi / estimate)
        return (estimate * math.exp(-math.hypot(max(below, 0.0), half)),
                estimate * math.exp(math.hypot(max(above, 0.0), half)))
    return estimate - math.hypot(max(estimate - lo, 0.0), half), estimate + math.hypot(max(hi - estimate, 0.0), half)
