"""Driver scale: 10,000 simulated trials, the driver's memory, the planner's proposal time,
and status / fit / report / query on the results.

Two parts, each optional:

``--planner``: the adaptive planner's proposal time at N finished trials. An Optuna journal
is filled with N finished trials of the T0 world (as a long sweep would leave it), the planner
resumes from it, then proposes and is told results 2 at a time (2 worker slots) for 600
rounds, past one rebuild of its design model; the time of each ``ask`` is recorded (refit,
design model, acquisition search, Optuna bookkeeping: everything between a free slot and the
next trial).

``--sweep``: ``scalesweep run`` of a static simulated sweep of ``--trials`` trials on a fresh
local Ray, sampling the driver process's resident memory every 0.5 s against the trials done
(flat means it does not grow with them), then ``scalesweep status``,
``fit``, ``report`` and a ``query`` on its results, each timed as a user runs it.

    python -m bench.bench_scale --planner 300 10000 --sweep --trials 10000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

from bench.worlds import VISIBLE_LAWS, law_spec

T0 = law_spec(VISIBLE_LAWS["T0"])


def planner_spec(root: str, max_trials: int) -> dict:
    return {"name": "scale-planner", "trainer": "simulated", "planner": "adaptive", "results": root,
            "world": {"law": T0}, "fit": {"target_compute": 1e20},
            "adaptive": {"min_flops": 1e15, "max_flops": 1e18, "n_range": [1e6, 3e9], "dn_range": [1, 1000],
                         "flop_budget": 1e30, "max_trials": max_trials, "initial_trials": 8,
                         "target_width": 1e-6, "loss_width": 1e-9}}


def bench_planner(n_finished: int, rounds: int = 600) -> None:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from orchestrator.planning.adaptive import AdaptivePlanner, snap_compute
    from orchestrator.planning.trials import TrialFactory
    from orchestrator.spec import parse_spec
    from workers.store import TrialStatus
    from workers.config import LawConfig, TrialResult, WorldConfig
    from workers.simulated.world import World

    with tempfile.TemporaryDirectory() as tmp:
        spec = parse_spec(planner_spec(tmp, n_finished + 10 * rounds))
        os.makedirs(spec.sweep_dir)
        journal = os.path.join(spec.sweep_dir, "planner.journal")
        world = World(WorldConfig(law=LawConfig(**T0)))
        rng = np.random.default_rng(0)
        lc = np.array([snap_compute(v) for v in rng.uniform(15, 18, n_finished)])
        lr = rng.uniform(0, 3, n_finished)
        ln = 0.5 * (lc - math.log10(6) - lr)
        ld = ln + lr
        dist = {"log10_n": FloatDistribution(5, 10), "log10_d": FloatDistribution(5, 13)}
        t0 = time.perf_counter()
        study = optuna.create_study(study_name=f"scalesweep-{spec.name}",
                                    storage=JournalStorage(JournalFileBackend(journal)), direction="minimize")
        study.add_trials([optuna.trial.create_trial(
            params={"log10_n": float(a), "log10_d": float(b)}, distributions=dist,
            value=float(world.observe(10**a, 10**b, i)), user_attrs={"flops": 6 * 10 ** (a + b), "trial_id": f"{i:x}"})
            for i, (a, b) in enumerate(zip(ln, ld))])
        fill = time.perf_counter() - t0
        t0 = time.perf_counter()
        planner = AdaptivePlanner(spec, TrialFactory(spec), journal)
        resume = time.perf_counter() - t0
        assert len(planner.obs) == n_finished, (len(planner.obs), n_finished)
        times, key = [], 10**9
        for _ in range(rounds):
            t0 = time.perf_counter()
            batch = planner.ask(2)
            times.append((time.perf_counter() - t0) / max(1, len(batch)))
            for trial in batch:
                key += 1
                planner.tell(trial, TrialResult(trial.trial_id, TrialStatus.COMPLETED,
                                                float(world.observe(trial.n_params, trial.tokens, key)), 0.0))
        t = np.array(times) * 1e3
        print(f"planner at {n_finished} finished trials (journal filled in {fill:.1f}s, resumed in {resume:.1f}s): "
              f"proposal time per trial median {np.median(t):.1f} ms, p90 {np.percentile(t, 90):.1f} ms, "
              f"p99 {np.percentile(t, 99):.1f} ms, "
              f"max {t.max():.0f} ms over {rounds} asks of 2 (the max includes the periodic refit and rebuild)")


def sweep_spec(n_trials: int, root: str) -> dict:
    from bench.bench_sim_scale import spec

    return spec(n_trials, root)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def trials_done(err_path: str) -> int:
    """Trials done per the last '[k/N] ...' line the driver printed (non-terminal output)."""
    with open(err_path, "rb") as f:
        f.seek(max(0, os.path.getsize(err_path) - 4096))
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.startswith("[")]
    try:
        return int(lines[-1][1:].split("/", 1)[0]) if lines else 0
    except ValueError:
        return 0


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return time.perf_counter() - t0, out.stdout


def bench_sweep(n_trials: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scale.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(sweep_spec(n_trials, os.path.join(tmp, "results")), f)
        t0 = time.perf_counter()
        with open(os.path.join(tmp, "out"), "w+") as fo, open(os.path.join(tmp, "err"), "w+") as fe:
            # Files, not pipes: a driver printing a line per trial would fill a pipe and block.
            proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", path, "--no-dashboard"],
                                    stdout=fo, stderr=fe, text=True)
            samples = []  # (seconds, RSS MB, trials done so far per the driver's last progress line)
            while proc.poll() is None:
                samples.append((time.perf_counter() - t0, rss_mb(proc.pid), trials_done(fe.name)))
                time.sleep(0.5)
            wall = time.perf_counter() - t0
            fo.seek(0), fe.seek(0)
            out, err = fo.read(), fe.read()
        if proc.returncode:
            sys.exit(err[-2000:])
        start = next((line for line in err.splitlines() if line.startswith("Starting")), "")
        ray_s = float(start.rsplit(" in ", 1)[1].rstrip("s")) if " in " in start else 0.0
        summary = next((line for line in out.splitlines() if line.startswith("Sweep")), "")
        samples = [s for s in samples if s[1] > 0]
        total = max(s[2] for s in samples)
        at = {f: next((s[1] for s in samples if s[2] >= f * total), 0.0) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
        training = max(s[1] for s in samples if s[2] < total)
        print(summary)
        print(f"sweep of {n_trials} trials: {wall:.1f}s in all, {wall - ray_s:.1f}s without Ray start-up "
              f"({ray_s:.1f}s); driver RSS with 10/25/50/75/100 % of trials done: "
              f"{' / '.join(f'{v:.0f}' for v in at.values())} MB; peak while trials ran {training:.0f} MB, "
              f"peak overall (the end-of-sweep fit and report) {max(s[1] for s in samples):.0f} MB")
        results = os.path.join(tmp, "results", "scale")
        files = sum(len(os.listdir(os.path.join(results, t))) for t in ("trials",) if os.path.isdir(os.path.join(results, t)))
        print(f"files in trials/ after the sweep: {files}")
        cli = [sys.executable, "-m", "orchestrator.cli"]
        for name, args in (("status", ["status", results]), ("fit", ["fit", results]),
                           ("report", ["report", results]),
                           ("query", ["query", results, "SELECT budget, min(eval_loss) FROM trials GROUP BY budget"])):
            s, _ = timed(cli + args)
            print(f"scalesweep {name:6s} on {n_trials} trials: {s:.2f}s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--planner", type=int, nargs="*", default=None, help="finished-trial counts to time proposals at")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--trials", type=int, default=10_000)
    args = ap.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    for n in args.planner or []:
        bench_planner(n)
    if args.sweep:
        bench_sweep(args.trials)


if __name__ == "__main__":
    main()
