"""Step 2: accuracy as a sigmoid of the task loss, fitted to many weighted problems at once.

    acc(L) = floor + (ceiling - floor) / (1 + exp(k (L - L0))),   k > 0, floor < ceiling <= 1

Bhagia et al. 2024 (arXiv 2412.04403, section 3, eq. 2) fit ``a / (1 + exp(-k (L - L0))) + b``
to the intermediate checkpoints of every ladder run by least squares, after skipping the first
10 % of each run's checkpoints (``--skip_perc 0.1`` in their code), bounding the ceiling at 1.
Here, where the chance level is known, the floor is fixed at it (a model that knows nothing
answers at chance, and a free floor is what wanders most when the ladder has barely left it);
otherwise it is fitted in [0, ceiling). The internal vector keeps every bound by construction:

    chance known:  theta = (u, log k, L0),     ceiling = chance + (1 - chance) s(u)
    chance free:   theta = (u, f, log k, L0),  ceiling = s(u), floor = ceiling s(f)

(s the logistic function), so the Gauss-Newton steps need no projection.

The objective is a Huber loss of the accuracy residuals (delta = HUBER_K robust residual sds of
the first fit: a checkpoint evaluated with a broken harness does not drag the curve), weighted
per point. A bootstrap resample that draws a run twice weighs its checkpoints twice, so all
resamples are rows of one weight matrix and :func:`refine` runs Levenberg-Marquardt on all of
them at once with the iteratively reweighted Huber curvature, as orchestrator.fitting.law.refine
does for the loss law: 1,000 resamples of 1,500 checkpoints take about 0.2 s per task.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from orchestrator.errors import FitError
from orchestrator.fitting import levenberg_marquardt

__all__ = ["Sigmoid", "fit_sigmoid", "refine", "predict", "natural", "HUBER_K"]

HUBER_K = 1.345  # Huber's constant: 95 % efficiency under normal errors (Huber 1981)
U_BOUND = 12.0  # |u|, |f| at most this: s(12) = 1 - 6e-6, a ceiling at 1 to the precision that matters
LOG_K_BOUNDS = (math.log(1e-2), math.log(1e3))  # steepness per unit of task loss
CHUNK_ELEMENTS = 150_000  # resample-points per block of refits (``refine``)


@dataclass(frozen=True)
class Sigmoid:
    """A fitted step 2: internal vector ``theta``, the fixed floor (None: fitted) and the Huber
    delta its objective used."""

    theta: np.ndarray
    chance: float | None
    delta: float
    residual_sd: float  # robust sd of the accuracy residuals of the fitted points

    def values(self, theta: np.ndarray | None = None) -> dict[str, np.ndarray | float]:
        out = natural(self.theta[None, :] if theta is None else np.atleast_2d(theta), self.chance)
        return {k: float(v[0]) for k, v in out.items()} if theta is None else out

    def __call__(self, loss, theta: np.ndarray | None = None) -> np.ndarray:
        """Accuracy at ``loss`` for the fit (theta None) or for parameter rows ``theta`` (k, p):
        loss (m,) or (k, m) -> (m,) or (k, m)."""
        if theta is None:
            return predict(self.theta[None, :], np.asarray(loss, float)[None, ...], self.chance)[0]
        return predict(np.atleast_2d(theta), np.asarray(loss, float), self.chance)


def _s(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function without overflow


def natural(theta: np.ndarray, chance: float | None) -> dict[str, np.ndarray]:
    """floor, ceiling, k, L0 (arrays over the rows of theta)."""
    if chance is not None:
        u, logk, l0 = theta[:, 0], theta[:, 1], theta[:, 2]
        floor = np.full(len(theta), float(chance))
        ceiling = chance + (1.0 - chance) * _s(u)
    else:
        u, f, logk, l0 = theta[:, 0], theta[:, 1], theta[:, 2], theta[:, 3]
        ceiling = _s(u)
        floor = ceiling * _s(f)
    return {"floor": floor, "ceiling": ceiling, "k": np.exp(logk), "L0": l0}


def _model(theta: np.ndarray, x: np.ndarray, chance: float | None, jac: bool = True):
    """Predictions (k, n) at losses x ((n,) or (k, n)) and, with ``jac``, the Jacobian in factored
    form: J = phi^T M with phi the basis (1, g, g', g' (x - L0)) (three (k, n) arrays and the
    constant) shared by every parameter and M (k, 4, p) per row, so that the normal equations
    are 4 x 4 weighted sums per row whatever the number of parameters."""
    v = natural(theta, chance)
    floor, ceiling, k, l0 = (a[:, None] for a in (v["floor"], v["ceiling"], v["k"], v["L0"]))
    z = x - l0
    g = _s(-k * z)  # 1 / (1 + exp(k (L - L0)))
    pred = floor + (ceiling - floor) * g
    if not jac:
        return pred, None
    dg = g * (1.0 - g)
    sk = ((ceiling - floor) * k)[:, 0]  # d pred / d L0 = sk g', d pred / d log k = -sk g' (L - L0)
    M = np.zeros((len(theta), 4, theta.shape[1]))
    su = _s(theta[:, 0])
    if chance is not None:
        M[:, 1, 0] = (1.0 - chance) * su * (1.0 - su)
        M[:, 3, 1], M[:, 2, 2] = -sk, sk
    else:
        sf = _s(theta[:, 1])
        cu, cf = su * (1.0 - su), ceiling[:, 0] * sf * (1.0 - sf)
        M[:, 0, 0], M[:, 1, 0] = cu * sf, cu * (1.0 - sf)  # d/du: dC/du (g + s(f) (1 - g))
        M[:, 0, 1], M[:, 1, 1] = cf, -cf  # d/df: C s'(f) (1 - g)
        M[:, 3, 2], M[:, 2, 3] = -sk, sk
    return pred, ((g, dg, dg * z), M)


def predict(theta: np.ndarray, loss: np.ndarray, chance: float | None) -> np.ndarray:
    return _model(theta, loss, chance, jac=False)[0]


def _terms(theta, x, y, W, chance, delta):
    pred, (basis, M) = _model(theta, x, chance)
    r = pred - y
    ar = np.abs(r)
    small = ar <= delta
    f = (W * np.where(small, 0.5 * r * r, delta * (ar - 0.5 * delta))).sum(axis=1)
    psi = W * np.where(small, r, delta * np.sign(r))
    omega = W * np.minimum(1.0, delta / np.maximum(ar, 1e-12))
    dot = lambda a, b: np.einsum("kn,kn->k", a, b)  # noqa: E731
    s_psi = np.stack([psi.sum(axis=1)] + [dot(psi, b) for b in basis], axis=1)  # (k, 4)
    wb = [omega] + [omega * b for b in basis]
    s_om = np.empty((len(theta), 4, 4))
    s_om[:, 0, 0] = omega.sum(axis=1)
    for i in range(1, 4):
        s_om[:, 0, i] = s_om[:, i, 0] = wb[i].sum(axis=1)
        for j in range(i, 4):
            s_om[:, i, j] = s_om[:, j, i] = dot(wb[i], basis[j - 1])
    g = np.einsum("kf,kfp->kp", s_psi, M)
    H = np.matmul(M.transpose(0, 2, 1), np.matmul(s_om, M))
    return f, g, H


def _clip(theta: np.ndarray, chance: float | None) -> np.ndarray:
    out = theta.copy()
    n_u = 1 if chance is not None else 2
    out[:, :n_u] = np.clip(out[:, :n_u], -U_BOUND, U_BOUND)
    out[:, n_u] = np.clip(out[:, n_u], *LOG_K_BOUNDS)
    return out


def refine(theta0: np.ndarray, x: np.ndarray, y: np.ndarray, W: np.ndarray, chance: float | None, delta: float,
           max_iter: int = 100, rtol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on k weighted problems at once from theta0 (k, p); W (k, n) the
    weights of the points (x, y). Returns (theta (k, p), objective (k,)).

    Rows go in blocks of about CHUNK_ELEMENTS row-points, on every core (numpy releases the
    GIL in its array loops): blocks that fit in cache ran 1.5 times faster than one block of
    1,000 resamples of 1,440 points."""
    size = max(4, CHUNK_ELEMENTS // max(1, len(x)))
    if len(theta0) <= size:
        return _refine(theta0, x, y, W, chance, delta, max_iter, rtol)
    starts = range(0, len(theta0), size)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        parts = list(pool.map(lambda i: _refine(theta0[i:i + size], x, y, W[i:i + size], chance, delta, max_iter,
                                                rtol), starts))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _refine(theta0, x, y, W, chance, delta, max_iter, rtol):
    theta, f, _ = levenberg_marquardt(_clip(np.array(theta0, float), chance), lambda t, rows: _terms(t, x, y, W[rows], chance, delta),
                                      lambda t: _clip(t, chance), max_iter=max_iter, rtol=rtol, lam0=1e-3,
                                      lam_min=1e-9, lam_max=1e10, jitter=1e-9)
    return theta, f


def _starts(x: np.ndarray, y: np.ndarray, chance: float | None) -> np.ndarray:
    """A grid over the midpoint, steepness and ceiling (and the floor's share when free)."""
    span = max(float(np.ptp(x)), 1e-3)
    l0s = np.quantile(x, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist() + [float(x.min()) - 0.5 * span]
    logks = np.log(np.array([1.0, 4.0, 12.0, 40.0]) / span)
    top = float(np.clip(np.quantile(y, 0.98), 0.02, 0.98))
    rows = []
    for l0 in l0s:
        for lk in logks:
            for up in (top, 0.5 * (top + 1.0), 0.995):
                if chance is not None:
                    share = np.clip((up - chance) / max(1.0 - chance, 1e-6), 1e-4, 1 - 1e-4)
                    rows.append([math.log(share / (1 - share)), lk, l0])
                else:
                    lo = np.clip(float(np.quantile(y, 0.02)) / up, 1e-3, 1 - 1e-3)
                    rows.append([math.log(up / (1 - up)), math.log(lo / (1 - lo)), lk, l0])
    return _clip(np.array(rows), chance)


def fit_sigmoid(x, y, chance: float | None, weights=None) -> Sigmoid:
    """The global fit to points (task loss ``x``, accuracy ``y``): every start of a grid scored,
    the best refined together by least squares, the winner then refined on the Huber objective
    with delta = HUBER_K robust sds of its residuals. FitError when it does not converge to
    finite values."""
    from orchestrator.fitting import robust_sd

    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    starts = _starts(x, y, chance)
    big = 1e9  # least squares first: no scale is known yet
    f0 = (w[None, :] * (predict(starts, x, chance) - y) ** 2).sum(axis=1)
    best = starts[np.argsort(f0)[:8]]
    theta, f = refine(best, x, y, np.tile(w, (len(best), 1)), chance, big)
    i = int(np.argmin(f))
    resid = predict(theta[i:i + 1], x, chance)[0] - y
    delta = HUBER_K * max(float(robust_sd(resid)), 1e-4)
    theta, f = refine(theta[i:i + 1], x, y, w[None, :], chance, delta, rtol=1e-13)
    if not np.isfinite(theta).all() or not np.isfinite(f).all():
        raise FitError("the accuracy sigmoid did not converge to finite values")
    resid = predict(theta, x, chance)[0] - y
    return Sigmoid(theta[0], chance, delta, float(robust_sd(resid)))
