"""Variants: are the compute multipliers, their intervals, crossovers and the joint-vs-separate
choice right on planted pairs of worlds?

Each pair is a baseline world and a variant world (Chinchilla laws; PAIRS below) under the noise
of shared/BENCHMARK.md (default seed-noise tier, a 0.02-nat residual field over 0.7 decades, 2 %
outliers). Each variant is a different model, so it has a residual field of its own: its world
seed differs from the baseline's (``--shared-field`` pairs, marked so, share the baseline's
field and differ only in seed noise and outliers). Both are swept with the grid baseline of
BENCHMARK.md (9 budgets 1e15-1e19 half a decade apart, 9 sizes each), sampled without Ray, and
compared by orchestrator.fitting.variants.compare_variants (Approach 3, ``--boot`` resamples,
analyse's extrapolation check off: the comparison runs its own). The truth is the true laws'
multiplier, trend and crossover (the same functions, orchestrator.fitting.variants.frontiers).

    python -m bench.bench_variants --seeds 50 --boot 200 --jobs 2    # docs/variants_bench.json

Metrics per pair (over seeds): coverage of the true k at 1e20 and 1e21 by the 80 % and 95 %
intervals of the chosen model (and of each model alone), median |ln k_hat - ln k|, median
80 % width of ln k, the joint model's choice rate, crossover detection (the comparison says
the frontiers cross within 1000x of the target: Crossover.detected) where one exists and
false crossovers where none does (and how often the fitted frontiers alone cross), coverage
of the true crossover by its 80 % interval where detected, and wall time per comparison.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from bench.bench_planner import grid_sizes
from bench.worlds import VISIBLE_LAWS
from bench import record

TARGETS = (1e20, 1e21)
NOISE = {"tier": "default", "residual_amplitude": 0.02, "residual_length_scale": 0.7, "outlier_prob": 0.02}


def scaled(law, k_n: float = 1.0, k_d: float = 1.0, dE: float = 0.0, dalpha: float = 0.0, dbeta: float = 0.0,
           fA: float = 1.0, fB: float = 1.0):
    """A variant of ``law``: N worth 1/k_n and D worth 1/k_d times as much (a constant compute
    multiplier k_n k_d when nothing else changes), E shifted, exponents shifted, A and B scaled."""
    E, A, B, al, be = law
    return (E + dE, A * fA * k_n ** al, B * fB * k_d ** be, al + dalpha, be + dbeta)


T0, T1, T2 = (VISIBLE_LAWS[k] for k in ("T0", "T1", "T2"))
# name -> (baseline law, variant law, whether the variant shares the baseline's residual field)
PAIRS = {
    "T0 k=0.7": (T0, scaled(T0, 0.7 ** 0.5, 0.7 ** 0.5), False),  # constant multiplier, same exponents and E
    "T0 k=1.3": (T0, scaled(T0, 1.3 ** 0.5, 1.3 ** 0.5), False),
    "T0 alpha+0.05": (T0, scaled(T0, dalpha=0.05, fA=3.0), False),  # slopes differ: crosses at 1.3e21
    "T0 E+0.04": (T0, scaled(T0, 0.5 ** 0.5, 0.5 ** 0.5, dE=0.04), False),  # better early, worse late: 7.1e21
    "T1 data k=0.5": (T1, scaled(T1, k_d=0.5), False),  # data efficiency only
    "T2 beta+0.05": (T2, scaled(T2, dbeta=0.05, fB=2.7), False),  # crosses at 8.5e17, below the target
    "T0 k=0.7 shared field": (T0, scaled(T0, 0.7 ** 0.5, 0.7 ** 0.5), True),
}


def world(law, seed: int):
    from workers.config import LawConfig, NoiseConfig, WorldConfig
    from workers.simulated.world import World

    return World(WorldConfig(law=LawConfig.of(law), noise=NoiseConfig(**NOISE), seed=seed))


def grid_table(law, world_seed: int, name: str, key0: int = 0) -> pd.DataFrame:
    """The BENCHMARK.md grid of one world, as a trials table of variant ``name``."""
    w = world(law, world_seed)
    rows = [(n, c) for c, sizes in grid_sizes().items() for n in sizes]
    n, budget = (np.array(v) for v in zip(*rows))
    d = budget / (6 * n)
    loss = np.array([w.observe(float(a), float(b), key=key0 + i) for i, (a, b) in enumerate(zip(n, d))])
    return pd.DataFrame({"name": [f"{name}-{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                         "tokens": d, "flops": 6 * n * d, "budget": budget, "eval_loss": loss, "variant": name})


def vec(law) -> np.ndarray:
    E, A, B, al, be = law
    return np.array([math.log(A), math.log(B), math.log(E), al, be])


def truth(base, var) -> dict:
    from orchestrator.fitting.forms.builtin import Chinchilla
    from orchestrator.fitting.variants.frontiers import frontier, log_crossover, quantities

    fb, fv = (frontier(Chinchilla(), vec(x), TARGETS[0]) for x in (base, var))
    q = quantities(fb, fv, TARGETS[0])[0]
    k21 = float(np.exp(quantities(fb, fv, TARGETS[1])[0, 0]))
    lc = float(log_crossover(fb, fv, TARGETS[0])[0])
    return {"k": float(np.exp(q[0])), "k_1e21": k21, "trend": float(q[3]),
            "crossover": math.exp(lc) if math.isfinite(lc) else None}


def run_one(args) -> dict:
    pair, seed, n_boot = args
    from threadpoolctl import threadpool_limits

    from orchestrator.fitting.variants import compare_variants

    base, var, shared = PAIRS[pair]
    t0 = time.perf_counter()
    table = pd.concat([grid_table(base, seed, "baseline"),
                       grid_table(var, seed if shared else 100_000 + seed, "variant", key0=10_000)])
    with threadpool_limits(1, user_api="blas"):
        vc = compare_variants(table, TARGETS[0], n_boot=n_boot, seed=seed, extrapolation=False)
    r = vc.results["variant"]
    tr = truth(base, var)
    out = {"pair": pair, "seed": seed, "model": r.model.value, "exponent_p": r.choice.exponent_p,
           "excess_z": r.choice.excess / r.choice.excess_se if r.choice.excess_se else None,
           "cross_at": r.crossover.at, "cross_detected": r.crossover.detected, "p_cross": r.crossover.p_cross,
           "true": tr}
    cross_iv = r.crossover.interval
    out["cross_cover80"] = (None if tr["crossover"] is None or cross_iv is None or not r.crossover.detected
                            else bool(cross_iv.contains(tr["crossover"], 0.8)))
    out["trend"] = r.trend.estimate
    out["trend_cover80"] = bool(r.trend.contains(tr["trend"], 0.8))
    for label, model in (("chosen", None), *((m.value, m) for m in r.pairs)):
        for c, iv in zip(TARGETS, vc.multiplier_at(list(TARGETS), model=model)):
            true = tr["k"] if c == TARGETS[0] else tr["k_1e21"]
            lo80, hi80 = iv.bounds[0.8]
            out[f"{label}_{c:.0e}"] = {
                "k": iv.estimate, "err": abs(math.log(iv.estimate / true)) if math.isfinite(iv.estimate) else None,
                "cover80": bool(iv.contains(true, 0.8)), "cover95": bool(iv.contains(true, 0.95)),
                "width80": math.log(hi80 / lo80) if lo80 > 0 and math.isfinite(hi80) else None,
                "z": _z(iv, true)}
    out["wall_s"] = time.perf_counter() - t0
    return out


def _z(iv, true: float) -> float | None:
    """The error in units of the 80 % interval's half width on the side of the truth."""
    lo, hi = iv.bounds[0.8]
    if not (iv.estimate > 0 and lo > 0 and math.isfinite(hi)):
        return None
    e = math.log(true / iv.estimate)
    half = math.log(hi / iv.estimate) if e > 0 else math.log(iv.estimate / lo)
    return e / max(half, 1e-12) * 1.2815515655446004


