"""From a table of runs to the fitted law, its uncertainty, and the compute-optimal frontier.

Shared by ``scalesweep fit``, ``scalesweep report`` and the end of ``scalesweep run``, so the
three always agree. The input is a trials table (a sweep's, or any table of runs brought to that
shape by orchestrator.results.runs). Failed and diverged trials are excluded and counted with the
reason, never silently dropped; N is the total parameter count (Chinchilla's convention) and D
the trained tokens.

``analyse`` fits Approach 3 (orchestrator.fitting.law), Approaches 2 and 1 where the runs allow
(orchestrator.fitting.isoflop; a form the data cannot support is reported with what is missing, and
the rest of the fit goes on), bootstraps every quantity over the runs (orchestrator.fitting.bootstrap),
and runs the extrapolation check and misspecification flags (orchestrator.fitting.diagnostics).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from orchestrator.fitting.bootstrap import NEWTON_MIN_RUNS, Bootstrap, Interval, bootstrap
from orchestrator.fitting.diagnostics import Holdout, approach2_flags, holdout_check, law_flags, outliers
from orchestrator.fitting.discrepancy import MAX_POINTS as DISCREPANCY_POINTS
from orchestrator.fitting.discrepancy import Discrepancy, discrepancy_sd, estimate_discrepancies, widen
from orchestrator.errors import InsufficientData
from orchestrator.fitting.isoflop import (Approach1Fit, Approach2Fit, IsoFlopMinimum, budget_inference, fit_approach1,
                                          fit_approach2, fit_isoflop_parabolas)
from orchestrator.fitting.forms import FORMS, LawForm, resolve_form
from orchestrator.fitting.forms.builtin import Chinchilla
from orchestrator.fitting.forms.general import FormFit, fit_law
from orchestrator.fitting.forms.predict import grid_x
from orchestrator.fitting.law import Approach3Fit, fit_approach3, no_optimum
from orchestrator.results.runs import (EXCLUSION_REASONS, N_PARAMS, distinct_points, excluded_text,
                                            form_data_problem, law_data_problem, usable)
from orchestrator.fitting.forms.selection import Comparison, candidate_forms, compare_forms, comparison_applies
from orchestrator.fitting import UNDETERMINED_DECADES, Z
from workers.flops import train_flops

__all__ = ["SweepFit", "analyse", "usable", "EXCLUSION_REASONS", "FIT_STAGES"]

MIN_RUNS_FOR_DISCREPANCY = 8  # fewer runs cannot separate a smooth residual from noise
# Resamples x runs at most: a million runs get 200 resamples, not 1,000 (drawing them is 76 ms
# each at that size, and the 80 % and 95 % percentiles of 200 draws move by a few per cent of
# the interval's width); 200,000 runs or fewer keep the 1,000 asked for.
MAX_RESAMPLE_RUNS = 200_000_000
MIN_RESAMPLES = 100
DEFAULT_TARGET_FACTOR = 10.0  # a table that names no target: one decade past its largest used run


@dataclass
class SweepFit:
    approach3: Approach3Fit | None  # Chinchilla's form, where the runs have D and determine it
    minima: list[IsoFlopMinimum]
    target: dict
    excluded: dict[str, int]
    used: pd.DataFrame = field(repr=False)
    approach2: Approach2Fit | None = None
    approach1: Approach1Fit | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # form -> what the data lack
    bootstrap: Bootstrap | None = field(default=None, repr=False)
    intervals: dict[str, Interval] = field(default_factory=dict)
    holdout: Holdout | None = None
    outliers: list[dict] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the design, not the law
    excluded_runs: list[dict] = field(default_factory=list)
    budgets_inferred: bool = False
    discrepancy: Discrepancy | None = None  # residual GP (length scales <= LOCAL_ELL): a, b and the flag
    discrepancy_targets: Discrepancy | None = None  # residual GP, any length scale: N_opt, D_opt, L*
    flops_spent: float = 0.0  # every run's compute, excluded ones included: it was spent
    # (finished_at, flops) of every row that computed something, when that is not just the runs
    # fitted: a wsd sweep's stem segments (orchestrator.sweep.finish sets it for the report).
    spent_rows: pd.DataFrame | None = None
    n_runs: int = 0  # every run, excluded ones included
    target_source: str = ""  # how the target was chosen, when the caller named none
    n_boot_requested: int = 0  # resamples asked for (the bootstrap's n_boot may be fewer: MAX_RESAMPLE_RUNS)
    law: FormFit | None = None  # the fitted form (Chinchilla's: approach3 as a FormFit)
    comparison: Comparison | None = None  # the forms ranked by extrapolation, when run
    # A tuned sweep's hyperparameter laws and recommendation (orchestrator.fitting.hparams.tuned
    # sets it; the law above is then fitted to one row per design point, its optimum).
    hparams: "HparamFit | None" = None  # noqa: F821

    @property
    def form(self) -> LawForm:
        return self.law.form

    @property
    def fit_inputs(self) -> dict:
        """The used runs' N, D and U arrays, as the form reads them."""
        return _inputs(self.used)

    def frontier(self, computes) -> list[dict]:
        return [self.law.optimum(float(c)) for c in computes]

    def to_json(self) -> dict:
        """JSON-ready data (``scalesweep fit --json``): orchestrator.report.text.fit_json."""
        from orchestrator.report.text import fit_json

        return fit_json(self)


