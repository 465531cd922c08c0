"""Choosing a law form by how well it extrapolates.

A scaling law is fitted to be extrapolated, so forms are compared the way they will be used:
each is refitted without the largest budget (without budgets: the top tenth of the runs by
compute, diagnostics.held_out_mask) and scored on the held-out runs: RMS and mean error in
nats, and mean absolute error as a share of the loss, beside the in-sample RMS of its fit to
every run and its parameter count.

The best extrapolator has the lowest held-out RMS. Forms whose held-out mean squared error
exceeds the best's by no more than one standard error of the paired difference (per held-out
run, e_form^2 - e_best^2: the noise common to both cancels) are "within noise" of it, and the
simplest of them (fewest parameters, then lowest held-out RMS) is chosen: the one-standard-
error rule (Hastie, Tibshirani & Friedman 2009, section 7.10), since a more flexible form
always fits the runs at least as well and only extrapolation can tell whether it is right.

When another form than the one fitted is the best, the fit flags it only when the gain is
clear (``Comparison.better_than``: FLAG_SE standard errors and FLAG_RATIO in RMS): a one-SE
gain happens by chance on right-form sweeps, and a flag must not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from orchestrator.fitting.diagnostics import held_out_mask
from orchestrator.errors import FitError
from orchestrator.fitting.forms import FORMS, LawForm
from orchestrator.fitting.forms.general import chinchilla_seed, fit_law
from orchestrator.results.runs import distinct_count, distinct_points

__all__ = ["FormScore", "Comparison", "compare_forms", "candidate_forms", "comparison_applies", "paired_excess",
           "MIN_BUDGETS"]

MIN_BUDGETS = 3  # budgets (or equivalent spread) before ``fit`` compares forms unasked
MIN_SPREAD_DECADES = 1.0  # without budgets: the runs' compute must span this many decades ...
MIN_UNBUDGETED_RUNS = 15  # ... over at least this many runs
FLAG_SE = 2.0  # the "extrapolates better" flag: the gain beyond this many standard errors ...
FLAG_RATIO = 2.0  # ... and a held-out RMS at least this many times smaller (1.5 flagged 12 % of
# right-form sweeps of Chinchilla's design under the benchmark noise; 2.0: docs/benchmarks.md)


@dataclass
class FormScore:
    form: str
    n_params: int
    in_sample_rms: float  # nats, the fit to every run
    held_out_rms: float  # nats
    held_out_mean: float  # nats, predicted - observed
    held_out_rel: float  # mean |error| / loss
    errors: np.ndarray = field(repr=False)  # per held-out run, nats
    within_noise: bool = False
    excess: float = 0.0  # mean held-out squared error above the best form's, nats^2
    excess_se: float = 0.0  # its standard error (paired over the held-out runs)
    error: str = ""  # why the form could not be scored

    def to_json(self) -> dict:
        return {"form": self.form, "n_params": self.n_params, "in_sample_rms_nats": self.in_sample_rms,
                "held_out_rms_nats": self.held_out_rms, "held_out_mean_error_nats": self.held_out_mean,
                "held_out_mean_abs_rel_error": self.held_out_rel, "within_noise_of_best": self.within_noise,
                "error": self.error or None}


@dataclass
class Comparison:
    scores: list[FormScore]
    best: str  # lowest held-out RMS
    chosen: str  # the simplest form within noise of the best
    n_held_out: int
    threshold: float  # held-out compute (or N, for a table without D) at least this
    key: str = "C"  # what the threshold is of: compute C, or N

    def score(self, name: str) -> FormScore | None:
        return next((s for s in self.scores if s.form == name), None)

    def better_than(self, name: str) -> FormScore | None:
        """The best form when it extrapolates clearly better than ``name`` (a flag), else None:
        its held-out mean squared error lower by more than FLAG_SE standard errors and its RMS
        at most 1/FLAG_RATIO of ``name``'s. Stricter than the one-SE rule of the choice, so that
        the flag stays quiet on right-form sweeps (docs/benchmarks.md)."""
        mine, best = self.score(name), self.score(self.best)
        if mine is None or best is None or mine.error or name == self.best:
            return None
        if mine.excess <= FLAG_SE * mine.excess_se or mine.held_out_rms < FLAG_RATIO * best.held_out_rms:
            return None
        return best

    def to_json(self) -> dict:
        return {"best": self.best, "chosen": self.chosen, "held_out_runs": self.n_held_out,
                "held_out_compute_at_least" if self.key == "C" else "held_out_n_at_least": self.threshold, "rule": "one standard error of the paired held-out "
                "squared-error difference; the fewest parameters within it",
                "scores": [s.to_json() for s in self.scores]}


def candidate_forms(inputs: set[str]) -> list[LawForm]:
    """Every built-in form whose inputs the runs have."""
    return [cls() for cls in FORMS.values() if cls.inputs <= inputs]


def comparison_applies(budget: np.ndarray, compute: np.ndarray) -> bool:
    """Whether the runs can rank forms by extrapolation: MIN_BUDGETS budgets, or without
    budgets MIN_UNBUDGETED_RUNS runs spanning MIN_SPREAD_DECADES of compute."""
    budget = np.asarray(budget, float)
    if (budget > 0).any():
        return distinct_count(budget[budget > 0]) >= MIN_BUDGETS
    c = np.asarray(compute, float)
    c = c[np.isfinite(c) & (c > 0)]
    return len(c) >= MIN_UNBUDGETED_RUNS and math.log10(c.max() / c.min()) >= MIN_SPREAD_DECADES


def paired_excess(errors, reference) -> tuple[float, float]:
    """Mean of errors^2 - reference^2 over the same held-out runs, and its standard error."""
    diff = np.asarray(errors, float) ** 2 - np.asarray(reference, float) ** 2
    se = float(np.std(diff, ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return float(np.mean(diff)), se


def _score(form: LawForm, X: dict, loss, out: np.ndarray, seeds: tuple) -> FormScore:
    X_in = {k: v[~out] for k, v in X.items()}
    X_out = {k: v[out] for k, v in X.items()}
    points = distinct_points(X_in["N"], X_in["D"]) if "D" in X_in else distinct_count(X_in["N"])
    if points < form.n_params:
        raise FitError(f"{points} distinct points below the held-out budget for {form.n_params} parameters")
    full = fit_law(form, X, loss, chinchilla=seeds[0])
    refit = fit_law(form, X_in, loss[~out], chinchilla=seeds[1])
    e = refit.predict(X_out) - loss[out]
    if not np.isfinite(e).all():
        raise FitError("the refit's prediction is not finite at the held-out runs")
    in_rms = float(np.sqrt(np.mean((full.predict(X) - loss) ** 2)))
    return FormScore(form.name, form.n_params, in_rms, float(np.sqrt(np.mean(e**2))), float(np.mean(e)),
                     float(np.mean(np.abs(e) / loss[out])), e)


def compare_forms(forms: list[LawForm], X: dict, loss, compute, budget) -> Comparison:
    """Score each form on the held-out runs (module docstring); FitError when none can be scored."""
    loss = np.asarray(loss, float)
    X = {k: np.asarray(v, float) for k, v in X.items()}
    out = held_out_mask(compute, budget)
    # Chinchilla fitted once per data set, as every other form's seed
    seeds = (chinchilla_seed(X, loss), chinchilla_seed({k: v[~out] for k, v in X.items()}, loss[~out]))
    scores = []
    for form in forms:
        try:
            scores.append(_score(form, X, loss, out, seeds))
        except FitError as e:
            scores.append(FormScore(form.name, form.n_params, math.nan, math.nan, math.nan, math.nan,
                                    np.zeros(0), error=str(e)))
    ok = [s for s in scores if not s.error]
    if not ok:
        raise FitError("no law form could be scored on the held-out runs: " + "; ".join(
            f"{s.form}: {s.error}" for s in scores))
    best = min(ok, key=lambda s: s.held_out_rms)
    for s in ok:
        s.excess, s.excess_se = paired_excess(s.errors, best.errors)
        s.within_noise = bool(s.excess <= s.excess_se)
    chosen = min((s for s in ok if s.within_noise), key=lambda s: (s.n_params, s.held_out_rms))
    return Comparison(scores, best.form, chosen.form, int(out.sum()), float(np.asarray(compute)[out].min()),
                      "C" if "D" in X else "N")
