"""Is the law believable? Residual scale, an extrapolation check, outliers and flags.

A scaling law is fitted to be extrapolated, so the honest test is to extrapolate it: refit
without the largest budget and predict that budget's runs (the check Hoffmann et al. 2022 could
not make and Besiroglu et al. 2024 argue for). Errors are reported in nats and in units of the
residual scale, a robust (MAD-based) standard deviation of the in-sample residuals in nats,
inflated by sqrt(n / (n - 5)) because 5 fitted parameters shrink in-sample residuals.

The flags turn the diagnostics into plain sentences: Approaches 2 and 3 disagreeing beyond
their bootstrap intervals, more than 5 % of the held-out runs (at least one) more than 3 sigma
off, IsoFLOP minima at the edge of their budget's sizes (the sizes do not bracket the optimum,
so the vertex is extrapolated), and a smooth residual around the law larger than real sweeps
show (RESIDUAL_FIELD_LIMIT; orchestrator.fitting.discrepancy estimates it). Outliers are judged
against the residual scale at their own loss level, since seed noise grows with the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from orchestrator.fitting.errors import InsufficientData
from orchestrator.fitting.law import fit_approach3, predict_loss
from orchestrator.fitting.stats import robust_sd
from orchestrator.report.text import flops_str

__all__ = ["Holdout", "residual_scale", "held_out_mask", "holdout_check", "outliers", "law_flags", "approach2_flags",
           "Z_LIMIT"]

Z_LIMIT = 3.0  # residuals beyond this many sigma are "unusually large"
N_PARAMS = 5


# Real sweeps scatter 0.003-0.03 nats around a well-specified law (Porian et al. 2024); a
# smooth residual well beyond that is the law's form failing, not noise. Measured on adaptive
# sweeps of simulated worlds with a 0.02-nat field (REML): 0-0.023 nats when the form is right,
# 0.045-0.13 with an extra N-D interaction term the form lacks; Chinchilla's runs: 0.02.
RESIDUAL_FIELD_LIMIT = 0.04  # nats
HOLDOUT_MISS_SHARE = 0.05  # held-out runs beyond Z_LIMIT that make the extrapolation a flag
LOCAL_MIN_RUNS = 200  # runs needed before residual scales are taken locally (outliers)


def residual_scale(resid) -> float:
    """Robust standard deviation (stats.robust_sd) of residuals, corrected for 5 fitted parameters."""
    r = np.asarray(resid, float)
    mad = robust_sd(r)
    return float(max(mad * np.sqrt(len(r) / max(len(r) - N_PARAMS, 1)), 1e-12))


@dataclass
class Holdout:
    """Refit without the largest budget; predictions for its runs (errors: predicted - observed)."""

    threshold: float  # runs with compute >= this were held out
    names: list[str]
    errors: np.ndarray = field(repr=False)  # nats per token
    sigma: float  # residual scale of the refit, nats

    @property
    def z(self) -> np.ndarray:
        return self.errors / self.sigma

    @property
    def max_abs_z(self) -> float:
        return float(np.max(np.abs(self.z)))

    def to_json(self) -> dict:
        return {"held_out_compute_at_least": self.threshold, "n_runs": len(self.errors),
                "mean_error_nats": float(np.mean(self.errors)), "rms_error_nats": float(np.sqrt(np.mean(self.errors**2))),
                "max_abs_error_nats": float(np.max(np.abs(self.errors))), "sigma_nats": self.sigma,
                "max_abs_z": self.max_abs_z,
                "runs": [{"name": n, "error_nats": float(e), "z": float(z)} for n, e, z in zip(self.names, self.errors, self.z)]}


def held_out_mask(compute, budget, min_runs: int = 3) -> np.ndarray:
    """The largest budget's runs and every run of larger compute; without budgets, the top
    tenth of the runs by compute (at least ``min_runs``)."""
    compute, budget = np.asarray(compute, float), np.asarray(budget, float)
    if (budget > 0).any():
        top = budget == budget.max()
        return top | (compute > compute[top].min())
    k = max(min_runs, int(np.ceil(0.1 * len(compute))))
    return compute >= np.sort(compute)[-k] if len(compute) >= k else np.ones(len(compute), bool)


def holdout_check(n, d, loss, compute, budget, names) -> Holdout:
    """Extrapolation check; InsufficientData when fewer than 5 runs would remain to refit."""
    n, d, loss, compute = (np.asarray(x, float) for x in (n, d, loss, compute))
    out = held_out_mask(compute, budget)
    if (~out).sum() < N_PARAMS + 1:
        raise InsufficientData(f"the extrapolation check needs at least {N_PARAMS + 1} runs below the largest budget "
                               f"to refit Approach 3; have {(~out).sum()}")
    fit = fit_approach3(n[~out], d[~out], loss[~out])
    resid = predict_loss(fit.params, n[~out], d[~out]) - loss[~out]
    errors = predict_loss(fit.params, n[out], d[out]) - loss[out]
    return Holdout(float(compute[out].min()), [str(x) for x in np.asarray(names)[out]], errors, residual_scale(resid))


def outliers(resid_nats, names, observed) -> list[dict]:
    """Runs whose residual (predicted - observed, nats) exceeds Z_LIMIT residual scales, worst first.

    The scale is local to each run's loss level (:func:`local_scale`): seed noise grows with
    the loss, so one global scale would flag half the small, high-loss runs of a large sweep
    and none of the large ones.
    """
    r = np.asarray(resid_nats, float)
    z = r / local_scale(r, np.asarray(observed, float))
    idx = np.flatnonzero(np.abs(z) > Z_LIMIT)
    idx = idx[np.argsort(-np.abs(z[idx]))]
    return [{"name": str(names[i]), "row": int(i), "observed": float(observed[i]),
             "predicted": float(observed[i] + r[i]), "residual_nats": float(r[i]), "z": float(z[i])} for i in idx]


def local_scale(resid, level) -> np.ndarray:
    """Per run, the robust scale (stats.robust_sd) of the residuals of the runs nearest in ``level``
    (a window of max(50, n/20) runs); the global :func:`residual_scale` below LOCAL_MIN_RUNS."""
    r, n = np.asarray(resid, float), len(resid)
    if n < LOCAL_MIN_RUNS:
        return np.full(n, residual_scale(r))
    k = max(50, n // 20)
    order = np.argsort(level, kind="stable")
    # Windows start every ``stride`` runs (each run takes the window nearest its centre): every
    # window would be n k numbers, 5e10 for a million runs; strided, at most 1,000 windows.
    stride = max(1, (n - k + 1) // 1000)
    win = np.lib.stride_tricks.sliding_window_view(r[order], k)[::stride]
    mad = np.concatenate([robust_sd(win[i:i + 50], axis=1) for i in range(0, len(win), 50)])
    out = np.empty(n)
    start = np.clip(np.arange(n) - k // 2, 0, n - k)
    out[order] = np.maximum(mad[np.minimum(np.rint(start / stride).astype(int), len(mad) - 1)], 1e-12)
    return out


def _disjoint(i1, i2, level: float = 0.95) -> bool:
    (lo1, hi1), (lo2, hi2) = i1.bounds[level], i2.bounds[level]
    return hi1 < lo2 or hi2 < lo1


def law_flags(holdout: Holdout | None, field_sd: float | None = None, noise_sd: float = 0.0) -> list[str]:
    """The flags that hold for any design: the smooth residual and the extrapolation check.
    ``field_sd`` is the sd of the smooth residual around the law, in nats, where estimated, and
    ``noise_sd`` that of the independent noise beside it: a field weaker than the noise is too
    poorly determined to call the law wrong (noisy sweeps put it at 0.02-0.046 nats)."""
    flags = []
    if field_sd is not None and field_sd > max(RESIDUAL_FIELD_LIMIT, noise_sd):
        flags.append(f"the runs sit on a smooth residual of {field_sd:.3f} nats around the fitted law (more than "
                     f"{RESIDUAL_FIELD_LIMIT:g} nats; well-specified sweeps show 0.003-0.03): the law's form may not "
                     "fit them, and predictions beyond them may be off by more than their intervals say")
    bad = int((np.abs(holdout.z) > Z_LIMIT).sum()) if holdout is not None else 0
    # Isolated outliers are listed as such; the law is suspect when more than a few percent of
    # the held-out runs miss (Besiroglu et al. 2024 dropped about 2 % of Chinchilla's runs as outliers).
    if bad and bad > HOLDOUT_MISS_SHARE * len(holdout.errors):
        flags.append(f"{bad} of {len(holdout.errors)} held-out runs (C >= {flops_str(holdout.threshold)}) are more than "
                     f"{Z_LIMIT:g} sigma from the extrapolated law (worst {holdout.max_abs_z:.1f} sigma)")
    return flags


def approach2_flags(intervals: dict, minima) -> list[str]:
    """The flags that read the runs as IsoFLOP sets: Approaches 2 and 3 disagreeing, and
    minima at the edge of their budget's sizes."""
    flags = []
    for k in ("a", "b"):
        i3, i2 = intervals.get(k), intervals.get(f"approach2.{k}")
        if i3 is not None and i2 is not None and i2.n_draws and _disjoint(i3, i2):
            lo3, hi3 = i3.bounds[0.95]
            lo2, hi2 = i2.bounds[0.95]
            flags.append(f"Approaches 2 and 3 disagree on {k}: {i2.estimate:.3f} [{lo2:.3f}, {hi2:.3f}] against "
                         f"{i3.estimate:.3f} [{lo3:.3f}, {hi3:.3f}] (95 % intervals do not overlap)")
    edge = [m.budget for m in minima if m.at_edge]
    if edge:
        flags.append("IsoFLOP minimum at the edge of the swept sizes for budget(s) "
                     + ", ".join(flops_str(c) for c in edge) + ": the sizes do not bracket the optimum")
    return flags
