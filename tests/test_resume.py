"""Resuming exactly (issue 26): tuned ladders, adaptive searches and their budgets, damaged state.

A driver killed with kill -9 leaves the store and the planner's journal as they were at that
moment, with the trials in flight lost. ``Dying`` reproduces that in-process: trials finish in a
seeded random order (as on Ray), and after ``after`` results the driver dies (an exception no
code catches), so every resume path runs in seconds. tests/test_faults.py kills a real driver
process on Ray.
"""

from __future__ import annotations

import json
import os
import random

import optuna
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.planning.adaptive import AdaptivePlanner
from orchestrator.planning.journal import check_journal
from orchestrator.planning.trials import TrialFactory
from orchestrator.results import load_trials
from orchestrator.running.executor import Completion, InlineExecutor
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from workers.run import run_trial
from workers.store import ResultStore

LAW = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
LR_RULE = {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307, "n": "total"}
B_RULE = {"coef": 0.58, "n_exp": 0.0, "d_exp": 0.571, "n": "total"}


class Killed(BaseException):
    """The driver's death: nothing catches it, nothing is cleaned up but what `with` blocks close."""


class Dying(InlineExecutor):
    """Trials finish in a seeded random order, ``slots`` at a time; the driver dies after ``after`` results."""

    def __init__(self, seed: int, after: int | None = None, slots: int = 3):
        super().__init__(run_trial, slots=slots)
        self.rng, self.left = random.Random(seed), after

    def wait(self, timeout):
        if not self._queue:
            return []
        if self.left is not None:
            if self.left == 0:
                raise Killed()
            self.left -= 1
        trial = self._queue.pop(self.rng.randrange(len(self._queue)))
        return [Completion(trial, self._fn(trial))]


def tuned_spec(root, **extra):
    spec = {"name": "resume", "trainer": "simulated", "results": str(root),
            "world": {"law": LAW, "hparams": {"lr": LR_RULE, "batch": B_RULE}, "noise": {"tier": "default"}},
            "sweep": {"kind": "isoflop", "budgets": [1e15, 3e15, 1e16, 1e17], "model_sizes": [2e6, 6e6, 2e7]},
            "train": {"lr": {"tune": 1e-3}, "batch_tokens": B_RULE},
            "tune": {"up_to_flops": 2e16},
            "fit": {"target_compute": 1e19}}
    return parse_spec(spec | extra)


def adaptive_tuned_spec(root):
    return tuned_spec(root, planner="adaptive", sweep=None, tune={"max_trials_per_point": 6},
                      adaptive={"min_flops": 1e15, "max_flops": 1e17, "n_range": [1e6, 1e8],
                                "flop_budget": 2e18, "max_trials": 12, "initial_trials": 6})


def plain_adaptive_spec(root, max_trials: int = 8, results=None):
    return parse_spec({"name": "sim", "trainer": "simulated", "results": str(results or root), "planner": "adaptive",
                       "world": {"law": LAW}, "fit": {"target_compute": 1e20},
                       "adaptive": {"min_flops": 1e15, "max_flops": 1e18, "n_range": [1e6, 3e9], "flop_budget": 3e18,
                                    "max_trials": max_trials, "initial_trials": 6}})


def run_killed(spec, kills: list[int], seed: int = 1):
    """Run ``spec`` with the driver killed after each count of results in ``kills``, then to the end."""
    for i, after in enumerate(kills):
        with pytest.raises(Killed):
            run_sweep(spec, executor_factory=lambda: Dying(seed + i, after), write_report=False)
    return run_sweep(spec, executor_factory=lambda: Dying(seed + len(kills)), write_report=False)


# -- 1: a tuned ladder sweep -----------------------------------------------------------------------


def test_a_ladder_sweep_finished_in_any_order_reruns_nothing_and_fits_the_same_law(tmp_path):
    first = run_sweep(tuned_spec(tmp_path / "a"), executor_factory=lambda: Dying(7), write_report=False)
    rows = load_trials(str(tmp_path / "a" / "resume"))
    assert first.trained == len(rows) and rows["recipe"].str.startswith("ladder").sum() == 3
    again = run_sweep(tuned_spec(tmp_path / "a"), executor_factory=lambda: pytest.fail("nothing should train"),
                      write_report=False)
    assert again.trained == 0 and list(again.fit.law.z) == list(first.fit.law.z)
    # The records are what a re-run reads; without them the rule is refitted in a canonical
    # order, to the same bits, whatever order the searches had finished in.
    ResultStore(str(tmp_path / "a" / "resume")).delete_dir("searches")
    again = run_sweep(tuned_spec(tmp_path / "a"), executor_factory=lambda: pytest.fail("nothing should train"),
                      write_report=False)
    assert again.trained == 0 and list(again.fit.law.z) == list(first.fit.law.z)


