"""Sweeps as Ray jobs: submit a spec to a cluster's Jobs API, list, follow, stop.

``submit`` validates the spec locally first (a bad spec never reaches the cluster), ships the
project directory as the job's working_dir with the project's pinned requirements as its pip
runtime environment (``pip=False`` when the cluster image already has them, as the deploy/
image does), and runs ``python -m orchestrator.cli run SPEC`` as the job's driver. Token auth:
Ray's SDK adds the Authorization header itself when RAY_AUTH_MODE=token, with the token from
RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token; the CLI sets the mode explicitly.
"""

from __future__ import annotations

import os
import shlex
import time
import tomllib
from pathlib import Path

from orchestrator.running.cluster import OBJECT_STORAGE_HINT, unshared_results
from orchestrator.errors import UserError

__all__ = ["PROJECT_ROOT", "check_submitted_results", "submit", "list_jobs", "job_logs", "stop_job", "wait_job", "requirements"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AGENT_WAIT_S = 120.0  # how long to wait for a new head's job agent
_EXCLUDES = ["results/", ".git/", "docs/", "bench/", "tests/", "*.egg-info/", "__pycache__/", ".pytest_cache/",
             "deploy/", "*.journal"]


def requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """The project's pinned dependencies, as pyproject.toml states them, and those of ``extras``
    (the trackers a spec names: a job's driver checks they are installed when it loads the spec)."""
    with open(PROJECT_ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    return list(project["dependencies"]) + [r for e in extras for r in project["optional-dependencies"][e]]


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # unreachable head, refused token, bad URL
        raise UserError(f"--address {address}: cannot reach the Ray Jobs API ({str(e).splitlines()[0]})") from None


def check_submitted_results(results: str, shared: bool) -> None:
    """UserError unless a job's driver and every worker write where the user will read.

    A relative path is resolved in the job's working directory, Ray's unpacked copy of the
    project under the head's temporary runtime-resources folder, deleted with the Ray session;
    a plain directory is on one node's disk (orchestrator.running.cluster.unshared_results)."""
    if "://" not in results and not os.path.isabs(results):
        raise UserError(f"results: {results!r} is a relative path, and a submitted job would write it inside "
                        f"Ray's temporary copy of the project on the head, deleted with the Ray session "
                        f"({OBJECT_STORAGE_HINT}; --results overrides the spec's)")
    problem = unshared_results(results, shared)
    if problem:
        raise UserError(problem)


def submit(address: str, spec_path: str, results: str | None = None, pip: bool = True,
           extra_args: list[str] | None = None, extras: tuple[str, ...] = ()) -> str:
    spec_file = Path(spec_path).resolve()
    try:
        rel = spec_file.relative_to(PROJECT_ROOT)
    except ValueError:
        raise UserError(f"{spec_path}: must be inside the project directory {PROJECT_ROOT} "
                        "(it is shipped as the job's working_dir); copy it to specs/") from None
    entry = ["python", "-m", "orchestrator.cli", "run", str(rel), "--no-dashboard"]
    if results:
        entry += ["--results", results]
    entry += extra_args or []
    runtime_env: dict = {"working_dir": str(PROJECT_ROOT), "excludes": _EXCLUDES}
    if pip:
        runtime_env["pip"] = requirements(extras)
    client = _client(address)
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=shlex.join(entry), runtime_env=runtime_env,
                                     metadata={"tool": "scalesweep", "spec": str(rel)})
        except RuntimeError as e:
            # A head that has just started answers before its job agent has registered.
            if "No available agent" in str(e) and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise UserError(f"--address {address}: the cluster refused the job ({str(e).splitlines()[0]})") from None


def list_jobs(address: str) -> list:
    return [j for j in _client(address).list_jobs() if (j.metadata or {}).get("tool") == "scalesweep"]


def job_logs(address: str, job_id: str) -> str:
    try:
        return _client(address).get_job_logs(job_id)
    except RuntimeError as e:
        raise UserError(f"job {job_id}: {str(e).splitlines()[0]}") from None


def stop_job(address: str, job_id: str) -> bool:
    try:
        return _client(address).stop_job(job_id)
    except RuntimeError as e:
        raise UserError(f"job {job_id}: {str(e).splitlines()[0]}") from None


def wait_job(address: str, job_id: str, on_output=None, poll_s: float = 1.0, timeout_s: float | None = None) -> str:
    """Follow the job's log until it ends; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
    from ray.job_submission import JobStatus

    client, shown, t0 = _client(address), 0, time.monotonic()
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if on_output and len(logs) > shown:
            on_output(logs[shown:])
            shown = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value)
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"job {job_id} still {status.value} after {timeout_s:.0f}s")
        time.sleep(poll_s)
