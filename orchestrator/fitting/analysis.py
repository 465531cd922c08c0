"""From a table of runs to the fitted law, its uncertainty, and the compute-optimal frontier.

Shared by ``scalesweep fit``, ``scalesweep report`` and the end of ``scalesweep run``, so the
three always agree. The input is a trials table (a sweep's, or any table of runs brought to that
shape by orchestrator.fitting.runs). Failed and diverged trials are excluded and counted with the
reason, never silently dropped; N is the total parameter count (Chinchilla's convention) and D
the trained tokens.

``analyse`` fits Approach 3 (orchestrator.fitting.law), Approaches 2 and 1 where the runs allow
(orchestrator.fitting.isoflop; a form the data cannot support is reported with what is missing, and
the rest of the fit goes on), bootstraps every quantity over the runs (orchestrator.fitting.bootstrap),
and runs the extrapolation check and misspecification flags (orchestrator.fitting.diagnostics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.fitting.discrepancy import Z as DISCREPANCY_Z
from orchestrator.fitting.discrepancy import Discrepancy, discrepancy_sd, estimate_discrepancies, widen
from orchestrator.fitting.diagnostics import Holdout, approach2_flags, holdout_check, law_flags, outliers
from orchestrator.fitting.law import (Approach3Fit, InsufficientData, compute_optimal, fit_approach3, no_optimum,
                             predict_loss)
from orchestrator.fitting.isoflop import (Approach1Fit, Approach2Fit, IsoFlopMinimum, budget_inference, fit_approach1,
                                  fit_approach2, fit_isoflop_parabolas)
from orchestrator.fitting.screening import (EXCLUSION_REASONS, N_PARAMS, distinct_points, excluded_text, law_data_problem,
                                    usable)
from orchestrator.fitting.bootstrap import LEVELS, NEWTON_MIN_RUNS, Bootstrap, Interval, bootstrap
from orchestrator.fitting.discrepancy import MAX_POINTS as DISCREPANCY_POINTS

__all__ = ["SweepFit", "analyse", "format_fit", "usable", "EXCLUSION_REASONS"]

MIN_RUNS_FOR_DISCREPANCY = 8  # fewer runs cannot separate a smooth residual from noise
# Resamples x runs at most: a million runs get 200 resamples, not 1,000 (drawing them is 76 ms
# each at that size, and the 80 % and 95 % percentiles of 200 draws move by a few per cent of
# the interval's width); 200,000 runs or fewer keep the 1,000 asked for.
MAX_RESAMPLE_RUNS = 200_000_000
MIN_RESAMPLES = 100
DEFAULT_TARGET_FACTOR = 10.0  # a table that names no target: one decade past its largest used run
FEW_POINTS = 2 * N_PARAMS  # fewer distinct (N, D) points than this: the intervals rest on too little


@dataclass
class SweepFit:
    approach3: Approach3Fit
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
    n_runs: int = 0  # every run, excluded ones included
    target_source: str = ""  # how the target was chosen, when the caller named none
    n_boot_requested: int = 0  # resamples asked for (the bootstrap's n_boot may be fewer: MAX_RESAMPLE_RUNS)

    def frontier(self, computes) -> list[dict]:
        return [compute_optimal(self.approach3.params, float(c)) for c in computes]

    def to_json(self) -> dict:
        p, a2, a1 = self.approach3.params, self.approach2, self.approach1
        out = {
            "law": "L = E + A/N^alpha + B/D^beta",
            "params": {"E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta},
            "a": p.a,
            "b": p.b,
            "objective": self.approach3.objective,
            "n_trials": self.n_runs,
            "n_fitted": self.approach3.n_points,
            "flops_spent": self.flops_spent,
            "excluded": self.excluded,
            "excluded_reasons": {k: EXCLUSION_REASONS[k] for k, v in self.excluded.items() if v},
            "excluded_runs": self.excluded_runs,
            "target": self.target,
            "target_source": self.target_source or None,
            "intervals": {k: v.to_json() for k, v in self.intervals.items()},
            "discrepancy": None if self.discrepancy is None else {
                **_discrepancy_json(self.discrepancy), "method": "REML", "widens": ["a", "b"],
                "reml_runs": min(self.approach3.n_points, DISCREPANCY_POINTS),
                "targets": {**_discrepancy_json(self.discrepancy_targets), "widens": ["n_opt", "d_opt", "loss_opt"]}},
            "bootstrap": None if self.bootstrap is None else {
                "resamples": self.bootstrap.n_boot, "requested": self.n_boot_requested, "seed": self.bootstrap.seed,
                "method": "percentile", "refits": self.bootstrap.refits,
                "basin_switches": self.bootstrap.basin_switches, "polished": self.bootstrap.polished},
            "approach2": {
                "minima": [m.__dict__ for m in self.minima],
                "a": a2.a if a2 else None, "G": a2.n_law.G if a2 else None,
                "b": a2.b if a2 else None, "H": a2.d_law.G if a2 else None,
                "budgets_inferred": self.budgets_inferred,
                "error": self.unavailable.get("approach2"),
            },
            "approach1": {
                "a": a1.a if a1 else None, "b": a1.b if a1 else None,
                "envelope": [str(self.used["name"].iloc[i]) for i in a1.envelope] if a1 else [],
                "error": self.unavailable.get("approach1"),
            },
            "extrapolation": self.holdout.to_json() if self.holdout else {"error": self.unavailable.get("extrapolation")},
            "flags": self.flags,
            "notes": self.notes,
            "outliers": self.outliers,
        }
        return _finite_or_none(out)


def _discrepancy_json(d: Discrepancy) -> dict:
    return {"s_r_nats": d.s_r, "ell_decades": d.ell, "noise_sd_nats": d.sigma, "noise_at_loss": d.level,
            "noise_exponent": d.q}


def _finite_or_none(x):
    """NaN and inf become null: JSON has no spelling for them."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


