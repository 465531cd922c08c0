"""Run reuse in the planner benchmark: the adaptive planner with and without wsd stems.

Runs bench/bench_planner.py's sweeps (same worlds, noise, fit and metrics M1-M4 of
shared/BENCHMARK.md) for, per noise seed:

- ``adaptive F``: the adaptive planner at F = ``--fraction`` of the grid's FLOPs, cosine per
  point (the baseline), and at each of ``--controls`` (is it the reuse that keeps the errors down
  at a smaller budget, or would the planner without it do as well there?);
- ``adaptive+wsd``: the same spec plus ``train: {schedule: wsd}`` (reuse on), at each of
  ``--reuse-fractions`` of the grid's FLOPs (0.7 x --fraction asks for 70 % of the FLOPs);
- ``grid`` and ``grid+wsd``: the 81-trial IsoFLOP grid, without and with reuse (its sizes then
  snapped to one ladder, orchestrator.planning.trials.shared_ladder).

FLOPs are what the sweep computed (``flops_spent``: stem segments and cooldown branches with
reuse) and the points' nominal 6ND (``flops``). Each other adaptive configuration's p90 is
compared with the baseline's by a paired bootstrap over the seeds (bench_planner._vs_grid):
``p_worse`` is the share of resamples in which its p90 is the higher.

With 50 seeds a p90 rests on the five worst sweeps, and which points an adaptive planner picks
(its random draws) moves them: ``--paths 2`` runs each adaptive sweep twice per world, with the
planner's seed shifted by 1000, so each p90 rests on 100 sweeps (the grid has no draws: once).

A wsd trial's loss in the simulated world is the cosine world's times
workers.simulated.trainer.schedule_factor (a 20 % 1-sqrt cooldown ends 0.2 % lower), so M2 is
also given against that world's own L* (``M2w``).

    python -m bench.bench_reuse --seeds 50 --jobs 2      # writes docs/reuse_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bench.bench_planner import TARGETS, _vs_grid, grid_flops, run_jobs, run_one

WSD = {"schedule": "wsd"}
METRICS = ["M1_a", "M1_b"] + [f"{m}_{c:.0e}" for m in ("M2", "M2w", "M3", "M4") for c in TARGETS]


def run_reuse(args) -> dict:
    label, world, seed, fraction, n_boot, train, path = args
    row = run_one((world, seed, fraction, n_boot, train, seed + 1000 * path if path else None))
    factor = 1.0
    if train:
        from workers.config import TrainConfig
        from workers.simulated.trainer import schedule_factor

        factor = schedule_factor(TrainConfig(**train))
    for c in TARGETS:
        row[f"M2w_{c:.0e}"] = abs((1 + row[f"L_rel_{c:.0e}"]) / factor - 1)
    return row | {"config": label, "path": path}


def summarise(rows: list[dict]) -> dict:
    out = {}
    labels = list(dict.fromkeys(r["config"] for r in rows))
    base = [r for r in rows if r["config"] == labels[0]]  # the baseline comes first
    for label in labels:
        sel = [r for r in rows if r["config"] == label]
        spent = np.array([r["flops_spent"] for r in sel])
        points = np.array([r["flops"] for r in sel])
        s = {"n": len(sel), "fraction": sel[0]["fraction"], "trials_median": float(np.median([r["trials"] for r in sel])),
             "flops_spent_median": float(np.median(spent)), "flops_spent_max": float(spent.max()),
             "flops_points_median": float(np.median(points)),
             "spent_over_points_median": float(np.median(spent / points)),
             "wall_s_median": float(np.median([r["wall_s"] for r in sel]))}
        for k in METRICS:
            v = np.array([float(r[k]) for r in sel])
            s[k] = {"median": float(np.median(v)), "mean": float(v.mean()), "p90": float(np.percentile(v, 90))}
        for k in [k for k in sel[0] if k.startswith("M6")]:
            s[k] = float(np.mean([r[k] for r in sel]))
        if label != labels[0] and label.startswith("adaptive"):  # paired by world and path
            paired = ([r | {"seed": (r["seed"], r["path"])} for r in rs] for rs in (base, sel))
            s["vs_adaptive"] = _vs_grid(*paired, METRICS)
            s["spent_vs_adaptive"] = s["flops_spent_median"] / float(np.median([r["flops_spent"] for r in base]))
        out[label] = s
    return out


def table(summary: dict) -> str:
    """Markdown: FLOPs, then each metric's p90 (and mean)."""
    cols = ["M1_a", "M2_1e+20", "M2_1e+21", "M3_1e+20", "M3_1e+21", "M4_1e+20", "M4_1e+21"]
    lines = ["| configuration | sweeps | FLOPs spent (median) | / grid | points' 6ND | trials | "
             + " | ".join(f"{c} p90 (mean)" for c in cols) + " |", "|---" * (6 + len(cols)) + "|"]
    g = grid_flops()
    for label, s in summary.items():
        lines.append(f"| {label} | {s['n']} | {s['flops_spent_median']:.3g} | {s['flops_spent_median'] / g:.3f} | "
                     f"{s['flops_points_median']:.3g} | {s['trials_median']:.0f} | "
                     + " | ".join(f"{s[c]['p90']:.4f} ({s[c]['mean']:.4f})" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="T0")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--fraction", type=float, default=0.1, help="the no-reuse adaptive sweep's share of the grid's FLOPs")
    ap.add_argument("--reuse-fractions", default="0.07,0.1", help="the reuse sweeps' shares of the grid's FLOPs")
    ap.add_argument("--controls", default="0.07", help="shares of the grid's FLOPs for more sweeps without reuse")
    ap.add_argument("--no-grid", action="store_true", help="skip the grid and grid+wsd sweeps")
    ap.add_argument("--paths", type=int, default=1, help="adaptive sweeps per world, with other planner seeds")
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="docs/reuse_bench.json")
    ap.add_argument("--summarise", metavar="JSON", help="only re-summarise the runs of an earlier result")
    ap.add_argument("--log", metavar="JSONL", help="append each finished sweep here, and skip those already in it "
                    "(a long benchmark then survives being stopped)")
    args = ap.parse_args()
    if args.summarise:
        with open(args.summarise) as f:
            saved = json.load(f)
        saved["summary"] = summarise(saved["runs"])
        saved["table"] = table(saved["summary"])
        with open(args.summarise, "w") as f:
            json.dump(saved, f, indent=1)
        report(saved["summary"])
        return
    configs = [(f"adaptive {f:g}", f, None) for f in [args.fraction] + [float(x) for x in args.controls.split(",") if x]]
    configs += [(f"adaptive+wsd {f:g}", f, WSD) for f in map(float, args.reuse_fractions.split(","))]
    if not args.no_grid:
        configs += [("grid", None, None), ("grid+wsd", None, WSD)]
    jobs = [(label, args.world, seed, f, args.boot, train, path) for path in range(args.paths)
            for seed in range(args.seeds) for label, f, train in configs if path == 0 or f is not None]
    t0 = time.time()
    rows = _resumable(jobs, args.jobs, args.log) if args.log else run_jobs(run_reuse, jobs, args.jobs)
    summary = summarise(rows)
    meta = {"command": "python -m bench.bench_reuse " + " ".join(sys.argv[1:]),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"), "wall_s": time.time() - t0, "grid_flops": grid_flops(),
            "world": args.world}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "table": table(summary), "runs": rows}, f, indent=1)
    report(summary)


