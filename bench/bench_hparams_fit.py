"""Benchmark of the hyperparameter-law fit (orchestrator.fitting.hparams) on simulated tuned sweeps.

    python -m bench.bench_hparams_fit               # 50 seeds of each design
    python -m bench.bench_hparams_fit --seeds 20

A world (shared/BENCHMARK.md, "Hyperparameter landscape"): Chinchilla's law T1, the Step Law's
optima lr* = 1.79 N^-0.713 D^0.307 and B* = 0.58 D^0.571 (one N, the total), log loss rising
as k_lr u^2 + k_B v^2 + k_x u v in u = ln(lr/lr*), v = ln(B/B*), seed noise of 0.002 nats, and
divergence (NaN) from 4x lr* with a probability rising log-linearly to 1 at 8x. Each design
point is searched as orchestrator.planning.tuning does (3 values a factor 2 apart around a
centre off by a random factor, extended until the best is interior, one refinement at the
vertex; for both axes lr, then batch, then lr again), or swept on a full 5 x 5 grid.

Measured, per design and over the seeds: |ln(hat / truth)| of lr* and B* at the target's
N_opt and D_opt (1e20 FLOPs; p50 and p90; the goal is p90 <= ln 1.25 = 0.223) and the share of
80 % intervals that cover the truth (goal 70-90 %); and the same for the law alone at a fixed
point past the largest budget (no N_opt uncertainty). The simulation is numpy only, and
tests/test_hparams.py uses it too.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pandas as pd

from workers.flops import tokens_for_budget, train_flops

T1 = (1.6934, 406.4, 410.7, 0.33917, 0.28491)  # (E, A, B, alpha, beta), Chinchilla's paper
LR = (1.79, -0.713, 0.307)  # (coef, n_exp, d_exp): the Step Law
BATCH = (0.58, 0.0, 0.571)
CURV = (0.0058, 0.0057, -0.0060)  # k_lr, k_b, k_x per ln^2
BUDGETS = (1e17, 4e17, 1.6e18, 6.4e18)
TARGET = 1e20


def power(rule, n, d):
    return rule[0] * np.asarray(n, float) ** rule[1] * np.asarray(d, float) ** rule[2]


def true_loss(n, d, law=T1):
    E, A, B, a, b = law
    return E + A / np.asarray(n, float) ** a + B / np.asarray(d, float) ** b


def n_opt(compute: float, law=T1) -> float:
    E, A, B, a, b = law
    g = (a * A / (b * B)) ** (1 / (a + b))
    return g * (compute / 6) ** (b / (a + b))


OUTLIERS = (0.0, 0.05, 0.3)  # (probability, low, high): a trial adds U(low, high) nats; shared/BENCHMARK.md's is 2 %


def observe(n, d, lr, batch, rng, noise=0.002, lr_rule=LR, batch_rule=BATCH, curv=CURV):
    """One trial's final loss (NaN: diverged)."""
    u = math.log(lr / power(lr_rule, n, d))
    v = math.log(batch / power(batch_rule, n, d))
    k_lr, k_b, k_x = curv
    loss = float(true_loss(n, d)) * math.exp(k_lr * u * u + k_b * v * v + k_x * u * v) + rng.normal(0, noise)
    p_div = min(max((u - math.log(4)) / math.log(2), 0.0), 1.0)
    jump = rng.uniform(OUTLIERS[1], OUTLIERS[2]) if OUTLIERS[0] and rng.random() < OUTLIERS[0] else 0.0
    return math.nan if rng.random() < p_div else loss + jump


def _line_search(tried: dict, axis: int, fixed: float, centre: float, f_obs, budget: int, factor=2.0):
    """One axis as orchestrator.planning.tuning searches it: 3 values, extend, refine once."""
    def key(v):
        return (v, fixed) if axis == 0 else (fixed, v)

    def line():
        pts = sorted((k[axis], y) for k, y in tried.items() if k[1 - axis] == fixed)
        return pts

    for v in (centre / factor, centre, centre * factor):
        if key(v) not in tried and len(tried) < budget:
            tried[key(v)] = f_obs(*key(v))
    refined = False
    while len(tried) < budget:
        pts = line()
        fin = [(v, y) for v, y in pts if math.isfinite(y)]
        if not fin:
            nxt = pts[0][0] / factor
        else:
            best = min(fin, key=lambda t: t[1])
            i = pts.index(best)
            if i == len(pts) - 1:
                nxt = best[0] * factor
            elif i == 0:
                nxt = best[0] / factor
            elif refined or not all(math.isfinite(pts[j][1]) for j in (i - 1, i + 1)):
                return best[0]
            else:
                x = np.log([pts[i - 1][0], best[0], pts[i + 1][0]])
                a, b, _ = np.polyfit(x, np.log([pts[i - 1][1], best[1], pts[i + 1][1]]), 2)
                refined = True
                vx = math.exp(-b / (2 * a)) if a > 0 else best[0]
                if min(abs(math.log(vx / v)) for v, _ in pts) <= 0.25 * math.log(factor):
                    return best[0]
                nxt = vx
        if key(nxt) in tried:
            break
        tried[key(nxt)] = f_obs(*key(nxt))
    fin = [(v, y) for v, y in line() if math.isfinite(y)]
    return min(fin, key=lambda t: t[1])[0] if fin else centre


