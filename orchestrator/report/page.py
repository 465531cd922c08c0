"""The report: PNG plots and one self-contained HTML page (images embedded) per sweep.

Plots follow the figures readers know from Hoffmann et al. (2022): IsoFLOP curves of loss
against N per budget (their Figure 3, left), loss against compute with the compute-optimal
frontier and its 80 % band, N_opt and D_opt against C for Approaches 2 and 3 (Figure 3,
centre and right); then residuals with the flagged runs, the order in which points were run
(the planner's choices), and FLOPs spent over time. A tuned sweep (orchestrator.fitting.hparams)
adds loss against learning rate per design point with each point's fitted optimum, and lr* (and
B*) against N and D with their fitted laws. Axes carry units; N, D and C use log scales.
"""

from __future__ import annotations

import base64
import html
import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on clusters without a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.errors import UserError  # noqa: E402
from orchestrator.fitting.analysis import SweepFit  # noqa: E402
from orchestrator.report.text import format_fit, si  # noqa: E402
from workers.flops import tokens_for_budget  # noqa: E402
from workers.store import ResultStore  # noqa: E402

__all__ = ["write_report"]


MAX_LEGEND_BUDGETS = 10  # more budgets than this get a colour bar instead of a legend entry each
MAX_CURVES = 12  # fitted curves drawn at most (every k-th budget past that): 60 curves are a smear


def _law_at(fit: SweepFit, n, d) -> np.ndarray:
    """The fitted form's loss at (N, D), fresh data (U = D) where the form reads U."""
    n, d = np.broadcast_arrays(np.asarray(n, float), np.asarray(d, float))
    return fit.law.predict({"N": n, "D": d, "U": d})


