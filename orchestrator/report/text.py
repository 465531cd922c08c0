"""What ``scalesweep`` prints about a fit and its runs: the text summary, the JSON, and numbers
as people write them (``si``, ``flops_str``).

Imports nothing of the fitting engine at import time, so ``scalesweep status`` (which formats
FLOPs and sizes with ``si``) does not load scipy; the few constants of the fit that the text
names are imported where a fit is formatted, when the engine is loaded already.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.fitting import LEVELS

__all__ = ["format_fit", "fit_json", "si", "flops_str", "duration", "hparam_lines", "hparams_json"]


def duration(s: float | None) -> str:
    """Seconds as 1h02m or 3m04s ("?" when unknown)."""
    if s is None:
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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


def format_fit(fit, brief: bool = False) -> str:
    """Human-readable summary printed by ``run`` and ``fit`` (fit: an analysis.SweepFit);
    ``brief``: the law, its intervals and flags only (a variant's, beside the baseline's)."""
    if brief:
        return "\n".join(_law_lines(fit) + _flag_lines(fit))
    return "\n".join(_comparison_lines(fit) + _law_lines(fit) + _form_lines(fit) + _flag_lines(fit)
                     + _frontier_lines(fit) + _hparam_lines(fit))


def _hparam_lines(fit) -> list[str]:
    """A tuned sweep's hyperparameter laws and recommendation (``hparam_lines``)."""
    if getattr(fit, "hparams", None) is None:
        return []
    return hparam_lines(fit.hparams)


def _comparison_lines(fit) -> list[str]:
    """The forms ranked by extrapolation (orchestrator.fitting.forms.selection), when compared."""
    c = fit.comparison
    if c is None:
        return []
    lines = [f"Law forms compared by extrapolation (refit without the {c.n_held_out} runs at {c.key} >= {c.threshold:.3g}; "
             "errors are predicted - observed):",
             f"  {'form':<18}{'params':>6}  {'held-out RMS':>12}  {'mean err':>9}  {'mean |err|/L':>12}  "
             f"{'in-sample RMS':>13}"]
    for sc in sorted(c.scores, key=lambda x: (bool(x.error), x.held_out_rms)):
        if sc.error:
            lines.append(f"  {sc.form:<18}{sc.n_params:>6}  not scored: {sc.error}")
            continue
        mark = " <- chosen" if sc.form == c.chosen else (" (best)" if sc.form == c.best else "")
        mark += "" if sc.within_noise or sc.form == c.best else "  beyond noise"
        lines.append(f"  {sc.form:<18}{sc.n_params:>6}  {sc.held_out_rms:>12.4f}  {sc.held_out_mean:>+9.4f}  "
                     f"{100 * sc.held_out_rel:>11.2f}%  {sc.in_sample_rms:>13.4f}{mark}")
    lines.append(f"  (chosen: the fewest parameters among the forms within one standard error of the best's held-out "
                 f"error; best: {c.best})")
    return lines


def _g4(x) -> str:
    return f"{x:.4g}"


def _f3(x) -> str:
    return f"{x:.3f}"


def _law_lines(fit) -> list[str]:
    """The fitted law, what was excluded, and the estimates with their intervals."""
    from orchestrator.results.runs import excluded_text

    law = fit.law
    if law.form.name == "chinchilla":
        p = fit.approach3.params
        head = [f"Fitted law (Approach 3, {law.n_points} runs, Huber objective {law.objective:.4g}):",
                f"  L(N, D) = {p.E:.4f} + {p.A:.4g} / N^{p.alpha:.4f} + {p.B:.4g} / D^{p.beta:.4f}"]
    else:
        head = [f"Fitted law ({law.form.name} form, {law.n_points} runs, Huber objective {law.objective:.4g}):",
                f"  {law.form.formula}"]
    lines = head + [f"  excluded: {excluded_text(fit.excluded)}"]
    for r in fit.excluded_runs[:5]:
        if r["error"]:
            lines.append(f"    {r['name']}: {r['error']}")
    lines.extend(_interval_header(fit))
    values = dict(law.values)
    t = fit.target
    if law.form.has_optimum:
        values.update(a=fit.intervals["a"].estimate if "a" in fit.intervals else _local(law, t, "a"),
                      b=fit.intervals["b"].estimate if "b" in fit.intervals else _local(law, t, "b"))
    order = ("E", "A", "B", "alpha", "beta") if law.form.name == "chinchilla" else law.form.names
    rows = [(k, k, _g4) for k in order]
    if law.form.has_optimum:
        local = "" if law.form.name == "chinchilla" else " at C"
        rows += [(f"a (N_opt ∝ C^a){local}", "a", _f3), (f"b (D_opt ∝ C^b){local}", "b", _f3)]
    for label, key, fmt in rows:
        lines.append(f"  {label:<22}{fmt(values[key]):>10}  {_iv(fit, key, fmt)}")
    if not law.form.has_optimum:
        return lines + [f"  (the {law.form.name} form has no compute-optimal allocation: it does not depend on D)"]
    lines.append(f"At the target C = {t['compute']:.3g} FLOPs ({'Approach 3' if law.form.name == 'chinchilla' else law.form.name}):")
    for label, key, fmt in (("N_opt", "n_opt", si), ("D_opt", "d_opt", si), ("L*", "loss_opt", _f3)):
        lines.append(f"  {label:<22}{fmt(t['loss' if key == 'loss_opt' else key]):>10}  {_iv(fit, key, fmt)}")
    return lines


