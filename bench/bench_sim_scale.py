"""Scale of the orchestration: N simulated trials through real Ray, wall time and throughput.

Runs a grid of simulated trials (T0 world, default noise) through ``scalesweep run`` on a
fresh local Ray, once, and reports the sweep wall time (trials, Parquet commits, end fit and
report included) with and without Ray's start-up.

    python -m bench.bench_sim_scale --trials 1000
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time

import yaml


def spec(n_trials: int, root: str) -> dict:
    n_budgets = max(1, round(math.sqrt(n_trials / 2.5)))
    per = math.ceil(n_trials / n_budgets)
    budgets = [10 ** (15 + 4 * i / max(1, n_budgets - 1)) for i in range(n_budgets)]
    sizes = {c: [(c / 120) ** 0.5 * 4 ** (-1 + 2 * j / max(1, per - 1)) for j in range(per)] for c in budgets}
    return {"name": "scale", "trainer": "simulated", "results": root,
            "world": {"law": {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}},
            "sweep": {"kind": "isoflop", "budgets": budgets, "model_sizes": sizes},
            "resources": {"cpus": 1}, "fit": {"target_compute": 1e20}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "scale.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(spec(args.trials, os.path.join(root, "results")), f)
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", path, "--no-dashboard"],
                              capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode:
            sys.exit(proc.stderr[-2000:])
        start = next((line for line in proc.stderr.splitlines() if line.startswith("Starting")), "")
        summary = next((line for line in proc.stdout.splitlines() if line.startswith("Sweep")), "")
        print(summary)
        print(start)
        ray_s = float(start.rsplit(" in ", 1)[1].rstrip("s")) if " in " in start else 0.0
        print(f"wall {wall:.1f}s in all, {wall - ray_s:.1f}s without Ray start-up ({ray_s:.1f}s)")


if __name__ == "__main__":
    main()