def test_a_ladder_sweep_killed_three_times_ends_with_an_uninterrupted_runs_rows(tmp_path):
    whole = run_sweep(tuned_spec(tmp_path / "a"), executor_factory=lambda: Dying(0), write_report=False)
    killed = run_killed(tuned_spec(tmp_path / "b"), kills=[5, 20, 12])
    a, b = load_trials(str(tmp_path / "a" / "resume")), load_trials(str(tmp_path / "b" / "resume"))
    assert set(a["trial_id"]) == set(b["trial_id"]) and len(b) == len(a)
    assert list(killed.fit.law.z) == list(whole.fit.law.z)
    assert killed.recipe == whole.recipe


# -- 2 and 5: an adaptive tuned sweep ----------------------------------------------------------------


def test_an_adaptive_search_resumed_after_kills_continues_and_counts_each_point_once(tmp_path):
    spec = adaptive_tuned_spec(tmp_path / "b")
    whole = run_sweep(adaptive_tuned_spec(tmp_path / "a"), executor_factory=lambda: Dying(0), write_report=False)
    out = run_killed(spec, kills=[4, 9, 7, 11])
    a, b = load_trials(str(tmp_path / "a" / "resume")), load_trials(str(tmp_path / "b" / "resume"))
    per_point = b.groupby("point_id").size()
    assert per_point.max() <= 6  # no search restarted past its cap
    assert b["point_id"].nunique() <= 12 and b["trial_id"].is_unique
    # kill -9 costs at most the trials in flight at each kill (3 slots), never a restart
    assert len(b) <= len(a) + 4 * 3, (len(b), len(a))
    journal = optuna.load_study(study_name="scalesweep-resume", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(os.path.join(spec.sweep_dir, "planner.journal"))))
    states = [t.state for t in journal.trials]
    assert optuna.trial.TrialState.FAIL not in states  # in-flight points were resumed, not failed and asked again
    assert len(journal.trials) == b["point_id"].nunique()
    # A re-run of the finished sweep trains nothing and still says what the searches found.
    again = run_sweep(spec, executor_factory=lambda: pytest.fail("nothing should train"), write_report=False)
    assert again.trained == 0
    points = b["point_id"].nunique() - b["recipe"].str.startswith("ladder").sum()
    assert f"{points} points in " in again.recipe.splitlines()[0], again.recipe
    assert whole.recipe and out.recipe


def test_a_point_in_flight_at_each_kill_is_asked_again_as_the_same_optuna_trial(tmp_path):
    spec = plain_adaptive_spec(tmp_path, max_trials=10)
    os.makedirs(spec.sweep_dir)
    journal = os.path.join(spec.sweep_dir, "planner.journal")
    first = AdaptivePlanner(spec, TrialFactory(spec), journal)
    batch = first.ask(4)
    for t in batch[:2]:
        first.tell(t, run_trial(t))
    for _ in range(3):  # killed three times with the same two trials in flight
        again = AdaptivePlanner(spec, TrialFactory(spec), journal)
        assert (again.n_told, len(again.requeue)) == (2, 2)
        assert again.spent == pytest.approx(first.spent)
        assert {t.trial_id for t in again.ask(2)} == {t.trial_id for t in batch[2:]}
    for t in batch[2:]:
        again.tell(t, run_trial(t))
    states = [t.state for t in again.study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4  # one Optuna trial per point, none failed
    assert again.n_told == 4 and again.spent == pytest.approx(sum(6.0 * t.n_params * t.tokens for t in batch))


def test_a_trial_enqueued_but_never_handed_out_is_abandoned_and_counts_nowhere(tmp_path):
    spec = plain_adaptive_spec(tmp_path, max_trials=10)
    os.makedirs(spec.sweep_dir)
    journal = os.path.join(spec.sweep_dir, "planner.journal")
    first = AdaptivePlanner(spec, TrialFactory(spec), journal)
    first.study.enqueue_trial({"log10_n": 7.0, "log10_d": 9.0})  # killed between enqueue and ask
    first.study.ask(first.dist)  # ... and between ask and the trial's attributes
    first.study.enqueue_trial({"log10_n": 7.5, "log10_d": 9.0})
    again = AdaptivePlanner(spec, TrialFactory(spec), journal)
    assert (again.n_told, again.spent, again.requeue) == (0, 0.0, [])
    proposed = again.ask(3)
    assert len(proposed) == 3 and all(7.0 != round(t.n_params) for t in proposed)
    abandoned = [t for t in again.study.trials if t.user_attrs.get("abandoned")]
    assert len(abandoned) == 2 and all(t.state == optuna.trial.TrialState.FAIL for t in abandoned)


# -- 7: damaged state ---------------------------------------------------------------------------------


def _adaptive_run(tmp_path):
    spec = plain_adaptive_spec(tmp_path)
    return spec, run_sweep(spec, executor_factory=lambda: Dying(0), write_report=False)


def test_a_journal_cut_off_mid_record_is_recovered_and_never_appended_onto(tmp_path, caplog):
    spec = plain_adaptive_spec(tmp_path)
    with pytest.raises(Killed):
        run_sweep(spec, executor_factory=lambda: Dying(0, after=3), write_report=False)
    path = os.path.join(spec.sweep_dir, "planner.journal")
    data = open(path, "rb").read()
    cut = data[:-25]  # the last record cut off mid-write
    open(path, "wb").write(cut)
    out = run_sweep(spec, executor_factory=lambda: Dying(1), write_report=False)
    assert out.fit is not None and "its last record was cut off" in caplog.text
    kept = cut[cut.rstrip(b"\n").rfind(b"\n") + 1:]
    assert open(path + ".partial-1", "rb").read() == kept  # what was removed is kept
    for line in open(path, "rb").read().splitlines():  # and nothing was appended onto a partial line
        assert isinstance(json.loads(line), dict)
    assert set(load_trials(spec.sweep_dir)["status"]) == {"completed"}


@pytest.mark.parametrize("junk", [b"hello\nworld\n", b'{"op_code": 0, "worker_id": "x", "study_name": "s"\n{"a"}\n',
                                  b'[1, 2]\n', b'{"op_code": 99}\n', b"\x00\xff\xfe garbage"])
def test_a_junk_journal_is_refused_in_one_line_and_left_as_it_was(tmp_path, capsys, junk):
    spec_path = tmp_path / "spec.yaml"
    spec = plain_adaptive_spec(tmp_path, results=tmp_path / "res")
    spec_path.write_text(json.dumps(spec.model_dump(mode="json", exclude_none=True)))
    sweep = tmp_path / "res" / "sim"
    sweep.mkdir(parents=True)
    (sweep / "planner.journal").write_bytes(junk)
    before = {p.name: p.read_bytes() for p in sweep.iterdir()}
    assert main(["run", str(spec_path), "--num-cpus", "1", "--no-dashboard"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("scalesweep: error: ") and "planner.journal" in err[-1]
    assert err[0].startswith("Estimate:") and len(err) == 2  # the estimate's line, then the error's
    assert {p.name: p.read_bytes() for p in sweep.iterdir() if not p.name.startswith(".")} == before


def test_check_journal_leaves_a_whole_journal_alone(tmp_path):
    path = tmp_path / "j"
    path.write_bytes(b'{"op_code": 0}\n')
    check_journal(str(path))
    assert path.read_bytes() == b'{"op_code": 0}\n' and not (tmp_path / "j.partial-1").exists()
    check_journal(str(tmp_path / "none"))  # no journal yet: nothing to check


def test_a_trials_file_with_a_status_outside_the_enum_is_refused_in_one_line(tmp_path, capsys):
    spec, _ = _adaptive_run(tmp_path)
    store_dir = spec.sweep_dir
    path = sorted((p for p in os.listdir(os.path.join(store_dir, "trials")) if p.endswith(".parquet")))[0]
    full = os.path.join(store_dir, "trials", path)
    rows = pd.read_parquet(full)
    rows.loc[:, "status"] = "bogus"
    rows.to_parquet(full)
    before = {p: open(os.path.join(store_dir, "trials", p), "rb").read() for p in os.listdir(os.path.join(store_dir, "trials"))}
    with pytest.raises(UserError, match=f"{path}: status 'bogus' is not one of completed, diverged, failed"):
        run_sweep(spec, executor_factory=lambda: pytest.fail("nothing should train"), write_report=False)
    assert main(["status", store_dir]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'bogus'" in err and "Traceback" not in err
    after = {p: open(os.path.join(store_dir, "trials", p), "rb").read() for p in os.listdir(os.path.join(store_dir, "trials"))}
    assert after == before