def _local(law, target, key) -> float:
    import math

    if not math.isfinite(target["compute"]):
        return math.nan
    t = law.form.targets(law.z, target["compute"])
    return float(t[0] if key == "a" else t[1])


NO_INTERVALS = "(no intervals: no bootstrap resamples, --bootstrap 0)"


def _interval_header(fit) -> list[str]:
    boot = fit.bootstrap
    if not boot:
        return [f"  {'':<22}{'estimate':>10}  {NO_INTERVALS}"]
    how = ", each one Newton step from the full fit" if boot.refits == "newton" else ""
    lines = [f"  {'':<22}{'estimate':>10}  {'80 % interval':<24}  {'95 % interval':<24}"
             f"({boot.n_boot} bootstrap resamples of the runs{how}, seed {boot.seed})"]
    if fit.discrepancy is not None:
        dd, dt = fit.discrepancy, fit.discrepancy_targets
        whose = "a and b's intervals" if dt is not None and dt != dd else "a, b and the targets' intervals"
        whose = whose if fit.law.form.has_optimum else "the predictions' intervals"
        lines.append(f"  ({whose} also cover a smooth residual of {dd.s_r:.2g} nats over {_decades(dd.ell)}, plus "
                     f"noise of {dd.sigma:.2g} nats at loss {dd.level:.3g} growing as L^{dd.q:g}, fitted to the "
                     f"residuals{_reml_sample(fit.law.n_points)} by REML)")
        if dt is not None and dt != dd:
            lines.append(f"  (N_opt, D_opt and L* are extrapolations, which a longer field moves more: theirs cover "
                         f"one of {dt.s_r:.2g} nats over {_decades(dt.ell)})")
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
        judged = (f"{h.outside95} of {j['n_runs']} outside their 95 % predictive intervals (worst {h.max_abs_z:.1f} "
                  "predictive sd)" if h.bounds is not None else f"= {h.max_abs_z:.1f} sigma (residual scale {h.sigma:.4f} nats)")
        lines.append(f"Extrapolation check: refit without the {j['n_runs']} runs at {h.key} >= {h.threshold:.3g}; predicted - "
                     f"observed loss: mean {j['mean_error_nats']:+.4f} nats, worst {j['max_abs_error_nats']:.4f} nats; "
                     + judged)
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
    if not fit.law.form.has_optimum:
        return []
    budgets = sorted({m.budget for m in fit.minima})
    computes = sorted(set(budgets) | {fit.target["compute"]})
    lines = [f"Compute-optimal frontier ({'Approach 3' if fit.law.form.name == 'chinchilla' else fit.law.form.name}):"]
    lines.append(f"  {'C (FLOPs)':>10}  {'N_opt':>8}  {'D_opt':>8}  {'D/N':>6}  {'loss':>7}")
    for row in fit.frontier(computes):
        lines.append(
            f"  {row['compute']:>10.3g}  {si(row['n_opt']):>8}  {si(row['d_opt']):>8}  "
            f"{row['d_opt'] / row['n_opt']:>6.1f}  {row['loss']:>7.4f}"
        )
    return lines


