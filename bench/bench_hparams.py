"""Tuned sweeps benchmark: what a fixed learning rate costs, and what tuning per point recovers.

The shared/BENCHMARK.md protocol (simulated worlds, default seed noise, a 0.02-nat residual
field, 2 % outliers, the 81-trial grid, targets 1e20 and 1e21) on worlds with its
"Hyperparameter landscape": ln L rises by k_lr u^2 + k_B v^2 + k_x u v around the true optima
lr*(N, D) and B*(N, D), with u = ln(lr / lr*), v = ln(B / B*), and a learning rate above 4x
lr* may diverge. Per noise seed, through the real driver, planners, trial factory, simulated
worker and Parquet store (an in-process executor stands in for Ray):

  grid-plain      the grid on the world without a landscape (the reference accuracy)
  grid-fixed      the grid at one learning rate (lr* of the grid's middle point; batch at B*):
                  the bias a fixed recipe leaves in a, N_opt and L*
  grid-tuned      the grid with lr and batch searched at every point (orchestrator.planning.tuning)
  adaptive-plain  the adaptive planner at 10 % of the grid's FLOPs, no landscape
  adaptive-tuned  the adaptive planner tuning lr and batch as it goes (searches up to
                  --up-to-flops, the fitted rule above), with --adaptive-factor x that budget

Each sweep is fitted as `scalesweep fit` fits it (orchestrator.fitting.hparams.tuned.analyse_trials:
the law through the per-point optima, the hyperparameter laws, the recommendation at the
target's N_opt and D_opt) and scored: M1-M4 and M6 as bench.bench_planner, and M7:
|ln(lr_hat / lr*)| and |ln(B_hat / B*)| at the target (the truth at the true N_opt and D_opt),
with the coverage of their 80 % intervals.

    python -m bench.bench_hparams --seeds 50 --jobs 2      # docs/hparams_bench.json
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from bench.bench_planner import GRID_BUDGETS, TARGETS, BatchExecutor, deadweight, grid_flops, grid_sizes, run_jobs
from bench.worlds import VISIBLE_LAWS, hparams_spec, law_spec
from bench import record

DESIGNS = ("grid-plain", "grid-fixed", "grid-tuned", "adaptive-plain", "adaptive-tuned")
MID_N = math.sqrt(1e17 / 120)  # the grid's middle point: 1e17 FLOPs at 20 tokens per parameter
MID_D = 1e17 / (6 * MID_N)


def spec_dict(world: str, design: str, seed: int, root: str, args) -> dict:
    landscape = not design.endswith("plain")
    hp = hparams_spec()
    w = {"law": law_spec(VISIBLE_LAWS[world]), "seed": seed,
         "noise": {"tier": "default", "residual_amplitude": 0.02, "residual_length_scale": 0.7, "outlier_prob": 0.02}}
    if landscape:
        w["hparams"] = hp
    spec = {"name": f"{world}-s{seed}-{design}", "trainer": "simulated", "world": w, "results": root,
            "fit": {"target_compute": TARGETS[0]}}
    lr_mid = hp["lr"]["coef"] * MID_N ** hp["lr"]["n_exp"] * MID_D ** hp["lr"]["d_exp"]
    b_mid = hp["batch"]["coef"] * MID_N ** hp["batch"]["n_exp"] * MID_D ** hp["batch"]["d_exp"]
    if design == "grid-fixed":
        spec["train"] = {"lr": lr_mid, "batch_tokens": hp["batch"]}
    elif design.endswith("tuned"):  # both searched, from the middle point's values (wrong elsewhere)
        spec["train"] = {"lr": {"tune": lr_mid}, "batch_tokens": {"tune": b_mid}}
        spec["tune"] = {"max_trials_per_point": args.max_trials, "refine": args.refine}
    if design.startswith("grid"):
        spec["sweep"] = {"kind": "isoflop", "budgets": GRID_BUDGETS, "model_sizes": grid_sizes()}
    else:
        fraction = args.fraction * (args.adaptive_factor if landscape else 1.0)
        spec["planner"] = "adaptive"
        spec["adaptive"] = {"min_flops": 1e15, "max_flops": 1e19, "n_range": [1e6, 3e9], "dn_range": [1, 1000],
                            "flop_budget": fraction * grid_flops(), "target_width": 1e-3, "loss_width": 1e-4,
                            "max_trials": 400, "initial_trials": 8, "seed": seed}
        if landscape:
            spec["tune"]["up_to_flops"] = args.up_to_flops
    return spec


def run_one(job) -> dict:
    world, design, seed, args = job
    from threadpoolctl import threadpool_limits

    from orchestrator.fitting.hparams.tuned import analyse_trials
    from orchestrator.planning.protocol import StaticPlanner
    from orchestrator.planning.trials import TrialFactory, plan_trials
    from orchestrator.running.driver import Driver
    from orchestrator.spec import parse_spec
    from workers.simulated.world import World
    from workers.store import ResultStore

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root, threadpool_limits(1, user_api="blas"):
        spec = parse_spec(spec_dict(world, design, seed, root, args))
        factory = TrialFactory(spec)
        os.makedirs(spec.sweep_dir)
        store = ResultStore(spec.sweep_dir)
        if spec.planner == "static":
            planner = StaticPlanner(plan_trials(spec, factory))
        else:
            from orchestrator.planning.adaptive import AdaptivePlanner

            planner = AdaptivePlanner(spec, factory, os.path.join(spec.sweep_dir, "planner.journal"))
        if spec.tuned:
            from orchestrator.planning.tuning import TuningPlanner

            planner = TuningPlanner(planner, factory, spec)
        Driver(planner, store, BatchExecutor(slots=8), poll_s=0).run()
        tab = store.read_table("trials").to_pandas()
        fit = analyse_trials(tab, TARGETS[0], n_boot=args.boot, seed=seed, extrapolation=False,
                             isoflop=spec.planner == "static")
        truth = World(spec.world)
    p = fit.approach3.params
    a_true = truth.exponent_a(TARGETS[0] / 10, TARGETS[1] * 10)
    out = {"world": world, "design": design, "seed": seed, "trials": int(len(tab)),
           "points": int(tab["point_id"].nunique()), "flops": float(tab["flops"].sum()),
           "M1_a": abs(p.a - a_true), "M1_b": abs(p.b - (1 - a_true))}
    for c in TARGETS:
        tr = truth.compute_optimal(c)
        t = fit.frontier([c])[0]
        out[f"M2_{c:.0e}"] = abs(t["loss"] / tr["loss"] - 1)
        out[f"M3_{c:.0e}"] = abs(math.log(t["n_opt"] / tr["n_opt"]))
        out[f"M4_{c:.0e}"] = deadweight(truth, t["n_opt"], c)
    tr = truth.compute_optimal(TARGETS[0])
    for key, true in (("n_opt", tr["n_opt"]), ("loss_opt", tr["loss"])):
        iv = fit.intervals.get(key)
        out[f"M6_{key}"] = bool(iv.contains(true)) if iv is not None and iv.n_draws else None
    h = fit.hparams
    if h is not None and spec.world.hparams is not None:
        lr_true, b_true = truth.optimal_hparams(tr["n_opt"], tr["d_opt"])
        for key, rec, true in (("lr", h.lr_opt, lr_true), ("batch", h.batch_opt, b_true)):
            if rec is None:
                continue
            lo, hi = rec["80%"]
            out[f"M7_{key}"] = abs(math.log(rec["estimate"] / true))
            out[f"M7cov_{key}"] = bool(lo <= true <= hi)
            out[f"M7w_{key}"] = math.log(hi / lo)
    out["wall_s"] = time.perf_counter() - t0
    return out


def summarise(rows: list[dict]) -> dict:
    out = {}
    for world in sorted({r["world"] for r in rows}):
        for design in DESIGNS:
            sel = [r for r in rows if r["world"] == world and r["design"] == design]
            if not sel:
                continue
            s = {"n": len(sel)}
            for k in ("flops", "trials", "points", "wall_s"):
                s[f"{k}_median"] = float(np.median([r[k] for r in sel]))
            for k in sorted({k for r in sel for k in r if k.startswith("M")}):
                v = [r[k] for r in sel if r.get(k) is not None]
                if not v:
                    continue
                if isinstance(v[0], bool):
                    s[k] = float(np.mean(v))
                else:
                    s[k] = {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
            out[f"{world} {design}"] = s
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="T0")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples per fit")
    ap.add_argument("--fraction", type=float, default=0.1, help="adaptive-plain's FLOPs, a share of the grid's")
    ap.add_argument("--adaptive-factor", type=float, default=3.0, help="adaptive-tuned's FLOPs over adaptive-plain's")
    ap.add_argument("--up-to-flops", type=float, default=1e18, help="adaptive-tuned searches points up to this")
    ap.add_argument("--max-trials", type=int, default=12, help="tune.max_trials_per_point")
    ap.add_argument("--refine", type=int, default=1, help="tune.refine (1 or 0)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="docs/hparams_bench.json")
    args = ap.parse_args()
    args.refine = bool(args.refine)
    jobs = [(w, d, s, args) for w in args.worlds.split(",") for s in range(args.seeds)
            for d in args.designs.split(",")]
    t0 = time.time()
    rows = run_jobs(run_one, jobs, args.jobs)
    record.write(args.out, record.meta("bench.bench_hparams", t0), summarise(rows), rows)

if __name__ == "__main__":
    main()
