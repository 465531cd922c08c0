"""Orchestration overhead: 500 simulated trials of 50 ms each on 2 CPUs, against the ideal.

Ideal wall time is 500 x 0.05 s / 2 = 12.5 s (goal: at most 1.15x, Ray's start-up excluded).
In the same run, the same workload through Ray Tune with OptunaSearch (each Tune trial sleeps
50 ms and reports one value), for comparison of overhead per trial.

scalesweep's side runs the real path: spec -> TrialFactory -> Driver -> RayExecutor (Ray
tasks) -> simulated worker -> Parquet commit, without the end-of-sweep fit and report (they
are measured separately in docs/benchmarks.md).

    python -m bench.bench_overhead [--trials 500] [--seconds 0.05] [--skip-tune]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time



def run_scalesweep(n: int, seconds: float, root: str) -> float:
    return drive({
        "name": "overhead", "trainer": "simulated", "results": root,
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "duration_s": seconds},
        "sweep": {"kind": "isoflop", "budgets": [1e17, 1e18, 1e19, 1e20, 1e21], "model_sizes": sizes_for(n)},
        "resources": {"cpus": 1, "max_retries": 0},
    }, n)


def sizes_for(n: int) -> list[float]:
    """Model sizes that make ``n`` trials over the five budgets of :func:`run_scalesweep`."""
    return [1e6 * 1.01**i for i in range(n // 5)]


def drive(spec_dict: dict, n: int) -> float:
    """Wall seconds of the real path for the ``n`` trials of ``spec_dict`` on 2 warm Ray workers."""
    from orchestrator.running.driver import Driver
    from orchestrator.running.executor import RayExecutor
    from orchestrator.planning.trials import TrialFactory, plan_trials
    from orchestrator.planning.protocol import StaticPlanner
    from orchestrator.spec import parse_spec
    from workers.store import ResultStore

    spec = parse_spec(spec_dict)
    trials = plan_trials(spec, TrialFactory(spec))
    assert len(trials) == n, len(trials)
    os.makedirs(spec.sweep_dir, exist_ok=True)
    # Warm the two worker processes (interpreter start and imports are Ray start-up, not per trial).
    import ray

    ray.get([ray.remote(lambda: __import__("workers.run")).remote() for _ in range(2)])
    t0 = time.perf_counter()
    Driver(StaticPlanner(trials), ResultStore(spec.sweep_dir), RayExecutor(1, 0, 0), poll_s=1.0).run()
    wall = time.perf_counter() - t0
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pylist()
    assert len(rows) == n and {r["status"] for r in rows} == {"completed"}, {r["error"] for r in rows}
    return wall


def run_tune(n: int, seconds: float) -> float:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config):
        time.sleep(seconds)
        return {"loss": (config["x"] - 0.3) ** 2}

    t0 = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(metric="loss", mode="min"), num_samples=n,
                                    max_concurrent_trials=2),
        run_config=tune.RunConfig(verbose=0, storage_path=tempfile.mkdtemp()),
    )
    tuner.fit()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=0.05)
    ap.add_argument("--skip-tune", action="store_true")
    args = ap.parse_args()
    from orchestrator.running.cluster import connect

    t0 = time.perf_counter()
    connect(None, "token", num_cpus=2, dashboard=False)
    print(f"Ray start-up: {time.perf_counter() - t0:.1f}s (excluded)")
    ideal = args.trials * args.seconds / 2
    with tempfile.TemporaryDirectory() as root:
        wall = run_scalesweep(args.trials, args.seconds, root)
    per = (wall - ideal) / args.trials * 2  # overhead per trial per slot
    print(f"scalesweep: {args.trials} trials x {args.seconds * 1000:.0f} ms on 2 CPUs: {wall:.2f}s, "
          f"ideal {ideal:.2f}s, ratio {wall / ideal:.3f}, overhead {per * 1000:.1f} ms/trial")
    if not args.skip_tune:
        tw = run_tune(args.trials, args.seconds)
        tper = (tw - ideal) / args.trials * 2
        print(f"Ray Tune + OptunaSearch: {tw:.2f}s, ratio {tw / ideal:.3f}, overhead {tper * 1000:.1f} ms/trial; "
              f"scalesweep's overhead is {tper / max(per, 1e-9):.1f}x smaller")


if __name__ == "__main__":
    main()
