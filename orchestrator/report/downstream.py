"""Task accuracy in ``fit`` and ``report`` of a sweep whose trials evaluated tasks (workers.evals).

The two-step prediction (orchestrator.fitting.downstream) of every task, at the sweep's target:
the compute-optimal N and D of the loss law at ``fit.target_compute`` (the SweepFit's target).
``fit`` prints it after the law and adds it to its JSON under ``downstream``; the report adds,
per task, three plots as Bhagia et al. (2024, Figures 1 and 3) draw them: step 1 (the task loss
of each run's final checkpoint against compute, and the fitted law along the loss law's
compute-optimal frontier with its 80 % band), step 2 (accuracy against task loss at every
checkpoint, the fitted sigmoid, chance) and the chained prediction (accuracy against compute
along the frontier, 80 % and 95 % bands, the runs' final accuracies and the target).

A sweep without evals gets nothing here (None); one whose tasks cannot be fitted gets its note.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import FitError, UserError

__all__ = ["Downstream", "downstream_for", "lines", "to_json", "plots"]

FRONTIER_POINTS = 40  # compute values along the frontier for the plots' curves


@dataclass
class Downstream:
    fit: object | None  # orchestrator.fitting.downstream.fit.DownstreamFit (None: could not be fitted)
    data: object | None  # DownstreamData
    target: dict | None  # the sweep's target: compute, n_opt, d_opt
    predictions: list[dict] = field(default_factory=list)
    note: str = ""


def _has_evals(store) -> bool:
    return bool(store.list_files("evals"))


def downstream_for(store, sweep_fit, *, n_boot: int = 1000, seed: int = 0) -> Downstream | None:
    """The two-step fit of ``store``'s task evaluations with predictions at ``sweep_fit``'s target
    (None: the sweep evaluated no tasks)."""
    from orchestrator.fitting.downstream import downstream_data_from_results, fit_downstream, predict

    if not _has_evals(store):
        return None
    target = getattr(sweep_fit, "target", None)
    ok = target is not None and all(math.isfinite(float(target.get(k, math.nan))) for k in ("n_opt", "d_opt"))
    try:
        data = downstream_data_from_results(store)
        used = getattr(sweep_fit, "used", None)
        if used is not None and "trial_id" in used:  # the runs the loss law used: the baseline's, with variants
            ids = set(used["trial_id"].astype(str))
            data.frame = data.frame[data.frame["run"].astype(str).isin(ids)]
            if data.lm_runs is not None:
                data.lm_runs = data.lm_runs[data.lm_runs["run"].isin(ids)]
            if not len(data.frame):
                raise UserError("no task evaluations of the runs the loss law used")
        fit = fit_downstream(data, n_boot=n_boot, seed=seed)
    except (FitError, UserError) as e:
        return Downstream(None, None, None, note=f"Task predictions: none ({str(e).splitlines()[0]})")
    rows = predict(fit, [target["n_opt"]], [target["d_opt"]], [f"C={target['compute']:.3g}"]) if ok else []
    note = "" if ok else "Task predictions: the loss law has no compute-optimal point at the target to predict at"
    return Downstream(fit, data, dict(target) if ok else None, rows, note)


def lines(ds: Downstream | None) -> list[str]:
    """What ``fit`` prints about the tasks."""
    from orchestrator.fitting.downstream.text import describe, prediction_lines

    if ds is None:
        return []
    if ds.fit is None:
        return [ds.note]
    out = describe(ds.fit)
    if ds.predictions:
        t = ds.target
        out.append(f"Task predictions at the target C = {t['compute']:.3g} (N_opt = {t['n_opt']:.3g}, "
                   f"D_opt = {t['d_opt']:.3g}):")
        out += prediction_lines(ds.predictions, ds.fit.acc_scale)
    elif ds.note:
        out.append(ds.note)
    return out


def to_json(ds: Downstream | None) -> dict | None:
    from orchestrator.fitting.downstream.text import fit_json

    if ds is None:
        return None
    if ds.fit is None:
        return {"note": ds.note}
    return fit_json(ds.fit, ds.predictions) | {"target": ds.target}


# --- plots ----------------------------------------------------------------------------------------
def _frontier(sweep_fit, ds: Downstream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, N_opt, D_opt) along the loss law's frontier, over the runs and the target."""
    target = float(ds.target["compute"])
    lo = min(float(sweep_fit.used["flops"].min()), target) / 2
    hi = max(float(sweep_fit.used["flops"].max()), target) * 2
    cs = np.geomspace(lo, hi, FRONTIER_POINTS)
    opt = [sweep_fit.law.optimum(float(c)) for c in cs]
    n = np.array([o["n_opt"] for o in opt], float)
    d = np.array([o["d_opt"] for o in opt], float)
    keep = np.isfinite(n) & np.isfinite(d) & (n > 0) & (d > 0)
    return cs[keep], n[keep], d[keep]


def _step1(tf, ds, curve, ax) -> None:
    from workers.flops import train_flops

    td = tf.data
    c_runs = train_flops(td.n, td.d)
    ax.scatter(c_runs, td.loss, s=16, color="C0", zorder=3, label=f"final checkpoints ({len(td.runs)} runs)")
    cs, rows = curve
    if rows:
        est = np.array([r["task_loss"]["estimate"] for r in rows])
        lo = np.array([r["task_loss"]["80%"][0] for r in rows])
        hi = np.array([r["task_loss"]["80%"][1] for r in rows])
        ax.plot(cs, est, color="C1", lw=1.5, label="law along the compute-optimal frontier")
        ax.fill_between(cs, lo, hi, color="C1", alpha=0.2, label="80 % interval")
    ax.axvline(ds.target["compute"], color="gray", ls=":", lw=1, label="target")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, 6ND)")
    ax.set_ylabel("task loss (bits per byte of the correct answer)")
    ax.set_title(f"{tf.task}: step 1, task loss against compute", fontsize=10)
    ax.legend(fontsize=8)


def _step2(tf, ds, ax) -> None:
    td = tf.data
    s = ds.fit.acc_scale
    ax.scatter(td.x, td.y * s, s=6, alpha=0.35, color="C0", label=f"checkpoints ({len(td.x)})")
    xs = np.linspace(min(td.x.min(), td.x.max()) * 0.8, td.x.max() * 1.05, 120)
    ax.plot(xs, tf.sigmoid(xs) * s, color="C1", lw=1.5, label="fitted sigmoid")
    if tf.sig_draws is not None and len(tf.sig_draws):
        band = tf.sigmoid(np.broadcast_to(xs, (len(tf.sig_draws), len(xs))), tf.sig_draws)
        ax.fill_between(xs, np.nanpercentile(band, 10, axis=0) * s, np.nanpercentile(band, 90, axis=0) * s,
                        color="C1", alpha=0.2, label="80 % interval (resampled runs)")
    if td.chance is not None:
        ax.axhline(td.chance * s, color="black", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("task loss (bits per byte)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{tf.task}: step 2, accuracy against task loss", fontsize=10)
    ax.legend(fontsize=8)


def _chained(tf, ds, curve, ax) -> None:
    from workers.flops import train_flops

    td = tf.data
    s = ds.fit.acc_scale
    cs, rows = curve
    ax.scatter(train_flops(td.n, td.d), td.acc * s, s=16, color="C0", zorder=3, label="final checkpoints")
    if rows:
        est = np.array([r["accuracy"]["estimate"] for r in rows])
        for level, alpha in (("95%", 0.1), ("80%", 0.25)):
            ax.fill_between(cs, [r["accuracy"][level][0] for r in rows], [r["accuracy"][level][1] for r in rows],
                            color="C1", alpha=alpha, label=f"{level[:-1]} % interval")
        ax.plot(cs, est, color="C1", lw=1.5, label="two-step prediction along the frontier")
    for r in ds.predictions:
        if r["task"] == tf.task:
            a = r["accuracy"]
            ax.errorbar([ds.target["compute"]], [a["estimate"]], yerr=[[a["estimate"] - a["95%"][0]],
                        [a["95%"][1] - a["estimate"]]], fmt="o", color="C3", capsize=3, label="target (95 %)")
    if td.chance is not None:
        ax.axhline(td.chance * s, color="black", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, 6ND) at the compute-optimal N, D")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{tf.task}: chained, accuracy against compute", fontsize=10)
    ax.legend(fontsize=8)


def plots(sweep_fit, ds: Downstream | None) -> dict:
    """{name: draw(fit, ax)} of the task plots (empty without a fitted target)."""
    from orchestrator.fitting.downstream import predict

    if ds is None or ds.fit is None or ds.target is None:
        return {}
    cs, n, d = _frontier(sweep_fit, ds)
    rows = predict(ds.fit, n, d) if len(cs) else []
    out = {}
    for tf in ds.fit.tasks:
        mine = [r for r in rows if r["task"] == tf.task]
        curve = (cs, mine)
        # A task's name becomes part of a file name: a trainer may have written any text there.
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", tf.task)[:64]
        out[f"task_{slug}_step1"] = lambda f, ax, tf=tf, curve=curve: _step1(tf, ds, curve, ax)
        out[f"task_{slug}_step2"] = lambda f, ax, tf=tf: _step2(tf, ds, ax)
        out[f"task_{slug}_chained"] = lambda f, ax, tf=tf, curve=curve: _chained(tf, ds, curve, ax)
    return out
