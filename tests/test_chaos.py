"""Chaos: a few hundred simulated trials while worker processes are killed at random.

Reports trials lost (must be 0) and trained twice (must be 0): every planned trial has
exactly one committed row, and no trial id finished more than one Ray task attempt.
"""

import collections
import os
import random
import signal
import threading
import time

import pytest

from orchestrator import load_trials
from orchestrator.spec import parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MAX_KILLS = 40


def test_random_worker_kills_lose_and_repeat_nothing(ray_cluster, tmp_path, capsys):
    from ray.util.state import list_tasks

    from orchestrator.sweep import run_sweep

    sizes = [1e6 * 1.25**i for i in range(30)]
    spec = parse_spec({
        "name": "chaos", "trainer": "simulated", "results": str(tmp_path / "results"),
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "duration_s": 0.1},
        "sweep": {"kind": "isoflop", "budgets": [1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23], "model_sizes": sizes},
        "resources": {"cpus": 1, "max_retries": 20},
        "fit": {"target_compute": 1e24},
    })
    stop, kills = threading.Event(), []
    rng = random.Random(0)

    def chaos():
        # A bounded number of kills: each costs a worker restart (a second or more of imports
        # on a loaded 2-core machine), so an unbounded monkey outpaces the sweep and the test's
        # length runs away; MAX_KILLS is plenty to hit submission, running and commit alike.
        while not stop.is_set() and len(kills) < MAX_KILLS:
            time.sleep(rng.uniform(0.2, 0.8))
            running = list_tasks(filters=[("name", "!=", ""), ("state", "=", "RUNNING"),
                                          ("func_or_class_name", "=", "_trial_task")], raise_on_missing_output=False)
            pids = [t.worker_pid for t in running if t.worker_pid]
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills.append(time.time())
                except ProcessLookupError:
                    pass

    t_start_ms = time.time() * 1000
    monkey = threading.Thread(target=chaos, daemon=True)
    monkey.start()
    try:
        out = run_sweep(spec, write_report=False)
    finally:
        stop.set()
        monkey.join()
    planned = 240
    trials = load_trials(spec.sweep_dir)
    lost = planned - int((trials["status"] == "completed").sum())
    # Other tests in this session may have run trials with the same names: count only this sweep's.
    finished = collections.Counter(
        t.name for t in list_tasks(filters=[("state", "=", "FINISHED"), ("func_or_class_name", "=", "_trial_task")],
                                   limit=10000, detail=True, raise_on_missing_output=False)
        if (t.creation_time_ms or 0) >= t_start_ms)
    chaos_names = set(trials["name"])
    twice = sum(1 for name, n in finished.items() if name in chaos_names and n > 1)
    assert sum(finished[name] for name in chaos_names) == planned
    with capsys.disabled():
        print(f"\nchaos: {planned} trials, {len(kills)} worker kills, lost {lost}, trained twice {twice}")
    assert len(kills) >= 5
    assert out.failed == 0 and lost == 0 and twice == 0
    assert len(trials) == planned and trials["trial_id"].is_unique
