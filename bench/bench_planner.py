"""Planner benchmark: FLOPs needed to learn the frontier, grid vs adaptive.

For each world (T0-T2) and noise seed, runs the 81-trial grid baseline and the adaptive
planner at several fractions of the grid's FLOPs, through the real driver, planner, trial
factory, simulated worker and Parquet store (an in-process executor stands in for Ray, which
adds nothing to what is measured here). Each sweep is then fitted (Approach 3) with a
bootstrap for the 80 % intervals, and scored at C_t = 1e20 and 1e21:

  M1 |a_hat - a|, |b_hat - b|      M2 |L*_hat / L* - 1|       M3 |ln(N_opt_hat / N_opt)|
  M4 deadweight 1 - C_eq / C_t      M5 FLOPs spent, trials     M6 80 % coverage of N_opt, L*

Usage (results land in docs/planner_bench.json and .png; docs/benchmarks.md quotes them):

    python -m bench.bench_planner --seeds 50 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bench.worlds import VISIBLE_LAWS, law_spec

WORLDS = dict(VISIBLE_LAWS)  # --world adds others
TARGETS = (1e20, 1e21)
GRID_BUDGETS = [10 ** (15 + 0.5 * i) for i in range(9)]


def grid_sizes() -> dict:
    return {c: list((c / 120) ** 0.5 * np.geomspace(0.25, 4, 9)) for c in GRID_BUDGETS}


def grid_flops() -> float:
    return sum(9 * c for c in GRID_BUDGETS)


class BatchExecutor:
    """Runs every queued trial at each wait(), as a pool of workers finishing together would."""

    def __init__(self, slots: int):
        from workers.run import run_trial

        self._run, self._slots, self._queue = run_trial, slots, []

    def submit(self, trial):
        self._queue.append(trial)

    def wait(self, timeout):
        from orchestrator.running.executor import Completion

        done, self._queue = [Completion(t, self._run(t)) for t in self._queue], []
        return done

    def slots(self):
        return self._slots

    def in_flight(self):
        return len(self._queue)


def spec_dict(world: str, seed: int, root: str, fraction: float | None, train: dict | None = None,
              planner_seed: int | None = None) -> dict:
    spec = {
        "name": f"{world}-s{seed}-{'grid' if fraction is None else fraction}",
        "trainer": "simulated",
        "world": {"law": law_spec(WORLDS[world]), "seed": seed,
                  "noise": {"tier": "default", "residual_amplitude": 0.02, "residual_length_scale": 0.7,
                            "outlier_prob": 0.02}},
        "results": root,
        "fit": {"target_compute": TARGETS[0]},
    }
    if train:  # e.g. {"schedule": "wsd"}: run reuse (bench/bench_reuse.py)
        spec["train"] = train
    if fraction is None:
        spec["sweep"] = {"kind": "isoflop", "budgets": GRID_BUDGETS, "model_sizes": grid_sizes()}
    else:
        spec["planner"] = "adaptive"
        spec["adaptive"] = {"min_flops": 1e15, "max_flops": 1e19, "n_range": [1e6, 3e9], "dn_range": [1, 1000],
                            "flop_budget": fraction * grid_flops(), "target_width": 1e-3, "loss_width": 1e-4,
                            "max_trials": 400, "initial_trials": 8, "seed": seed if planner_seed is None else planner_seed}
    return spec


def run_one(args) -> dict:
    """One sweep, fitted and scored: args = (world, seed, fraction or None for the grid, bootstrap
    resamples[, train settings[, the planner's seed (default: the world's)]]). With train.schedule
    wsd, points branch off stems (ReuseExecutor) and ``flops_spent`` counts what was computed (stems
    included); ``flops`` is always the points' 6ND."""
    world, seed, fraction, n_boot, *rest = args
    train, planner_seed = (list(rest) + [None, None])[:2]
    from threadpoolctl import threadpool_limits

    from orchestrator.running.driver import Driver
    from orchestrator.fitting.law import fit_approach3, optimal_allocation
    from orchestrator.planning.trials import TrialFactory, plan_trials
    from orchestrator.planning.protocol import StaticPlanner
    from orchestrator.spec import parse_spec
    from orchestrator.planning.design import Z80
    from orchestrator.fitting.discrepancy import discrepancy_sd, estimate_discrepancies, widen
    from orchestrator.fitting.bootstrap import bootstrap
    from orchestrator.results import point_rows, spent_flops
    from orchestrator.running.reuse import ReuseExecutor
    from workers.store import ResultStore, TrialStatus
    from workers.simulated.world import World

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root, threadpool_limits(1, user_api="blas"):
        spec = parse_spec(spec_dict(world, seed, root, fraction, train, planner_seed))
        factory = TrialFactory(spec)
        os.makedirs(spec.sweep_dir)
        store = ResultStore(spec.sweep_dir)
        if fraction is None:
            planner = StaticPlanner(plan_trials(spec, factory))
        else:
            from orchestrator.planning.adaptive import AdaptivePlanner

            planner = AdaptivePlanner(spec, factory, os.path.join(spec.sweep_dir, "planner.journal"))
        executor = BatchExecutor(slots=8)
        if spec.train.reuses:
            executor = ReuseExecutor(executor, store)
        Driver(planner, store, executor, poll_s=0).run()
        every = store.read_table("trials").to_pandas()
        tab = point_rows(every)
        tab = tab[tab["status"] == TrialStatus.COMPLETED.value]
        n, d, loss = tab["n_params"].values.astype(float), tab["tokens"].values.astype(float), tab["eval_loss"].values
        fit = fit_approach3(n, d, loss)
        boot = bootstrap(n, d, loss, fit, TARGETS[0], n_boot=n_boot, seed=seed)
        truth = World(factory.world)
        p = fit.params
        out = {"world": world, "seed": seed, "fraction": fraction, "trials": int(len(tab)),
               "flops": float((6 * n * d).sum()), "flops_spent": spent_flops(every), "wall_s": 0.0}
        a_true = truth.exponent_a(TARGETS[0] / 10, TARGETS[1] * 10)
        out["M1_a"] = abs(p.a - a_true)
        out["M1_b"] = abs(p.b - (1 - a_true))
        draws = boot.draws
        # the targets' residual model, as `scalesweep fit` uses for N_opt and L* (orchestrator.fitting.analysis)
        disc = estimate_discrepancies(p.as_vector(), np.stack([np.log10(n), np.log10(d)], axis=1), loss,
                                      fit.residuals, seed=seed)[1]
        for c in TARGETS:
            sd = discrepancy_sd(p.as_vector(), n, d, loss, disc, c)
            tr = truth.compute_optimal(c)
            n_hat, d_hat, l_hat = optimal_allocation(p.E, p.A, p.B, p.alpha, p.beta, c)
            out[f"M2_{c:.0e}"] = abs(l_hat / tr["loss"] - 1)
            out[f"L_rel_{c:.0e}"] = l_hat / tr["loss"] - 1  # signed M2 (bench/bench_reuse.py)
            out[f"M3_{c:.0e}"] = abs(math.log(n_hat / tr["n_opt"]))
            out[f"M4_{c:.0e}"] = deadweight(truth, n_hat, c)
            with np.errstate(all="ignore"):
                bn, _, bl = optimal_allocation(draws["E"], draws["A"], draws["B"], draws["alpha"], draws["beta"], c)
            # The reported interval: bootstrap percentiles widened by the residual field's
            # (orchestrator.fitting.analysis does the same for `scalesweep fit`).
            for key, x, est, s, true in (("n", bn, n_hat, sd["n_opt"], tr["n_opt"]),
                                          ("l", bl, l_hat, sd["loss_opt"], tr["loss"])):
                x = x[np.isfinite(x)]
                lo, hi = np.percentile(x, [10, 90]) if len(x) else (math.nan, math.nan)
                lo, hi = widen(est, lo, hi, Z80 * s, log=True)
                out[f"M6_{key}_{c:.0e}"] = bool(lo <= true <= hi)
                out[f"W80_{key}_{c:.0e}"] = math.log(hi / lo)
    out["wall_s"] = time.perf_counter() - t0
    return out


