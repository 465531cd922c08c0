"""A real two-node Ray cluster on this machine: the worker node dies in the middle of a sweep.

Head and worker are separate `ray start --block` processes, each in its own process group,
with their own token; the driver is a third process (`scalesweep run --address`). Killing the
worker node's process group (SIGKILL, as a lost machine) must leave the sweep complete on the
head with exactly one result per trial. Everything is stopped by process group, never with
`ray stop` (which would kill every Ray on the machine).
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from conftest import ROOT
from orchestrator import load_trials

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_bin() -> str:
    exe = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(exe):
        pytest.skip("the `ray` command is not installed")
    return exe


@pytest.fixture
def two_nodes(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), PYTHONPATH=str(ROOT))
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the embedded-cluster switch refuses multi-node
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    # Ray's socket paths must fit in 107 bytes: pytest's tmp_path is too deep for them.
    short_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    address = f"127.0.0.1:{port}"
    common = ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]

    def ports():  # fresh agent ports per node: the session's own Ray may hold the defaults
        return [f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"]

    head = subprocess.Popen([_ray_bin(), "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             f"--temp-dir={short_tmp}", *common, *ports()], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        worker = subprocess.Popen([_ray_bin(), "start", f"--address={address}", "--num-cpus=2",
                                   "--resources={\"doomed\": 2}", *common, *ports()],
                                  env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = ("import ray, time\nray.init(address=%r)\nfor _ in range(120):\n"
                 "    if ray.cluster_resources().get('CPU', 0) >= 3: break\n    time.sleep(0.5)\n"
                 "print(int(ray.cluster_resources().get('CPU', 0)))") % address
        cpus = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert cpus.stdout.strip().endswith("3"), cpus.stderr[-1500:]
        yield address, env, worker
    finally:
        for proc in (worker, head):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(short_tmp, ignore_errors=True)


@pytest.mark.slow  # 35 s: a second node started and killed (run with -m slow)
def test_worker_node_lost_mid_sweep(two_nodes, tmp_path):
    address, env, worker = two_nodes
    spec = {
        "name": "node-loss", "trainer": "simulated", "results": str(tmp_path / "results"),
        "results_shared": True,  # both nodes run on this machine: they share its disk, as a mounted volume
        "world": {"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "duration_s": 1.0},
        "sweep": {"kind": "isoflop", "budgets": [1e15, 1e16, 1e17], "model_sizes": [1e6, 3e6, 1e7, 3e7]},
        "resources": {"cpus": 1, "max_retries": 3},
        "fit": {"target_compute": 1e19},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    sweep_dir = tmp_path / "results" / "node-loss"
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(path), "--address", address],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list((sweep_dir / "trials").glob("*.parquet")) if (sweep_dir / "trials").exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker node disappears, its running trials with it
    worker.wait()
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err[-2000:]
    trials = load_trials(str(sweep_dir))
    assert len(trials) == 12 and trials["trial_id"].is_unique
    assert set(trials["status"]) == {"completed"}, trials[["name", "status", "error"]]
    assert "12 trials, 12 trained now" in out