def _isoflop(fit: SweepFit, ax) -> None:
    used = fit.used
    budgets = sorted(b for b in used["budget"].unique() if b > 0)
    cmap = plt.get_cmap("viridis")
    many = len(budgets) > MAX_LEGEND_BUDGETS
    every = max(1, -(-len(budgets) // MAX_CURVES))
    norm = plt.Normalize(math.log10(budgets[0]), math.log10(budgets[-1])) if budgets else None
    for i, c in enumerate(budgets):
        color = cmap(norm(math.log10(c)) if norm and len(budgets) > 1 else 0.0)
        pts = used[used["budget"] == c]
        ax.scatter(pts["n_params"], pts["eval_loss"], color=color, zorder=3, s=8 if many else 30,
                   label=None if many else f"C = {c:.2g} FLOPs")
        if i % every == 0 or i == len(budgets) - 1:
            n = np.geomspace(pts["n_params"].min() / 1.5, pts["n_params"].max() * 1.5, 100)
            ax.plot(n, _law_at(fit, n, tokens_for_budget(c, n)), color=color, lw=1.2)
    for m in fit.minima:
        ax.scatter([m.n_opt], [m.loss], marker="*", s=60 if many else 160, color="black" if not m.at_edge else "red",
                   zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("held-out loss (nats/token)")
    shown = f", every {every}th budget's" if every > 1 else ""
    ax.set_title(f"IsoFLOP curves (lines: {_law_name(fit)} fit{shown}; stars: parabola minima)", fontsize=10)
    if many:
        plt.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="log10 C (FLOPs per trial)")
    elif budgets:
        ax.legend(fontsize=8)


def _frontier(fit: SweepFit, ax) -> None:
    used = fit.used
    sc = ax.scatter(used["flops"], used["eval_loss"], c=np.log10(used["n_params"]), cmap="plasma", s=22, zorder=3)
    plt.colorbar(sc, ax=ax, label="log10 N")
    c = _compute_axis(fit)
    front = [fit.law.optimum(x)["loss"] for x in c]
    ax.plot(c, front, color="black", lw=1.5, label=f"compute-optimal frontier ({_law_name(fit)})")
    band = _band(fit, c, 2)
    if band is not None:
        ax.fill_between(c, band[0], band[1], color="gray", alpha=0.3, label="80 % bootstrap band")
    ax.scatter([fit.target["compute"]], [fit.target["loss"]], marker="x", color="red", s=80,
               label=f"target C = {fit.target['compute']:.2g}: L* = {fit.target['loss']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, 6ND)")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("Loss against compute")
    ax.legend(fontsize=8)


def _compute_axis(fit: SweepFit) -> np.ndarray:
    used = fit.used
    return np.geomspace(used["flops"].min() / 2, max(used["flops"].max() * 2, fit.target["compute"]), 100)


def _law_name(fit: SweepFit) -> str:
    return "Approach 3" if fit.law.form.name == "chinchilla" else f"{fit.law.form.name} form"


def _band(fit: SweepFit, computes: np.ndarray, which: int):
    """10th and 90th percentiles over the bootstrap draws of N_opt (0), D_opt (1) or L* (2)."""
    b = fit.bootstrap
    if b is None or b.laws is None or not len(b.laws):
        return None
    lo, hi = [], []
    with np.errstate(all="ignore"):
        for c in computes:
            x = fit.law.form.optimum(b.laws, c)[which]
            x = x[np.isfinite(x)]
            if not len(x):
                return None
            lo.append(np.percentile(x, 10))
            hi.append(np.percentile(x, 90))
    return np.array(lo), np.array(hi)


def _allocation(fit: SweepFit, ax, which: int) -> None:
    """N_opt (which=0) or D_opt (which=1) against C: Approach 3 with its band, Approach 2."""
    key, label = ("n_opt", "parameters N_opt") if which == 0 else ("d_opt", "tokens D_opt")
    c = _compute_axis(fit)
    exponent = fit.intervals.get("a" if which == 0 else "b")
    shown = f": {'a' if which == 0 else 'b'} = {exponent.estimate:.3f}" if exponent is not None else ""
    ax.plot(c, [fit.law.optimum(x)[key] for x in c], color="black", label=f"{_law_name(fit)}{shown}")
    band = _band(fit, c, which)
    if band is not None:
        ax.fill_between(c, band[0], band[1], color="gray", alpha=0.3, label="80 % bootstrap band")
    if fit.minima:
        ax.scatter([m.budget for m in fit.minima], [getattr(m, key) for m in fit.minima], color="tab:blue", zorder=3,
                   label="IsoFLOP minima (Approach 2)")
    a2 = fit.approach2
    if a2 is not None:
        law = a2.n_law if which == 0 else a2.d_law
        ax.plot(c, law(c), color="tab:blue", ls="--", label=f"Approach 2: {'a' if which == 0 else 'b'} = "
                f"{(a2.a if which == 0 else a2.b):.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(f"compute-optimal {label}")
    ax.set_title(f"Optimal {'model size' if which == 0 else 'data'} against compute")
    ax.legend(fontsize=8)


def _residuals(fit: SweepFit, ax) -> None:
    used = fit.used
    resid = used["eval_loss"].to_numpy(float) - fit.law.predict(fit.fit_inputs)
    ax.axhline(0, color="black", lw=0.8)
    sc = ax.scatter(used["flops"], resid, c=np.log10(used["n_params"]), cmap="plasma", s=22, zorder=3)
    plt.colorbar(sc, ax=ax, label="log10 N")
    mask = np.zeros(len(used), bool)
    mask[[o["row"] for o in fit.outliers]] = True  # rows of fit.used: names need not be unique
    if mask.any():
        ax.scatter(used["flops"][mask], resid[mask], s=120, facecolors="none", edgecolors="red", zorder=4,
                   label=f"flagged: |residual| > 3 local sigma ({int(mask.sum())})")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("observed - fitted loss (nats/token)")
    ax.set_title(f"Residuals of the {_law_name(fit)} fit")


def _order(fit: SweepFit, ax) -> None:
    used = fit.used
    timed = "finished_at" in used and used["finished_at"].notna().all()
    if timed:
        used = used.sort_values("finished_at")
        sc = ax.scatter(used["n_params"], used["tokens"], c=np.arange(len(used)), cmap="viridis", s=24, zorder=3)
        plt.colorbar(sc, ax=ax, label="order finished (0 = first)")
    else:  # results from before finish times were recorded
        ax.scatter(used["n_params"], used["tokens"], color="tab:blue", s=24, zorder=3, label="runs (order not recorded)")
    c = np.geomspace(used["flops"].min(), max(used["flops"].max(), fit.target["compute"]), 50)
    path = [fit.law.optimum(x) for x in c]
    ax.plot([p["n_opt"] for p in path], [p["d_opt"] for p in path], color="black", lw=1,
            label="fitted compute-optimal path")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("tokens D")
    ax.set_title("Where and in which order points were run")
    ax.legend(fontsize=8)


def _flops_over_time(fit: SweepFit, ax) -> None:
    used = fit.used if fit.spent_rows is None else fit.spent_rows  # with reuse: branches and stems
    if "finished_at" not in used or used["finished_at"].isna().all():
        ax.text(0.5, 0.5, "no finish times recorded", ha="center", transform=ax.transAxes)
        return
    t = used.dropna(subset=["finished_at"]).sort_values("finished_at")
    minutes = (t["finished_at"] - t["finished_at"].min() + t["wall_s"].iloc[0]) / 60.0
    ax.step(minutes, t["flops"].cumsum(), where="post", color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("wall time since the first trial finished (minutes)")
    ax.set_ylabel("training FLOPs spent (cumulative)")
    ax.set_title("FLOPs spent over time")


def _held_out(fit: SweepFit, ax) -> None:
    """The extrapolation check: each held-out run's observed loss against the refit's prediction,
    with its 80 % and 95 % predictive intervals."""
    h = fit.holdout
    if h is None or h.bounds is None:
        why = fit.unavailable.get("extrapolation", "the extrapolation check did not run")
        ax.text(0.5, 0.5, why[:90], ha="center", transform=ax.transAxes, fontsize=8, wrap=True)
        return
    pred = h.observed + h.errors
    for lv, color in ((0.95, "lightgray"), (0.80, "gray")):
        lo, hi = h.bounds[lv]
        ax.errorbar(h.observed, pred, yerr=[pred - lo, hi - pred], fmt="none", ecolor=color, elinewidth=3 if lv < 0.9 else 1.5,
                    label=f"{round(100 * lv)} % predictive interval")
    outside = np.abs(h.z) > 1.96
    ax.scatter(h.observed[~outside], pred[~outside], color="tab:blue", zorder=3, s=24, label="held-out run")
    if outside.any():
        ax.scatter(h.observed[outside], pred[outside], color="red", zorder=4, s=30, label="outside its 95 % interval")
    lim = [min(h.observed.min(), np.min(h.bounds[0.95][0])), max(h.observed.max(), np.max(h.bounds[0.95][1]))]
    ax.plot(lim, lim, color="black", lw=0.8)
    ax.set_xlabel("observed loss (nats/token)")
    ax.set_ylabel("predicted by the refit without them")
    ax.set_title(f"Held-out runs (C >= {h.threshold:.2g}): {_law_name(fit)} refit's predictions", fontsize=10)
    ax.legend(fontsize=8)


def _panels(ax, k: int, width: float = 11.0, height: float = 3.4):
    """``k`` axes in place of ``ax`` (a plot of several panels), at most 3 a row."""
    fig = ax.figure
    ax.remove()
    cols = min(k, 3) if k != 4 else 2
    rows = -(-k // cols)
    fig.set_size_inches(width, height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for extra in axes[k:]:
        extra.remove()
    return list(axes[:k])


MAX_LR_PANELS = 6


def _lr_loss(fit: SweepFit, ax) -> None:
    """Loss against learning rate at each design point (one panel per budget, or per N in a
    grid), at the point's best batch, with the point's fitted optimum: a star (open where the
    optimum is not bracketed); diverged trials as crosses along the top."""
    h = fit.hparams
    runs, pts = h.runs, {p.point: p for p in h.points}
    by_budget = bool((runs["budget"] > 0).any())
    key = runs["budget"] if by_budget else runs["n_total"].round(-1)
    groups = sorted(key.unique())
    if len(groups) > MAX_LR_PANELS:
        groups = [groups[i] for i in np.linspace(0, len(groups) - 1, MAX_LR_PANELS).round().astype(int)]
    axes = _panels(ax, len(groups))
    lo, hi = np.log10(runs["n_total"].min()), np.log10(runs["n_total"].max())
    cmap = plt.get_cmap("plasma")
    for a, g in zip(axes, groups):
        sub = runs[key == g]
        top = np.nanmax(sub["loss"]) if sub["loss"].notna().any() else 1.0
        for pid, r in sub.groupby("point"):
            p = pts[pid]
            color = cmap(0.85 * (np.log10(p.n_total) - lo) / (hi - lo) if hi > lo else 0.0)
            ok = r[r["loss"].notna() & (r["status"] == "completed")]
            if len(ok) and p.batch_opt is not None:  # the row of the best trial's batch
                ok = ok[np.isclose(ok["batch"], ok.loc[ok["loss"].idxmin(), "batch"])]
            ok = ok.sort_values("lr")
            a.plot(ok["lr"], ok["loss"], "o-", color=color, ms=3, lw=1, label=f"N={si(p.n_total)} D={si(p.d)}")
            div = r[r["loss"].isna()]
            a.scatter(div["lr"], np.full(len(div), top), marker="x", color=color, s=25)
            if np.isfinite(p.lr_opt) and np.isfinite(p.loss_opt):
                a.scatter([p.lr_opt], [p.loss_opt], marker="*", s=120, zorder=4, edgecolors=color,
                          facecolors=color if p.lr_bracketed else "none")
        a.set_xscale("log")
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # a 4x range: minor labels collide
        a.set_xlabel("learning rate")
        a.set_ylabel("held-out loss (nats/token)")
        a.set_title(f"C = {g:.2g} FLOPs" if by_budget else f"N = {si(g)}", fontsize=9)
        if sub["point"].nunique() <= 6:
            a.legend(fontsize=6)
    axes[0].figure.suptitle("Loss against learning rate per design point (stars: fitted optima, open: not "
                            "bracketed; x: diverged)", fontsize=10)


def _hparam_laws(fit: SweepFit, ax) -> None:
    """lr* (and B*) against N and against D with the fitted law: each panel shows the optimum
    divided by the other variable's power (a partial plot), so the law is one line in it."""
    h = fit.hparams
    laws = [(w, law) for w, law in (("lr", h.lr_law), ("batch", h.batch_law)) if law is not None]
    if not laws:
        ax.text(0.5, 0.5, "no hyperparameter law fitted", ha="center", transform=ax.transAxes)
        return
    axes = _panels(ax, 2 * len(laws), width=10.0, height=3.8)
    label = {"lr": "lr*", "batch": "B* (tokens)"}
    for (what, law), pair in zip(laws, np.reshape(axes, (-1, 2))):
        opt = [(p, p.lr_opt if what == "lr" else p.batch_opt, p.lr_bracketed if what == "lr" else p.batch_bracketed)
               for p in h.points]
        opt = [(p, v, b) for p, v, b in opt if v is not None and np.isfinite(v)]
        for a, var in zip(pair, ("n", "d")):
            other, j = ("d", 2) if var == "n" else ("n", 1)
            x = np.array([getattr(p, var) for p, _, _ in opt])
            y = np.array([v / getattr(p, other) ** law.beta[j] for p, v, _ in opt])
            used = np.array([b for _, _, b in opt], bool)
            dropped = np.array([p.point in {law.points[i] for i in law.dropped if i < len(law.points)}
                                for p, _, _ in opt], bool)
            used &= ~dropped
            a.scatter(x[used], y[used], color="tab:blue", s=18, zorder=3, label="bracketed optima")
            if dropped.any():
                a.scatter(x[dropped], y[dropped], marker="x", color="red", s=30, zorder=4, label="outliers (left out)")
            if (~used & ~dropped).any():
                a.scatter(x[~used & ~dropped], y[~used & ~dropped], facecolors="none", edgecolors="gray", s=18,
                          label="not bracketed (left out)")
            xs = np.geomspace(x.min() / 1.5, max(x.max(), h.at.get(var, 0)) * 1.5, 60)
            k = 1 if var == "n" else 2
            a.plot(xs, np.exp(law.beta[0] + law.beta[k] * np.log(xs)), color="black", lw=1.2,
                   label=f"{law.formula()}")
            # Each draw at the points' typical value of the other variable, divided out as the
            # points are: the band then carries the draws' covariance of coef with both exponents.
            ref = float(np.mean(np.log([getattr(p, other) for p, _, _ in opt])))
            with np.errstate(over="ignore"):
                band = np.exp(law.draws[:, [0]] + law.draws[:, [k]] * np.log(xs)[None, :]
                              + (law.draws[:, [j]] - law.beta[j]) * ref)
            a.fill_between(xs, *np.percentile(band, [10, 90], axis=0), color="gray", alpha=0.3, label="80 % band")
            a.set_xscale("log")
            a.set_yscale("log")
            a.set_xlabel("non-embedding parameters N" if var == "n" and h.n_kind == "nonembed"
                         else ("parameters N" if var == "n" else "tokens D"))
            a.set_ylabel(label[what] + (f" / {other.upper()}^{law.beta[j]:.3f}" if law.beta[j] else ""))
            a.legend(fontsize=6)
    axes[0].figure.suptitle("Hyperparameter laws (each panel divides out the other variable's fitted power)",
                            fontsize=10)


PLOTS = {
    "isoflop": _isoflop,
    "frontier": _frontier,
    "n_opt": lambda fit, ax: _allocation(fit, ax, 0),
    "d_opt": lambda fit, ax: _allocation(fit, ax, 1),
    "residuals": _residuals,
    "held_out": _held_out,
    "order": _order,
    "flops_over_time": _flops_over_time,
}


def write_report(store: ResultStore, trials: pd.DataFrame, fit: SweepFit, title: str, variants=None,
                 downstream=None, cost=None) -> list[str]:
    """Write ``report/<plot>.png`` and ``report/index.html`` under the sweep; returns their paths.
    ``fit`` is the baseline's when ``variants`` (an orchestrator.fitting.variants.VariantComparison)
    compares the sweep's variants: their frontiers and multipliers get plots of their own.
    ``downstream`` (orchestrator.report.downstream.Downstream): the tasks' two-step predictions,
    with three plots per task. ``cost`` (orchestrator.results.cost.results_cost): the sweep's
    totals and the target run's projection. UserError, naming the directory, when the sweep's results cannot be written to (nothing
    there is changed: every file is drawn first and written atomically)."""
    from orchestrator.report import downstream as task_plots
    from orchestrator.report import variants as variant_plots
    from orchestrator.results.cost import cost_lines

    images = {}
    tuned = {"lr_loss": _lr_loss, "hparam_laws": _hparam_laws} if getattr(fit, "hparams", None) is not None else {}
    compared = {} if variants is None else {k: (lambda f, ax, draw=draw: draw(variants, ax))
                                            for k, draw in variant_plots.PLOTS.items()}
    for name, draw in (compared | PLOTS | tuned | task_plots.plots(fit, downstream)).items():
        fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
        draw(fit, ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        images[name] = buf.getvalue()
    cols = ["name", "status", "n_params", "tokens", "flops", "budget", "eval_loss", "train_loss", "wall_s",
            "tokens_per_s", "energy_j"]
    if tuned:
        cols[-4:-4] = ["lr", "batch_tokens"]
    if variants is not None:
        cols.insert(0, "variant")
    table = trials[[c for c in cols if c in trials]].sort_values(["budget", "n_params"]).to_html(
        index=False, float_format=lambda x: f"{x:.4g}", border=0)
    figs = "\n".join(
        f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(b).decode()}"></figure>'
        for n, b in images.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} img{{max-width:100%}}
table{{border-collapse:collapse;font-size:13px}} td,th{{padding:2px 8px;text-align:right}}
pre{{background:#f6f6f6;padding:1em}}</style></head><body>
<h1>scalesweep report: {html.escape(title)}</h1>
{"" if variants is None else variant_plots.comparison_html(variants)}
<pre>{html.escape(format_fit(fit))}</pre>
{"" if downstream is None else "<h2>Tasks</h2><pre>" + html.escape(chr(10).join(task_plots.lines(downstream))) + "</pre>"}
{"" if cost is None else "<h2>Cost</h2><pre>" + html.escape(chr(10).join(cost_lines(cost))) + "</pre>"}
{figs}
<h2>Trials</h2>{table}
</body></html>"""
    files = {f"report/{name}.png": data for name, data in images.items()} | {"report/index.html": page.encode()}
    try:
        for path, data in files.items():
            store.write_bytes(path, data)
    except OSError as e:  # a read-only mount, permissions, a full disk, refused credentials
        reason = e.strerror or str(e).splitlines()[0]
        raise UserError(f"{store.root}/report: cannot write the report ({reason}; expected a writable "
                        "results directory)") from None
    return [f"{store.root}/{path}" for path in files]