def prediction_lines(rows: list[dict], form: str, resampled: bool = True) -> list[str]:
    """``fit --predict``: one line per point with its 80 % and 95 % predictive intervals
    (``resampled`` False: the fit had no bootstrap, and they leave out the law's own spread)."""
    covers = ("the law's bootstrap spread, the residual field and one run's noise at that loss" if resampled else
              "the residual field and one run's noise at that loss only; not the law's own uncertainty, which needs "
              "bootstrap resamples (--bootstrap 0 gave none)")
    lines = [f"Predicted loss ({form} form; intervals cover {covers}):",
             f"  {'N':>8}  {'D':>8}  {'loss':>7}  {'80 % interval':<18}  {'95 % interval':<18}"]
    for r in rows:
        d = si(r["d"]) if r.get("d") is not None else "-"
        lines.append(f"  {si(r['n']):>8}  {d:>8}  {r['loss']:>7.4f}  "
                     + "  ".join(f"[{r[k][0]:.4f}, {r[k][1]:.4f}]".ljust(18) for k in ("80%", "95%")))
    return lines


def fit_json(fit) -> dict:
    """The fit (an orchestrator.fitting.analysis.SweepFit) as JSON-ready data: ``scalesweep fit --json``."""
    from orchestrator.fitting.discrepancy import MAX_POINTS as DISCREPANCY_POINTS
    from orchestrator.results.runs import EXCLUSION_REASONS

    law, a2, a1 = fit.law, fit.approach2, fit.approach1
    chin = law.form.name == "chinchilla"
    p = fit.approach3.params if chin else None
    out = {
        "form": law.form.name,
        "law": "L = E + A/N^alpha + B/D^beta" if chin else law.form.formula,
        "params": {"E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta} if chin else law.values,
        "a": p.a if chin else (fit.intervals["a"].estimate if "a" in fit.intervals else _local(law, fit.target, "a")),
        "b": p.b if chin else (fit.intervals["b"].estimate if "b" in fit.intervals else _local(law, fit.target, "b")),
        "objective": law.objective,
        "n_trials": fit.n_runs,
        "n_fitted": law.n_points,
        "flops_spent": fit.flops_spent,
        "excluded": fit.excluded,
        "excluded_reasons": {k: EXCLUSION_REASONS[k] for k, v in fit.excluded.items() if v},
        "excluded_runs": fit.excluded_runs,
        "target": fit.target,
        "target_source": fit.target_source or None,
        "intervals": {k: v.to_json() for k, v in fit.intervals.items()},
        "discrepancy": None if fit.discrepancy is None else {
            **_discrepancy_json(fit.discrepancy), "method": "REML", "widens": ["a", "b"],
            "reml_runs": min(law.n_points, DISCREPANCY_POINTS),
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
        "forms": fit.comparison.to_json() if fit.comparison else None,
        "flags": fit.flags,
        "notes": fit.notes,
        "outliers": fit.outliers,
    }
    if getattr(fit, "hparams", None) is not None:  # a tuned sweep (orchestrator.fitting.hparams.tuned)
        out["hparams"] = hparams_json(fit.hparams)
    return finite_or_none(out)


def _discrepancy_json(d) -> dict:
    return {"s_r_nats": d.s_r, "ell_decades": d.ell, "noise_sd_nats": d.sigma, "noise_at_loss": d.level,
            "noise_exponent": d.q}


def finite_or_none(x):
    """NaN and inf become null: JSON has no spelling for them."""
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# -- hyperparameter laws (orchestrator.fitting.hparams): after a tuned sweep's frontier, and `hparams` --

_HP_LABEL = {"lr": "learning rate", "batch": "batch size (tokens)"}


def _hp_cells(v: dict, fmt) -> str:
    if not all(math.isfinite(x) for x in v["80%"] + v["95%"]):  # no draws (--bootstrap 0)
        return "-"
    return "  ".join(f"[{fmt(v[k][0])}, {fmt(v[k][1])}]".ljust(24) for k in (f"{round(100 * lv)}%" for lv in LEVELS)).rstrip()


def _hp_g(x: float) -> str:
    return f"{x:.4g}"


def _hp_exp(x: float) -> str:
    return f"{x:+.3f}"


def n_words(n_kind: str) -> str:
    """What the hyperparameter laws' N counts."""
    if n_kind.startswith("column"):
        return f"the {n_kind}"
    return "non-embedding parameters" if n_kind == "nonembed" else "parameters"


def _loss_words(h) -> str:
    fitted = sum(p.loss_fitted for p in h.points)
    best = sum(not p.loss_fitted and math.isfinite(p.loss_opt) for p in h.points)
    if h.objective == "best":
        return f"each point's loss is its best trial's (objective: best; {best} points)"
    return (f"each point's loss is the minimum of its fitted parabola or surface ({fitted} points: it averages the "
            f"noise of the trials near the bottom), or its best trial's where the optimum is not bracketed or the point "
            f"was not searched ({best})")


def _hp_law_lines(law) -> list[str]:
    """A law's formula and its coefficients with their intervals."""
    how = (f"fitted jointly to {law.trials} trials of {law.n_points} points" if law.method == "joint" else
           f"{law.n_points} bracketed points; scatter {law.residual_sd:.3f} in ln")
    columns = f"{'80 % interval':<24}  95 % interval" if len(law.draws) else NO_INTERVALS
    lines = [f"  {law.formula()}   ({how})", f"  {'':<22}{'estimate':>10}  {columns}"]
    for name, v in law.intervals().items():
        if v.get("fixed"):
            lines.append(f"  {name:<22}{'0':>10}  (fixed: not identified by the points)")
            continue
        fmt = _hp_g if name == "coef" else _hp_exp
        lines.append(f"  {name:<22}{fmt(v['estimate']):>10}  {_hp_cells(v, fmt)}")
    return lines


def _hp_recommendation(h) -> list[str]:
    """lr* and B* at the point ``h.at`` (a tuned fit's target, or ``hparams --at-n/--compute``)."""
    if not h.at or (h.lr_opt is None and h.batch_opt is None):
        return []
    at = h.at
    where = f"N = {si(at['n'])}, D = {si(at['d'])}"
    if "compute" in at:
        total = at.get("n_total", at["n"])
        iv = (at.get("n_opt_interval") or {}).get("80%")
        band = f" (80 %: {si(iv[0])}-{si(iv[1])})" if iv else ""
        where = f"N_opt = {si(total)}{band}, D_opt = {si(at['d'])} (C = {at['compute']:.3g} FLOPs)"
        if at.get("n_mapped"):
            where += (f"; the laws' N there: {si(at['n'])} {n_words(h.n_kind)}, from the points' own ratio of the "
                      "two counts")
    lines = [f"Recommended at {where}:"]
    for what, rec, fixed in (("lr", h.lr_opt, h.lr_fixed), ("batch", h.batch_opt, h.batch_fixed)):
        if rec is not None:
            fmt = _hp_g if what == "lr" else si  # batch sizes in tokens, as counts: 568k
            lines.append(f"  {_HP_LABEL[what]:<22}{fmt(rec['estimate']):>10}  {_hp_cells(rec, fmt)}")
        elif fixed:
            lines.append(f"  {_HP_LABEL[what]:<22}{'-':>10}  {fixed}")
    if at.get("n_opt_drawn"):
        lines.append("  (intervals: the laws' draws, each at an N_opt drawn from its 80 % interval as a lognormal)")
    return lines


def hparam_lines(h, head: str = "") -> list[str]:
    """The laws, the recommendation and the notes, as ``fit`` prints them after the frontier."""
    n_trials = sum(p.n_trials for p in h.points)
    lines = [head or f"Hyperparameter laws ({len(h.points)} design points, {n_trials} trials; "
             f"N: {n_words(h.n_kind)}; D: tokens):", f"  {_loss_words(h)}"]
    for what, law, fixed in (("lr", h.lr_law, h.lr_fixed), ("batch", h.batch_law, h.batch_fixed)):
        if law is not None:
            lines.extend(_hp_law_lines(law))
        elif fixed:
            lines.append(f"  {_HP_LABEL[what]}: {fixed}")
    lines.extend(_hp_recommendation(h))
    if h.notes:
        lines.append("Hyperparameter notes:")
        lines.extend(f"  - {n}" for n in h.notes)
    return lines


def hparams_json(h) -> dict:
    """``hparams`` of ``fit --json`` and the output of ``hparams --json``."""
    return finite_or_none({
        "lr_law": h.lr_law.to_json() if h.lr_law is not None else None,
        "batch_law": h.batch_law.to_json() if h.batch_law is not None else None,
        "lr_opt": h.lr_opt, "batch_opt": h.batch_opt, "at": h.at or None,
        "lr_fixed": h.lr_fixed or None, "batch_fixed": h.batch_fixed or None,
        "n": h.n_kind, "objective": h.objective, "notes": h.notes,
        "points": [p.to_json() for p in h.points],
    })


def variants_text(comparison) -> str:
    """A fit with variants as text: the baseline's whole fit, each variant's law at the target,
    then the comparison (orchestrator.fitting.variants)."""
    base = comparison.fits[comparison.baseline]
    parts = [f"Baseline ({comparison.baseline}):", format_fit(base), "", "Variants:"]
    for name, fit in comparison.fits.items():
        if name != comparison.baseline:
            parts += [f"{name}:", *("  " + line for line in format_fit(fit, brief=True).splitlines())]
    return "\n".join(parts + ["", "Compared with the baseline:", *comparison.lines()])
