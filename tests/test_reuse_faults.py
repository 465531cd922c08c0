"""Faults in wsd sweeps with run reuse (orchestrator.running.reuse) on a real local Ray and a real
Parquet store: the driver killed with kill -9 in a stem segment or in a branch and resumed, a Ray
worker killed in a segment or in a branch, a stem that fails, a damaged stem checkpoint.

Each test compares the final trials table with an uninterrupted run of the same spec: the same
point rows (trial ids, eval_loss bit for bit), every trial id once, every stem segment once (its
id hashes the stem and its end step; a failed segment's row stays beside its retry's, which
has the next attempt's id), no stem checkpoint left behind, and each stem's rows
spending together the FLOPs of training the stem once up to its last branch point,
6 N (max start_step * step_tokens). A resumed run never rewrites a committed row's file
(nothing committed, segments included, is trained again).

The simulated trainer makes timing controllable and results deterministic: a row sleeps
``world.duration_s`` times the share of its tokens it trains, so a segment (0.67-1 s) or a
branch (0.5 s) is easy to kill in. It has no preemption checkpoints: a segment killed before its
commit is trained again from the stem's previous stop, and its one committed row counts exactly
that stretch, so the FLOPs identity is exact. A GPT segment also saves preemption checkpoints
(stem checkpoints between its stops) and resumes from its last one; what it re-does after that
checkpoint is the one stretch the identity may exceed by, and the GPT driver-kill test allows it
(a segment resumed from its own preemption checkpoint keeps the count it had there).
"""

from __future__ import annotations

import glob
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
import yaml

from conftest import ROOT, tiny_spec_dict
from orchestrator import load_trials
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import parse_spec
from workers.flops import train_flops
from workers.store import ResultStore, stem_checkpoint_path

pytestmark = pytest.mark.ray

LAW = {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}
FRESH_S = 0.25  # see fresh_trial
DURATION_S = 1.0  # a simulated row of the whole D; a segment sleeps its share, a branch its cooldown's
QUICK_S = 0.2  # where nothing is killed mid-row (duration_s is not in the trial ids)


def sim_spec(results, name: str, duration_s: float = DURATION_S, tokens=(2e7, 6e7, 2e8), retries: int = 2,
             **train) -> dict:
    """Two stems (1M and 10M parameters) of three branch points each: six points, six segments.

    A cooldown of half the steps makes a branch sleep half of ``duration_s``, long enough to be
    caught running; segments sleep 1, 2/3 and 7/10 of it."""
    return {
        "name": name, "trainer": "simulated", "results": str(results),
        "world": {"law": LAW, "duration_s": duration_s},
        "sweep": {"kind": "grid", "model_sizes": [1e6, 1e7], "tokens": list(tokens)},
        "train": {"schedule": "wsd", "cooldown": {"fraction": 0.5}, **train},
        "resources": {"cpus": 1, "max_retries": retries},
        "fit": {"target_compute": 1e19},
    }


def plan(spec):
    return plan_trials(spec, TrialFactory(spec, ""))


def check_reference(spec) -> tuple:
    """(trials table, stem FLOPs) of an uninterrupted run of ``spec``, checked against the plan:
    its points, a segment at each branch point, each stem trained once."""
    from orchestrator.running.reuse import segment

    planned = plan(spec)
    trials = load_trials(spec.sweep_dir)
    assert set(trials["status"]) == {"completed"}
    assert set(points(trials)) == {t.trial_id for t in planned}
    assert sorted(stems(trials)["trial_id"]) == sorted({segment(t, t.start_step).trial_id for t in planned})
    expected = stem_flops(planned)
    assert stems(trials).groupby("parent_id")["flops_spent"].sum().to_dict() == pytest.approx(expected, rel=1e-12)
    return trials, expected


def stem_flops(trials) -> dict[str, float]:
    """FLOPs of training each stem once, up to its last branch point."""
    out: dict[str, float] = defaultdict(float)
    for t in trials:
        if t.stem_id and t.start_step:
            out[t.stem_id] = max(out[t.stem_id], train_flops(t.n_params, t.start_step * t.step_tokens))
    return dict(out)


