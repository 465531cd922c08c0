"""From runs to a law with uncertainty (the stages are the modules of this package).

This module holds the small statistical constants and helpers that the fit, its diagnostics and
the planner share.

Numpy only, so that the report's text formatting and the planner can import it without the
fitting engine (scipy).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEVELS", "UNDETERMINED_DECADES", "Z", "Z80", "Z95", "MAD_TO_SD", "MAX_MAGNITUDE", "robust_sd", "residual_scale",
           "levenberg_marquardt"]

LEVELS = (0.80, 0.95)  # the two-sided interval levels reported everywhere
Z80 = 1.2815515655446004  # two-sided 80 % interval half-width in standard deviations (normal)
Z95 = 1.959963984540054  # the same for 95 %
Z = {0.80: Z80, 0.95: Z95}  # by level
MAD_TO_SD = 1.4826  # a normal's sd per unit of median absolute deviation (1 / Phi^-1(3/4))
# The largest magnitude a loss (or a law's --param) may have: the fit squares and sums residuals
# in loss units (the forms' in-sample RMS, the extrapolation check), and a value whose square
# overflows float64 (|x| > 1.3e154) printed "in-sample RMS inf" with exit 0. 1e150 leaves room
# for sums over many runs (orchestrator.results.runs, orchestrator.fitting.forms.builtin).
MAX_MAGNITUDE = 1e150
# An N_opt whose 80 % interval spans more decades than this is no estimate (a loss flat in N and D
# fitted to its noise): resamples of well-specified sweeps stay within a decade or two. The fit
# flags it (orchestrator.fitting.analysis) and no cost is projected from it (orchestrator.results.cost).
UNDETERMINED_DECADES = 4


def robust_sd(x, axis=None):
    """MAD_TO_SD times the median absolute deviation from the median: a standard deviation that
    a few outliers do not inflate. Along ``axis`` (None: over every value)."""
    x = np.asarray(x, float)
    med = np.median(x, axis=axis, keepdims=True)
    return MAD_TO_SD * np.median(np.abs(x - med), axis=axis)


def residual_scale(resid, n_params: int = 5) -> float:
    """Robust standard deviation (:func:`robust_sd`) of a fit's residuals, inflated by
    sqrt(n / (n - n_params)) because ``n_params`` fitted parameters shrink in-sample residuals
    (5: Chinchilla's form)."""
    r = np.asarray(resid, float)
    mad = robust_sd(r)
    return float(max(mad * np.sqrt(len(r) / max(len(r) - n_params, 1)), 1e-12))


def levenberg_marquardt(theta0: np.ndarray, terms, project, *, max_iter: int, rtol: float, lam0: float,
                        lam_min: float, lam_max: float, jitter: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on k problems at once (rows of ``theta0``, (k, p)): the batched refits
    of the law (orchestrator.fitting.law.refine) and of the step-2 sigmoid
    (orchestrator.fitting.downstream.sigmoid.refine).

    ``terms(theta, rows)`` gives the objective, gradient and (approximate) Hessian of problems
    ``rows`` at ``theta`` ((m,), (m, p), (m, p, p)); ``project`` maps a step back into the
    parameters' bounds (the start is the caller's: already inside them). The damping is Marquardt's scaling by diag(H) (parameters differ in scale
    by orders of magnitude), plus ``jitter`` so that a rank-deficient H stays solvable; it falls
    by 3 after an accepted step (to ``lam_min`` at least) and grows by 4 after a rejected one. A
    row stops once an accepted step lowers its objective by less than ``rtol`` relatively, or its
    damping passes ``lam_max``. Returns (theta, f, converged).
    """
    theta = np.array(theta0, float, copy=True)
    f, g, H = terms(theta, np.arange(len(theta)))
    lam = np.full(len(theta), lam0)
    active = np.ones(len(theta), bool)
    eye = np.eye(theta.shape[1])
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        Hk = H[idx]
        diag = np.diagonal(Hk, axis1=1, axis2=2)
        try:
            step = np.linalg.solve(Hk + lam[idx, None, None] * (diag[:, :, None] * eye + jitter * eye),
                                   -g[idx][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # a singular system: a rejected step, more damping
            step = np.zeros_like(theta[idx])
        new = project(theta[idx] + step)
        fn, gn, Hn = terms(new, idx)
        ok = np.isfinite(fn) & (fn < f[idx])
        done = (ok & (f[idx] - fn <= rtol * np.maximum(f[idx], 1e-300))) | (lam[idx] > lam_max)
        j = idx[ok]
        theta[j], f[j], g[j], H[j] = new[ok], fn[ok], gn[ok], Hn[ok]
        lam[j] = np.maximum(lam[j] / 3.0, lam_min)
        lam[idx[~ok]] *= 4.0
        active[idx[done]] = False
    return theta, f, ~active
