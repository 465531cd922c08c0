"""SIGTERM of a driver mid-sweep (what Kubernetes sends a RayJob's driver pod, and what
`ray job stop` sends): exit 143, one line with the command that resumes, as it was given."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT

pytestmark = pytest.mark.ray


def test_sigterm_stops_like_ctrl_c_and_the_printed_command_resumes(ray_cluster, tmp_path):
    import ray

    spec = tmp_path / "sig.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "sig", "trainer": "simulated", "results": "unused",
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "duration_s": 1.0},
        "sweep": {"kind": "isoflop", "budgets": [1e17, 1e18], "model_sizes": [1e7, 3e7, 1e8, 3e8]},
        "fit": {"target_compute": 1e20},
    }))
    results = tmp_path / "elsewhere"  # an option the hint must keep
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--results", str(results), "--address", address]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((results / "sig" / "trials").glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err[-2000:]
    assert "SIGTERM received" not in err and "Traceback" not in err  # Ray's C++ stack dump
    # The driver's last line (Ray may still forward a worker's log line, "(pid=...) ...", after it).
    last = [line for line in err.strip().splitlines() if not line.startswith("(")][-1]
    assert last.startswith("Terminated (SIGTERM). Finished trials are saved; resume with: "), err[-2000:]
    resume = shlex.split(last.split("resume with: ", 1)[1])
    assert resume[:3] == ["python", "-m", "orchestrator.cli"] and resume[3:] == cmd[3:]

    again = subprocess.run([sys.executable] + resume[1:], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=180)
    assert again.returncode == 0, again.stderr[-2000:]
    done = int(again.stdout.split(" trained now, ")[1].split(" already finished")[0])
    assert 1 <= done < 8


def test_an_in_process_run_leaves_the_callers_sigterm_handler_alone(ray_cluster, tmp_path):
    """main() called from a notebook or a test must not keep its SIGTERM handler installed:
    pytest itself once ended in orchestrator.cli.Terminated when a timeout sent it SIGTERM."""
    from orchestrator.cli import main

    spec = tmp_path / "quick.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "quick", "trainer": "simulated", "results": str(tmp_path / "results"),
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}},
        "sweep": {"kind": "isoflop", "budgets": [1e17, 1e18], "model_sizes": [1e7, 1e8, 1e9]},
        "fit": {"target_compute": 1e20},
    }))
    mine = lambda signum, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["run", str(spec)]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
