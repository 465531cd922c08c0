"""The driver with an in-process executor and a fake trainer: exact accounting, resumption."""

import math

from conftest import ROOT

import pytest

from orchestrator.running.driver import Driver
from orchestrator.running.executor import Completion, InlineExecutor
from orchestrator.planning.protocol import StaticPlanner
from orchestrator.planning.trials import TrialFactory, plan_trials
from workers.store import ResultStore, TrialStatus
from workers.config import TrialResult, trial_row


def fake_trainer(store: ResultStore, calls: list, fail=(), diverge=()):
    """Pure-logic stand-in for workers.gpt.train.run_trial: records a row, no training."""

    def run(trial):
        calls.append(trial.trial_id)
        status = TrialStatus.FAILED if trial.trial_id in fail else (
            TrialStatus.DIVERGED if trial.trial_id in diverge else TrialStatus.COMPLETED)
        loss = 2.0 + 1e4 / trial.n_params if status is TrialStatus.COMPLETED else math.nan
        row = trial_row(trial, trial.n_params, status, loss, loss, 0.01, "boom" if status is TrialStatus.FAILED else "")
        store.write_trial(row)
        return TrialResult(trial.trial_id, status, loss, 0.01, row["error"], row)

    return run


@pytest.fixture
def trials(tiny_spec, cache_dir):
    spec = tiny_spec()
    return plan_trials(spec, TrialFactory(spec, cache_dir))


def test_every_trial_exactly_once(trials, tmp_path):
    store, calls = ResultStore(str(tmp_path / "s")), []
    d = Driver(StaticPlanner(trials), store, InlineExecutor(fake_trainer(store, calls), slots=2), poll_s=0)
    d.run()
    assert sorted(calls) == sorted(t.trial_id for t in trials)
    assert d.progress.done == len(trials) and d.progress.flops_done == pytest.approx(d.progress.total_flops)


def test_rerun_skips_finished_and_retries_failed(trials, tmp_path):
    store, calls = ResultStore(str(tmp_path / "s")), []
    bad, nan = trials[0].trial_id, trials[1].trial_id
    Driver(StaticPlanner(trials), store, InlineExecutor(fake_trainer(store, calls, fail={bad}, diverge={nan})), poll_s=0).run()
    calls.clear()
    d = Driver(StaticPlanner(trials), store, InlineExecutor(fake_trainer(store, calls)), poll_s=0)
    d.run()
    assert calls == [bad]
    assert d.progress.skipped == len(trials) - 1  # the diverged trial is finished: it is data
    assert store.trial_statuses()[bad] is TrialStatus.COMPLETED


def test_settled_trials_are_merged_while_the_sweep_runs(trials, tmp_path, monkeypatch):
    """Every COMPACT_EVERY results the driver merges settled files; a failed trial from an
    earlier run is retried and its new row supersedes the merged one."""
    import orchestrator.running.driver

    monkeypatch.setattr(orchestrator.running.driver, "COMPACT_EVERY", 2)
    store, calls = ResultStore(str(tmp_path / "s")), []
    bad = trials[0].trial_id
    Driver(StaticPlanner(trials), store, InlineExecutor(fake_trainer(store, calls, fail={bad})), poll_s=0).run()
    store.compact("trials")  # the failed row now sits in a part file
    calls.clear()
    Driver(StaticPlanner(trials), store, InlineExecutor(fake_trainer(store, calls)), poll_s=0).run()
    assert calls == [bad]
    assert any(f.rpartition("/")[2].startswith("part-") for f in store.list_files("trials"))
    ids = store.read_table("trials")["trial_id"].to_pylist()
    assert sorted(ids) == sorted(t.trial_id for t in trials)
    assert store.trial_statuses()[bad] is TrialStatus.COMPLETED


def test_lost_worker_is_recorded_by_the_driver(trials, tmp_path):
    store = ResultStore(str(tmp_path / "s"))

    class Dying(InlineExecutor):
        def wait(self, timeout):
            return [Completion(self._queue.pop(0), None, "WorkerCrashedError: killed")] if self._queue else []

    d = Driver(StaticPlanner(trials[:2]), store, Dying(), poll_s=0)
    d.run()
    statuses = store.trial_statuses()
    assert len(statuses) == 2 and set(statuses.values()) == {TrialStatus.FAILED}
    assert "WorkerCrashedError" in store.read_table("trials").column("error")[0].as_py()
    assert d.progress.failed == 2


def test_keeps_slots_busy(trials, tmp_path):
    store, seen = ResultStore(str(tmp_path / "s")), []

    class Watching(InlineExecutor):
        def wait(self, timeout):
            seen.append(self.in_flight())
            return super().wait(timeout)

    planner = StaticPlanner(trials)
    planner.eager = False  # as an adaptive planner: keep slots busy, queue one more
    Driver(planner, store, Watching(fake_trainer(store, []), slots=3), poll_s=0).run()
    assert seen[0] == 4  # slots + one queued
    seen.clear()
    Driver(StaticPlanner(trials), ResultStore(str(tmp_path / "t")), Watching(fake_trainer(store, []), slots=3),
           poll_s=0).run()
    assert seen[0] == len(trials)  # a static sweep queues everything: the autoscaler sees it all


def test_second_driver_on_one_sweep_is_refused_until_the_first_exits(tmp_path):
    import subprocess
    import sys

    from orchestrator.errors import UserError
    from orchestrator.running.lock import DriverLock

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from orchestrator.running.lock import DriverLock\n"
        "lock = DriverLock(%r).acquire(); print('locked', flush=True); time.sleep(60)") % (str(ROOT), str(tmp_path))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"another scalesweep driver is running this sweep \(pid {holder.pid}"):
            DriverLock(str(tmp_path)).acquire()
    finally:
        holder.kill()  # like kill -9: the kernel drops the lock with the process
        holder.wait()
    with DriverLock(str(tmp_path)):
        pass


def test_running_and_queued_are_counted_apart(trials, tmp_path):
    """A static sweep queues every trial in Ray at once; only the cluster's slots run. The
    gauge once counted all of them as running (72 "running" on a 2-CPU cluster)."""
    store, calls, seen = ResultStore(str(tmp_path / "s")), [], []

    class Sink:
        def update(self, p, completion):
            seen.append((p.running, p.queued))

    d = Driver(StaticPlanner(trials), store, InlineExecutor(fake_trainer(store, calls), slots=2), Sink(), poll_s=0)
    d.step()
    n = len(trials) - 1  # all submitted, one finished
    assert seen[-1] == (2, n - 2)
    d.run()
    assert seen[-1] == (0, 0) and all(r <= 2 for r, _ in seen)