def _resumable(jobs: list, n_jobs: int, log: str) -> list[dict]:
    """``run_reuse`` over ``jobs``, reusing and appending to the JSONL file ``log``."""
    key = lambda label, seed, path: f"{label}|{seed}|{path}"  # noqa: E731
    done = {}
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                r = json.loads(line)
                done[key(r["config"], r["seed"], r["path"])] = r
    todo = [j for j in jobs if key(j[0], j[2], j[6]) not in done]
    print(f"{len(jobs) - len(todo)} sweeps from {log}, {len(todo)} to run", file=sys.stderr, flush=True)
    t0 = time.time()
    with ProcessPoolExecutor(n_jobs) as pool, open(log, "a") as out:
        for i, r in enumerate(pool.map(run_reuse, todo, chunksize=1)):
            out.write(json.dumps(r) + "\n")
            out.flush()
            done[key(r["config"], r["seed"], r["path"])] = r
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{len(todo)} runs, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    return [done[key(j[0], j[2], j[6])] for j in jobs]


def report(summary: dict) -> None:
    print(table(summary))
    for label, s in summary.items():
        if "vs_adaptive" in s:
            worse = {k: round(v["p_worse"], 2) for k, v in s["vs_adaptive"].items()}
            print(f"{label}: spent {s['spent_vs_adaptive']:.2f} x the baseline's; "
                  f"P(p90 worse than the baseline's) {worse}")


if __name__ == "__main__":
    main()
