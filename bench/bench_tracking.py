"""What live curves cost (docs/benchmarks.md, "Live curves").

- ``--sweep N``: N simulated trials with two tasks each (20 task evaluations per trial streamed)
  and ``tracking: {tensorboard: true}`` through ``scalesweep run`` on a fresh local Ray; the
  driver's RSS sampled as trials finish (bench.bench_scale's sampler), and the TensorBoard runs
  written. Goal: the driver's memory bounded (not growing with trials done).
- ``--calls``: a trial's side of streaming, timed on a live hub: one row handed to the stream (no
  send) and one send (a fire-and-forget actor call), against the quickstart's trials (265 progress
  rows each, a send every 5 s at most, the shortest 6.5 s long). Goal: at most 2 % of its wall time.

    python -m bench.bench_tracking --sweep 10000
    python -m bench.bench_tracking --calls
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import yaml

from bench.bench_scale import rss_mb, trials_done
from bench.bench_sim_scale import spec


def bench_sweep(n_trials: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = spec(n_trials, os.path.join(tmp, "results"))
        s["world"]["tasks"] = 2
        s["tracking"] = {"tensorboard": True, "every_s": 0.5}
        path = os.path.join(tmp, "scale.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(s, f)
        t0 = time.perf_counter()
        with open(os.path.join(tmp, "out"), "w+") as fo, open(os.path.join(tmp, "err"), "w+") as fe:
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", path, "--no-dashboard"],
                                    stdout=fo, stderr=fe, text=True)
            samples = []
            while proc.poll() is None:
                samples.append((time.perf_counter() - t0, rss_mb(proc.pid), trials_done(fe.name)))
                time.sleep(0.5)
            fe.seek(0)
            err = fe.read()
        if proc.returncode:
            sys.exit(err[-2000:])
        samples = [x for x in samples if x[1] > 0]
        total = max(x[2] for x in samples)
        at = {f: next((x[1] for x in samples if x[2] >= f * total), 0.0) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
        runs = os.listdir(os.path.join(tmp, "results", "scale", "tensorboard"))
        print(f"{total} simulated trials with TensorBoard: {time.perf_counter() - t0:.1f}s; driver RSS at 10/25/50/75/100 % "
              f"done: {' / '.join(f'{v:.0f}' for v in at.values())} MB; peak while trials ran "
              f"{max(x[1] for x in samples if x[2] < total):.0f} MB; {len(runs)} TensorBoard runs")


def bench_calls(rows: int = 265, shortest_s: float = 6.5, every_s: float = 5.0) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    from orchestrator.running.cluster import connect
    from orchestrator.running.tracking import ProgressHub
    from workers.run.stream import ProgressStream

    connect(None, "token", num_cpus=2, dashboard=False)
    hub = ray.remote(num_cpus=0)(ProgressHub).options(name="bench-hub").remote()
    ray.get(hub.take.remote())
    row = {"trial_id": "t", "step": 1, "tokens": 1024, "flops": 1e9, "train_loss": 2.0, "eval_loss": None, "lr": 1e-3,
           "wall_s": 1.0, "energy_j": 1.0}
    s = ProgressStream("bench-hub", "t", 1e9, {"name": "t"})
    k = 20000
    t0 = time.perf_counter()
    for _ in range(k):
        s.add("step", row)
    add = (time.perf_counter() - t0) / k
    sends = []
    for _ in range(200):
        s.add("step", row)
        t0 = time.perf_counter()
        s.flush()
        sends.append(time.perf_counter() - t0)
    send = sorted(sends)[len(sends) // 2]
    per_trial = rows * add + (shortest_s / every_s + 2) * send
    print(f"add a row {add * 1e6:.2f} us, send {send * 1e6:.0f} us (median of 200); the quickstart's shortest trial "
          f"({shortest_s} s, {rows} rows): {per_trial * 1e3:.2f} ms, {100 * per_trial / shortest_s:.3f} % of its wall time")
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=int, default=0, help="simulated trials to run with TensorBoard on")
    ap.add_argument("--calls", action="store_true", help="time a trial's side of streaming")
    args = ap.parse_args()
    if args.calls:
        bench_calls()
    if args.sweep:
        bench_sweep(args.sweep)


if __name__ == "__main__":
    main()
