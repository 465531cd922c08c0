"""A downstream fit as text lines and as JSON: per task its two steps, emergence and checks,
then per point and task the chained prediction with its intervals beside the baselines."""

from __future__ import annotations

import math

import numpy as np

from orchestrator.fitting.downstream.chain import interval

__all__ = ["describe", "prediction_lines", "task_json", "fit_json"]


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _iv(d: dict, level: str, digits: int = 3) -> str:
    lo, hi = d[level]
    return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _param_intervals(tf) -> dict:
    """Each step's parameters with their bootstrap intervals (natural units)."""
    out = {"step1": {}, "step2": {}}
    form = tf.step1.law.form
    Z = tf.step1.draws if tf.step1.draws is not None else np.zeros((0, form.n_params))
    est = tf.step1.values()
    for i, p in enumerate(form.params):
        out["step1"][p.name] = interval(est[p.name], np.array([p.natural(float(v)) for v in Z[:, i]]))
    vals = tf.sigmoid.values()
    draws = tf.sigmoid.values(tf.sig_draws) if len(tf.sig_draws) else {}
    for k, v in vals.items():
        out["step2"][k] = interval(v, draws.get(k, np.zeros(0)))
    return out


def task_json(tf, scale: float = 1.0) -> dict:
    em = dict(tf.extras.get("emergence", {}))
    if "accuracy" in em:
        em["accuracy"] = em["accuracy"] * scale
    params = _param_intervals(tf)
    for k in ("floor", "ceiling"):
        params["step2"][k] = {kk: ([None if x is None else x * scale for x in vv] if isinstance(vv, list) else vv * scale)
                              for kk, vv in params["step2"][k].items()}
    hold = tf.holdout or {}
    check = None
    if hold:
        loss, acc = hold.get("task_loss", {}), hold.get("accuracy", {})
        check = {"checks": hold["checks"], "runs": loss.get("runs", []), "distance": loss.get("distance", []),
                 "log_task_loss_error": loss.get("errors", []), "log_task_loss_sd": loss.get("sds", []),
                 "accuracy_error": [e * scale for e in acc.get("errors", [])],
                 "accuracy_sd": [e * scale for e in acc.get("sds", [])]}
    return {
        "task": tf.task, "runs": len(tf.data.runs), "step2_points": int(len(tf.data.x)),
        "chance": tf.data.chance * scale if tf.data.chance is not None else None, "n_items": tf.data.n_items,
        "step1": {"form": tf.step1.law.form.name, "formula": tf.step1.formula(), "params": params["step1"]},
        "step2": {"formula": "acc(L) = floor + (ceiling - floor) / (1 + exp(k (L - L0)))", "params": params["step2"],
                  "floor_fixed": tf.data.chance is not None, "residual_sd": tf.sigmoid.residual_sd * scale,
                  "excess_sd": tf.excess_sd * scale},
        "calibration": {"kappa_task_loss": tf.kappa1, "kappa_accuracy": tf.kappa2, "holdout": check},
        "emergence": em,
        "baselines": {"one_step": "sigmoid of the step-1 law's task loss, fitted to final checkpoints",
                      "compute_only": "sigmoid of log10 C (C = 6ND), fitted to final checkpoints"},
        "notes": list(tf.notes),
    }


def fit_json(fit, predictions: list[dict] | None = None) -> dict:
    return {"source": fit.source, "runs": fit.n_runs, "acc_unit": "percent" if fit.acc_scale != 1 else "fraction",
            "n_boot": fit.n_boot, "seed": fit.seed, "notes": list(fit.notes),
            "tasks": [task_json(t, fit.acc_scale) for t in fit.tasks],
            "skipped": [{"task": k, "reason": v} for k, v in fit.skipped.items()],
            "predictions": predictions or []}