@pytest.fixture(scope="module")
def sim_reference(tmp_path_factory):
    """The uninterrupted run, in process (the simulated loss depends on the trial id only, and
    ``duration_s`` stays out of the id): (trials table, stem FLOPs)."""
    from orchestrator.running.executor import InlineExecutor
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_spec(tmp_path_factory.mktemp("sim-ref") / "results", "ref", duration_s=0.0))
    assert run_sweep(spec, executor_factory=InlineExecutor, write_report=False).failed == 0
    trials, expected = check_reference(spec)
    assert len(trials) == 12 and len(expected) == 2
    return trials, expected


def points(trials) -> dict[str, float]:
    p = trials[trials["role"] == "point"]
    return dict(zip(p["trial_id"], p["eval_loss"]))


def stems(trials):
    return trials[trials["role"] == "stem"]


def assert_like_reference(sweep_dir, reference, flops: bool = True, failed_segment: str = ""):
    """The rows of ``sweep_dir`` are those of the uninterrupted run, and (``flops``) each stem's
    rows spend exactly the FLOPs of training it once. ``failed_segment``: the id of a segment
    whose failed attempt keeps its row (its FLOPs were spent) beside those, its retry's under
    the next attempt's id (orchestrator.running.reuse.ReuseExecutor._segment)."""
    ref, expected_flops = reference
    trials = load_trials(str(sweep_dir))
    assert trials["trial_id"].is_unique
    if failed_segment:
        kept = trials[trials["trial_id"] == failed_segment]
        assert len(kept) == 1 and kept["status"].item() == "failed" and kept["role"].item() == "stem"
        trials = trials[trials["trial_id"] != failed_segment]
    assert set(trials["status"]) == {"completed"}, trials[trials["status"] != "completed"][["name", "error"]]
    assert points(trials) == points(ref)  # same ids, bit-identical losses
    if failed_segment:  # each stretch of a stem once, besides the failed attempt
        assert sorted(zip(stems(trials)["parent_id"], stems(trials)["tokens"])) == \
            sorted(zip(stems(ref)["parent_id"], stems(ref)["tokens"]))
    else:
        assert sorted(stems(trials)["trial_id"]) == sorted(stems(ref)["trial_id"])  # each segment once
    if flops:
        spent = stems(trials).groupby("parent_id")["flops_spent"].sum().to_dict()
        assert spent == pytest.approx(expected_flops, rel=1e-12)
    assert glob.glob(os.path.join(str(sweep_dir), "checkpoints", "**", "*.pt"), recursive=True) == []
    return trials


# -- Ray helpers ----------------------------------------------------------------------------------

def tasks(**filters) -> list:
    """Ray's task records (the state API) of this session's cluster, whatever else runs on the
    machine: with no address the state API refuses to choose between two local clusters."""
    import ray
    from ray.util.state import list_tasks

    return list_tasks(address=ray.get_runtime_context().gcs_address, filters=[(k, "=", v) for k, v in filters.items()],
                      limit=10000, detail=True, raise_on_missing_output=False)


def _raylet_pid() -> int:
    import ray

    return ray._private.worker._global_node.all_processes["raylet"][0].process.pid


def running_trials() -> list[tuple[str, int]]:
    """(name, worker pid) of each trial running now on this session's Ray, from the title Ray
    gives a worker while it runs a task ("ray::<task name>", "ray::IDLE" between tasks), read
    in /proc: without the state API's lag (task events reach it about a second late, when a
    branch may have committed)."""
    raylet, out = _raylet_pid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rpartition(")")[2].split()[1]) != raylet:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
        name = title.removeprefix("ray::")
        if name != title and (name.startswith("N=") or name.startswith("stem N=")):
            out.append((name, int(pid)))
    return out


def is_stem(name: str) -> bool:
    return name.startswith("stem ")


def wait_for(cond, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_dead(pid: int, timeout: float = 30.0) -> None:
    def dead():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(dead, timeout, f"process {pid} to exit")


def committed(sweep_dir) -> dict[str, int]:
    """Committed trial files -> mtime."""
    return {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(str(sweep_dir), "trials", "*.parquet"))}


def committed_names(sweep_dir) -> set[str]:
    return set(ResultStore(str(sweep_dir)).read_table("trials").column("name").to_pylist())


