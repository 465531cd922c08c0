"""What ``scalesweep`` prints about a fit and its runs: the text summary, the JSON, and numbers
as people write them (``si``, ``flops_str``).

Imports nothing of the fitting engine at import time, so ``scalesweep status`` (which formats
FLOPs and sizes with ``si``) does not load scipy; the few constants of the fit that the text
names are imported where a fit is formatted, when the engine is loaded already.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.fitting.stats import LEVELS

__all__ = ["format_fit", "fit_json", "si", "flops_str"]


def flops_str(c: float) -> str:
    """1e17, 3e20, 5.76e23: FLOPs as people write them."""
    return f"{c:.3g}".replace("e+", "e")


def si(x: float) -> str:
    """12.3k, 4.56B: counts with a unit suffix, 3 significant digits."""
    if not math.isfinite(x):
        return str(x)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _decades(x: float) -> str:
    return "1 decade" if x == 1 else f"{x:g} decades"


def _reml_sample(runs: int) -> str:
    from orchestrator.fitting.discrepancy import MAX_POINTS as DISCREPANCY_POINTS

    return f" of a random {DISCREPANCY_POINTS} of the {runs:,} runs" if runs > DISCREPANCY_POINTS else ""


def _iv(fit, key: str, fmt, inline: bool = False) -> str:
    """The 80 % and 95 % intervals as table columns, or inline; '' without a bootstrap."""
    iv = fit.intervals.get(key)
    if iv is None or not iv.n_draws:
        return ""
    cells = [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in (iv.bounds[lv] for lv in LEVELS)]
    if inline:
        return "(" + ", ".join(f"{round(100 * lv)} %: {c}" for lv, c in zip(LEVELS, cells)) + ")"
    return "  ".join(f"{c:<24}" for c in cells).rstrip()


def format_fit(fit) -> str:
    """Human-readable summary printed by ``run`` and ``fit`` (fit: an analysis.SweepFit)."""
    return "\n".join(_law_lines(fit) + _form_lines(fit) + _flag_lines(fit) + _frontier_lines(fit))


def _g4(x) -> str:
    return f"{x:.4g}"


def _f3(x) -> str:
    return f"{x:.3f}"


def _law_lines(fit) -> list[str]:
    """The Approach 3 law, what was excluded, and the estimates with their intervals."""
    from orchestrator.fitting.screening import excluded_text

    p, a3 = fit.approach3.params, fit.approach3
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
    rows = [("E", "E", _g4), ("A", "A", _g4), ("B", "B", _g4), ("alpha", "alpha", _g4), ("beta", "beta", _g4),
            ("a (N_opt ∝ C^a)", "a", _f3), ("b (D_opt ∝ C^b)", "b", _f3)]
    for label, key, fmt in rows:
        value = {"a": p.a, "b": p.b}.get(key, getattr(p, key, None))
        lines.append(f"  {label:<22}{fmt(value):>10}  {_iv(fit, key, fmt)}")
    t = fit.target
    lines.append(f"At the target C = {t['compute']:.3g} FLOPs (Approach 3):")
    for label, key, fmt in (("N_opt", "n_opt", si), ("D_opt", "d_opt", si), ("L*", "loss_opt", _f3)):
        lines.append(f"  {label:<22}{fmt(t['loss' if key == 'loss_opt' else key]):>10}  {_iv(fit, key, fmt)}")
    return lines


def _form_lines(fit) -> list[str]:
    """Approaches 2 and 1, the forms not fitted, and the extrapolation check."""
    lines = []
    if fit.minima:
        how = "budgets inferred from C" if fit.budgets_inferred else "per budget"
        lines.append(f"IsoFLOP minima (Approach 2, parabolas in log N and log D, {how}):")
        for m in fit.minima:
            edge = "  <- at the edge of the swept sizes" if m.at_edge else ""
            lines.append(f"  C={m.budget:.3g}: N_opt={si(m.n_opt)} D_opt={si(m.d_opt)} loss={m.loss:.4f}{edge}")
    if fit.approach2:
        lines.append(f"  Approach 2: a = {fit.approach2.a:.3f} {_iv(fit, 'approach2.a', _f3, inline=True)}; "
                     f"b = {fit.approach2.b:.3f} {_iv(fit, 'approach2.b', _f3, inline=True)}")
    for form, label in (("approach2", "Approach 2"), ("approach1", "Approach 1"), ("extrapolation", "Extrapolation check")):
        if form in fit.unavailable and f"{label} {fit.unavailable[form]}" not in fit.notes:  # else printed as a note
            lines.append(f"{label}: not fitted: {fit.unavailable[form]}")
    if fit.approach1:
        lines.append(f"Approach 1 (lower envelope of loss over compute, {len(fit.approach1.envelope)} runs): "
                     f"a = {fit.approach1.a:.3f} {_iv(fit, 'approach1.a', _f3, inline=True)}; "
                     f"b = {fit.approach1.b:.3f} {_iv(fit, 'approach1.b', _f3, inline=True)}")
    h = fit.holdout
    if h:
        j = h.to_json()
        lines.append(f"Extrapolation check: refit without the {j['n_runs']} runs at C >= {h.threshold:.3g}; predicted - "
                     f"observed loss: mean {j['mean_error_nats']:+.4f} nats, worst {j['max_abs_error_nats']:.4f} nats "
                     f"= {h.max_abs_z:.1f} sigma (residual scale {h.sigma:.4f} nats)")
    return lines


def _flag_lines(fit) -> list[str]:
    """Signs of misspecification, notes about the design, and the runs far from the law."""
    lines = ["Flags:" + ("" if fit.flags else " none (no sign of misspecification)")]
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
    return lines


def _frontier_lines(fit) -> list[str]:
    """N_opt, D_opt and the loss at each IsoFLOP budget and at the target."""
    budgets = sorted({m.budget for m in fit.minima})
    computes = sorted(set(budgets) | {fit.target["compute"]})
    lines = ["Compute-optimal frontier (Approach 3):"]
    lines.append(f"  {'C (FLOPs)':>10}  {'N_opt':>8}  {'D_opt':>8}  {'D/N':>6}  {'loss':>7}")
    for row in fit.frontier(computes):
        lines.append(
            f"  {row['compute']:>10.3g}  {si(row['n_opt']):>8}  {si(row['d_opt']):>8}  "
            f"{row['d_opt'] / row['n_opt']:>6.1f}  {row['loss']:>7.4f}"
        )
    return lines


def fit_json(fit) -> dict:
    """The fit (an orchestrator.fitting.analysis.SweepFit) as JSON-ready data: ``scalesweep fit --json``."""
    from orchestrator.fitting.discrepancy import MAX_POINTS as DISCREPANCY_POINTS
    from orchestrator.fitting.screening import EXCLUSION_REASONS

    p, a2, a1 = fit.approach3.params, fit.approach2, fit.approach1
    out = {
        "law": "L = E + A/N^alpha + B/D^beta",
        "params": {"E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta},
        "a": p.a,
        "b": p.b,
        "objective": fit.approach3.objective,
        "n_trials": fit.n_runs,
        "n_fitted": fit.approach3.n_points,
        "flops_spent": fit.flops_spent,
        "excluded": fit.excluded,
        "excluded_reasons": {k: EXCLUSION_REASONS[k] for k, v in fit.excluded.items() if v},
        "excluded_runs": fit.excluded_runs,
        "target": fit.target,
        "target_source": fit.target_source or None,
        "intervals": {k: v.to_json() for k, v in fit.intervals.items()},
        "discrepancy": None if fit.discrepancy is None else {
            **_discrepancy_json(fit.discrepancy), "method": "REML", "widens": ["a", "b"],
            "reml_runs": min(fit.approach3.n_points, DISCREPANCY_POINTS),
            "targets": {**_discrepancy_json(fit.discrepancy_targets), "widens": ["n_opt", "d_opt", "loss_opt"]}},
        "bootstrap": None if fit.bootstrap is None else {
            "resamples": fit.bootstrap.n_boot, "requested": fit.n_boot_requested, "seed": fit.bootstrap.seed,
            "method": "percentile", "refits": fit.bootstrap.refits,
            "basin_switches": fit.bootstrap.basin_switches, "polished": fit.bootstrap.polished},
        "approach2": {
            "minima": [m.__dict__ for m in fit.minima],
            "a": a2.a if a2 else None, "G": a2.n_law.G if a2 else None,
            "b": a2.b if a2 else None, "H": a2.d_law.G if a2 else None,
            "budgets_inferred": fit.budgets_inferred,
            "error": fit.unavailable.get("approach2"),
        },
        "approach1": {
            "a": a1.a if a1 else None, "b": a1.b if a1 else None,
            "envelope": [str(fit.used["name"].iloc[i]) for i in a1.envelope] if a1 else [],
            "error": fit.unavailable.get("approach1"),
        },
        "extrapolation": fit.holdout.to_json() if fit.holdout else {"error": fit.unavailable.get("extrapolation")},
        "flags": fit.flags,
        "notes": fit.notes,
        "outliers": fit.outliers,
    }
    return _finite_or_none(out)


def _discrepancy_json(d) -> dict:
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
