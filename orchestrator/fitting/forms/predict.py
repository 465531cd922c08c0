"""Predictive intervals: what loss a run at (N, D) will reach, with 80 % and 95 % intervals.

A prediction is uncertain for three reasons, independent of each other, and the interval adds
them in quadrature on each side of the point prediction, in log units (relative error):

1. the law's parameters: the percentile spread of the prediction over the fit's bootstrap
   refits (the same resamples as every other interval, orchestrator.fitting.bootstrap);
2. the smooth residual field around the law (orchestrator.fitting.discrepancy): its prior sd
   s_r at a point away from the runs, plus its effect on the parameters (the sandwich
   covariance carried to the prediction by the form's Jacobian), which the bootstrap over runs
   does not see;
3. the noise of one run at the predicted loss level: the residual model's sigma (L/L_ref)^q,
   or without one (fewer than 8 runs) the fit's robust residual scale.

``scalesweep fit --predict POINTS`` prints these per row; the extrapolation check
(orchestrator.fitting.diagnostics.holdout_check) judges held-out runs against the same intervals
from the refit without them.
"""

from __future__ import annotations

import numpy as np

from orchestrator.fitting import LEVELS, Z, residual_scale

__all__ = ["predictive_bounds", "predictive", "resample_laws", "predict_points", "extra_sd", "grid_x"]


def predictive_bounds(estimate: np.ndarray, draws: np.ndarray | None, extra_sd: np.ndarray) -> dict:
    """{level: (lo, hi)} around ``estimate`` (m,): the bootstrap ``draws`` (k, m) percentile
    spread of log loss on each side, widened in quadrature by ``extra_sd`` (m,) log units."""
    est = np.asarray(estimate, float)
    log_est = np.log(est)
    out = {}
    for lv in LEVELS:
        below = above = np.zeros_like(est)
        if draws is not None and len(draws):
            with np.errstate(all="ignore"):
                logs = np.log(np.where(draws > 0, draws, np.nan))
            ok = np.isfinite(logs).sum(axis=0) > 0
            q_lo = np.where(ok, np.nanpercentile(np.where(ok, logs, 0.0), 50 * (1 - lv), axis=0), log_est)
            q_hi = np.where(ok, np.nanpercentile(np.where(ok, logs, 0.0), 50 * (1 + lv), axis=0), log_est)
            below, above = np.maximum(log_est - q_lo, 0.0), np.maximum(q_hi - log_est, 0.0)
        half = Z[lv] * np.asarray(extra_sd, float)
        out[lv] = (est * np.exp(-np.hypot(below, half)), est * np.exp(np.hypot(above, half)))
    return out


def resample_laws(fit, X: dict, loss, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, P) internal parameter vectors of ``fit``'s form refitted to bootstrap resamples
    of its runs (Chinchilla's form by its fast refit, orchestrator.fitting.bootstrap)."""
    from orchestrator.fitting.bootstrap import resample_counts, refit_chinchilla
    from orchestrator.fitting.forms.general import refit_resamples

    loss = np.asarray(loss, float)
    if n_boot <= 0:
        return np.zeros((0, fit.form.n_params))
    counts = resample_counts(len(loss), n_boot, seed)
    if fit.form.name == "chinchilla":
        return refit_chinchilla(counts, X["N"], X["D"], loss, fit.z)
    return refit_resamples(fit, X, loss, counts)


def predict_points(sweep_fit, X: dict) -> list[dict]:
    """Per row of X (arrays N, D[, U]): the predicted loss with its 80 % and 95 % predictive
    intervals (module docstring). ``sweep_fit``: an orchestrator.fitting.analysis.SweepFit."""
    law = sweep_fit.law
    X = {k: np.asarray(v, float) for k, v in X.items()}
    boot = sweep_fit.bootstrap
    disc = sweep_fit.discrepancy_targets or sweep_fit.discrepancy
    est, bounds = predictive(law, sweep_fit.fit_inputs, sweep_fit.used["eval_loss"].to_numpy(float),
                             boot.laws if boot is not None else None, disc, X)
    rows = []
    for i in range(len(est)):
        row = {"n": float(X["N"][i]), "d": float(X["D"][i]) if "D" in X else None}
        if "U" in X:
            row["u"] = float(X["U"][i])
        row["loss"] = float(est[i])
        row.update({f"{round(100 * lv)}%": [float(b[0][i]), float(b[1][i])] for lv, b in bounds.items()})
        rows.append(row)
    return rows


def predictive(law, X_runs: dict, loss_runs, laws: np.ndarray | None, disc, X: dict) -> tuple[np.ndarray, dict]:
    """(predicted loss (m,), {level: (lo, hi)}) at the points X for the fitted form ``law``
    (orchestrator.fitting.forms.general.FormFit) of the runs X_runs with losses ``loss_runs``,
    its bootstrap refits ``laws`` (k, P) and residual model ``disc`` (None: the fit's residual
    scale stands for the noise, and no field is added)."""
    form = law.form
    est = law.predict(X)
    draws = None
    if laws is not None and len(laws):
        with np.errstate(all="ignore"):
            draws = form.loss(laws, X)
    return est, predictive_bounds(est, draws, extra_sd(law, X_runs, loss_runs, disc, X, est))


def extra_sd(law, X_runs: dict, loss_runs, disc, X: dict, est: np.ndarray) -> np.ndarray:
    """The field's and one run's noise's sd (log units) at each predicted point (module docstring)."""
    from orchestrator.fitting.discrepancy import field_parameter_cov

    if disc is None:
        return np.full(len(est), residual_scale(law.residuals, law.form.n_params))
    noise = disc.noise_sd(est) / est
    field = disc.s_r / est
    jac = law.form.log_jacobian(law.z[None, :], X_runs)[0]
    cov = field_parameter_cov(jac, grid_x(X_runs), np.asarray(loss_runs, float), disc)
    g = law.form.log_jacobian(law.z[None, :], X)[0]
    param = np.sqrt(np.maximum(np.einsum("mi,ij,mj->m", g, cov, g), 0.0))
    return np.sqrt(noise**2 + field**2 + param**2)


def grid_x(X: dict) -> np.ndarray:
    """(log10 N, log10 D) of runs, the residual model's coordinates (D as 1 for a law of N alone)."""
    n = np.asarray(X["N"], float)
    d = np.asarray(X["D"], float) if "D" in X else np.ones_like(n)
    return np.stack([np.log10(n), np.log10(d)], axis=1)
