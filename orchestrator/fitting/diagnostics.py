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

from orchestrator.errors import InsufficientData
from orchestrator.results.runs import distinct_count
from orchestrator.fitting import Z95, residual_scale, robust_sd
from orchestrator.report.text import flops_str

__all__ = ["Holdout", "residual_scale", "held_out_mask", "holdout_check", "outliers", "law_flags", "approach2_flags",
           "Z_LIMIT"]

Z_LIMIT = 3.0  # residuals beyond this many sigma are "unusually large"


# Real sweeps scatter 0.003-0.03 nats around a well-specified law (Porian et al. 2024); a
# smooth residual well beyond that is the law's form failing, not noise. Measured on adaptive
# sweeps of simulated worlds with a 0.02-nat field (REML): 0-0.023 nats when the form is right,
# 0.045-0.13 with an extra N-D interaction term the form lacks; Chinchilla's runs: 0.02.
RESIDUAL_FIELD_LIMIT = 0.04  # nats
HOLDOUT_MISS_SHARE = 0.05  # held-out runs beyond Z_LIMIT that make the extrapolation a flag
LOCAL_MIN_RUNS = 200  # runs needed before residual scales are taken locally (outliers)


@dataclass
class Holdout:
    """Refit without the largest budget; predictions for its runs (errors: predicted - observed).

    ``bounds`` are the refit's predictive intervals at the held-out runs ({level: (lo, hi)},
    losses): the spread of the refit's bootstrap at each run and the noise at its loss, combined
    (orchestrator.fitting.forms.predict). A run's z is its error in predictive standard deviations on
    its side of the prediction, so |z| > 1.96 is a run outside its 95 % interval. Without
    ``bounds``, z is the error over the refit's residual scale ``sigma``."""

    threshold: float  # runs with compute >= this were held out
    names: list[str]
    errors: np.ndarray = field(repr=False)  # nats per token
    sigma: float  # residual scale of the refit, nats
    observed: np.ndarray | None = field(default=None, repr=False)
    bounds: dict | None = field(default=None, repr=False)
    form: str = "chinchilla"
    key: str = "C"  # what the held-out runs are the top of: compute C, or N for a law of N alone

    @property
    def z(self) -> np.ndarray:
        if self.bounds is None or self.observed is None:
            return self.errors / self.sigma
        lo, hi = self.bounds[0.95]
        pred = self.observed + self.errors
        half = np.where(self.errors > 0, pred - lo, hi - pred) / Z95  # the side the observation lies on
        return self.errors / np.maximum(half, 1e-12)

    @property
    def max_abs_z(self) -> float:
        return float(np.max(np.abs(self.z)))

    @property
    def outside95(self) -> int:
        return int((np.abs(self.z) > Z95).sum())

    def to_json(self) -> dict:
        out = {"held_out_compute_at_least" if self.key == "C" else "held_out_n_at_least": self.threshold,
               "n_runs": len(self.errors), "form": self.form,
               "mean_error_nats": float(np.mean(self.errors)), "rms_error_nats": float(np.sqrt(np.mean(self.errors**2))),
               "max_abs_error_nats": float(np.max(np.abs(self.errors))), "sigma_nats": self.sigma,
               "max_abs_z": self.max_abs_z, "outside_95": self.outside95 if self.bounds is not None else None}
        runs = [{"name": n, "error_nats": float(e), "z": float(z)} for n, e, z in zip(self.names, self.errors, self.z)]
        if self.bounds is not None and self.observed is not None:
            for i, r in enumerate(runs):
                r.update(observed=float(self.observed[i]), predicted=float(self.observed[i] + self.errors[i]),
                         **{f"{round(100 * lv)}%": [float(b[0][i]), float(b[1][i])] for lv, b in self.bounds.items()})
        out["runs"] = runs
        return out


def held_out_mask(compute, budget, min_runs: int = 3) -> np.ndarray:
    """The largest budget's runs and every run of larger compute; without budgets, the top
    tenth of the runs by compute (at least ``min_runs``)."""
    compute, budget = np.asarray(compute, float), np.asarray(budget, float)
    if (budget > 0).any():
        top = budget == budget.max()
        return top | (compute > compute[top].min())
    k = max(min_runs, int(np.ceil(0.1 * len(compute))))
    return compute >= np.sort(compute)[-k] if len(compute) >= k else np.ones(len(compute), bool)


HOLDOUT_RESAMPLES = 200  # bootstrap refits of the held-out check's refit (its parameter uncertainty)
HOLDOUT_FIELD_RUNS = 8  # runs below the held-out budget before the refit gets a residual model (as analyse's)


