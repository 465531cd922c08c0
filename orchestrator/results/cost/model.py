"""A straight line in log-log with its prediction interval: how throughput and power scale with N.

Throughput of one device is measured in budget FLOPs per second (C = 6 N D over the trial's wall
time, per GPU or CPU thread held: workers.flops.train_flops), so the wall time of any (N, D) is
6 N D over it, and no model shape is needed at the target. Over the sizes a sweep trains, that
rate grows with N as a power law (small models leave the device idle between kernels; Kaplan et
al. 2020, section 2.1, and every MFU table since show utilisation rising with size), so
log(rate) = a + b log N, fitted by least squares. Power per device is fitted the same way.

The interval is the ordinary least-squares *prediction* interval (Student's t with n - 2 degrees
of freedom, the standard error of a new observation: s sqrt(1 + 1/n + (x0 - xbar)^2 / Sxx)), which
widens with the distance from the trials in log N: a target far beyond the largest trial is
uncertain for a reason the formula knows. With a single distinct N (or two runs) the line has
no slope to fit, and the model is the mean with the t interval of a new observation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["LogLinear", "MIN_RUNS"]

MIN_RUNS = 2  # below this there is no spread to make an interval from


@dataclass(frozen=True)
class LogLinear:
    """log y = a + b log N, with what its prediction interval needs."""

    a: float
    b: float
    s: float  # residual standard deviation (log scale)
    n: int  # runs fitted
    df: int  # degrees of freedom of s
    x_mean: float
    sxx: float  # sum of squared deviations of log N (0: no slope fitted)

    @classmethod
    def fit(cls, n_params, y) -> "LogLinear":
        """The line through (log N, log y); ValueError with fewer than MIN_RUNS runs."""
        x, z = np.log(np.asarray(n_params, float)), np.log(np.asarray(y, float))
        k = len(x)
        if k < MIN_RUNS:
            raise ValueError(f"{k} run(s): at least {MIN_RUNS} are needed")
        x_mean = float(x.mean())
        sxx = float(((x - x_mean) ** 2).sum())
        # A slope needs three runs (one degree of freedom left) over N spread beyond rounding.
        if k >= 3 and sxx > k * 1e-6:
            b = float(((x - x_mean) * (z - z.mean())).sum() / sxx)
            df = k - 2
        else:
            b, sxx, df = 0.0, 0.0, k - 1
        a = float(z.mean() - b * x_mean)
        resid = z - (a + b * x)
        s = float(math.sqrt((resid ** 2).sum() / df)) if df > 0 else 0.0
        return cls(a, b, s, k, df, x_mean, sxx)

    def mean(self, log_n):
        """Fitted log y at log N (arrays too)."""
        return self.a + self.b * np.asarray(log_n, float)

    def se(self, log_n):
        """Standard error of a new observation's log y at log N."""
        dx2 = (np.asarray(log_n, float) - self.x_mean) ** 2
        lever = dx2 / self.sxx if self.sxx > 0 else 0.0
        return self.s * np.sqrt(1.0 + 1.0 / self.n + lever)

    def draw(self, log_n, u):
        """log y at log N for uniform variates ``u`` in (0, 1): the prediction distribution's quantiles."""
        t = stats.t.ppf(np.asarray(u, float), self.df) if self.df > 0 else 0.0
        return self.mean(log_n) + self.se(log_n) * t

    def to_json(self) -> dict:
        return {"log_a": self.a, "exponent": self.b, "residual_sd": self.s, "runs": self.n, "df": self.df}
