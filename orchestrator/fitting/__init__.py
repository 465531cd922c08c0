"""From runs to a law with uncertainty (the stages are the modules of this package).

This module holds the small statistical constants and helpers that the fit, its diagnostics and
the planner share.

Numpy only, so that the report's text formatting and the planner can import it without the
fitting engine (scipy).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEVELS", "Z", "Z80", "Z95", "MAD_TO_SD", "MAX_MAGNITUDE", "robust_sd", "residual_scale"]

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