FIT_STAGES = ("Approach 3 global fit", "Approaches 1 and 2", "bootstrap refits", "residual GP",
              "extrapolation check")


def analyse(trials: pd.DataFrame, target_compute: float | None, *, n_boot: int = 1000, seed: int = 0,
            drop_highest: int = 0, extrapolation: bool = True, isoflop: bool = True, progress=None,
            form: LawForm | str | None = None, compare: bool = False) -> SweepFit:
    """Fit every form the runs support; bootstrap ``n_boot`` resamples (0: no intervals).

    ``target_compute`` None: DEFAULT_TARGET_FACTOR times the largest compute among the runs
    the fit uses (an excluded run, infinite or failed, never sets it); ``target_source`` says so.
    More runs than MAX_RESAMPLE_RUNS / ``n_boot`` get fewer resamples, and from
    NEWTON_MIN_RUNS runs on each resample is one Newton step (orchestrator.fitting.bootstrap); the
    fit's notes say which.

    ``form``: the law form (orchestrator.fitting.forms, or its name; default Chinchilla's), or "auto": every
    built-in form the runs allow is compared by extrapolation (orchestrator.fitting.forms.selection)
    and the chosen one fitted. ``compare``: run that comparison anyway when the runs have
    MIN_BUDGETS budgets or an equivalent spread, and flag a form that extrapolates better.

    ``isoflop=False`` says the runs of a compute level were not laid out to bracket its minimum
    (an adaptive sweep, orchestrator.planning.adaptive, spreads them to pin the law down): Approach 2 is
    still fitted and shown, but its parabolas' edges and its disagreement with Approach 3 say
    nothing about the law there, so they become notes instead of flags (``_diagnose``).

    Raises InsufficientData (orchestrator.errors) when the form cannot be fitted: fewer
    usable runs than its parameters, or runs that cannot determine it
    (orchestrator.results.runs.law_data_problem); the other forms and the extrapolation
    check record what they lack in ``SweepFit.unavailable``.
    ``progress(stage)`` is called as each of FIT_STAGES starts (the CLI's progress bar).
    """
    stage = progress or (lambda name: None)
    auto = form == "auto"
    if isinstance(form, str) and not auto:
        form = resolve_form(form)
    form = None if auto else (form or Chinchilla())
    runs = _screen_runs(trials, drop_highest, form)
    target_source = ""
    if target_compute is None:
        target_compute = DEFAULT_TARGET_FACTOR * float(np.nanmax(runs.compute) if runs.has_d else np.nan)
        target_source = f"{DEFAULT_TARGET_FACTOR:g}x the largest run the fit uses"
    n_boot_requested = n_boot
    if n_boot > 0:
        n_boot = min(n_boot, max(MIN_RESAMPLES, MAX_RESAMPLE_RUNS // len(runs.used)))
        runs.notes.extend(_size_notes(len(runs.used), n_boot, n_boot_requested))

    stage(FIT_STAGES[0])
    a3 = _fit_chinchilla(runs, form)
    comparison = None
    if auto or (compare and runs.has_d and comparison_applies(runs.budget, runs.compute)):
        comparison = _compare(runs, auto, None if auto or form.name in FORMS else form)
        if auto:
            form = next(f for f in candidate_forms(set(runs.X)) if f.name == comparison.chosen)
    law = _fit_form(runs, form, a3)
    stage(FIT_STAGES[1])
    a2, a1, minima = _fit_isoflop_forms(runs) if runs.has_d else (None, None, [])
    stage(f"{FIT_STAGES[2]} ({n_boot} resamples)")
    boot, intervals, disc, disc_t = None, {}, None, None
    if n_boot > 0:
        boot = _bootstrap_forms(runs, a3, law, a2, a1, target_compute, n_boot, seed)
        intervals = boot.intervals()
        stage(FIT_STAGES[3])
        if len(runs.used) >= max(MIN_RUNS_FOR_DISCREPANCY, law.form.n_params + 3):
            disc, disc_t, intervals = _widen_for_residual_field(runs, law, intervals, target_compute, seed)
    stage(FIT_STAGES[4])
    hold = _extrapolation_check(runs, law.form, seed) if extrapolation else None
    target = law.optimum(target_compute) if math.isfinite(target_compute) else {
        "compute": target_compute, "n_opt": math.nan, "d_opt": math.nan, "loss": math.nan}
    flags, notes = _diagnose(runs, law, target, intervals, disc, hold, minima, isoflop, comparison)
    resid = law.predict(runs.X) - runs.loss
    return SweepFit(
        approach3=a3, minima=minima, target=target, excluded=runs.excluded, used=runs.used, approach2=a2,
        approach1=a1, unavailable=runs.unavailable, bootstrap=boot, intervals=intervals, holdout=hold,
        outliers=outliers(resid, runs.used["name"].to_numpy(), runs.loss), flags=flags, notes=notes,
        excluded_runs=runs.excluded_runs, budgets_inferred=runs.budgets_inferred,
        flops_spent=_total_flops(trials), n_runs=len(trials), discrepancy=disc, discrepancy_targets=disc_t,
        target_source=target_source, n_boot_requested=n_boot_requested, law=law, comparison=comparison)


def _fit_chinchilla(runs: "_Runs", form: LawForm | None) -> Approach3Fit | None:
    """Approach 3 (Chinchilla's form) where the runs have D: the fitted law when it is the form,
    else the seed of the other forms' global search (and None where it cannot be fitted)."""
    if not runs.has_d:
        return None
    if form is not None and form.name == "chinchilla":
        return fit_approach3(runs.n, runs.d, runs.loss, screened=True)  # _screen_runs checked law_data_problem
    try:
        return fit_approach3(runs.n, runs.d, runs.loss)
    except InsufficientData:
        return None


def _fit_form(runs: "_Runs", form: LawForm, a3: Approach3Fit | None) -> FormFit:
    if form.name == "chinchilla":
        return FormFit.of_approach3(a3)
    return fit_law(form, runs.X, runs.loss, chinchilla=asdict(a3.params) if a3 is not None else None)


def _compare(runs: "_Runs", auto: bool, custom: LawForm | None = None) -> Comparison | None:
    """The forms the runs allow (and the user's ``custom`` form), ranked by extrapolation; None
    (with why, in ``unavailable``) when they cannot be ranked, unless the user asked for it
    (``auto``: the FitError stands)."""
    from orchestrator.errors import FitError

    forms = candidate_forms(set(runs.X)) + ([custom] if custom is not None else [])
    try:
        return compare_forms(forms, runs.X, runs.loss, runs.holdout_key, runs.budget)
    except FitError as e:
        if auto:
            raise FitError(f"--form auto: {e}") from None
        runs.unavailable["comparison"] = str(e)
        return None


UNIQUE_TOKENS = "unique_tokens"  # the trials-table column of U, the unique tokens behind D (data-constrained)


@dataclass
class _Runs:
    """The runs a fit uses, as arrays, and what the stages of ``analyse`` learn about them."""

    used: pd.DataFrame  # the usable trials, renumbered from 0, with a name and a budget each
    excluded: dict[str, int]
    excluded_runs: list[dict]
    n: np.ndarray
    d: np.ndarray  # NaN for a law of N alone fitted to a table without D
    loss: np.ndarray
    compute: np.ndarray
    budget: np.ndarray  # 0: none
    budgets_inferred: bool = False
    unavailable: dict[str, str] = field(default_factory=dict)  # form -> what the data lack
    notes: list[str] = field(default_factory=list)

    @property
    def has_d(self) -> bool:
        return bool(np.isfinite(self.d).all())

    @property
    def X(self) -> dict:
        return _inputs(self.used)

    @property
    def holdout_key(self) -> np.ndarray:
        """What the extrapolation check holds out the top of: compute, or N for a law of N alone."""
        return self.compute if self.has_d else self.n


def _inputs(used: pd.DataFrame) -> dict:
    """N, and D and U where the runs have them (finite for every run), as float arrays."""
    X = {"N": used["n_params"].to_numpy(float)}
    for key, col in (("D", "tokens"), ("U", UNIQUE_TOKENS)):
        if col in used:
            v = pd.to_numeric(used[col], errors="coerce").to_numpy(float)
            if len(v) and np.isfinite(v).all() and (v > 0).all():
                X[key] = v
    return X


def _has(trials: pd.DataFrame, col: str) -> bool:
    return col in trials and bool(pd.to_numeric(trials[col], errors="coerce").notna().any())


def _screen_runs(trials: pd.DataFrame, drop_highest: int, form: LawForm | None = None) -> _Runs:
    """The usable runs (runs.usable), checked to determine the law (InsufficientData, with
    what was excluded, otherwise), and their budgets: the table's, or when it has none, inferred
    from C (isoflop.budget_inference; where that fails Approach 2 is skipped, saying why).
    ``form`` None: "auto", any form the table's columns allow."""
    need_d = _has(trials, "tokens") if form is None else "D" in form.inputs
    need_u = form is not None and "U" in form.inputs
    if need_u and not _has(trials, UNIQUE_TOKENS):
        raise InsufficientData(f"fit: the {form.name} form needs the unique tokens U of each run (a column "
                               f"{UNIQUE_TOKENS!r}, or name one with --u-col)")
    used, excluded, excluded_runs = usable(trials, drop_highest, need_d, (UNIQUE_TOKENS,) if need_u else ())
    least = N_PARAMS if form is None else form.n_params
    what = "Approach 3" if form is None or form.name == "chinchilla" else f"the {form.name} form"
    if len(used) < least:
        raise InsufficientData(f"fit: {what} needs at least {least} completed runs to fit its {least} "
                               f"parameters; have {len(used)} (excluded: {excluded_text(excluded)})")
    if "name" not in used:
        used["name"] = [f"row {i}" for i in used.index]
    used = used.reset_index(drop=True)
    n, loss = used["n_params"].to_numpy(float), used["eval_loss"].to_numpy(float)
    d = pd.to_numeric(used["tokens"], errors="coerce").to_numpy(float) if need_d else np.full_like(n, np.nan)
    chinchilla = need_d and (form is None or form.name == "chinchilla")
    problem = (law_data_problem(n, d, loss) if chinchilla
               else form_data_problem(form.n_params if form is not None else 3, n, loss, d if need_d else None))
    if problem:
        raise InsufficientData(f"fit: {problem} (excluded: {excluded_text(excluded)})")
    compute = (used["flops"].to_numpy(float) if "flops" in used else train_flops(n, d)) if need_d else np.full_like(n, np.nan)
    budget = used["budget"].to_numpy(float) if "budget" in used else np.zeros_like(n)
    budget = np.where(np.isfinite(budget) & (budget > 0), budget, 0.0)  # NaN, inf or <= 0: no budget
    runs = _Runs(used, excluded, excluded_runs, n, d, loss, compute, budget)
    if need_d and not (budget > 0).any():
        runs.budget, why = budget_inference(compute, n)
        runs.budgets_inferred = bool((runs.budget > 0).any())
        if why:
            runs.unavailable["approach2"] = f"skipped: the runs have no budgets and {why} (give them with --budget-col)"
            runs.notes.append(f"Approach 2 {runs.unavailable['approach2']}")
    used["budget"] = runs.budget
    return runs


def _fit_isoflop_forms(runs: _Runs) -> tuple[Approach2Fit | None, Approach1Fit | None, list[IsoFlopMinimum]]:
    """Approaches 2 and 1 where the runs allow; the IsoFLOP minima of the budgets that have
    enough sizes even when Approach 2 cannot be fitted through them."""
    a2 = a1 = None
    minima = []
    if "approach2" not in runs.unavailable:
        try:
            a2 = fit_approach2(runs.budget, runs.n, runs.d, runs.loss)
            minima = a2.minima
        except InsufficientData as e:
            runs.unavailable["approach2"] = str(e)
            minima = fit_isoflop_parabolas(runs.budget, runs.n, runs.d, runs.loss)[0]
    try:
        a1 = fit_approach1(runs.compute, runs.n, runs.d, runs.loss, runs.budget)
    except InsufficientData as e:
        runs.unavailable["approach1"] = str(e)
    return a2, a1, minima


def _bootstrap_forms(runs: _Runs, a3: Approach3Fit | None, law: FormFit, a2: Approach2Fit | None,
                     a1: Approach1Fit | None, target_compute: float, n_boot: int, seed: int) -> Bootstrap:
    """Every fitted form's quantities over ``n_boot`` resamples of the runs."""
    extra = {}
    if a2:
        extra.update({"approach2.a": a2.a, "approach2.b": a2.b, "approach2.n_opt": float(a2.n_law(target_compute)),
                      "approach2.d_opt": float(a2.d_law(target_compute))})
    if a1:
        extra.update({"approach1.a": a1.a, "approach1.b": a1.b})
    d = runs.d if runs.has_d else np.ones_like(runs.n)
    return bootstrap(runs.n, d, runs.loss, a3, target_compute, n_boot=n_boot, seed=seed,
                     compute=runs.compute if runs.has_d else np.ones_like(runs.n), budget=runs.budget,
                     approach2_budgets=[m.budget for m in a2.minima] if a2 else (), approach1=a1 is not None,
                     estimates=extra, law=law, X=runs.X)


def _widen_for_residual_field(runs: _Runs, law: FormFit, intervals: dict[str, Interval], target_compute: float,
                              seed: int) -> tuple[Discrepancy, Discrepancy, dict[str, Interval]]:
    """The residual models (local, for a and b; any length scale, for the targets) and the
    bootstrap intervals widened by their fields."""
    n, loss = runs.n, runs.loss
    d = runs.d if runs.has_d else np.ones_like(n)  # a law of N alone: the field lives along N
    x = grid_x(runs.X)
    theta = law.z
    general = law.form.name != "chinchilla"
    jac = law.form.log_jacobian(theta[None, :], runs.X)[0] if general else None
    # Two residual models from one REML pass: a and b describe the law where the runs
    # are, the targets extrapolate past them, where a field longer than half a decade
    # (hard to tell from the law's own curvature in the data) moves them most
    # (orchestrator.fitting.discrepancy). Chinchilla's a interval stays 0.115 wide (0.132 with
    # the long model), and the adaptive planner's N_opt intervals cover 76-80 % of the
    # time instead of 61-75 % (docs/benchmarks.md).
    disc, disc_t = estimate_discrepancies(theta, x, loss, law.residuals, seed=seed, jac=jac)
    if not (law.form.has_optimum and runs.has_d and math.isfinite(target_compute)):
        return disc, disc_t, intervals
    kw = {"form": law.form, "X": runs.X} if general else {}
    sd_local = discrepancy_sd(theta, n, d, loss, disc, target_compute, **kw)
    sd_targets = sd_local if disc_t == disc else discrepancy_sd(theta, n, d, loss, disc_t, target_compute, **kw)
    sd = {k: (sd_local if k in ("a", "b") else sd_targets)[k] for k in sd_local}
    return disc, disc_t, _with_discrepancy(intervals, sd)


def _extrapolation_check(runs: _Runs, form: LawForm, seed: int) -> Holdout | None:
    """diagnostics.holdout_check, or None with what it lacks in ``runs.unavailable``."""
    try:
        return holdout_check(form, runs.X, runs.loss, runs.holdout_key, runs.budget, runs.used["name"].to_numpy(),
                             seed=seed)
    except InsufficientData as e:
        runs.unavailable["extrapolation"] = str(e)
        return None


def _diagnose(runs: _Runs, law: FormFit, target: dict, intervals: dict[str, Interval], disc: Discrepancy | None,
              hold: Holdout | None, minima: list[IsoFlopMinimum], isoflop: bool,
              comparison: Comparison | None = None) -> tuple[list[str], list[str]]:
    """The fit's flags (signs of a misspecified law) and notes (about the design).

    Without ``isoflop`` the IsoFLOP flags (approach2_flags) are notes: in 54 adaptive sweeps of
    right-form worlds they flagged 73-100 % of the sweeps (IsoFLOP edges) and 3 of 32 in T1/T2
    (disagreement)."""
    flags = law_flags(hold, disc.s_r, disc.sigma) if disc else law_flags(hold)
    flags[:0] = _optimum_flags(law, target) + _few_points_flags(runs.n, runs.d, intervals, law.form)
    better = comparison.better_than(law.form.name) if comparison else None
    if better is not None:
        mine = comparison.score(law.form.name)
        flags.append(f"form {better.form} extrapolates better than the fitted {law.form.name} (held-out RMS error "
                     f"{better.held_out_rms:.4f} vs {mine.held_out_rms:.4f} nats on the {comparison.n_held_out} runs at "
                     f"{comparison.key} >= {comparison.threshold:.3g}, beyond the noise); fit it with --form {better.form}")
    design_notes = approach2_flags(intervals, minima)
    if isoflop:
        flags, design_notes = flags + design_notes, []
    elif design_notes:
        design_notes.append("(the runs come from an adaptive design, not IsoFLOP sets, so these are not taken as "
                            "signs of a misspecified law)")
    ratio = runs.d / runs.n if runs.has_d else np.array([np.nan])
    notes = (_allocation_outside_runs(target, ratio) if runs.has_d else []) + _repeated_rows(runs.used) + runs.notes + design_notes
    return flags, notes


def _optimum_flags(law: FormFit, target: dict) -> list[str]:
    if law.form.name == "chinchilla":
        from orchestrator.fitting.law import LawParams

        return [f for f in (no_optimum(LawParams.from_vector(law.z)),) if f]
    if law.form.has_optimum and not math.isfinite(target["n_opt"]):
        return [f"the fitted {law.form.name} law has no compute-optimal allocation at C = {target['compute']:.3g} "
                "(its loss keeps falling as N or D grows at fixed compute): N_opt and D_opt mean nothing"]
    return []


def _size_notes(runs: int, n_boot: int, requested: int) -> list[str]:
    """What the fit does differently at this many runs (MAX_RESAMPLE_RUNS, NEWTON_MIN_RUNS)."""
    out = []
    if n_boot < requested:
        out.append(f"{runs:,} runs: {n_boot} bootstrap resamples instead of the {requested} asked for (resamples "
                   f"x runs are capped at {MAX_RESAMPLE_RUNS:.0e} to bound time and memory)")
    if runs >= NEWTON_MIN_RUNS:
        out.append(f"{runs:,} runs: each bootstrap resample's law is one Newton step from the full fit (the Huber "
                   "loss's exact curvature), not an exact refit; at 10,000 runs and more its spread matches exact "
                   "refits to a few per cent")
    if runs > DISCREPANCY_POINTS:
        out.append(f"{runs:,} runs: the residual model's REML hyperparameters come from a random {DISCREPANCY_POINTS} of "
                   "them; its widening of the intervals uses every run")
    return out


def _few_points_flags(n, d, intervals: dict[str, Interval], form: LawForm) -> list[str]:
    """Flags for intervals that cannot show the uncertainty: too few distinct (N, D) points for
    the form's parameters, or bootstrap intervals of zero width (every resample refits the same law)."""
    points = distinct_points(n, d) if np.isfinite(d).all() else distinct_points(n, np.ones_like(n))
    out = []
    if points < 2 * form.n_params:
        out.append(f"only {points} distinct (N, D) points for the law's {form.n_params} parameters (fewer than "
                   f"{2 * form.n_params}): the fit nearly interpolates them, and its intervals say little")
    flat = [k for k in form.names if k in intervals and intervals[k].n_draws
            and intervals[k].width(0.95) <= 1e-9 * max(abs(intervals[k].estimate), 1e-300)]
    if flat:
        out.append(f"the bootstrap intervals of {', '.join(flat)} have zero width: every resample of the runs gives "
                   "the same law, so they show no uncertainty, not a precise fit")
    iv = intervals.get("n_opt")
    lo, hi = iv.bounds.get(0.80, (math.nan, math.nan)) if iv is not None and iv.n_draws else (math.nan, math.nan)
    if form.has_optimum and lo > 0 and hi / lo > 10 ** UNDETERMINED_DECADES:
        out.append(f"N_opt is not determined by these runs: its 80 % interval spans {math.log10(hi / lo):.0f} decades "
                   f"({lo:.3g} to {hi:.3g}); the runs do not show how the loss trades N against D (a loss that "
                   "depends on neither, or noise larger than its dependence)")
    return out


def _repeated_rows(used: pd.DataFrame) -> list[str]:
    """A note when runs repeat another's N, D and loss exactly (a table joined twice?): the
    bootstrap counts each copy as an independent run, which narrows the intervals."""
    copies = int(used.duplicated(subset=["n_params", "tokens", "eval_loss"]).sum())
    if not copies:
        return []
    return [f"{copies} runs repeat another run's N, D and loss exactly (a table joined twice?); each copy counts as "
            "an independent run, which narrows the intervals"]


def _allocation_outside_runs(target: dict, ratio: np.ndarray, margin: float = 3.0) -> list[str]:
    """A note when the optimum's tokens per parameter at the target lie more than ``margin``
    times outside those of the runs: N_opt and D_opt then extrapolate the law's shape (how loss
    trades N against D), not only its scale. Not a flag: a right-form law extrapolates fine
    (world A1 of docs/benchmarks.md wants 13,500 tokens per parameter at 1e20 against the
    runs' 1-1,000, and its N_opt is off by 0.09 at p90), but nothing in the runs checks it."""
    r = target["d_opt"] / target["n_opt"] if target["n_opt"] > 0 else math.nan
    if not len(ratio) or not np.isfinite(ratio).all():
        return []
    lo, hi = float(ratio.min()), float(ratio.max())
    if not math.isfinite(r) or lo / margin <= r <= hi * margin:
        return []
    return [f"at the target the fitted optimum trains {r:.3g} tokens per parameter, outside the runs' "
            f"{lo:.3g}-{hi:.3g}: N_opt and D_opt there extrapolate how the law trades N against D, not only "
            "its scale"]


def _with_discrepancy(intervals: dict[str, Interval], sd: dict[str, float]) -> dict[str, Interval]:
    """Each bootstrap interval widened by the residual field's (orchestrator.fitting.discrepancy)."""
    out = dict(intervals)
    for key, s in sd.items():
        iv = intervals.get(key)
        if iv is None or not iv.n_draws or not math.isfinite(s):
            continue
        bounds = {lv: widen(iv.estimate, lo, hi, Z[lv] * s, log=key not in ("a", "b"))  # sd of the log
                  for lv, (lo, hi) in iv.bounds.items()}
        out[key] = Interval(iv.estimate, bounds, iv.n_draws)
    return out


def _total_flops(trials: pd.DataFrame) -> float:
    if "flops" in trials:
        return float(pd.to_numeric(trials["flops"], errors="coerce").fillna(0).sum())
    if "tokens" not in trials:
        return 0.0  # a law of N alone: the table has no compute to count
    n, d = (pd.to_numeric(trials[c], errors="coerce").fillna(0) for c in ("n_params", "tokens"))
    return float(train_flops(n, d).sum())
