"""Faults on a real local Ray: a worker killed mid-trial, a driver killed mid-sweep and resumed.

Every test asserts exact accounting against the Parquet results: one row per planned trial,
none lost, none trained twice.
"""

import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from conftest import ROOT, tiny_spec_dict
from orchestrator import load_trials
from orchestrator.spec import parse_spec

pytestmark = pytest.mark.ray


def _running_trial_pid(name_prefix: str = "N=", timeout: float = 60.0) -> tuple[str, int]:
    from ray.util.state import list_tasks

    deadline = time.time() + timeout
    while time.time() < deadline:
        for t in list_tasks(filters=[("func_or_class_name", "=", "_trial_task"), ("state", "=", "RUNNING")]):
            if t.worker_pid and t.name.startswith(name_prefix):
                return t.name, t.worker_pid
        time.sleep(0.2)
    raise AssertionError("no running trial found")


@pytest.mark.slow  # 25 s of GPT training; a worker killed mid-trial and retried on Ray also runs in
# tests/test_reuse_faults.py (a segment's, then a branch's) and, many times, in tests/test_chaos.py
def test_worker_killed_mid_trial_is_retried_exactly_once(ray_cluster, tmp_path, cache_dir):
    from orchestrator.sweep import run_sweep

    # Two real GPT trials of a few seconds each, so one can be killed while it trains.
    spec = parse_spec(tiny_spec_dict(str(tmp_path / "results"), name="kill-worker",
                                     sweep={"kind": "isoflop", "budgets": [2e10], "model_sizes": [4e3, 8e3]},
                                     resources={"cpus": 1, "max_retries": 2}))
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("out", run_sweep(spec, cache_dir=cache_dir,
                                                                               write_report=False)))
    runner.start()
    name, pid = _running_trial_pid()
    os.kill(pid, signal.SIGKILL)
    runner.join(timeout=300)
    assert not runner.is_alive()
    trials = load_trials(spec.sweep_dir)
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}
    assert name in set(trials["name"])
    from ray.util.state import list_tasks

    attempts = [t.attempt_number for t in list_tasks(filters=[("name", "=", name)])]
    assert max(attempts) >= 1  # the killed attempt was retried by Ray


def _driver_cmd(spec_path, address):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"))
    return [sys.executable, "-m", "orchestrator.cli", "run", str(spec_path), "--address", address], env


# -m slow: static-kill9 (tests/test_byo_trainer.py kills a static sweep's driver with kill -9 and
# resumes it, for both kinds of a lab's trainer), adaptive-kill9 (adaptive-tuned-kill9 resumes an
# adaptive planner too) and static-ctrlc (tests/test_signals.py stops a driver by signal and resumes it).
@pytest.mark.parametrize("planner,sig", [pytest.param("static", signal.SIGKILL, marks=pytest.mark.slow),
                                         pytest.param("adaptive", signal.SIGKILL, marks=pytest.mark.slow),
                                         ("adaptive-tuned", signal.SIGKILL),
                                         pytest.param("static", signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["static-kill9", "adaptive-kill9", "adaptive-tuned-kill9", "static-ctrlc"])
def test_driver_killed_then_resumed_loses_and_repeats_nothing(ray_cluster, tmp_path, planner, sig):
    """kill -9 leaves no goodbye; Ctrl-C (SIGINT) stops with exit 130 and prints the resume command."""
    import ray

    spec = {
        "name": f"kill-driver-{planner}", "trainer": "simulated", "results": str(tmp_path / "results"),
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "duration_s": 0.3},
        "fit": {"target_compute": 1e19},
    }
    if planner == "static":
        spec["sweep"] = {"kind": "isoflop", "budgets": [1e15, 1e16, 1e17], "model_sizes": [1e6, 3e6, 1e7, 3e7]}
    else:
        spec["planner"] = "adaptive"
        spec["adaptive"] = {"min_flops": 1e15, "max_flops": 1e17, "n_range": [1e6, 1e9], "flop_budget": 1e18,
                            "max_trials": 16, "initial_trials": 6}
    if planner == "adaptive-tuned":  # per-point searches of the learning rate (orchestrator.planning.tuning)
        spec["world"]["hparams"] = {"lr": {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307, "n": "total"},
                                   "batch": {"coef": 0.58, "d_exp": 0.571, "n": "total"}}
        spec["train"] = {"lr": {"tune": 1e-3}}
        spec["tune"] = {"max_trials_per_point": 5}
        spec["adaptive"] |= {"max_trials": 8, "flop_budget": 1e19}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "results" / spec["name"]
    cmd, env = _driver_cmd(path, ray.get_runtime_context().gcs_address)
    # A test run started in the background of a non-interactive shell inherits SIGINT ignored,
    # and Python keeps an ignored SIGINT: give the driver the default, as a terminal would.
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list((sweep_dir / "trials").glob("*.parquet")) if (sweep_dir / "trials").exists() else []) < 4:
        time.sleep(0.1)
    driver.send_signal(sig)
    _, err = driver.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert driver.returncode == 130, err[-2000:]
        # the command as it was given, every option included (--address was once dropped)
        assert f"resume with: {shlex.join(['python', '-m', 'orchestrator.cli', *cmd[3:]])}\n" in err
        assert "Traceback" not in err
    before = {p.name: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*.parquet")}
    assert 4 <= len(before)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = load_trials(str(sweep_dir))
    assert trials["trial_id"].is_unique and set(trials["status"]) == {"completed"}
    after = {p.name: p.stat().st_mtime_ns for p in (sweep_dir / "trials").glob("*.parquet")}
    assert {k: after[k] for k in before} == before  # nothing finished was trained again
    if planner == "static":
        assert len(trials) == 12
    elif planner == "adaptive":
        assert len(trials) <= 16
        assert "Adaptive planner stopped" in done.stdout
    else:  # the point in flight resumed its search: no search past its cap, no point counted twice
        assert trials.groupby("point_id").size().max() <= 5 and trials["point_id"].nunique() <= 8
        assert "Adaptive planner stopped" in done.stdout


def test_error_in_trial_is_not_retried_and_names_its_log(ray_cluster, tmp_path, cache_dir):
    """An exception in the trial's own code: recorded FAILED with traceback and log file, once."""
    from dataclasses import replace

    from orchestrator.running.executor import RayExecutor
    from orchestrator.planning.trials import TrialFactory, plan_trials
    from workers.config import DataConfig

    spec = parse_spec(tiny_spec_dict(str(tmp_path / "results"), name="broken"))
    trial = plan_trials(spec, TrialFactory(spec, cache_dir))[0]
    broken = replace(trial, data=DataConfig(text=str(tmp_path / "vanished.txt")), cache_dir=cache_dir)
    ex = RayExecutor(cpus=1, gpus=0, max_retries=3)
    ex.submit(broken)
    done = []
    while not done:
        done = ex.wait(timeout=5)
    result = done[0].result
    assert result is not None and result.status.value == "failed"
    assert "DataError" in result.error and "Traceback" in result.error
    log_line = next(line for line in result.error.splitlines() if line.startswith("log: "))
    assert os.path.exists(log_line[5:])