def holdout_check(form, X: dict, loss, compute, budget, names, *, n_boot: int = HOLDOUT_RESAMPLES,
                  seed: int = 0) -> Holdout:
    """Extrapolation check of ``form`` (orchestrator.fitting.forms): refit without the largest
    budget and judge each held-out run against the refit's predictive interval. InsufficientData
    when fewer than the form's parameters + 1 runs would remain to refit."""
    from orchestrator.fitting.discrepancy import estimate_discrepancies
    from orchestrator.fitting.forms.general import fit_law
    from orchestrator.fitting.forms.predict import grid_x, predictive, resample_laws

    loss, compute = np.asarray(loss, float), np.asarray(compute, float)
    out = held_out_mask(compute, budget)
    need = form.n_params + 1
    if (~out).sum() < need:
        raise InsufficientData(f"the extrapolation check needs at least {need} runs below the largest budget "
                               f"to refit the {form.name} form; have {(~out).sum()}")
    levels = distinct_count(np.where(np.asarray(budget)[~out] > 0, np.asarray(budget)[~out], compute[~out]))
    if form.name != "chinchilla" and (np.asarray(budget) > 0).any() and levels < 2:
        # One budget below the largest: a general form's local bootstrap refits do not show
        # how poorly one compute level determines it, so the check would judge noise.
        raise InsufficientData(f"the extrapolation check of the {form.name} form needs at least 2 budgets below the "
                               "largest to refit it; have 1")
    X_in = {k: np.asarray(v, float)[~out] for k, v in X.items()}
    X_out = {k: np.asarray(v, float)[out] for k, v in X.items()}
    refit = fit_law(form, X_in, loss[~out])
    Z = resample_laws(refit, X_in, loss[~out], n_boot, seed)
    disc = None
    if (~out).sum() >= HOLDOUT_FIELD_RUNS:
        # The refit's own residual model, as `fit --predict` uses the full fit's: its field
        # (any length scale: the held-out runs are an extrapolation) and its noise at each loss.
        jac = form.log_jacobian(refit.z[None, :], X_in)[0]
        disc = estimate_discrepancies(refit.z, grid_x(X_in), loss[~out], refit.residuals, seed=seed, jac=jac)[-1]
    pred, bounds = predictive(refit, X_in, loss[~out], Z, disc, X_out)
    noise = residual_scale(refit.residuals, form.n_params)
    return Holdout(float(compute[out].min()), [str(x) for x in np.asarray(names)[out]], pred - loss[out],
                   float(noise * np.median(loss[~out])), loss[out], bounds, form.name, "C" if "D" in X else "N")


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
    if holdout is not None and holdout.bounds is not None:
        flags.extend(_holdout_flag(holdout))
        return flags
    bad = int((np.abs(holdout.z) > Z_LIMIT).sum()) if holdout is not None else 0
    # Isolated outliers are listed as such; the law is suspect when more than a few percent of
    # the held-out runs miss (Besiroglu et al. 2024 dropped about 2 % of Chinchilla's runs as outliers).
    if bad and bad > HOLDOUT_MISS_SHARE * len(holdout.errors):
        flags.append(f"{bad} of {len(holdout.errors)} held-out runs (C >= {flops_str(holdout.threshold)}) are more than "
                     f"{Z_LIMIT:g} sigma from the extrapolated law (worst {holdout.max_abs_z:.1f} sigma)")
    return flags


# Runs outside their 95 % intervals beyond this binomial quantile make a flag. Not 0.99: the
# held-out runs share the residual field at the largest budget, so their misses come together
# (0.99 flagged 12 % of right-form sweeps of Chinchilla's design under the benchmark noise).
HOLDOUT_FLAG_QUANTILE = 0.999


def _holdout_flag(h: Holdout) -> list[str]:
    """A flag when more held-out runs fall outside their 95 % predictive intervals than chance
    makes likely: more than the HOLDOUT_FLAG_QUANTILE quantile of Binomial(n, 0.05) (with 4
    held-out runs: 3 or more outside; 11: 5 or more; 100: 14 or more)."""
    from scipy.stats import binom

    bad = h.outside95
    if bad <= binom.ppf(HOLDOUT_FLAG_QUANTILE, len(h.errors), 0.05):
        return []
    lo, hi = h.bounds[0.95]
    pred = h.observed + h.errors
    beyond = np.where(h.observed > hi, h.observed - hi, np.where(h.observed < lo, lo - h.observed, 0.0))
    return [f"{bad} of {len(h.errors)} held-out runs ({h.key} >= {flops_str(h.threshold)}) fall outside their 95 % "
            f"predictive intervals from the refit without them (worst by {beyond.max():.4f} nats, "
            f"{h.max_abs_z:.1f} predictive sd; mean error {float(np.mean(pred - h.observed)):+.4f} nats): the "
            "law does not extrapolate to them"]


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