def run_jobs(fn, jobs: list, n_jobs: int) -> list[dict]:
    """``fn`` over ``jobs`` in ``n_jobs`` processes, in order, with a progress line every 10."""
    t0, rows = time.time(), []
    with ProcessPoolExecutor(n_jobs) as pool:
        for i, r in enumerate(pool.map(fn, jobs, chunksize=1)):
            rows.append(r)
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{len(jobs)} runs, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    return rows


def deadweight(truth, n_hat: float, c_t: float) -> float:
    """1 - C_eq / C_t: C_eq reaches, at the optimal allocation, the loss of N_hat trained on C_t."""
    loss = float(truth.true_loss(n_hat, c_t / (6 * n_hat)))
    lo, hi = math.log(c_t) - 10, math.log(c_t)
    for _ in range(60):  # bisection on log C: the optimal loss falls with compute
        mid = 0.5 * (lo + hi)
        if truth.compute_optimal(math.exp(mid))["loss"] > loss:
            lo = mid
        else:
            hi = mid
    return 1 - math.exp(0.5 * (lo + hi)) / c_t


def summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k.startswith(("M", "W"))]
    out = {}
    for world in sorted({r["world"] for r in rows}):
        for fraction in sorted({r["fraction"] for r in rows}, key=lambda f: -1 if f is None else f):
            sel = [r for r in rows if r["world"] == world and r["fraction"] == fraction]
            if not sel:
                continue
            s = {"n": len(sel), "flops_median": float(np.median([r["flops"] for r in sel])),
                 "trials_median": float(np.median([r["trials"] for r in sel])),
                 "wall_s_median": float(np.median([r["wall_s"] for r in sel]))}
            for k in keys:
                v = np.array([float(r[k]) for r in sel])
                s[k] = float(v.mean()) if k.startswith("M6") else {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))}
            if fraction is not None:
                s["vs_grid"] = _vs_grid([r for r in rows if r["world"] == world and r["fraction"] is None], sel,
                                        [k for k in keys if k.startswith(("M1", "M2", "M3", "M4"))])
            out[f"{world} {'grid' if fraction is None else f'adaptive {fraction:g}'}"] = s
    return out