def driver_cmd(spec: dict, tmp_path, cache_dir: str = ""):
    import ray

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "token"),
               SCALESWEEP_CACHE=cache_dir)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", str(path), "--address",
           ray.get_runtime_context().gcs_address]
    return cmd, env


def fresh_trial(want, sweep_dir, fresh_s: float = FRESH_S):
    """A function returning (name, pid) of a running trial that ``want(name, committed names)``
    accepts and that was first seen running less than ``fresh_s`` ago (else None). A trial seen
    late could end between the look and the kill (every simulated row here sleeps 0.5 s or more)."""
    first_seen: dict[tuple[str, int], float] = {}

    def pick():
        now, names = time.time(), committed_names(sweep_dir)
        for key in running_trials():
            seen = first_seen.setdefault(key, now)
            if now - seen < fresh_s and key[0] not in names and want(key[0], names):
                return key
        return None

    return pick


def kill_driver_when(cmd, env, pick, timeout: float = 120.0) -> str:
    """Start the driver and kill -9 it once ``pick()`` names a running trial; wait until that
    trial's worker is gone too (Ray kills the workers of a dead driver's tasks, in well under a
    second here). Returns the trial's name."""
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        name, pid = wait_for(lambda: driver.poll() is None and pick(), timeout, "a trial to kill the driver in")
        driver.kill()
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == -signal.SIGKILL, err[-3000:]
    wait_dead(pid)
    return name


def resume(spec: dict, cmd=None, env=None, cache_dir: str = "") -> None:
    """Resume the sweep: `scalesweep run` again (``cmd``), or run_sweep in this process on the
    session's Ray (no interpreter start and warm workers: seconds less)."""
    if cmd is not None:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return
    from orchestrator.sweep import run_sweep

    assert run_sweep(parse_spec(spec), cache_dir=cache_dir, write_report=False).failed == 0


# -- 1. the driver killed and resumed -------------------------------------------------------------

@pytest.mark.parametrize("target", ["stem", pytest.param("branch", marks=pytest.mark.slow)])
def test_driver_killed_in_a_segment_or_a_branch_then_resumed(ray_cluster, tmp_path, sim_reference, target):
    """kill -9 of the driver while a stem segment runs (after a segment has committed), or while
    a branch runs; resuming (`scalesweep run` again after the segment, run_sweep after the
    branch) finishes the sweep with the rows of an uninterrupted run, and trains no committed
    segment (nor any committed trial) again."""
    spec = sim_spec(tmp_path / "results", f"kill-driver-{target}")
    sweep_dir = tmp_path / "results" / spec["name"]
    cmd, env = driver_cmd(spec, tmp_path)

    def want(name, committed):  # a segment once another has committed; any branch
        return is_stem(name) and any(map(is_stem, committed)) if target == "stem" else not is_stem(name)

    killed = kill_driver_when(cmd, env, fresh_trial(want, sweep_dir))
    before = committed(sweep_dir)
    names = set(load_trials(str(sweep_dir))["name"])
    assert killed not in names  # killed before its commit
    assert any(map(is_stem, names))  # a committed segment, which the resumed run must not train again
    if target == "stem":
        resume(spec, cmd, env)  # `scalesweep run` again
    else:
        resume(spec)  # run_sweep
    trials = assert_like_reference(sweep_dir, sim_reference)
    assert killed in set(trials["name"])
    after = committed(sweep_dir)
    assert {p: after.get(p) for p in before} == before  # no committed row written again


def gpt_spec(results, name: str) -> dict:
    """One GPT stem (3.9k parameters) with branch points at steps 40, 160 and 240: segments of
    40, 120 and 80 steps (a few seconds in all), each saving a preemption checkpoint (a stem
    checkpoint) at every log boundary, so a killed segment resumes 5 steps or less before where
    it stopped."""
    return tiny_spec_dict(str(results), name=name,
                          sweep={"kind": "grid", "model_sizes": [4e3], "tokens": [12800, 51200, 76800]},
                          train={"schedule": "wsd", "checkpoint_every_s": 1e-9})


