"""From a trials table to the fitted law and the compute-optimal frontier.

Shared by ``scalesweep fit``, ``scalesweep report`` and the end of ``scalesweep run``, so the
three always agree. Failed and diverged trials are excluded and counted, never silently
dropped; N is the total parameter count (Chinchilla's convention) and D the trained tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.errors import UserError
from orchestrator.fit import (Approach3Fit, IsoFlopMinimum, compute_optimal, fit_approach3,
                              fit_isoflop_parabolas, power_law)
from workers.store import TrialStatus

__all__ = ["SweepFit", "analyse"]


@dataclass
class SweepFit:
    approach3: Approach3Fit
    minima: list[IsoFlopMinimum]
    approach2_law: tuple[float, float] | None  # (G, a) of N_opt = G C^a, when >= 2 budgets
    target: dict
    excluded: dict[str, int]
    used: pd.DataFrame = field(repr=False)

    def frontier(self, computes) -> list[dict]:
        return [compute_optimal(self.approach3.params, float(c)) for c in computes]

    def to_json(self) -> dict:
        p = self.approach3.params
        out = {
            "law": "L = E + A/N^alpha + B/D^beta",
            "params": {"E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta},
            "a": p.a,
            "b": p.b,
            "objective": self.approach3.objective,
            "n_trials": self.approach3.n_points,
            "excluded": self.excluded,
            "target": self.target,
            "approach2": {
                "minima": [m.__dict__ for m in self.minima],
                "a": self.approach2_law[1] if self.approach2_law else None,
                "G": self.approach2_law[0] if self.approach2_law else None,
            },
        }
        return out


def usable(trials: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Completed trials with a finite loss, and the count of each kind left out."""
    status = trials["status"].astype(str)
    excluded = {
        "failed": int((status == TrialStatus.FAILED.value).sum()),
        "diverged": int((status == TrialStatus.DIVERGED.value).sum()),
    }
    ok = trials[status == TrialStatus.COMPLETED.value]
    finite = np.isfinite(ok["eval_loss"].astype(float))
    excluded["non_finite_loss"] = int((~finite).sum())
    return ok[finite].copy(), excluded


def analyse(trials: pd.DataFrame, target_compute: float) -> SweepFit:
    used, excluded = usable(trials)
    if len(used) < 5:
        raise UserError(
            f"fit: Approach 3 needs at least 5 completed trials; have {len(used)} "
            f"(excluded: {', '.join(f'{v} {k}' for k, v in excluded.items() if v) or 'none'})"
        )
    n, d, loss = used["n_params"].astype(float), used["tokens"].astype(float), used["eval_loss"].astype(float)
    a3 = fit_approach3(n.values, d.values, loss.values)
    minima = []
    if "budget" in used and (used["budget"] > 0).any():
        iso = used[used["budget"] > 0]
        minima = fit_isoflop_parabolas(iso["budget"].values, iso["n_params"].values, iso["eval_loss"].values)
    law2 = None
    if len(minima) >= 2:
        law2 = power_law([m.budget for m in minima], [m.n_opt for m in minima])
    target = compute_optimal(a3.params, target_compute)
    return SweepFit(a3, minima, law2, target, excluded, used)


def si(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_fit(fit: SweepFit) -> str:
    """Human-readable summary printed by ``run`` and ``fit``."""
    p, a3 = fit.approach3.params, fit.approach3
    lines = [
        f"Fitted law (Approach 3, {a3.n_points} trials, Huber objective {a3.objective:.4g}):",
        f"  L(N, D) = {p.E:.4f} + {p.A:.4g} / N^{p.alpha:.4f} + {p.B:.4g} / D^{p.beta:.4f}",
        f"  N_opt ∝ C^a with a = {p.a:.3f};  D_opt ∝ C^b with b = {p.b:.3f}",
    ]
    skipped = {k: v for k, v in fit.excluded.items() if v}
    if skipped:
        lines.append("  excluded: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
    if fit.minima:
        lines.append("IsoFLOP minima (Approach 2, parabola in log N):")
        for m in fit.minima:
            edge = "  <- at the edge of the swept sizes" if m.at_edge else ""
            lines.append(f"  C={m.budget:.3g}: N_opt={si(m.n_opt)} D_opt={si(m.d_opt)} loss={m.loss:.4f}{edge}")
        if fit.approach2_law:
            lines.append(f"  Approach 2 exponent a = {fit.approach2_law[1]:.3f}")
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
