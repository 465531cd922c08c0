"""`scalesweep submit` against a real Ray head started here as a child process (stopped by its
process group, never `ray stop`), with token authentication: submit, follow to completion,
read the results; the Jobs API commands around it."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest
import yaml

from conftest import ROOT, tiny_spec_dict
from orchestrator import load_steps, load_trials

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_bin):
        pytest.skip("the `ray` command is not installed")
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env.pop("RAY_ADDRESS", None)
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    dash = _free_port()
    proc = subprocess.Popen([ray_bin, "start", "--head", f"--port={_free_port()}", "--num-cpus=2", "--block",
                             "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             # fresh ports: the session's own Ray may hold the default agent ports
                             f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                             f"--temp-dir={tmp}", "--disable-usage-stats"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2)
            except urllib.error.HTTPError:
                break  # answering (401 without the token is fine: the API is up)
            except OSError:
                time.sleep(0.5)
                continue
            break
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def cli(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=dict(env, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_dashboard_refuses_requests_without_the_token(head):
    url, _ = head
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{url}/api/jobs/", timeout=5)
    assert e.value.code in (401, 403)


@pytest.mark.slow  # 40 s: a job with its own runtime env on a second Ray head (run with -m slow)
def test_submit_follow_and_read_results(head, tmp_path):
    """A sweep of real GPT trials as a Ray job on the head's 2 CPUs: submitted, followed to the
    end, its results read where the job wrote them, then listed, its logs read and stopped."""
    url, env = head
    results = tmp_path / "results"
    # The spec travels in the job's working_dir, the project: it must be written inside it.
    spec = ROOT / "specs" / f"_test_job_{uuid.uuid4().hex[:8]}.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict("unused", name="job")))
    try:
        # --no-pip: this head runs in the environment that already has the pinned requirements;
        # installing torch into a fresh virtualenv for the job would take minutes on 2 cores.
        # --results-shared: this one-node cluster shares the test's disk, as a mounted volume would.
        out = cli(env, "submit", str(spec.relative_to(ROOT)), "--address", url, "--results", str(results),
                  "--results-shared", "--no-pip", "--wait", timeout=900)
    finally:
        spec.unlink()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Submitted job raysubmit_" in out.stdout and f"{url}/#/jobs/raysubmit_" in out.stdout
    assert f"Results (written by the job): {results}/job" in out.stdout
    assert f"Results: {results}/job" in out.stdout  # the job's own last line says the same
    assert "Sweep job: 6 trials, 6 trained now" in out.stdout  # the job's own log, followed
    trials = load_trials(str(results / "job"))
    assert len(trials) == 6 and set(trials["status"]) == {"completed"}
    steps = load_steps(str(results / "job"))
    assert set(steps["trial_id"]) == set(trials["trial_id"]) and steps["eval_loss"].notna().any()
    assert (results / "job" / "report" / "index.html").exists()
    job_id = out.stdout.split("Submitted job ")[1].split()[0]
    listed = cli(env, "jobs", "--address", url)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = cli(env, "logs", job_id, "--address", url)
    assert "Fitted law" in logs.stdout
    stop = cli(env, "stop", job_id, "--address", url)
    assert stop.returncode == 0 and "already finished" in stop.stdout


@pytest.mark.parametrize("results, expected", [
    (None, "'results' is a relative path"),  # the quickstart's: it would land in Ray's temporary copy
    ("results", "is a relative path"),
    ("/data/sweeps", "is a directory on one machine's disk"),
    ("memory://bucket/sweeps", "lives in one process's memory"),
])
def test_results_a_job_would_lose_are_refused_before_submitting(results, expected):
    env = dict(os.environ, RAY_AUTH_MODE="token")
    args = ["submit", "specs/quickstart.yaml", "--address", "http://127.0.0.1:9"] + (["--results", results] if results else [])
    out = cli(env, *args, timeout=60)
    error = out.stderr.strip().splitlines()[-1]  # after the sweep's estimate
    assert out.returncode == 2 and error.startswith("scalesweep: error: results: ") and expected in error, out.stderr
    assert "s3://" in error and "results_shared" in error and "Traceback" not in out.stderr  # what to do instead


def test_a_driver_joining_a_cluster_checks_where_its_nodes_write(monkeypatch, caplog):
    import ray

    from orchestrator.running.cluster import check_results_reach_every_node
    from orchestrator.errors import UserError

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}] * 3 + [{"Alive": False}])
    with pytest.raises(UserError, match="this cluster has 3 nodes"):
        check_results_reach_every_node("/data/sweeps", False, "10.0.0.1:6379")
    with pytest.raises(UserError, match="through Ray Client"):
        check_results_reach_every_node("results", False, "ray://head:10001")
    check_results_reach_every_node("/mnt/nfs/sweeps", True, "10.0.0.1:6379")
    check_results_reach_every_node("s3://bucket/sweeps", False, "ray://head:10001")
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    with caplog.at_level("WARNING"):
        check_results_reach_every_node("/data/sweeps", False, "10.0.0.1:6379")
    assert "fine while this cluster has one node" in caplog.text


def test_bad_spec_never_reaches_the_cluster(head, tmp_path):
    url, env = head
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsweep: {kind: nope}\n")
    out = cli(env, "submit", str(bad), "--address", url)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "sweep" in out.stderr


def test_wrong_token_is_a_one_line_error(head):
    url, env = head
    out = cli(dict(env, RAY_AUTH_TOKEN="wrong" * 8), "jobs", "--address", url, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr
