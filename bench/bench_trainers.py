"""What a lab's trainer costs per trial beyond its own work (docs/benchmarks.md, "Bring your own trainer").

1. The Python path against the built-in one, on Ray, in one run: the same N trials of S seconds
   each on 2 CPUs, through the real path (spec -> TrialFactory -> Driver -> RayExecutor ->
   run_trial -> Parquet commit), once as the built-in simulator (world.duration_s = S) and once
   as a lab's function trainer that sleeps S seconds (:func:`sleeper`, named by import path).
   Goal: the function's overhead per trial at most the built-in's.
2. The command path, in-process: run_trial of a command that writes its result and exits,
   against the same command run bare (subprocess.run). The difference is the command path's own
   cost per trial: the trial file, the process group and its watcher, reading the outputs, the
   commit. Goal: at most 0.5 s.

    python -m bench.bench_trainers [--trials 300] [--seconds 0.05] [--commands 50]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from bench.bench_overhead import drive, sizes_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = ("echo '{\"step\": 1, \"tokens\": 1000, \"train_loss\": 2.5}' >> \"$SCALESWEEP_OUTPUT/metrics.jsonl\" && "
           "echo '{\"n_params\": 1000, \"eval_loss\": 2.5}' > \"$SCALESWEEP_OUTPUT/result.json\"")
LAW = {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}


def sleeper(trial, ctx):
    """A lab's trainer that only waits: its cost is the interface's."""
    from scalesweep import Outcome

    time.sleep(trial.settings["seconds"])
    loss = LAW["E"] + LAW["A"] / trial.n_params ** 0.31 + LAW["B"] / trial.tokens ** 0.31
    ctx.report(trial.steps, trial.tokens, train_loss=loss, eval_loss=loss)
    return Outcome(eval_loss=loss, n_params=trial.n_params)


def _spec(kind: str, n: int, seconds: float, root: str) -> dict:
    spec = {"name": f"overhead-{kind}", "results": root, "resources": {"cpus": 1, "max_retries": 0},
            "sweep": {"kind": "isoflop", "budgets": [1e17, 1e18, 1e19, 1e20, 1e21], "model_sizes": sizes_for(n)},
            "train": {"batch_tokens": 1, "min_steps": 1}}
    if kind == "builtin":
        spec |= {"trainer": "simulated", "world": {"law": LAW, "duration_s": seconds}}
    else:
        spec |= {"trainer": {"function": "bench.bench_trainers:sleeper", "settings": {"seconds": seconds},
                             "workdir": ROOT},
                 "model": {"size": "bench.bench_trainers:exact_size"}}
    return spec


def exact_size(target_n):
    """A size hook whose model is its target, as the simulator's."""
    return {}, int(round(target_n))


def run_commands(n: int, root: str) -> tuple[float, float]:
    """(mean seconds of the bare command, mean seconds of run_trial of it)."""
    from orchestrator.planning.trials import TrialFactory, plan_trials
    from orchestrator.spec import parse_spec
    from workers.run import run_trial

    env = dict(os.environ, SCALESWEEP_OUTPUT=tempfile.mkdtemp())
    script = os.path.join(root, "train.sh")  # a file: the command line itself holds no braces to escape
    with open(script, "w") as f:
        f.write(COMMAND + "\n")
    bare = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(["sh", script], env=env, check=True)
        bare.append(time.perf_counter() - t0)
    spec = parse_spec({"name": "overhead-command", "results": root, "trainer": {"command": ["sh", script],
                                                                             "workdir": ROOT},
                       "model": {"ladder": [{"name": "tiny", "n_params": 1000}]},
                       "sweep": {"kind": "grid", "model_sizes": [1000], "tokens": [1000 + i for i in range(n)]},
                       "train": {"batch_tokens": 1, "min_steps": 1}})
    trials = plan_trials(spec, TrialFactory(spec))
    path = []
    for t in trials:
        t0 = time.perf_counter()
        r = run_trial(t)
        path.append(time.perf_counter() - t0)
        assert r.status.value == "completed", r.error
    return statistics.mean(bare), statistics.mean(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=0.05)
    ap.add_argument("--commands", type=int, default=50)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from orchestrator.running.cluster import connect

    with tempfile.TemporaryDirectory() as root:
        bare, path = run_commands(args.commands, root)
        print(f"command path: bare command {bare * 1000:.1f} ms, through run_trial {path * 1000:.1f} ms: "
              f"{(path - bare) * 1000:.1f} ms per trial beyond the command's own run (goal 500 ms); "
              f"command: {shlex.quote(COMMAND)}")
        t0 = time.perf_counter()
        connect(None, "token", num_cpus=2, dashboard=False)
        print(f"Ray start-up: {time.perf_counter() - t0:.1f}s (excluded)")
        ideal = args.trials * args.seconds / 2
        per = {}
        for kind in ("builtin", "function", "builtin", "function"):  # interleaved: the machine's speed drifts
            wall = drive(_spec(kind, args.trials, args.seconds, os.path.join(root, f"{kind}-{len(per)}")), args.trials)
            per.setdefault(kind, []).append((wall - ideal) / args.trials * 2)
            print(f"{kind}: {args.trials} trials x {args.seconds * 1000:.0f} ms on 2 CPUs: {wall:.2f}s, ideal "
                  f"{ideal:.2f}s, ratio {wall / ideal:.3f}, overhead {per[kind][-1] * 1000:.1f} ms/trial")
        b, f = min(per["builtin"]), min(per["function"])
        print(f"overhead per trial (best of 2): built-in {b * 1000:.1f} ms, function trainer {f * 1000:.1f} ms "
              f"(ratio {f / max(b, 1e-9):.2f}; goal <= 1)")


if __name__ == "__main__":
    main()
