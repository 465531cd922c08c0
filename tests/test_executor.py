"""The executor contract (orchestrator.running.executor), run against every executor: the
in-process one, the planner benchmark's batch executor and Ray's (on the session's cluster,
with simulated trials that take no time)."""

import os
import signal
import time
import uuid
from dataclasses import replace

import pytest

from bench.bench_planner import BatchExecutor
from bench.worlds import VISIBLE_LAWS, law_spec
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.running.executor import Completion, Executor, InlineExecutor, RayExecutor
from orchestrator.spec import parse_spec
from workers.store import ResultStore, TrialStatus

T0 = law_spec(VISIBLE_LAWS["T0"])
SLOTS = 2  # the session's Ray has 2 CPUs and the trials ask for one each


@pytest.fixture(params=["inline", "batch", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request):
    if request.param == "inline":
        return InlineExecutor(slots=SLOTS)
    if request.param == "batch":
        return BatchExecutor(slots=SLOTS)
    request.getfixturevalue("ray_cluster")
    return RayExecutor(cpus=1, gpus=0, max_retries=0)


@pytest.fixture
def spec(tmp_path):
    return parse_spec({"name": "contract", "trainer": "simulated", "results": str(tmp_path / "results"),
                       "world": {"law": T0, "duration_s": 0},
                       "sweep": {"kind": "isoflop", "budgets": [1e15, 1e16], "model_sizes": [3e6, 1e7]},
                       "fit": {"target_compute": 1e20}})


@pytest.fixture
def trials(spec):
    return plan_trials(spec, TrialFactory(spec))


def drain(executor: Executor, deadline_s: float = 60.0) -> list[Completion]:
    """Wait until nothing is in flight, checking the count after every wait."""
    done, submitted, deadline = [], executor.in_flight(), time.monotonic() + deadline_s
    while executor.in_flight():
        assert time.monotonic() < deadline, "completions did not arrive"
        done += executor.wait(timeout=5)
        assert executor.in_flight() == submitted - len(done)
    return done


def test_implements_the_protocol(executor):
    assert isinstance(executor, Executor)


def test_every_submitted_trial_completes_exactly_once(executor, trials, spec):
    t0 = time.monotonic()
    for t in trials:
        executor.submit(t)
    assert time.monotonic() - t0 < 10  # submit starts a trial, it does not run it
    assert executor.in_flight() == len(trials)
    done = drain(executor)
    assert sorted(c.trial.trial_id for c in done) == sorted(t.trial_id for t in trials)
    for c in done:
        assert c.error == "" and c.result.trial_id == c.trial.trial_id
        assert c.result.status is TrialStatus.COMPLETED
    assert executor.wait(timeout=0.1) == [] and executor.in_flight() == 0
    statuses = ResultStore(spec.sweep_dir).trial_statuses()
    assert set(statuses) == {t.trial_id for t in trials}  # the worker committed its row


def test_wait_with_nothing_in_flight_returns_nothing_in_about_its_timeout(executor):
    t0 = time.monotonic()
    assert executor.wait(timeout=0.2) == []
    assert time.monotonic() - t0 < 5


def test_slots_are_how_many_trials_run_at_once(executor):
    n = executor.slots()
    assert isinstance(n, int) and n == SLOTS


def test_an_error_in_the_trial_comes_back_as_a_failed_result(executor, trials):
    """The trial's own exception is data (a FAILED row with its traceback), not a lost trial."""
    broken = replace(trials[0], trainer="no-such-trainer")
    executor.submit(broken)
    [c] = drain(executor)
    assert c.error == "" and c.result is not None and c.result.status is TrialStatus.FAILED
    assert "unknown trainer 'no-such-trainer'" in c.result.error and "Traceback" in c.result.error


def test_a_trial_whose_process_dies_comes_back_without_a_result(executor, trials):
    if not isinstance(executor, RayExecutor):
        pytest.skip("trials run in the caller's process: a process that dies takes the caller with it")
    import ray
    from ray.util.state import list_tasks

    address = ray.get_runtime_context().gcs_address  # other Rays may run on this machine

    name = f"contract-dies-{uuid.uuid4().hex[:8]}"
    slow = replace(trials[0], name=name, world=trials[0].world.model_copy(update={"duration_s": 60}))
    executor.submit(slow)
    deadline, pid = time.monotonic() + 60, None
    while pid is None and time.monotonic() < deadline:
        running = list_tasks(address, filters=[("name", "=", name), ("state", "=", "RUNNING")])
        pid = next((t.worker_pid for t in running if t.worker_pid), None)
        time.sleep(0.2)
    assert pid is not None, "the trial never started"
    os.kill(pid, signal.SIGKILL)  # as a lost machine; max_retries=0, so no retry
    [c] = drain(executor)
    assert c.result is None and c.trial.trial_id == slow.trial_id and c.error
