"""Results at scale: SQL over a million step rows, before and after compaction.

Writes a synthetic sweep through the real ResultStore (one trials file and one steps file
per trial, exactly as workers commit them): ``--trials`` trials of ``--steps`` step rows each
(default 10,000 x 100 = 1,000,000 step rows). Then times, in one process and through the CLI
(a fresh interpreter, imports included), the queries users run most, each statement in its
limited child process (orchestrator.results.sql: a fresh interpreter by default, a fork with
``fork=True`` as the CLI runs it):

  best   best held-out loss per trial          (GROUP BY over every step row)
  front  lower envelope of loss over compute   (Approach 1's frontier, over every step row)
  trials the compute-optimal trial per budget  (trials table only)

first on the 20,000 per-trial files (a sweep still running), then after ``compact`` (what the
driver leaves at the end of a large sweep). Each in-process figure is the median of 5 runs.

    python -m bench.bench_results --trials 10000 --steps 100
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np


from orchestrator.results.sql import query
from workers.store import STEPS_SCHEMA, TRIALS_SCHEMA, ResultStore

QUERIES = {
    "best": "SELECT trial_id, min(eval_loss) AS best FROM steps GROUP BY trial_id ORDER BY best LIMIT 10",
    "front": "SELECT round(log10(flops) * 4) / 4 AS log10_c, min(eval_loss) AS loss FROM steps "
             "WHERE eval_loss IS NOT NULL GROUP BY 1 ORDER BY 1",
    "trials": "SELECT budget, arg_min(n_params, eval_loss) AS n_opt, min(eval_loss) AS loss FROM trials "
              "WHERE status = 'completed' GROUP BY budget ORDER BY budget",
}


def write_sweep(root: str, n_trials: int, n_steps: int) -> None:
    import pyarrow as pa

    store = ResultStore(root)
    rng = np.random.default_rng(0)
    budgets = np.geomspace(1e15, 1e19, 9)
    for i in range(n_trials):
        c = budgets[i % len(budgets)]
        n = (c / 120) ** 0.5 * 4 ** rng.uniform(-1, 1)
        d = c / (6 * n)
        tid = f"{i:016x}"
        steps = np.arange(1, n_steps + 1)
        tokens = (d * steps / n_steps).astype(np.int64)
        loss = 1.8 + 482 / n**0.35 + 2085 / tokens**0.37 + rng.normal(0, 0.01, n_steps)
        st = pa.table({"trial_id": [tid] * n_steps, "step": steps, "tokens": tokens, "flops": 6.0 * n * tokens,
                       "train_loss": loss, "eval_loss": loss, "lr": np.full(n_steps, 1e-3),
                       "wall_s": steps * 0.1}, schema=STEPS_SCHEMA)
        row = {f.name: None for f in TRIALS_SCHEMA} | {
            "sweep": "bench", "trial_id": tid, "status": "completed", "n_params": int(n), "tokens": int(d),
            "flops": 6 * n * d, "budget": float(c), "eval_loss": float(loss[-1]), "seed": 0}
        store._write("steps", tid, st)
        store._write("trials", tid, pa.Table.from_pylist([row], schema=TRIALS_SCHEMA))


def timed(path: str, sql: str, repeat: int = 5, fork: bool = False) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        query(path, sql, fork=fork)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cli_time(path: str, sql: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "query", path, sql, "--format", "csv"],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "bench")
        t0 = time.perf_counter()
        write_sweep(root, args.trials, args.steps)
        print(f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: wrote "
              f"{args.trials} trials x {args.steps} steps = {args.trials * args.steps:,} step rows "
              f"in {time.perf_counter() - t0:.1f}s")
        for label in ("per-trial files", "compacted"):
            if label == "compacted":
                store = ResultStore(root)
                t0 = time.perf_counter()
                merged = store.compact("steps") + store.compact("trials")
                print(f"compact: {merged} files merged in {time.perf_counter() - t0:.2f}s")
            for name, sql in QUERIES.items():
                # query()'s statement runs in a child: a fresh interpreter by default, a fork of
                # this process with fork=True (what the CLI does; orchestrator.results.sql)
                print(f"{label:16s} {name:6s} in-process {timed(root, sql) * 1e3:7.0f} ms   "
                      f"fork=True {timed(root, sql, fork=True) * 1e3:7.0f} ms   "
                      f"CLI (fresh process) {cli_time(root, sql) * 1e3:7.0f} ms")


if __name__ == "__main__":
    main()
