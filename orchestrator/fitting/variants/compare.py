"""Comparing variants of a sweep (another architecture, aspect ratio or data mix) with its baseline.

The trials table names each run's variant in a column (``variant``; the baseline's value is
``baseline``). Each variant is fitted as a sweep of its own (``fit_one``: analyse, or
analyse_trials for tuned sweeps) and compared with the baseline by its compute multiplier at
the target C_t: the k with L*_v(k C_t) = L*_b(C_t), the compute the variant needs to reach the
baseline's compute-optimal loss, as a share of the baseline's (k < 1 is a gain; the "effective
compute" of e.g. Clark et al. 2022, "Unified Scaling Laws for Routed Language Models"). Also:
its trend d ln k / d ln C and k at C_t/10 and 10 C_t, and the crossover, where the frontiers
cross (k = 1) within CROSS_SPAN of the target. A table without D (law of N alone) compares
parameters instead: L_v(k N_t) = L_b(N_t). Where the variant's frontier never reaches
L*_b(C_t) (its E lies above it), k is infinite, and said so. The numerics are in
orchestrator.fitting.variants.frontiers, the two models of a pair in models.

Uncertainty. The two fits' bootstrap draws are paired, draw i with draw i: the variants are
independent data, so a pair is a draw of both laws. The bootstrap over runs does not see the
smooth residual fields around the laws (orchestrator.fitting.discrepancy), which bias every
resample alike; as analyse widens L* by its field, each draw here gets an independent draw of
the fields' effect on the parameters added (frontiers.with_field: Gaussian, the sandwich
covariance of the fits), and every quantity is a percentile over these draws. A variant is
another model with a residual pattern of its own, so the two fields are independent; their
hyperparameters come from one REML over both variants' residuals (models): two sweeps
determine a field better than one, which barely does. Where the fields are in fact
shared (the same data mix, say) the intervals are conservative (docs/benchmarks.md).

Joint model. The baseline and each variant are also fitted together with shared exponents
(alpha, beta) and their own E, A, B (models.SharedExponents): a constant multiplier
is that model with equal E (A_v = A k_N^-alpha, B_v = B k_D^-beta). Exponents that differ make
the frontiers cross, and then the joint model's k is biased with an interval too narrow to
show it: the costly error (choosing the separate fits wrongly only widens the interval). So
the joint model is kept only when both hold (``ModelChoice``): its error on the held-out top
budget (refits without it, diagnostics.held_out_mask) is within one standard error of the
separate fits' (the one-SE rule of forms.selection, the joint model being the simpler), and
the separate fits' exponent differences are not significant (Wald test over the draws,
p >= EXPONENT_TEST_P). The held-out check alone is weak here: free E_v, A_v, B_v absorb a
difference of slopes over the runs, and the held-out runs share one patch of residual field,
so it is noisy both ways (docs/benchmarks.md, "Variants: compute multipliers").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.errors import FitError, UserError
from orchestrator.fitting import LEVELS
from orchestrator.fitting.analysis import DEFAULT_TARGET_FACTOR, SweepFit, analyse
from orchestrator.fitting.bootstrap import Interval
from orchestrator.fitting.variants.frontiers import (CROSS_SPAN, evaluate, field_cov, frontier, interval,
                                                     log_multiplier, quantities, with_field)
from orchestrator.fitting.variants.models import (Model, ModelChoice, PairModel, choose_model, joint_model,
                                                  separate_model)
from orchestrator.report.text import finite_or_none, flops_str, si
from workers.config import BASELINE

__all__ = ["compare_variants", "fit_variants", "VariantComparison", "VariantResult", "Crossover", "ModelChoice", "Model",
           "MIN_RUNS_PER_PARAM"]

MIN_RUNS_PER_PARAM = 2  # runs per law parameter in each variant (as analyse's few-points flag)
# A crossover is claimed when this share of the draws (bootstrap and residual fields) cross
# within the span; the fitted frontiers alone cross in 16-32 % of pairs with a constant
# multiplier, 1000x extrapolating exponents that differ by noise (docs/benchmarks.md).
CROSS_CLAIM_P = 0.8


@dataclass(frozen=True)
class Crossover:
    """Where the frontiers cross (k = 1) within ``span`` of the target, in compute (or N)."""

    at: float | None  # the fitted frontiers' crossing nearest the target; None: they do not cross
    detected: bool  # the fitted frontiers cross and p_cross >= CROSS_CLAIM_P (or there is no bootstrap)
    interval: Interval | None  # percentiles over the draws that cross
    p_cross: float  # share of the draws (bootstrap and fields) whose frontiers cross within the span
    span: float

    def to_json(self) -> dict:
        out = {"compute": self.at, "detected": self.detected, "p_cross": self.p_cross, "span": self.span}
        out.update({f"{round(100 * lv)}%": _pair(self.interval.bounds[lv]) if self.interval else None for lv in LEVELS})
        return out


@dataclass
class VariantResult:
    """One variant against the baseline, from the model ``choice`` picked (others in ``alternatives``)."""

    name: str
    multiplier: Interval  # k at the target
    at_lower: Interval  # k at target / 10
    at_upper: Interval  # k at target * 10
    trend: Interval  # d ln k / d ln C (or N) at the target
    crossover: Crossover
    choice: ModelChoice
    alternatives: dict[str, Interval] = field(default_factory=dict)  # k at the target under each model fitted
    pairs: dict[Model, PairModel] = field(default_factory=dict, repr=False)  # every model fitted

    @property
    def pair(self) -> PairModel:
        return self.pairs[self.choice.model]

    @property
    def model(self) -> Model:
        return self.choice.model

    @property
    def reaches(self) -> bool:
        """Whether the variant's fitted frontier reaches the baseline's loss at the target."""
        return math.isfinite(self.multiplier.estimate)


@dataclass
class VariantComparison:
    fits: dict[str, SweepFit]
    baseline: str
    target: float  # C_t in FLOPs, or N_t for a law of N alone (``key``)
    key: str  # "C" or "N"
    results: dict[str, VariantResult]
    notes: list[str] = field(default_factory=list)
    seed: int = 0  # of the fields' draws (frontiers.with_field)

    def _result(self, variant: str | None) -> VariantResult:
        return self.results[variant or next(iter(self.results))]

    def multiplier_at(self, x, variant: str | None = None, model: Model | None = None) -> list[Interval]:
        """k at each of ``x`` (compute, or N), with intervals, from the chosen model (or ``model``)."""
        r = self._result(variant)
        xs = np.atleast_1d(np.asarray(x, float))
        pair = r.pairs[model] if model is not None else r.pair
        est, draws = pair.evaluate(lambda fb, fv: log_multiplier(fb, fv, xs))
        return [_exp(interval(est[j], _col(draws, j))) for j in range(len(xs))]

    def multiplier_curve(self, computes, variant: str | None = None) -> dict[str, np.ndarray]:
        """{estimate, lo80, hi80, lo95, hi95} of k over ``computes`` (the report's plot)."""
        ivs = self.multiplier_at(computes, variant)
        out = {"compute": np.asarray(computes, float), "estimate": np.array([iv.estimate for iv in ivs])}
        for lv in LEVELS:
            out[f"lo{round(100 * lv)}"] = np.array([iv.bounds[lv][0] for iv in ivs])
            out[f"hi{round(100 * lv)}"] = np.array([iv.bounds[lv][1] for iv in ivs])
        return out

    def frontiers(self, computes) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """{variant: (L*, lo, hi)} over ``computes`` (N for a law of N alone), 80 % intervals of
        each variant's own fit, widened by its residual field."""
        xs = np.asarray(computes, float)
        centre = float(np.exp(np.log(xs).mean()))  # of a tabulated frontier (frontiers.GridFrontier)
        out = {}
        for i, (name, fit) in enumerate(self.fits.items()):
            boot = with_field(fit.bootstrap.laws if fit.bootstrap is not None else None, field_cov(fit), self.seed + i)
            est, draws = evaluate(lambda rows: frontier(fit.form, rows, centre).log_loss(xs), fit.law.z, boot)
            ivs = [_exp(interval(est[j], _col(draws, j))) for j in range(len(xs))]
            out[name] = tuple(np.array(v) for v in zip(*((iv.estimate, *iv.bounds[0.8]) for iv in ivs)))
        return out

    def to_json(self) -> dict:
        variants = {}
        for name, fit in self.fits.items():
            variants[name] = {"law": {"form": fit.form.name, "params": fit.law.values},
                              "intervals": {k: _iv_json(v) for k, v in fit.intervals.items()}, "target": fit.target,
                              "runs": len(fit.used)}
        comparison = {}
        for name, r in self.results.items():
            c = r.choice
            comparison[name] = {
                "multiplier": _iv_json(r.multiplier), "reaches_baseline_loss": r.reaches,
                "trend": {"d_ln_k_d_ln_" + self.key: _iv_json(r.trend),
                          "k_at": {_num_key(self.target / 10): _iv_json(r.at_lower),
                                   _num_key(self.target * 10): _iv_json(r.at_upper)}},
                "crossover": r.crossover.to_json(), "model": c.model.value, "model_choice": c.to_json(),
                "alternatives": {k: _iv_json(v) for k, v in r.alternatives.items()}}
        # Strict JSON: an infinite k (also said by reaches_baseline_loss) and NaN bounds as null
        return finite_or_none({"baseline": self.baseline, "target": {"key": self.key, "value": self.target},
                        "variants": variants, "comparison": comparison, "notes": self.notes})

    def lines(self) -> list[str]:
        """The comparison as text: one block per variant."""
        what = "compute" if self.key == "C" else "parameter"
        at = _x_str(self.target, self.key)
        out = []
        for name, r in self.results.items():
            if r.reaches:
                out.append(f"{name} vs {self.baseline}: {what} multiplier {_k_text(r.multiplier)} at {at}")
                out.append(f"  trend d ln k / d ln {self.key} = {_fmt(r.trend.estimate, '+.3f')} "
                           f"{_bounds(r.trend, '+.3f')}; k = {_k_text(r.at_lower, short=True)} at "
                           f"{_x_str(self.target / 10, self.key)}, {_k_text(r.at_upper, short=True)} at "
                           f"{_x_str(self.target * 10, self.key)}")
            else:
                base = self.fits[self.baseline]
                loss = math.exp(frontier(base.form, base.law.z, self.target).log_loss(np.array([self.target]))[0, 0])
                floor = self.fits[name].law.values.get("E")
                out.append(f"{name} vs {self.baseline}: never reaches the baseline's loss {loss:.4g} at {at} (k = inf"
                           + (f": its fitted E = {floor:.4g} lies above it" if floor is not None else "")
                           + (f"; 80 % interval of k [{_fmt(r.multiplier.bounds[0.8][0])}, "
                              f"{_fmt(r.multiplier.bounds[0.8][1])}]" if r.multiplier.n_draws else "") + ")")
            out.append("  " + _crossover_text(r.crossover, self.target, self.key))
            out.append("  " + r.choice.text())
        return out + [f"note: {n}" for n in self.notes]


def fit_variants(trials: pd.DataFrame, target_compute: float | None, *, variant_col: str = "variant",
                 baseline: str | None = None, always: bool = False, fit_one=analyse,
                 **kw) -> tuple[SweepFit, "VariantComparison | None"]:
    """The fit of ``trials`` as ``run``, ``fit`` and ``report`` show it: with two or more variants in
    ``variant_col`` (or ``always``, when the user named the column), each variant's fit and the
    comparison, and the baseline's fit; otherwise ``fit_one``'s fit of them all and None.
    ``baseline``: the variant the others are compared with (None: BASELINE); one the user named
    must be in ``variant_col`` (UserError otherwise, a table without the column included)."""
    if baseline is None:
        baseline = BASELINE
    elif variant_col not in trials:
        raise UserError(f"--baseline {baseline!r}: the runs have no variant column {variant_col!r} (name the column "
                        "of each run's variant with --variant-col)")
    else:
        _require_baseline(trials[variant_col].astype(str), variant_col, baseline)
    if always or (variant_col in trials and trials[variant_col].astype(str).nunique() > 1):
        comparison = compare_variants(trials, target_compute, variant_col=variant_col, baseline=baseline,
                                      fit_one=fit_one, **kw)
        return comparison.fits[baseline], comparison
    return fit_one(trials, target_compute, **kw), None


def compare_variants(trials: pd.DataFrame, target_compute: float | None, *, variant_col: str = "variant",
                     baseline: str = BASELINE, fit_one=analyse, form=None, n_boot: int = 1000, seed: int = 0,
                     target_n: float | None = None, **fit_kw) -> VariantComparison:
    """Fit every variant of ``trials`` (``fit_one``, with ``form``, ``n_boot`` and ``fit_kw``) and
    compare each with ``baseline`` (module docstring).

    ``target_compute`` None: the baseline fit's own target, for every variant. Variant i (the
    baseline is 0) is bootstrapped with seed ``seed + i``, so no two share a resampling stream.
    A table without D is fitted with the n-only form unless ``form`` says otherwise, and compared
    at ``target_n`` parameters (default DEFAULT_TARGET_FACTOR times the baseline's largest N).
    UserError (one line) for a missing column or baseline, a single variant, or a variant with
    too few runs to fit."""
    names = _variant_names(trials, variant_col, baseline)
    notes = []
    if form is None and not _has_tokens(trials):
        form = "n-only"
        notes.append("the table has no tokens (D): each variant is fitted with the n-only form L = E + A/N^alpha, "
                     "and the multiplier is in parameters")
    kw = dict(fit_kw, n_boot=n_boot, **({"form": form} if form is not None else {}))
    labels = trials[variant_col].astype(str)
    fits: dict[str, SweepFit] = {}
    for i, name in enumerate(names):
        rows = trials[(labels == name).to_numpy()].reset_index(drop=True)
        try:
            fit = fit_one(rows, target_compute, seed=seed + i, **kw)
        except FitError as e:
            raise UserError(f"variants: {variant_col} {name!r}: {e}") from None
        least = MIN_RUNS_PER_PARAM * fit.form.n_params
        if len(fit.used) < least:
            raise UserError(f"variants: {variant_col} {name!r} has {len(fit.used)} usable runs; comparing it needs "
                            f"at least {least} ({MIN_RUNS_PER_PARAM} per parameter of the {fit.form.name} form)")
        fits[name] = fit
        if i == 0 and target_compute is None and math.isfinite(fit.target["compute"]):
            target_compute = fit.target["compute"]
    base = fits[baseline]
    key = "C" if "D" in base.form.inputs else "N"
    x_t = target_compute if key == "C" else (
        target_n or DEFAULT_TARGET_FACTOR * float(base.used["n_params"].max()))
    if not (x_t and math.isfinite(x_t) and x_t > 0):
        raise UserError(f"variants: no target to compare at (target_compute {target_compute!r})")
    if len({f.form.name for f in fits.values()}) > 1:
        notes.append("the variants were fitted with different law forms: " + ", ".join(
            f"{n} {f.form.name}" for n, f in fits.items()) + "; no joint fit")
    if any(f.form.name not in ("chinchilla", "data-constrained", "n-only") for f in fits.values()):
        notes.append("frontiers of this form are tabulated 10 points a decade and interpolated: ln k is accurate to "
                     "about 1e-3")
    results = {name: _compare(base, fits[name], name, x_t, seed) for name in names[1:]}
    return VariantComparison(fits, baseline, float(x_t), key, results, notes, seed)


def _compare(base: SweepFit, var: SweepFit, name: str, x_t: float, seed: int) -> VariantResult:
    """One variant against the baseline: both models, the choice, the chosen model's quantities."""
    sep = separate_model(base, var, x_t, seed)
    joint, held = joint_model(base, var, x_t, seed)
    choice = choose_model(base, var, sep, held)
    models = {Model.SEPARATE: sep, **({Model.JOINT: joint} if joint is not None else {})}
    pair = models[choice.model]
    est, draws = pair.evaluate(lambda fb, fv: quantities(fb, fv, x_t))
    k, lower, upper, trend, cross = (interval(est[j], _col(draws, j)) for j in range(est.size))
    alternatives = {}
    for m, p in models.items():
        e, d = (est, draws) if p is pair else p.evaluate(lambda fb, fv: log_multiplier(fb, fv, np.array([x_t])))
        alternatives[m.value] = _exp(interval(e[0], _col(d, 0)))
    at = float(math.exp(est[4])) if math.isfinite(est[4]) else None
    p_cross = float(np.isfinite(draws[:, 4]).mean()) if draws is not None else math.nan
    detected = at is not None and (draws is None or p_cross >= CROSS_CLAIM_P)  # no draws: the fit's word
    crossing = Crossover(at, detected, _exp(cross) if cross.n_draws else None, p_cross, CROSS_SPAN)
    return VariantResult(name, _exp(k), _exp(lower), _exp(upper), trend, crossing, choice, alternatives, models)


def _col(draws: np.ndarray | None, j: int) -> np.ndarray | None:
    return None if draws is None else draws[:, j]


# --- input checks ------------------------------------------------------------------------------


def _variant_names(trials: pd.DataFrame, col: str, baseline: str) -> list[str]:
    """The baseline first, then the other variants by name (rows come in the order trials
    finished, which no two runs share)."""
    if col not in trials:
        raise UserError(f"variants: the trials table has no column {col!r} naming each run's variant "
                        f"(columns: {', '.join(map(str, trials.columns))})")
    values = _require_baseline(trials[col].astype(str), col, baseline)
    if len(values) < 2:
        raise UserError(f"variants: every run has {col} == {baseline!r}; there is no variant to compare")
    return [baseline] + sorted(v for v in values if v != baseline)


def _require_baseline(labels: pd.Series, col: str, baseline: str) -> list[str]:
    """The distinct ``labels`` in order; UserError when ``baseline`` is not among them."""
    values = list(dict.fromkeys(labels))
    if baseline not in values:
        raise UserError(f"variants: no run has {col} == {baseline!r} (the baseline; name another with --baseline); "
                        f"values found: {', '.join(repr(v) for v in values) or 'none'}")
    return values


def _has_tokens(trials: pd.DataFrame) -> bool:
    return "tokens" in trials and bool(pd.to_numeric(trials["tokens"], errors="coerce").notna().any())


# --- formatting ---------------------------------------------------------------------------------


def _exp(iv: Interval) -> Interval:
    with np.errstate(over="ignore"):
        return Interval(float(np.exp(iv.estimate)), {lv: (float(np.exp(lo)), float(np.exp(hi)))
                                                     for lv, (lo, hi) in iv.bounds.items()}, iv.n_draws)


def _num(x):
    return float(x) if x is not None and math.isfinite(x) else None


def _pair(b) -> list:
    return [_num(b[0]), _num(b[1])]


def _iv_json(iv: Interval) -> dict:
    out = {"estimate": _num(iv.estimate), "n_draws": iv.n_draws}
    out.update({f"{round(100 * lv)}%": _pair(b) for lv, b in iv.bounds.items()})
    return out


def _num_key(x: float) -> str:
    return f"{x:.3g}"


def _x_str(x: float, key: str) -> str:
    return f"{flops_str(x)} FLOPs" if key == "C" else f"N = {si(x)}"


def _fmt(x: float, spec: str = ".3g") -> str:
    return "inf" if x == math.inf else "nan" if not math.isfinite(x) else format(x, spec)


def _bounds(iv: Interval, spec: str = ".3g", fmt=None) -> str:
    if not iv.n_draws:
        return "(no bootstrap)"
    f = fmt or (lambda x: _fmt(x, spec))
    return ", ".join(f"[{f(iv.bounds[lv][0])}, {f(iv.bounds[lv][1])}] {round(100 * lv)} %" for lv in LEVELS)


def _k_text(iv: Interval, short: bool = False) -> str:
    if short:
        lo, hi = iv.bounds[0.8]
        return f"{_fmt(iv.estimate)} [{_fmt(lo)}, {_fmt(hi)}]" if iv.n_draws else _fmt(iv.estimate)
    return f"{_fmt(iv.estimate)} {_bounds(iv)}"


def _crossover_text(c: Crossover, x_t: float, key: str) -> str:
    span = f"{_x_str(x_t / c.span, key)} to {_x_str(x_t * c.span, key)}"
    if not math.isfinite(c.p_cross):  # no bootstrap
        return (f"crossover: the fitted frontiers cross at {_x_str(c.at, key)}" if c.at is not None
                else f"crossover: none within {span}")
    share = f"{100 * c.p_cross:.0f} % of draws"
    if c.detected:
        bounds = _bounds(c.interval, fmt=flops_str if key == "C" else si) if c.interval is not None else ""
        return f"crossover: the frontiers cross at {_x_str(c.at, key)} {bounds} ({share} cross within {span})"
    if c.at is not None:
        return (f"crossover: none clear within {span}: the fitted frontiers cross at {_x_str(c.at, key)}, but only "
                f"{share} do (a crossover is claimed from {100 * CROSS_CLAIM_P:.0f} %)")
    return f"crossover: none within {span} ({share} cross there)"