@pytest.fixture(scope="module")
def gpt_reference(tmp_path_factory, cache_dir):
    """The uninterrupted GPT run, in process (training is deterministic on CPU, one thread)."""
    from orchestrator.running.executor import InlineExecutor
    from orchestrator.sweep import run_sweep

    spec = parse_spec(gpt_spec(tmp_path_factory.mktemp("gpt-ref") / "results", "gpt-ref"))
    assert run_sweep(spec, executor_factory=InlineExecutor, cache_dir=cache_dir, write_report=False).failed == 0
    return check_reference(spec)


@pytest.mark.slow  # 20-30 s: a driver process whose fresh Ray workers import torch, then the resume
def test_gpt_driver_killed_in_a_segment_resumes_from_its_preemption_checkpoint(ray_cluster, tmp_path, cache_dir,
                                                                             gpt_reference):
    """kill -9 of the driver just after a GPT stem segment (not the first: one has committed)
    saved a preemption checkpoint; the resumed run continues the segment from the stem's latest
    checkpoint and ends with the uninterrupted run's losses, bit for bit. The stem's rows spend
    the FLOPs of training it once, plus at most the stretch the killed segment re-does since its
    last preemption checkpoint (less than a log boundary, 5 steps).

    The killed attempt has no row: the resumed segment's row counts from where the segment
    began, which its own preemption checkpoint records (workers/gpt/train.py, _Run._resume)."""
    spec = gpt_spec(tmp_path / "results", "gpt-kill-driver")
    sweep_dir = tmp_path / "results" / spec["name"]
    planned = plan(parse_spec(spec))
    stem_id = planned[0].stem_id
    stops = {t.start_step for t in planned}
    cmd, env = driver_cmd(spec, tmp_path, cache_dir)
    store = ResultStore(str(sweep_dir))

    def want(name, committed):
        preempted = set(store.stem_steps(stem_id)) - stops  # a segment's preemption checkpoints
        return is_stem(name) and any(map(is_stem, committed)) and bool(preempted)

    killed = kill_driver_when(cmd, env, fresh_trial(want, sweep_dir, fresh_s=math.inf))
    before = committed(sweep_dir)
    assert killed not in committed_names(sweep_dir)
    preempted = sorted(set(store.stem_steps(stem_id)) - stops)
    assert preempted  # the resumed segment starts from the last of these
    resume(spec, cache_dir=cache_dir)
    n, bt = planned[0].n_params, planned[0].step_tokens
    trials = assert_like_reference(sweep_dir, gpt_reference, flops=False)
    assert killed in set(trials["name"])
    after = committed(sweep_dir)
    assert {p: after.get(p) for p in before} == before

    (exact,) = gpt_reference[1].values()
    spent = stems(trials)["flops_spent"].sum()
    assert exact * (1 - 1e-12) <= spent <= (exact + train_flops(n, 5 * bt)) * (1 + 1e-12)


# -- 2. a worker killed, retried by Ray -----------------------------------------------------------

def test_worker_killed_in_a_segment_then_in_a_branch_is_retried(ray_cluster, tmp_path, sim_reference):
    """kill -9 of the Ray worker running a stem segment, then of one running a branch: Ray
    retries each task (resources.max_retries) and the sweep ends with the uninterrupted rows."""
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_spec(tmp_path / "results", "kill-worker"))
    t0_ms = time.time() * 1000
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("out", run_sweep(spec, write_report=False)))
    runner.start()
    killed = []
    try:
        for stem in (True, False):
            pick = fresh_trial(lambda name, _: is_stem(name) == stem, spec.sweep_dir)
            name, pid = wait_for(pick, 60, "a trial to kill")
            os.kill(pid, signal.SIGKILL)
            killed.append(name)
    finally:
        runner.join(timeout=300)
    assert not runner.is_alive()
    assert outcome["out"].failed == 0
    assert_like_reference(spec.sweep_dir, sim_reference)

    def attempts(name):  # task events reach the state API about a second late
        mine = [t for t in tasks(name=name) if (t.creation_time_ms or 0) >= t0_ms]
        return mine if any(t.state == "FINISHED" for t in mine) else None

    for name in killed:
        mine = wait_for(lambda: attempts(name), 30, f"the task records of {name}")
        assert max(t.attempt_number for t in mine) >= 1, name  # the killed attempt was retried by Ray
        assert sum(t.state == "FINISHED" for t in mine) == 1, name