def summarise(rows: list[dict]) -> dict:
    out = {}
    for pair in dict.fromkeys(r["pair"] for r in rows):
        sel = [r for r in rows if r["pair"] == pair]
        tr = sel[0]["true"]
        s = {"n": len(sel), "true_k_1e20": tr["k"], "true_k_1e21": tr["k_1e21"], "true_trend": tr["trend"],
             "true_crossover": tr["crossover"], "joint_rate": float(np.mean([r["model"] == "joint" for r in sel])),
             "wall_s_median": float(np.median([r["wall_s"] for r in sel])),
             "trend_cover80": float(np.mean([r["trend_cover80"] for r in sel]))}
        # detection rate where a crossover exists, false-crossover rate where none does
        s["crossover_detected"] = float(np.mean([r["cross_detected"] for r in sel]))
        s["crossover_fitted"] = float(np.mean([r["cross_at"] is not None for r in sel]))  # the point estimate alone
        covered = [r["cross_cover80"] for r in sel if r["cross_cover80"] is not None]
        s["crossover_cover80"] = float(np.mean(covered)) if covered else None
        s["p_cross_median"] = float(np.median([r["p_cross"] for r in sel]))
        # the two tests of the joint-vs-separate choice, each alone (either rejects the joint model)
        s["exponent_test_rejects"] = float(np.mean([r["exponent_p"] is not None and r["exponent_p"] < 0.05
                                                    for r in sel]))
        s["held_out_rejects"] = float(np.mean([r["excess_z"] is not None and r["excess_z"] > 1 for r in sel]))
        for label in ("chosen", "separate", "joint"):
            for c in TARGETS:
                key = f"{label}_{c:.0e}"
                vals = [r[key] for r in sel if key in r]
                if not vals:
                    continue
                errs = [v["err"] for v in vals if v["err"] is not None]
                widths = [v["width80"] for v in vals if v["width80"] is not None]
                s[key] = {"cover80": float(np.mean([v["cover80"] for v in vals])),
                          "cover95": float(np.mean([v["cover95"] for v in vals])),
                          "median_abs_ln_err": float(np.median(errs)) if errs else None,
                          "median_width80_ln": float(np.median(widths)) if widths else None}
        out[pair] = s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--out", default="docs/variants_bench.json")
    args = ap.parse_args()
    pairs = args.pairs.split(",")
    unknown = set(pairs) - set(PAIRS)
    if unknown:
        ap.error(f"--pairs: unknown {sorted(unknown)}; known: {list(PAIRS)}")
    jobs = [(p, s, args.boot) for p in pairs for s in range(args.seeds)]
    t0, rows = time.time(), []
    with ProcessPoolExecutor(args.jobs) as pool:
        for i, r in enumerate(pool.map(run_one, jobs, chunksize=1)):
            rows.append(r)
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{len(jobs)} comparisons, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    info = record.meta("bench.bench_variants", t0, noise=NOISE, pairs={
        p: {"baseline": PAIRS[p][0], "variant": PAIRS[p][1], "shared_field": PAIRS[p][2]} for p in pairs})
    record.write(args.out, info, summarise(rows), rows)

if __name__ == "__main__":
    main()