def _emergence_line(tf, scale: float) -> str:
    em = tf.extras.get("emergence") or {}
    if not em:
        return ""
    acc = em["accuracy"] * scale
    if em.get("task_loss") is None:
        return f"  emergence (accuracy {acc:.3g}): {em.get('note', '')}"
    tl = em["task_loss"]
    text = f"  emergence (accuracy {acc:.3g}): task loss {tl['estimate']:.3f} {_iv(tl, '80%')}"
    c = em.get("compute")
    if c is None:
        return text + f"; {em.get('note', '')}"
    lo, hi = c["80%"]
    ends = f" [{lo:.2g}, {hi:.2g}]" if lo is not None else ""
    return text + f"; compute {c['estimate']:.3g} FLOPs{ends}" + (f" ({em['note']})" if em["note"] else "")


def describe(fit) -> list[str]:
    """Text lines: per task its law, sigmoid, extrapolation check and emergence; skipped tasks."""
    s = fit.acc_scale
    unit = " (accuracy in percent)" if s != 1 else ""
    lines = [f"Two-step task predictions from {fit.source}: {fit.n_runs} runs, {len(fit.tasks)} tasks{unit}; "
             f"intervals from {fit.n_boot} resamples of whole runs"]
    lines += [f"  note: {n}" for n in fit.notes]
    for tf in fit.tasks:
        v = tf.sigmoid.values()
        floor = f"{v['floor'] * s:.3g} (chance)" if tf.data.chance is not None else f"{v['floor'] * s:.3g} (fitted)"
        lines.append(f"{tf.task}: {len(tf.data.runs)} runs, {len(tf.data.x)} checkpoints in step 2")
        lines.append(f"  step 1: {tf.step1.formula()}")
        lines.append(f"  step 2: acc(L) = {floor} + ({v['ceiling'] * s:.3g} - {v['floor'] * s:.3g}) / "
                     f"(1 + exp({v['k']:.3g} (L - {v['L0']:.4f}))); scatter {tf.sigmoid.residual_sd * s:.3g}")
        h = tf.holdout
        if h is not None:
            what = " and ".join(f"the largest {c}" for c in h["checks"])
            rms = float(np.sqrt(np.mean(np.square(h["task_loss"]["errors"]))))
            acc = h.get("accuracy", {}).get("errors") or [0.0]
            lines.append(f"  held-out check (refits without {what}; {len(h['task_loss']['runs'])} runs predicted): task "
                         f"loss RMS error {100 * rms:.1f}%, accuracy RMS error "
                         f"{float(np.sqrt(np.mean(np.square(acc)))) * s:.3g}")
        lines.append(f"  intervals calibrated by the held-out checks: spread x{tf.kappa1:.2f} (task loss), "
                     f"x{tf.kappa2:.2f} (accuracy)")
        em = _emergence_line(tf, s)
        if em:
            lines.append(em)
        lines += [f"  note: {n}" for n in tf.notes]
    for k, v in fit.skipped.items():
        lines.append(f"{k}: skipped ({v})")
    return lines


def prediction_lines(rows: list[dict], scale: float = 1.0) -> list[str]:
    """One line per (point, task): task loss and accuracy with 80 % and 95 % intervals, baselines."""
    if not rows:
        return []
    digits = 1 if scale != 1 else 3
    out = ["Predictions (intervals 80 % | 95 %; baselines: one step from (N, D), compute only):",
           f"  {'point':<12} {'task':<14} {'N':>8} {'D':>8}  {'task loss':<30} {'accuracy':<34} "
           f"{'1-step':>7} {'C-only':>7}"]
    for r in rows:
        tl, ac, b = r["task_loss"], r["accuracy"], r["baselines"]
        out.append(f"  {str(r['point'])[:12]:<12} {r['task'][:14]:<14} {r['n']:>8.3g} {r['d']:>8.3g}  "
                   f"{tl['estimate']:.3f} {_iv(tl, '80%')} {_iv(tl, '95%'):<14} "
                   f"{ac['estimate']:.{digits}f} {_iv(ac, '80%', digits)} {_iv(ac, '95%', digits):<16} "
                   f"{_fmt(b['one_step'], digits):>7} {_fmt(b['compute_only'], digits):>7}")
    return out