# -- 3. a stem that fails -------------------------------------------------------------------------

def test_failed_stem_fails_its_waiting_branches_and_a_rerun_completes_them(ray_cluster, tmp_path, sim_reference):
    """A stem whose first stop cannot be saved (a folder sits where its checkpoint goes) fails
    its segment; every branch waiting for it fails with the stem's error in its row, the other
    stem is untouched, and a re-run (the obstacle gone) completes the sweep as an uninterrupted
    run would."""
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_spec(tmp_path / "results", "failed-stem", duration_s=QUICK_S))
    planned = plan(spec)
    small = min(planned, key=lambda t: t.n_params)
    first_stop = min(t.start_step for t in planned if t.stem_id == small.stem_id)
    blocker = os.path.join(spec.sweep_dir, stem_checkpoint_path(small.stem_id, first_stop))
    os.makedirs(blocker)

    out = run_sweep(spec, write_report=False)
    trials = load_trials(spec.sweep_dir)
    broken = trials[trials["parent_id"] == small.stem_id]
    branches = broken[broken["role"] == "point"]
    assert len(branches) == 3 and set(branches["status"]) == {"failed"}
    assert out.failed == 3
    segment = broken[broken["role"] == "stem"]
    assert len(segment) == 1 and segment["status"].item() == "failed"
    seg_error = segment["error"].item().splitlines()[0]
    for error in branches["error"]:
        assert error.startswith(f"stem {small.stem_id} failed before step {first_stop}")
        assert seg_error in error  # the stem's own error
    others = trials[trials["parent_id"] != small.stem_id]
    assert set(others["status"]) == {"completed"} and (others["role"] == "point").sum() == 3

    if os.path.isdir(blocker):
        os.rmdir(blocker)
    again = run_sweep(spec, write_report=False)
    assert again.failed == 0
    assert_like_reference(spec.sweep_dir, sim_reference, failed_segment=segment["trial_id"].item())


def test_lost_stem_worker_fails_its_waiting_branches_and_a_rerun_completes_them(ray_cluster, tmp_path, sim_reference):
    """resources.max_retries: 0, and the worker of a stem's first segment killed: the segment is
    lost (the reuse layer records it as a FAILED stem row), each of its stem's branches fails with
    the segment's name and Ray's error in its row, the other stem completes, and a re-run
    completes the sweep as an uninterrupted run would."""
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_spec(tmp_path / "results", "lost-stem", retries=0))
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("out", run_sweep(spec, write_report=False)))
    runner.start()
    try:
        name, pid = wait_for(fresh_trial(lambda n, _: is_stem(n), spec.sweep_dir), 60, "a segment to kill")
        os.kill(pid, signal.SIGKILL)
    finally:
        runner.join(timeout=300)
    assert not runner.is_alive()
    assert outcome["out"].failed == 3
    trials = load_trials(spec.sweep_dir)
    lost = trials[trials["name"] == name]  # recorded by the reuse layer: the driver never sees segments
    assert len(lost) == 1 and lost["status"].iloc[0] == "failed" and lost["role"].iloc[0] == "stem"
    assert "WorkerCrashedError" in lost["error"].iloc[0] and lost["flops_spent"].iloc[0] == 0
    failed = trials[(trials["status"] != "completed") & (trials["role"] == "point")]
    assert set(failed["status"]) == {"failed"} and len(failed) == 3
    (stem_id,) = set(failed["parent_id"])
    first_stop = min(t.start_step for t in plan(spec) if t.stem_id == stem_id)
    for error in failed["error"]:
        assert error.startswith(f"stem {stem_id} failed before step {first_stop} ({name}): "), error
        assert "WorkerCrashedError" in error, error
    assert (trials[trials["parent_id"] != stem_id]["role"] == "point").sum() == 3

    again = run_sweep(spec, write_report=False)
    assert again.failed == 0
    assert_like_reference(spec.sweep_dir, sim_reference, failed_segment=lost["trial_id"].item())


# -- 4. a damaged stem checkpoint -----------------------------------------------------------------

