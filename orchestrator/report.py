"""The report: PNG plots and one self-contained HTML page (images embedded) per sweep.

Plots follow the figures readers know from Hoffmann et al. (2022): IsoFLOP curves of loss
against N per budget (their Figure 3, left), loss against compute with the compute-optimal
frontier, and N_opt against C (Figure 3, centre). Axes carry units; N, D and C use log scales.
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on clusters without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.analysis import SweepFit, format_fit  # noqa: E402
from orchestrator.fit import compute_optimal, predict_loss  # noqa: E402
from workers.store import ResultStore  # noqa: E402

__all__ = ["write_report"]


def _isoflop(fit: SweepFit, ax) -> None:
    used, p = fit.used, fit.approach3.params
    budgets = sorted(b for b in used["budget"].unique() if b > 0)
    cmap = plt.get_cmap("viridis")
    for i, c in enumerate(budgets):
        color = cmap(i / max(1, len(budgets) - 1))
        pts = used[used["budget"] == c]
        ax.scatter(pts["n_params"], pts["eval_loss"], color=color, zorder=3, label=f"C = {c:.2g} FLOPs")
        n = np.geomspace(pts["n_params"].min() / 1.5, pts["n_params"].max() * 1.5, 100)
        ax.plot(n, predict_loss(p, n, c / (6 * n)), color=color, lw=1.2)
    for m in fit.minima:
        ax.scatter([m.n_opt], [m.loss], marker="*", s=160, color="black" if not m.at_edge else "red", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("IsoFLOP curves (lines: Approach 3 fit; stars: parabola minima)")
    ax.legend(fontsize=8)


def _frontier(fit: SweepFit, ax) -> None:
    used = fit.used
    sc = ax.scatter(used["flops"], used["eval_loss"], c=np.log10(used["n_params"]), cmap="plasma", s=22, zorder=3)
    plt.colorbar(sc, ax=ax, label="log10 N")
    c = np.geomspace(used["flops"].min() / 2, max(used["flops"].max() * 2, fit.target["compute"]), 100)
    front = [compute_optimal(fit.approach3.params, x)["loss"] for x in c]
    ax.plot(c, front, color="black", lw=1.5, label="compute-optimal frontier (Approach 3)")
    ax.scatter([fit.target["compute"]], [fit.target["loss"]], marker="x", color="red", s=80,
               label=f"target C = {fit.target['compute']:.2g}: L* = {fit.target['loss']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("training compute C (FLOPs, 6ND)")
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("Loss against compute")
    ax.legend(fontsize=8)


def _nopt(fit: SweepFit, ax) -> None:
    used = fit.used
    c = np.geomspace(used["flops"].min() / 2, max(used["flops"].max() * 2, fit.target["compute"]), 100)
    ax.plot(c, [compute_optimal(fit.approach3.params, x)["n_opt"] for x in c], color="black",
            label=f"Approach 3: a = {fit.approach3.params.a:.3f}")
    if fit.minima:
        ax.scatter([m.budget for m in fit.minima], [m.n_opt for m in fit.minima], color="tab:blue", zorder=3,
                   label="IsoFLOP minima (Approach 2)")
    if fit.approach2_law:
        g, a = fit.approach2_law
        ax.plot(c, g * c**a, color="tab:blue", ls="--", label=f"Approach 2: a = {a:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel("compute-optimal parameters N_opt")
    ax.set_title("Optimal model size against compute")
    ax.legend(fontsize=8)


PLOTS = {"isoflop": _isoflop, "frontier": _frontier, "n_opt": _nopt}


def write_report(store: ResultStore, trials: pd.DataFrame, fit: SweepFit, title: str) -> list[str]:
    """Write ``report/<plot>.png`` and ``report/index.html`` under the sweep; returns their paths."""
    store.fs.create_dir(f"{store.root}/report", recursive=True)
    images, written = {}, []
    for name, draw in PLOTS.items():
        fig, ax = plt.subplots(figsize=(7, 4.8), dpi=110)
        draw(fit, ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        images[name] = buf.getvalue()
        path = f"report/{name}.png"
        _write_bytes(store, path, images[name])
        written.append(f"{store.root}/{path}")
    cols = ["name", "status", "n_params", "tokens", "flops", "budget", "eval_loss", "train_loss", "wall_s"]
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
<pre>{html.escape(format_fit(fit))}</pre>
{figs}
<h2>Trials</h2>{table}
</body></html>"""
    _write_bytes(store, "report/index.html", page.encode())
    written.append(f"{store.root}/report/index.html")
    return written


def _write_bytes(store: ResultStore, rel: str, data: bytes) -> None:
    tmp = f"{store.root}/{rel}.tmp"
    with store.fs.open_output_stream(tmp) as out:
        out.write(data)
    store.fs.move(tmp, f"{store.root}/{rel}")