def search_point(n, d, rng, mode="lr", guess=math.log(2.5), budget=None, noise=0.002) -> list[tuple]:
    """Trials (lr, batch, loss) of one point. ``mode``: "lr" (batch at B*), "both" (lr, batch, lr
    as the planner), "grid" (5 x 5, a factor 2 apart, around an off-centre guess)."""
    lr0 = float(power(LR, n, d)) * math.exp(rng.normal(0, guess))
    b0 = float(power(BATCH, n, d)) * math.exp(rng.normal(0, guess))
    def f_obs(lr, b):
        return observe(n, d, lr, b, rng, noise)
    tried: dict = {}
    if mode == "grid":
        for i in range(-2, 3):
            for j in range(-2, 3):
                tried[(lr0 * 2.0 ** i, b0 * 2.0 ** j)] = f_obs(lr0 * 2.0 ** i, b0 * 2.0 ** j)
    elif mode == "lr":
        _line_search(tried, 0, float(power(BATCH, n, d)), lr0, f_obs, budget or 8)
    else:
        cap = budget or 14
        lr1 = _line_search(tried, 0, b0, lr0, f_obs, cap)
        b1 = _line_search(tried, 1, lr1, b0, f_obs, cap)
        if b1 != b0:
            _line_search(tried, 0, b1, lr1, f_obs, cap)
    return [(lr, b, y) for (lr, b), y in tried.items()]


def tuned_sweep(seed: int, mode="lr", budgets=BUDGETS, sizes=(0.25, 0.5, 1.0, 2.0, 4.0), noise=0.002) -> pd.DataFrame:
    """A trials table of one simulated tuned IsoFLOP sweep (point_id shared by a point's trials)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in budgets:
        for s in sizes:
            n = n_opt(c) * s
            d = float(tokens_for_budget(c, n))
            pid = f"C{c:.2g}-N{n:.3g}"
            for k, (lr, b, y) in enumerate(search_point(n, d, rng, mode, noise=noise)):
                rows.append({"name": f"{pid}-t{k}", "point_id": pid, "status": "completed" if math.isfinite(y)
                             else "diverged", "n_params": n, "n_params_nonembed": None, "tokens": d,
                             "flops": train_flops(n, d), "budget": c, "lr": lr, "batch_tokens": b, "eval_loss": y})
    return pd.DataFrame(rows)


def law_coverage(seeds: int, mode="lr", n_boot=1000) -> dict:
    """The lr (and batch) law alone at a point past the largest budget: errors and coverage."""
    from orchestrator.fitting.hparams.optima import point_optima, trials_runs
    from orchestrator.fitting.hparams.tuned import fit_hparams

    c = BUDGETS[-1] * 10
    n0 = n_opt(c)
    d0 = float(tokens_for_budget(c, n0))
    out = {"lr": [], "batch": []}
    for s in range(seeds):
        runs = trials_runs(tuned_sweep(s, mode))
        h = fit_hparams(point_optima(runs), runs, n_boot=n_boot, seed=s, n_kind="total")
        h.recommend_at(n0, d0)
        _score(out, h, n0, d0)
    return {k: _stats(v) for k, v in out.items() if v}


def _score(out: dict, h, n0: float, d0: float) -> None:
    """Each recommendation's |ln error| and whether its 80 % interval covers the truth at (n0, d0)."""
    for what, rec, rule in (("lr", h.lr_opt, LR), ("batch", h.batch_opt, BATCH)):
        if rec is not None:
            truth = float(power(rule, n0, d0))
            lo, hi = rec["80%"]
            out[what].append((abs(math.log(rec["estimate"] / truth)), lo <= truth <= hi))


def target_coverage(seeds: int, mode="lr", n_boot=1000) -> dict:
    """lr* and B* recommended at the target's N_opt, D_opt (the whole tuned fit) against the
    truth at the true N_opt, D_opt."""
    from orchestrator.fitting.hparams.tuned import analyse_trials

    n0 = n_opt(TARGET)
    d0 = float(tokens_for_budget(TARGET, n0))
    out = {"lr": [], "batch": [], "n_opt": []}
    for s in range(seeds):
        fit = analyse_trials(tuned_sweep(s, mode), TARGET, n_boot=n_boot, seed=s, compare=False)
        h = fit.hparams
        iv = fit.intervals["n_opt"].bounds[0.80]
        out["n_opt"].append((abs(math.log(fit.target["n_opt"] / n0)), iv[0] <= n0 <= iv[1]))
        _score(out, h, n0, d0)
    return {k: _stats(v) for k, v in out.items() if v}


def _stats(v) -> dict:
    err = np.array([e for e, _ in v])
    return {"n": len(v), "p50": float(np.percentile(err, 50)), "p90": float(np.percentile(err, 90)),
            "cover80": float(np.mean([c for _, c in v]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--modes", default="lr,both,grid")
    ap.add_argument("--skip-target", action="store_true", help="the laws alone (seconds), not the whole fit")
    ap.add_argument("--outliers", type=float, default=0.0,
                    help="probability of an outlier trial, +U(0.05, 0.3) nats (shared/BENCHMARK.md: 0.02)")
    args = ap.parse_args()
    global OUTLIERS
    OUTLIERS = (args.outliers, *OUTLIERS[1:])
    for mode in args.modes.split(","):
        t0 = time.perf_counter()
        print(f"[{mode}] law alone at 10x the largest budget's N_opt: {law_coverage(args.seeds, mode)} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)
        if not args.skip_target:
            t0 = time.perf_counter()
            print(f"[{mode}] at the target C = {TARGET:.0e}: {target_coverage(args.seeds, mode)} "
                  f"({time.perf_counter() - t0:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
