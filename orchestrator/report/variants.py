"""The report's plots of a sweep with variants (orchestrator.fitting.variants): every variant's
runs and compute-optimal frontier with its 80 % band on one axis, and each variant's compute
multiplier k against C with its 80 % and 95 % bands (k < 1: the variant needs less compute for
the baseline's loss; where the band crosses 1 the frontiers may cross)."""

from __future__ import annotations

import html

import numpy as np

__all__ = ["PLOTS", "comparison_html"]


def _axis(comparison) -> np.ndarray:
    """Compute (or N, for a law of N alone) from the smallest run to 10x past the target."""
    col = "flops" if comparison.key == "C" else "n_params"
    lo = min(float(f.used[col].min()) for f in comparison.fits.values())
    return np.geomspace(lo / 2, max(lo * 10, comparison.target * 10), 80)


def _label(comparison) -> str:
    return "training compute C (FLOPs, 6ND)" if comparison.key == "C" else "parameters N"


def frontiers(comparison, ax) -> None:
    xs = _axis(comparison)
    col = "flops" if comparison.key == "C" else "n_params"
    curves = comparison.frontiers(xs)
    for i, (name, fit) in enumerate(comparison.fits.items()):
        colour = f"C{i}"
        ax.scatter(fit.used[col], fit.used["eval_loss"], s=14, color=colour, alpha=0.6, zorder=3)
        est, lo, hi = curves[name]
        ax.plot(xs, est, color=colour, lw=1.5, label=f"{name} ({len(fit.used)} runs)")
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15)
    ax.axvline(comparison.target, color="gray", ls=":", lw=1, label=f"target {comparison.target:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel(_label(comparison))
    ax.set_ylabel("held-out loss (nats/token)")
    # Each variant's own fit: the multiplier may come from the joint fit (shared exponents), whose
    # frontiers differ a little; the multiplier plot is that model's.
    ax.set_title(("Compute-optimal frontiers" if comparison.key == "C" else "Fitted L(N)")
                 + " by variant, each fitted alone (80 % bands)", fontsize=10)
    ax.legend(fontsize=8)


def multipliers(comparison, ax) -> None:
    xs = _axis(comparison)
    order = list(comparison.fits)  # the frontier plot's colours
    for name, result in comparison.results.items():
        curve = comparison.multiplier_curve(xs, name)
        colour = f"C{order.index(name)}"
        est = curve["estimate"]
        ax.plot(xs, est, color=colour, lw=1.5, label=f"{name} vs {comparison.baseline} ({result.model.value} fit)")
        ax.fill_between(xs, curve["lo80"], curve["hi80"], color=colour, alpha=0.25)
        ax.fill_between(xs, curve["lo95"], curve["hi95"], color=colour, alpha=0.1)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axvline(comparison.target, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_label(comparison))
    what = "compute" if comparison.key == "C" else "parameter"
    ax.set_ylabel(f"{what} multiplier k (< 1: a gain)")
    ax.set_title(f"{what.capitalize()} multiplier against {comparison.key}, 80 % and 95 % bands")
    ax.legend(fontsize=8)


PLOTS = {"variant_frontiers": frontiers, "variant_multiplier": multipliers}


def comparison_html(comparison) -> str:
    return f"<h2>Variants</h2><pre>{html.escape(chr(10).join(comparison.lines()))}</pre>"
