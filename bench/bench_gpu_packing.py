"""Packing small trials onto one GPU: aggregate throughput at gpus: 1/K against gpus: 1.

Runs the same K small GPT trials (one size, seeds 0..K-1, the stdlib corpus) through
``scalesweep run`` on a fresh local Ray twice: once one trial per GPU (``resources.gpus: 1``,
trials run one after another on a single GPU), once packed (``gpus: 1/K``, all K at once).
Reports each run's wall time without Ray's start-up and the aggregate training tokens/s
(sum of the trials' tokens over that time). Needs a GPU; nothing in CI runs it.

    python -m bench.bench_gpu_packing --trials 4 --params 2e6 --budget 3e14
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spec(k: int, params: float, budget: float, gpus: float, root: str) -> dict:
    return {"name": f"pack-{k}-{gpus:g}", "results": root,
            "model": {"family": "gpt", "seq_len": 256, "head_dim": 32, "aspect_ratio": 64},
            "data": {"builtin": "python-stdlib"},
            "sweep": {"kind": "isoflop", "budgets": [budget], "model_sizes": [params], "seeds": list(range(k))},
            "train": {"batch_tokens": 16384, "lr": 3e-3, "n_evals": 1, "checkpoint_every_s": 0},
            "resources": {"cpus": 1, "gpus": gpus}, "fit": {"target_compute": budget * 10}}


def run(path: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", path, "--no-dashboard"], cwd=ROOT,
                         capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    start = next((line for line in out.stderr.splitlines() if line.startswith("Starting")), "")
    return wall, float(start.rsplit(" in ", 1)[1].rstrip("s")) if " in " in start else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--params", type=float, default=2e6)
    ap.add_argument("--budget", type=float, default=3e14)
    args = ap.parse_args()
    tokens = args.trials * args.budget / (6 * args.params)
    with tempfile.TemporaryDirectory() as tmp:
        for gpus in (1.0, 1.0 / args.trials):
            path = os.path.join(tmp, f"{gpus:g}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(spec(args.trials, args.params, args.budget, gpus, os.path.join(tmp, "results")), f)
            wall, ray_s = run(path)
            print(f"gpus per trial {gpus:.3g}: {args.trials} trials of {args.params:.3g} params in "
                  f"{wall - ray_s:.1f}s without Ray start-up ({ray_s:.1f}s): aggregate "
                  f"{tokens / (wall - ray_s):,.0f} tokens/s (fit and report included)")


if __name__ == "__main__":
    main()