FIT_STAGES = ("Approach 3 global fit", "Approaches 1 and 2", "bootstrap refits", "residual GP",
              "extrapolation check")


def analyse(trials: pd.DataFrame, target_compute: float | None, *, n_boot: int = 1000, seed: int = 0,
            drop_highest: int = 0, extrapolation: bool = True, isoflop: bool = True, progress=None) -> SweepFit:
    """Fit every form the runs support; bootstrap ``n_boot`` resamples (0: no intervals).

    ``target_compute`` None: DEFAULT_TARGET_FACTOR times the largest compute among the runs
    the fit uses (an excluded run, infinite or failed, never sets it); ``target_source`` says so.
    More runs than MAX_RESAMPLE_RUNS / ``n_boot`` get fewer resamples, and from
    NEWTON_MIN_RUNS runs on each resample is one Newton step (orchestrator.fitting.bootstrap); the
    fit's notes say which.

    ``isoflop=False`` says the runs of a compute level were not laid out to bracket its minimum
    (an adaptive sweep, orchestrator.planning.adaptive, spreads them to pin the law down): Approach 2 is
    still fitted and shown, but its parabolas' edges and its disagreement with Approach 3 say
    nothing about the law there, so they become notes instead of flags. In 54 adaptive sweeps
    of right-form worlds they flagged 73-100 % of the sweeps (IsoFLOP edges) and 3 of 32 in
    T1/T2 (disagreement).

    Raises InsufficientData (a UserError) when Approach 3 cannot be fitted: fewer than 5 usable
    runs, or runs that cannot determine the law (orchestrator.fitting.screening.law_data_problem); the
    other forms and the extrapolation check record what they lack in ``SweepFit.unavailable``.
    ``progress(stage)`` is called as each of FIT_STAGES starts (the CLI's progress bar).
    """
    stage = progress or (lambda name: None)
    used, excluded, excluded_runs = usable(trials, drop_highest)
    if len(used) < N_PARAMS:
        raise InsufficientData(f"fit: Approach 3 needs at least {N_PARAMS} completed runs to fit its {N_PARAMS} "
                               f"parameters; have {len(used)} (excluded: {excluded_text(excluded)})")
    if "name" not in used:
        used["name"] = [f"row {i}" for i in used.index]
    used = used.reset_index(drop=True)
    n, d, loss = (used[c].to_numpy(float) for c in ("n_params", "tokens", "eval_loss"))
    problem = law_data_problem(n, d, loss)
    if problem:
        raise InsufficientData(f"fit: {problem} (excluded: {excluded_text(excluded)})")
    compute = used["flops"].to_numpy(float) if "flops" in used else 6.0 * n * d
    target_source = ""
    if target_compute is None:
        target_compute = DEFAULT_TARGET_FACTOR * float(compute.max())
        target_source = f"{DEFAULT_TARGET_FACTOR:g}x the largest run the fit uses"
    budget = used["budget"].to_numpy(float) if "budget" in used else np.zeros_like(n)
    budget = np.where(np.isfinite(budget) & (budget > 0), budget, 0.0)  # NaN, inf or <= 0: no budget
    inferred, unavailable, notes = False, {}, []
    if not (budget > 0).any():
        budget, why = budget_inference(compute, n)
        inferred = bool((budget > 0).any())
        if why:
            unavailable["approach2"] = f"skipped: the runs have no budgets and {why} (give them with --budget-col)"
            notes.append(f"Approach 2 {unavailable['approach2']}")
    used["budget"] = budget
    n_boot_requested = n_boot
    if n_boot > 0:
        n_boot = min(n_boot, max(MIN_RESAMPLES, MAX_RESAMPLE_RUNS // len(used)))
        notes.extend(_size_notes(len(used), n_boot, n_boot_requested))

    stage(FIT_STAGES[0])
    a3 = fit_approach3(n, d, loss)
    stage(FIT_STAGES[1])
    a2 = a1 = None
    minima = []
    if "approach2" not in unavailable:
        try:
            a2 = fit_approach2(budget, n, d, loss)
            minima = a2.minima
        except InsufficientData as e:
            unavailable["approach2"] = str(e)
            minima = fit_isoflop_parabolas(budget, n, d, loss)[0]
    try:
        a1 = fit_approach1(compute, n, d, loss, budget)
    except InsufficientData as e:
        unavailable["approach1"] = str(e)

    boot, intervals, disc, disc_t = None, {}, None, None
    stage(f"{FIT_STAGES[2]} ({n_boot} resamples)")
    if n_boot > 0:
        extra = {}
        if a2:
            extra.update({"approach2.a": a2.a, "approach2.b": a2.b, "approach2.n_opt": float(a2.n_law(target_compute)),
                          "approach2.d_opt": float(a2.d_law(target_compute))})
        if a1:
            extra.update({"approach1.a": a1.a, "approach1.b": a1.b})
        boot = bootstrap(n, d, loss, a3, target_compute, n_boot=n_boot, seed=seed, compute=compute, budget=budget,
                         approach2_budgets=[m.budget for m in a2.minima] if a2 else (), approach1=a1 is not None,
                         estimates=extra)
        intervals = boot.intervals()
        stage(FIT_STAGES[3])
        if len(used) >= MIN_RUNS_FOR_DISCREPANCY:
            x = np.stack([np.log10(n), np.log10(d)], axis=1)
            theta = a3.params.as_vector()
            # Two residual models from one REML pass: a and b describe the law where the runs
            # are, the targets extrapolate past them, where a field longer than half a decade
            # (hard to tell from the law's own curvature in the data) moves them most
            # (orchestrator.fitting.discrepancy). Chinchilla's a interval stays 0.115 wide (0.132 with
            # the long model), and the adaptive planner's N_opt intervals cover 76-80 % of the
            # time instead of 61-75 % (docs/benchmarks.md).
            disc, disc_t = estimate_discrepancies(theta, x, loss, a3.residuals, seed=seed)
            sd_local = discrepancy_sd(theta, n, d, loss, disc, target_compute)
            sd_targets = sd_local if disc_t == disc else discrepancy_sd(theta, n, d, loss, disc_t, target_compute)
            sd = {k: (sd_local if k in ("a", "b") else sd_targets)[k] for k in sd_local}
            intervals = _with_discrepancy(intervals, sd)

    hold = None
    stage(FIT_STAGES[4])
    if extrapolation:
        try:
            hold = holdout_check(n, d, loss, compute, budget, used["name"].to_numpy())
        except InsufficientData as e:
            unavailable["extrapolation"] = str(e)
    resid = predict_loss(a3.params, n, d) - loss
    flags = law_flags(hold, disc.s_r, disc.sigma) if disc else law_flags(hold)
    flags[:0] = [f for f in (no_optimum(a3.params),) if f] + _few_points_flags(n, d, intervals)
    design_notes = approach2_flags(intervals, minima)
    if isoflop:
        flags, design_notes = flags + design_notes, []
    elif design_notes:
        design_notes.append("(the runs come from an adaptive design, not IsoFLOP sets, so these are not taken as "
                            "signs of a misspecified law)")
    target = compute_optimal(a3.params, target_compute)
    notes = _allocation_outside_runs(target, d / n) + _repeated_rows(used) + notes + design_notes
    return SweepFit(
        approach3=a3, minima=minima,
        target=target, excluded=excluded, used=used, approach2=a2,
        approach1=a1, unavailable=unavailable, bootstrap=boot, intervals=intervals, holdout=hold,
        outliers=outliers(resid, used["name"].to_numpy(), loss),
        flags=flags, notes=notes,
        excluded_runs=excluded_runs,
        budgets_inferred=inferred, flops_spent=_total_flops(trials), n_runs=len(trials), discrepancy=disc,
        discrepancy_targets=disc_t, target_source=target_source, n_boot_requested=n_boot_requested)


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


def _few_points_flags(n, d, intervals: dict[str, Interval]) -> list[str]:
    """Flags for intervals that cannot show the uncertainty: too few distinct (N, D) points for
    five parameters, or bootstrap intervals of zero width (every resample refits the same law)."""
    points = distinct_points(n, d)
    out = []
    if points < FEW_POINTS:
        out.append(f"only {points} distinct (N, D) points for the law's {N_PARAMS} parameters (fewer than "
                   f"{FEW_POINTS}): the fit nearly interpolates them, and its intervals say little")
    flat = [k for k in ("E", "A", "B", "alpha", "beta") if k in intervals and intervals[k].n_draws
            and intervals[k].width(0.95) <= 1e-9 * max(abs(intervals[k].estimate), 1e-300)]
    if flat:
        out.append(f"the bootstrap intervals of {', '.join(flat)} have zero width: every resample of the runs gives "
                   "the same law, so they show no uncertainty, not a precise fit")
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
        bounds = {lv: widen(iv.estimate, lo, hi, DISCREPANCY_Z[lv] * s, log=key not in ("a", "b"))  # sd of the log
                  for lv, (lo, hi) in iv.bounds.items()}
        out[key] = Interval(iv.estimate, bounds, iv.n_draws)
    return out


def _total_flops(trials: pd.DataFrame) -> float:
    if "flops" in trials:
        return float(pd.to_numeric(trials["flops"], errors="coerce").fillna(0).sum())
    n, d = (pd.to_numeric(trials[c], errors="coerce").fillna(0) for c in ("n_params", "tokens"))
    return float((6.0 * n * d).sum())


def si(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _decades(x: float) -> str:
    return "1 decade" if x == 1 else f"{x:g} decades"


def _reml_sample(runs: int) -> str:
    return f" of a random {DISCREPANCY_POINTS} of the {runs:,} runs" if runs > DISCREPANCY_POINTS else ""


def _iv(fit: SweepFit, key: str, fmt, inline: bool = False) -> str:
    """The 80 % and 95 % intervals as table columns, or inline; '' without a bootstrap."""
    iv = fit.intervals.get(key)
    if iv is None or not iv.n_draws:
        return ""
    cells = [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in (iv.bounds[lv] for lv in LEVELS)]
    if inline:
        return "(" + ", ".join(f"{round(100 * lv)} %: {c}" for lv, c in zip(LEVELS, cells)) + ")"
    return "  ".join(f"{c:<24}" for c in cells).rstrip()


def format_fit(fit: SweepFit) -> str:
    """Human-readable summary printed by ``run`` and ``fit``."""
    p, a3 = fit.approach3.params, fit.approach3
    g4 = lambda x: f"{x:.4g}"  # noqa: E731
    f3 = lambda x: f"{x:.3f}"  # noqa: E731
    lines = [
        f"Fitted law (Approach 3, {a3.n_points} runs, Huber objective {a3.objective:.4g}):",
        f"  L(N, D) = {p.E:.4f} + {p.A:.4g} / N^{p.alpha:.4f} + {p.B:.4g} / D^{p.beta:.4f}",
        f"  excluded: {excluded_text(fit.excluded)}",
    ]
    for r in fit.excluded_runs[:5]:
        if r["error"]:
            lines.append(f"    {r['name']}: {r['error']}")
    boot = fit.bootstrap
    if boot:
        how = ", each one Newton step from the full fit" if boot.refits == "newton" else ""
        lines.append(f"  {'':<22}{'estimate':>10}  {'80 % interval':<24}  {'95 % interval':<24}"
                     f"({boot.n_boot} bootstrap resamples of the runs{how}, seed {boot.seed})")
        if fit.discrepancy is not None:
            dd, dt = fit.discrepancy, fit.discrepancy_targets
            whose = "a and b's intervals" if dt is not None and dt != dd else "a, b and the targets' intervals"
            lines.append(f"  ({whose} also cover a smooth residual of {dd.s_r:.2g} nats over {_decades(dd.ell)}, plus "
                         f"noise of {dd.sigma:.2g} nats at loss {dd.level:.3g} growing as L^{dd.q:g}, fitted to the "
                         f"residuals{_reml_sample(a3.n_points)} by REML)")
            if dt is not None and dt != dd:
                lines.append(f"  (N_opt, D_opt and L* are extrapolations, which a longer field moves more: theirs cover "
                             f"one of {dt.s_r:.2g} nats over {_decades(dt.ell)})")
    rows = [("E", "E", g4), ("A", "A", g4), ("B", "B", g4), ("alpha", "alpha", g4), ("beta", "beta", g4),
            ("a (N_opt ∝ C^a)", "a", f3), ("b (D_opt ∝ C^b)", "b", f3)]
    for label, key, fmt in rows:
        value = {"a": p.a, "b": p.b}.get(key, getattr(p, key, None))
        lines.append(f"  {label:<22}{fmt(value):>10}  {_iv(fit, key, fmt)}")
    t = fit.target
    lines.append(f"At the target C = {t['compute']:.3g} FLOPs (Approach 3):")
    for label, key, fmt in (("N_opt", "n_opt", si), ("D_opt", "d_opt", si), ("L*", "loss_opt", f3)):
        lines.append(f"  {label:<22}{fmt(t['loss' if key == 'loss_opt' else key]):>10}  {_iv(fit, key, fmt)}")
    if fit.minima:
        how = "budgets inferred from C" if fit.budgets_inferred else "per budget"
        lines.append(f"IsoFLOP minima (Approach 2, parabolas in log N and log D, {how}):")
        for m in fit.minima:
            edge = "  <- at the edge of the swept sizes" if m.at_edge else ""
            lines.append(f"  C={m.budget:.3g}: N_opt={si(m.n_opt)} D_opt={si(m.d_opt)} loss={m.loss:.4f}{edge}")
    if fit.approach2:
        lines.append(f"  Approach 2: a = {fit.approach2.a:.3f} {_iv(fit, 'approach2.a', f3, inline=True)}; "
                     f"b = {fit.approach2.b:.3f} {_iv(fit, 'approach2.b', f3, inline=True)}")
    for form, label in (("approach2", "Approach 2"), ("approach1", "Approach 1"), ("extrapolation", "Extrapolation check")):
        if form in fit.unavailable and f"{label} {fit.unavailable[form]}" not in fit.notes:  # else printed as a note
            lines.append(f"{label}: not fitted: {fit.unavailable[form]}")
    if fit.approach1:
        lines.append(f"Approach 1 (lower envelope of loss over compute, {len(fit.approach1.envelope)} runs): "
                     f"a = {fit.approach1.a:.3f} {_iv(fit, 'approach1.a', f3, inline=True)}; "
                     f"b = {fit.approach1.b:.3f} {_iv(fit, 'approach1.b', f3, inline=True)}")
    h = fit.holdout
    if h:
        j = h.to_json()
        lines.append(f"Extrapolation check: refit without the {j['n_runs']} runs at C >= {h.threshold:.3g}; predicted - "
                     f"observed loss: mean {j['mean_error_nats']:+.4f} nats, worst {j['max_abs_error_nats']:.4f} nats "
                     f"= {h.max_abs_z:.1f} sigma (residual scale {h.sigma:.4f} nats)")
    lines.append("Flags:" + ("" if fit.flags else " none (no sign of misspecification)"))
    lines.extend(f"  ! {f}" for f in fit.flags)
    if fit.notes:
        lines.append("Notes:")
        lines.extend(f"  - {f}" for f in fit.notes)
    if fit.outliers:
        lines.append(f"Runs with unusually large residuals (more than 3 residual scales; {len(fit.outliers)}):")
        for o in fit.outliers[:10]:
            lines.append(f"  {o['name']}: observed {o['observed']:.4f}, predicted {o['predicted']:.4f} ({o['z']:+.1f} sigma)")
        if len(fit.outliers) > 10:
            lines.append(f"  ... and {len(fit.outliers) - 10} more (see --json)")
    budgets = sorted({m.budget for m in fit.minima})
    computes = sorted(set(budgets) | {fit.target["compute"]})
    lines.append("Compute-optimal frontier (Approach 3):")
    lines.append(f"  {'C (FLOPs)':>10}  {'N_opt':>8}  {'D_opt':>8}  {'D/N':>6}  {'loss':>7}")
    for row in fit.frontier(computes):
        lines.append(
            f"  {row['compute']:>10.3g}  {si(row['n_opt']):>8}  {si(row['d_opt']):>8}  "
            f"{row['d_opt'] / row['n_opt']:>6.1f}  {row['loss']:>7.4f}"
        )
    return "\n".join(lines)
