"""Synthetic IsoFLOP sweeps from a known law, and how often the bootstrap's intervals cover it.

Helpers for bench/bench_fit.py and the fit's tests (tests/test_fit*.py import them from here);
not part of the installed package.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.fitting.bootstrap import bootstrap
from orchestrator.fitting.law import LawParams, compute_optimal, fit_approach3, optimal_allocation, predict_loss
from orchestrator.fitting import LEVELS
from workers.flops import tokens_for_budget

__all__ = ["synthetic_isoflop", "coverage"]


def synthetic_isoflop(law: LawParams, budgets, sizes: int, noise: float, seed: int, span: float = 1.5):
    """IsoFLOP runs (n, d, loss, budget) from a known law: ``sizes`` sizes per budget, log-spaced
    within a factor e^span of the law's N_opt, losses times exp(normal(0, noise))."""
    rng = np.random.default_rng(seed)
    rows = [(compute_optimal(law, c)["n_opt"] * math.exp(x), c) for c in budgets for x in np.linspace(-span, span, sizes)]
    n, budget = (np.array(v) for v in zip(*rows))
    d = tokens_for_budget(budget, n)
    return n, d, predict_loss(law, n, d) * np.exp(rng.normal(0.0, noise, len(n))), budget


def coverage(law: LawParams, seeds, *, budgets=(1e18, 1e19, 1e20, 1e21), sizes: int = 7, noise: float = 0.01,
             n_boot: int = 200, target_compute: float = 1e23) -> dict[float, dict[str, float]]:
    """{level: {quantity: fraction of ``seeds`` whose interval contains the true value}} for the
    law's parameters, a and b, and N_opt, D_opt and L* at ``target_compute``."""
    truth = {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta, "a": law.a, "b": law.b}
    truth.update(zip(("n_opt", "d_opt", "loss_opt"), (float(x) for x in optimal_allocation(
        law.E, law.A, law.B, law.alpha, law.beta, target_compute))))
    hits = {lv: dict.fromkeys(truth, 0) for lv in LEVELS}
    for seed in seeds:
        n, d, loss, _ = synthetic_isoflop(law, budgets, sizes, noise, seed)
        boot = bootstrap(n, d, loss, fit_approach3(n, d, loss), target_compute, n_boot=n_boot, seed=seed)
        for k, v in truth.items():
            iv = boot.interval(k)
            for lv in LEVELS:
                hits[lv][k] += iv.contains(v, lv)
    return {lv: {k: h / len(seeds) for k, h in hv.items()} for lv, hv in hits.items()}
