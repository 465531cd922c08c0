"""How well a sweep's trials project another run's wall time, and what measuring costs
(docs/benchmarks.md, "What it costs").

1. **Held-out largest trial.** The quickstart's trials (``--results``: a finished quickstart, else
   it is run here first), the largest (by N, then tokens) removed, written as a table of runs; then
   ``scalesweep cost TABLE --at-n N --at-d D --json`` as a user runs it, and its projected wall time
   against the trial's measured one. Goal: within 25 %.
2. **Leave-one-out** over every trial: the error of each projection and how often its 80 % and
   95 % intervals hold the measured wall time.
3. **The cost of measuring**: the meter's calls per trial (start, one energy reading per progress
   row, stop) timed in a loop, against the quickstart trials' wall time. Goal: under 1 %.

    python -m bench.bench_cost [--results results/quickstart] [--out docs/cost_bench.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pandas as pd

from bench.record import meta, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart(results: str | None, tmp: str) -> str:
    if results:
        return results
    out = os.path.join(tmp, "results")
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", os.path.join(ROOT, "specs", "quickstart.yaml"),
                    "--results", out, "--no-dashboard"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return os.path.join(out, "quickstart")


def _project(table: pd.DataFrame, n: float, d: float, tmp: str) -> dict:
    from orchestrator.cli import main

    path = os.path.join(tmp, "runs.csv")
    table.to_csv(path, index=False)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["cost", path, "--at-n", repr(float(n)), "--at-d", repr(float(d)), "--json"]) == 0
    return json.loads(buf.getvalue())["projection"]


def _meter_cost(trials: pd.DataFrame, reports_per_trial: int) -> dict:
    """Seconds per meter start/stop and per energy reading on this machine, and their share of the
    trials' wall time."""
    from workers.config import TrainConfig, TrialConfig
    from workers.gpt.arch import shape_for_params
    from workers.run.meter import TrialMeter

    cfg = TrialConfig(trial_id="b", name="b", sweep="b", shape=shape_for_params(4e4, 256, 128), tokens=1, seed=0,
                      budget=0.0, train=TrainConfig(), data=None, results="/tmp", device="cpu")
    k = 2000
    t0 = time.perf_counter()
    for _ in range(k // 10):
        TrialMeter(cfg).start().stop(1.0, 1000, cfg.n_params)
    per_trial = (time.perf_counter() - t0) / (k // 10)
    meter = TrialMeter(cfg).start()
    t0 = time.perf_counter()
    for _ in range(k):
        meter.energy_j()
    per_read = (time.perf_counter() - t0) / k
    cost = per_trial + reports_per_trial * per_read
    return {"meter_start_stop_s": per_trial, "energy_read_s": per_read, "reports_per_trial": reports_per_trial,
            "source": meter.source.value, "max_share_of_a_trial": cost / float(trials["wall_s"].min()),
            "share_of_the_sweep": cost * len(trials) / float(trials["wall_s"].sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", help="a finished quickstart results directory (default: run one)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "cost_bench.json"))
    args = p.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        results = _quickstart(args.results, tmp)
        from workers.store import ResultStore

        store = ResultStore(results)
        trials = store.read_table("trials").to_pandas()
        trials = trials[trials["status"] == "completed"].reset_index(drop=True)
        steps = store.read_table("steps").to_pandas()
        largest = trials.sort_values(["n_params", "tokens"]).index[-1]
        rows = []
        for i in trials.index:
            held = trials.loc[i]
            proj = _project(trials.drop(index=i), held["n_params"], held["tokens"], tmp)
            wall_h = held["wall_s"] / 3600
            w = proj["wall_hours"]
            rows.append({"name": held["name"], "n_params": int(held["n_params"]), "tokens": int(held["tokens"]),
                         "wall_s": float(held["wall_s"]), "projected_s": w["estimate"] * 3600,
                         "error": w["estimate"] / wall_h - 1, "in_80": bool(w["80%"][0] <= wall_h <= w["80%"][1]),
                         "in_95": bool(w["95%"][0] <= wall_h <= w["95%"][1]), "largest": bool(i == largest),
                         "interval_80_s": [x * 3600 for x in w["80%"]]})
        big = next(r for r in rows if r["largest"])
        reports = int(steps.groupby("trial_id").size().median()) if len(steps) else 0
        summary = {
            "largest_held_out": {k: big[k] for k in ("name", "wall_s", "projected_s", "error", "in_80", "in_95",
                                                     "interval_80_s")},
            "leave_one_out": {"trials": len(rows), "median_abs_error": statistics.median(abs(r["error"]) for r in rows),
                              "max_abs_error": max(abs(r["error"]) for r in rows),
                              "in_80": int(sum(r["in_80"] for r in rows)), "in_95": int(sum(r["in_95"] for r in rows))},
            "energy_sources": trials["energy_source"].value_counts().to_dict() if "energy_source" in trials else {},
            "measuring": _meter_cost(trials, reports),
        }
    write(args.out, meta("bench.bench_cost", t0, results=args.results or "quickstart run here"), summary, rows)


if __name__ == "__main__":
    main()