def _vs_grid(grid: list[dict], adaptive: list[dict], keys: list[str], n_boot: int = 2000) -> dict:
    """Per metric, how sure the p90 comparison is: the share of bootstrap resamples of the seeds
    (paired: the grid's and the adaptive sweep of one seed share its noise) in which the
    adaptive p90 is above the grid's, and a 90 % interval of the difference. With 50 seeds a
    p90 rests on about five sweeps, so differences of 10-20 % are often noise."""
    by_seed = {r["seed"]: r for r in grid}
    pairs = [(by_seed[r["seed"]], r) for r in adaptive if r["seed"] in by_seed]
    if len(pairs) < 5:
        return {}
    idx = np.random.default_rng(0).integers(0, len(pairs), (n_boot, len(pairs)))
    out = {}
    for k in keys:
        g, a = (np.array([float(p[i][k]) for p in pairs]) for i in (0, 1))
        diff = np.percentile(a[idx], 90, axis=1) - np.percentile(g[idx], 90, axis=1)
        out[k] = {"p_worse": float((diff > 0).mean()), "diff_90": [float(x) for x in np.percentile(diff, [5, 95])]}
    return out


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), dpi=110)
    for world, marker in zip(sorted({k.split()[0] for k in summary}), "osd^v<>ph*"):
        for ax, metric, label in zip(axes, ("M1_a", "M2_1e+21", "M3_1e+21", "M4_1e+21"),
                                     ("|a_hat - a| (p90)", "L* relative error at 1e21 (p90)",
                                      "|ln N_opt error| at 1e21 (p90)", "deadweight at 1e21 (p90)")):
            pts = [(v["flops_median"], v[metric]["p90"]) for k, v in summary.items() if k.startswith(world + " adaptive")]
            grid = summary.get(f"{world} grid")
            if pts:
                x, y = zip(*sorted(pts))
                ax.plot(x, y, marker=marker, label=f"{world} adaptive")
            if grid:
                ax.scatter([grid["flops_median"]], [grid[metric]["p90"]], marker=marker, s=90, facecolors="none",
                           edgecolors="black", label=f"{world} grid")
            ax.set_xscale("log")
            ax.set_xlabel("training FLOPs spent (median)")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle("Planner benchmark: 90th-percentile error against FLOPs spent")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="T0,T1,T2")
    ap.add_argument("--world", action="append", default=[], metavar="NAME=E,A,B,ALPHA,BETA",
                    help="another Chinchilla-form world to add (repeatable); list it in --worlds too")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--fractions", default="0.01,0.03,0.1,0.3")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples per fit (intervals for M6)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="docs/planner_bench.json")
    ap.add_argument("--summarise", metavar="JSON", help="only re-summarise and re-plot the runs of an earlier result")
    args = ap.parse_args()
    if args.summarise:
        with open(args.summarise) as f:
            saved = json.load(f)
        saved["summary"] = summarise(saved["runs"])
        with open(args.summarise, "w") as f:
            json.dump(saved, f, indent=1)
        plot(saved["summary"], args.summarise.replace(".json", ".png"))
        return
    for extra in args.world:
        name, _, values = extra.partition("=")
        try:
            law = tuple(float(v) for v in values.split(","))
        except ValueError:
            law = ()
        if not name or len(law) != 5:
            ap.error(f"--world {extra!r}: expected NAME=E,A,B,ALPHA,BETA")
        WORLDS[name] = law
    unknown = set(args.worlds.split(",")) - set(WORLDS)
    if unknown:
        ap.error(f"--worlds: unknown {sorted(unknown)}; known: {sorted(WORLDS)} (add others with --world)")
    fractions = [None] + [float(f) for f in args.fractions.split(",")]
    jobs = [(w, s, f, args.boot) for w in args.worlds.split(",") for s in range(args.seeds) for f in fractions]
    t0 = time.time()
    rows = run_jobs(run_one, jobs, args.jobs)
    summary = summarise(rows)
    meta = {"command": "python -m bench.bench_planner " + " ".join(sys.argv[1:]), "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "wall_s": time.time() - t0,
            "grid_flops": grid_flops()}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": rows}, f, indent=1)
    plot(summary, args.out.replace(".json", ".png"))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
