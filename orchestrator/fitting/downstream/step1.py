"""Step 1: the task loss as a law in N and D, fitted to each run's final evaluation.

Bhagia et al. 2024 (arXiv 2412.04403, eq. 1) fit ``L(N, D) = A / N^alpha + B / D^beta + E`` to
the task loss (bits per byte of the correct answer) of the final checkpoint of every ladder run
with a Huber loss. Here that is the project's own Approach 3 (orchestrator.fitting.law: a
robust Huber fit in log space, found globally by variable projection), so a task-loss law is
fitted, resampled and given predictive intervals exactly as ``scalesweep fit`` does a loss law:

* bootstrap refits of the runs' resamples (orchestrator.fitting.bootstrap.refit_chinchilla,
  batched Levenberg-Marquardt from the full-data optimum), with the *same* run counts as
  step 2 uses, so that a resample is one coherent ladder through both steps;
* the predictive terms that resampling does not see (those of orchestrator.fitting.forms.predict.extra_sd):
  one run's own noise at the predicted level and the smooth residual field around the law
  (orchestrator.fitting.discrepancy, REML; from 8 runs on), each as an sd in log units. The
  field's effect on the parameters, extra_sd's third term, is not added: on a ladder of tens
  of runs the bootstrap over runs already moves the law that much, and adding both made the
  80 % intervals of the task loss 10x beyond a 16-run ladder cover 97 % of simulated targets
  (12 worlds, 96 cases; bench/bench_downstream.py) where 80 % was asked.

A ladder of 3 or 4 runs (or one whose sizes and token counts cannot determine five parameters,
orchestrator.results.runs.law_data_problem) gets the three-parameter law of compute alone,
``E + A / (N D)^gamma``, through the general form machinery, and a note saying so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Step1", "fit_step1", "COMPUTE_FORM"]

COMPUTE_FORM = "E + A / (N*D)**gamma"  # the 3-parameter fallback: a law of N D, i.e. of compute C = 6ND
COMPUTE_PARAMS = ("E=0.5:0:", "A=1e5:0:", "gamma=0.15:0:3")
FIELD_MIN_RUNS = 8  # runs before the residual field is estimated (as orchestrator.fitting.diagnostics)


@dataclass
class Step1:
    """A fitted task-loss law with its runs (X: arrays N, D), their final task losses, its
    residual model (None below FIELD_MIN_RUNS runs) and a note when the fallback form is used."""

    law: object  # orchestrator.fitting.forms.general.FormFit
    X: dict
    loss: np.ndarray
    disc: object | None
    note: str = ""
    draws: np.ndarray | None = field(default=None, repr=False)  # (k, P) bootstrap refits

    def predict(self, X: dict, Z: np.ndarray | None = None) -> np.ndarray:
        """The law's task loss at X: (m,) for the fit, (k, m) for parameter rows Z."""
        if Z is None:
            return self.law.predict(X)
        with np.errstate(all="ignore"):
            return self.law.form.loss(Z, X)

    def extra_sd(self, X: dict, est: np.ndarray) -> np.ndarray:
        """One run's noise and the residual field at X, in log units: the first two terms of
        orchestrator.fitting.forms.predict.extra_sd. Its third, the field's effect on the
        parameters (a sandwich carried to X), is left out: on a ladder of 16 runs the bootstrap
        over runs already moves the law by as much, and with both the 80 % intervals of the
        task loss at 10x beyond the ladder covered 97 % of simulated targets (module docstring)."""
        from orchestrator.fitting import residual_scale

        est = np.asarray(est, float)
        if self.disc is None:
            return np.full(len(est), residual_scale(self.law.residuals, self.law.form.n_params))
        return np.hypot(self.disc.noise_sd(est), self.disc.s_r) / est

    def resample(self, counts: np.ndarray) -> np.ndarray:
        """Refits of the law to every row of ``counts`` (k, runs), stored as ``draws``."""
        from orchestrator.fitting.bootstrap import refit_chinchilla
        from orchestrator.fitting.forms.general import refit_resamples

        if not len(counts):
            self.draws = np.zeros((0, self.law.form.n_params))
        elif self.law.form.name == "chinchilla":
            self.draws = refit_chinchilla(counts, self.X["N"], self.X["D"], self.loss, self.law.z)
        else:
            self.draws = refit_resamples(self.law, self.X, self.loss, counts)
        return self.draws

    def values(self) -> dict[str, float]:
        return self.law.values

    def formula(self) -> str:
        v = self.values()
        if self.law.form.name == "chinchilla":
            return f"L(N, D) = {v['E']:.4g} + {v['A']:.4g} / N^{v['alpha']:.4f} + {v['B']:.4g} / D^{v['beta']:.4f}"
        return f"L(N, D) = {v['E']:.4g} + {v['A']:.4g} / (N D)^{v['gamma']:.4f}"

    def frontier_loss(self, compute: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
        """The law's loss on its compute-optimal frontier at each compute (m,): (m,) for the
        fit, (k, m) for parameter rows Z. A law of compute alone: its value at C."""
        from workers.flops import tokens_for_budget

        compute = np.atleast_1d(np.asarray(compute, float))
        rows = self.law.z[None, :] if Z is None else np.atleast_2d(Z)
        if self.law.form.name == "chinchilla":
            out = np.stack([self.law.form.optimum(rows, c)[2] for c in compute], axis=-1)
        else:
            one = np.ones_like(compute)
            out = self.law.form.loss(rows, {"N": one, "D": tokens_for_budget(compute, one)})
        return out[0] if Z is None else out


def fit_step1(n, d, loss, seed: int = 0) -> Step1:
    """Fit the task-loss law to the runs' final (N, D, task loss); see the module docstring.
    FitError (InsufficientData) with fewer than 3 runs or when no form can be fitted."""
    from orchestrator.errors import InsufficientData
    from orchestrator.fitting.discrepancy import estimate_discrepancies
    from orchestrator.fitting.forms.builtin import Chinchilla, custom_form
    from orchestrator.fitting.forms.general import FormFit, fit_law
    from orchestrator.fitting.law import SEARCH_GRID, fit_approach3
    from orchestrator.fitting.forms.predict import grid_x
    from orchestrator.results.runs import law_data_problem

    n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
    if len(n) < 3:
        raise InsufficientData(f"step 1 needs at least 3 runs; have {len(n)}")
    X = {"N": n, "D": d}
    problem = law_data_problem(n, d, loss) if len(n) >= 5 else f"{len(n)} runs for five parameters"
    note = ""
    if problem:
        form = custom_form(COMPUTE_FORM, COMPUTE_PARAMS)
        note = (f"step 1 is the law of compute alone, {COMPUTE_FORM} ({problem}: the Chinchilla form needs 5 runs at "
                "3 distinct N and D)")
    else:
        form = Chinchilla()
    if form.name == "chinchilla":
        # A ladder has tens of runs, not thousands: a 24 x 24 grid of exponents finds the same
        # basins as the default 48 x 48 at a quarter of the cost (the fit is done 3 times a task).
        law = FormFit.of_approach3(fit_approach3(n, d, loss, alphas=SEARCH_GRID[::2], betas=SEARCH_GRID[::2],
                                                 screened=True))
    else:
        law = fit_law(form, X, loss, seed=seed)
    if not np.isfinite(law.z).all():
        raise InsufficientData("step 1: the task-loss law did not converge")
    disc = None
    if len(n) >= FIELD_MIN_RUNS:
        jac = form.log_jacobian(law.z[None, :], X)[0]
        disc = estimate_discrepancies(law.z, grid_x(X), loss, law.residuals, seed=seed, jac=jac)[-1]
    return Step1(law, X, loss, disc, note)