def _worker_logs_mentioning(text: str, since: float) -> list[str]:
    import ray

    logs = ray._private.worker._global_node.get_logs_dir_path()
    found = []
    for path in glob.glob(os.path.join(logs, "worker-*.err")):
        if os.stat(path).st_mtime >= since:
            with open(path, errors="replace") as f:
                found += [line for line in f if text in line]
    return found


def test_damaged_stem_checkpoint_is_named_and_the_branch_completes(ray_cluster, tmp_path, sim_reference):
    """Garbage at a stem's branch-point checkpoint before the sweep: the branch starting there
    warns, naming the file, trains the stem part itself and ends with the uninterrupted loss."""
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_spec(tmp_path / "results", "damaged-stem", duration_s=QUICK_S))
    planned = plan(spec)
    small = min(planned, key=lambda t: t.n_params)
    branch = min((t for t in planned if t.stem_id == small.stem_id), key=lambda t: t.start_step)
    rel = stem_checkpoint_path(branch.stem_id, branch.start_step)
    ResultStore(spec.sweep_dir).write_bytes(rel, b"\x00not a checkpoint\xff")
    since = time.time() - 1

    out = run_sweep(spec, write_report=False)
    assert out.failed == 0
    trials = load_trials(spec.sweep_dir)
    assert set(trials["status"]) == {"completed"} and trials["trial_id"].is_unique
    assert points(trials) == points(sim_reference[0])
    row = trials[trials["trial_id"] == branch.trial_id].iloc[0]
    assert row["flops_spent"] == train_flops(branch.n_params, branch.tokens)  # the stem part too, from step 0
    path = f"{spec.sweep_dir}/{rel}"
    warned = wait_for(lambda: _worker_logs_mentioning(path, since), 10, "the warning in the worker logs")
    assert any("ignoring unusable checkpoint" in line and branch.trial_id in line for line in warned), warned


def test_damaged_kept_stem_checkpoint_is_named_and_a_longer_run_completes(ray_cluster, tmp_path, sim_reference):
    """With train.keep_stems a sweep leaves each stem's last checkpoint for a later, longer run;
    garbage written there in between: the segment that would extend it warns, naming the file,
    trains the stem from step 0 instead, and the new branches end with the uninterrupted losses."""
    from orchestrator.sweep import run_sweep

    short = parse_spec(sim_spec(tmp_path / "results", "kept-stem", QUICK_S, tokens=(2e7, 6e7), keep_stems=True))
    assert run_sweep(short, write_report=False).failed == 0
    store = ResultStore(short.sweep_dir)
    planned = plan(short)
    last = {t.stem_id: max(u.start_step for u in planned if u.stem_id == t.stem_id) for t in planned}
    assert {s: store.stem_steps(s) for s in last} == {s: [b] for s, b in last.items()}  # kept: the last only
    small = min(planned, key=lambda t: t.n_params)
    rel = stem_checkpoint_path(small.stem_id, last[small.stem_id])
    store.write_bytes(rel, b"\x00not a checkpoint\xff")
    since = time.time() - 1

    longer = parse_spec(sim_spec(tmp_path / "results", "kept-stem", QUICK_S, keep_stems=True))
    assert run_sweep(longer, write_report=False).failed == 0
    trials = load_trials(longer.sweep_dir)
    assert set(trials["status"]) == {"completed"} and trials["trial_id"].is_unique
    assert points(trials) == points(sim_reference[0])
    new = {t.stem_id: t for t in plan(longer) if t.tokens == 2e8}
    for stem_id, b in last.items():  # the new segment: from the kept checkpoint, or from 0 past the damaged one
        seg = trials[(trials["parent_id"] == stem_id) & (trials["role"] == "stem")].sort_values("tokens").iloc[-1]
        frm = 0 if stem_id == small.stem_id else b
        assert seg["tokens"] == new[stem_id].start_step
        assert seg["flops_spent"] == train_flops(new[stem_id].n_params, new[stem_id].start_step - frm)
    path = f"{longer.sweep_dir}/{rel}"
    warned = wait_for(lambda: _worker_logs_mentioning(path, since), 10, "the warning in the worker logs")
    assert any("ignoring unusable checkpoint" in line for line in warned), warned
    assert {s: store.stem_steps(s) for s in new} == {s: [t.start_step] for s, t in new.items()}  # kept again
