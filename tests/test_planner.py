"""The planner contract, run against every planner, and the adaptive planner's budget, region and resume."""

import math
import os
import typing

import optuna
import pytest

from orchestrator.planning.adaptive import AdaptivePlanner, StopReason
from orchestrator.running.driver import Driver
from orchestrator.running.executor import InlineExecutor
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.planning.protocol import Planner, StaticPlanner
from orchestrator.spec import SweepSpec, parse_spec
from workers.store import ResultStore
from workers.run import run_trial

T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def sim_spec(root, planner="adaptive", world=None, **adaptive):
    spec = {"name": "sim", "trainer": "simulated", "results": str(root), "fit": {"target_compute": 1e20},
            "world": world or {"law": T0, "seed": 3, "noise": {"residual_amplitude": 0.01}}}
    if planner == "adaptive":
        spec["planner"] = "adaptive"
        spec["adaptive"] = {"min_flops": 1e15, "max_flops": 1e18, "n_range": [1e6, 3e9], "dn_range": [1, 1000],
                            "flop_budget": 3e18, "max_trials": 40, "initial_trials": 6, **adaptive}
    else:
        spec["sweep"] = {"kind": "isoflop", "budgets": [1e15, 1e16, 1e17], "model_sizes": [3e6, 1e7, 3e7]}
    return parse_spec(spec)


def make_planner(kind, root):
    spec = sim_spec(root, kind)
    factory = TrialFactory(spec)
    os.makedirs(spec.sweep_dir, exist_ok=True)
    if kind == "static":
        return spec, StaticPlanner(plan_trials(spec, factory))
    return spec, AdaptivePlanner(spec, factory, os.path.join(spec.sweep_dir, "planner.journal"))


# -- the contract (orchestrator.planning.protocol), run against every planner ---------------------

PLANNERS = ["static", "adaptive"]


def test_contract_covers_every_planner_a_spec_can_name():
    assert set(PLANNERS) == set(typing.get_args(SweepSpec.model_fields["planner"].annotation))


@pytest.fixture(params=PLANNERS)
def planner(request, tmp_path):
    return make_planner(request.param, tmp_path)[1]


def drive(planner, n=3):
    """Ask for up to ``n`` at a time and tell every trial at once, as a driver with ``n`` slots
    would, until the planner has finished; returns (asked ids, told ids)."""
    told = []
    original = planner.tell

    def tell(trial, result):
        told.append(trial.trial_id)
        original(trial, result)

    planner.tell = tell
    asked = []
    while not planner.finished() or len(told) < len(asked):
        batch = planner.ask(n)
        assert len(batch) <= n
        asked.extend(t.trial_id for t in batch)
        if not batch and len(told) == len(asked):
            break
        for t in batch:
            planner.tell(t, run_trial(t))
    return asked, told


def test_contract_implements_the_whole_protocol(planner):
    assert isinstance(planner, Planner)
    assert isinstance(planner.eager, bool) and planner.stopped == ""


def test_contract_eagerness_says_whether_it_learns_from_results(planner):
    assert planner.eager is isinstance(planner, StaticPlanner)


def test_contract_every_asked_trial_is_told_once(planner):
    asked, told = drive(planner)
    assert sorted(told) == sorted(asked) and len(set(asked)) == len(asked)
    assert planner.finished()
    n, flops = planner.expected()
    assert n >= 1 and flops > 0


def test_contract_a_finished_planner_proposes_nothing(planner):
    drive(planner)
    assert planner.ask(5) == [] and planner.finished()
    assert isinstance(planner.stopped, str)


def test_contract_asking_for_none_proposes_none(planner):
    assert planner.ask(0) == []


def test_contract_a_lost_trial_is_told_none_and_the_planner_goes_on(planner):
    first = planner.ask(1)
    assert len(first) == 1
    planner.tell(first[0], None)
    asked, told = drive(planner)
    assert sorted(told) == sorted(asked) and first[0].trial_id not in asked
    assert planner.finished()


def test_contract_only_a_planner_that_stops_early_says_why(planner):
    drive(planner)
    if isinstance(planner, StaticPlanner):
        assert planner.stopped == ""
    else:
        assert planner.stopped.startswith(tuple(r.value for r in StopReason))


# -- the adaptive planner -------------------------------------------------------------------------


def run_adaptive(root, executor_slots=4, world=None, **adaptive):
    spec = sim_spec(root, world=world, **adaptive)
    os.makedirs(spec.sweep_dir, exist_ok=True)
    store = ResultStore(spec.sweep_dir)
    planner = AdaptivePlanner(spec, TrialFactory(spec), os.path.join(spec.sweep_dir, "planner.journal"))
    Driver(planner, store, InlineExecutor(slots=executor_slots), poll_s=0).run()
    return spec, planner, store.read_table("trials").to_pandas()


def test_adaptive_stays_in_region_and_budget(tmp_path):
    spec, planner, trials = run_adaptive(tmp_path)
    a = spec.adaptive
    flops = 6.0 * trials["n_params"] * trials["tokens"]
    assert flops.sum() <= a.flop_budget * 1.001
    assert (flops >= a.min_flops * 0.99).all() and (flops <= a.max_flops * 1.01).all()
    assert trials["n_params"].between(a.n_range[0] * 0.99, a.n_range[1] * 1.01).all()
    ratio = trials["tokens"] / trials["n_params"]
    assert ratio.between(a.dn_range[0] * 0.98, a.dn_range[1] * 1.02).all()
    assert planner.stopped
    # points sit on quarter-decade compute levels, so IsoFLOP groups form
    assert (abs(4 * trials["budget"].map(math.log10) - (4 * trials["budget"].map(math.log10)).round()) < 1e-9).all()


def test_a_loss_that_depends_on_neither_n_nor_d_is_explored_and_flagged(tmp_path):
    """No compute-optimal allocation to sharpen: the planner spreads trials over the region and
    stops on its budget (rather than proposing nothing with nothing pending, which would
    leave the driver asking forever), and the fit says the law has no optimum (no error on log 0)."""
    from orchestrator.fitting.analysis import analyse

    spec, planner, trials = run_adaptive(tmp_path, world={"expression": "3.0", "seed": 1}, max_trials=30)
    assert planner.stopped in (StopReason.FLOP_BUDGET, StopReason.TRIAL_CAP)
    assert len(trials) > spec.adaptive.initial_trials
    assert (trials["budget"] > 10 ** 16.5).any()  # past the initial design's decade and a half
    fit = analyse(trials, 1e20, n_boot=50, isoflop=False)
    # either the point estimate degenerates, or its interval says it is no estimate (which of the
    # two depends on the noise the adaptive design happened to draw)
    assert any("there is no compute-optimal allocation" in f or "N_opt is not determined" in f for f in fit.flags)


@pytest.mark.parametrize("exact_max", [300, 12], ids=["exact-design", "sparse-design"])
def test_adaptive_learns_the_frontier(tmp_path, monkeypatch, exact_max):
    """Also with the inducing-point design model and its periodic rebuilds (past EXACT_MAX)."""
    import orchestrator.planning.adaptive
    from orchestrator.fitting.law import compute_optimal, fit_approach3
    from workers.config import LawConfig, WorldConfig
    from workers.simulated.world import World

    monkeypatch.setattr(orchestrator.planning.adaptive, "EXACT_MAX", exact_max)
    _, _, trials = run_adaptive(tmp_path, flop_budget=5e18, max_trials=60)
    fit = fit_approach3(trials["n_params"], trials["tokens"], trials["eval_loss"])
    truth = World(WorldConfig(law=LawConfig(**T0))).compute_optimal(1e20)
    est = compute_optimal(fit.params, 1e20)
    assert abs(math.log(est["n_opt"] / truth["n_opt"])) < 0.35
    assert abs(est["loss"] / truth["loss"] - 1) < 0.02


def test_every_proposal_is_an_optuna_trial(tmp_path):
    spec, planner, trials = run_adaptive(tmp_path, max_trials=12)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(os.path.join(spec.sweep_dir, "planner.journal")))
    study = optuna.load_study(study_name="scalesweep-sim", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.user_attrs["trial_id"] for t in done} == set(trials["trial_id"])
    for t in done:
        row = trials[trials["trial_id"] == t.user_attrs["trial_id"]].iloc[0]
        assert t.value == pytest.approx(row["eval_loss"])
        assert 10 ** t.params["log10_n"] == pytest.approx(row["n_params"], rel=1e-9)


def test_resume_asks_running_trials_again_as_they_were(tmp_path):
    spec = sim_spec(tmp_path)
    os.makedirs(spec.sweep_dir, exist_ok=True)
    journal = os.path.join(spec.sweep_dir, "planner.journal")
    first = AdaptivePlanner(spec, TrialFactory(spec), journal)
    batch = first.ask(4)
    for t in batch[:2]:
        first.tell(t, run_trial(t))
    # the driver dies here: two trials are RUNNING in the journal
    second = AdaptivePlanner(spec, TrialFactory(spec), journal)
    assert len(second.obs) == 2 and len(second.requeue) == 2
    again = second.ask(2)
    assert {t.trial_id for t in again} == {t.trial_id for t in batch[2:]}
    states = [t.state for t in second.study.trials]  # the same Optuna trials: no FAIL, no new trial
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.RUNNING] * 2


def test_a_large_sweep_is_compacted_at_the_end_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    """Past COMPACT_MIN_FILES per-trial files the driver merges them; resumption still sees every id."""
    import workers.store
    from orchestrator.running.executor import InlineExecutor
    from orchestrator.results import load_trials
    from orchestrator.sweep import run_sweep

    monkeypatch.setattr(workers.store, "COMPACT_MIN_FILES", 4)
    spec = sim_spec(tmp_path, "static")
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    assert out.trained == 9
    store = ResultStore(spec.sweep_dir)
    assert [f.rpartition("/")[2][:5] for f in store.list_files("trials")] == ["part-"]
    assert load_trials(spec.sweep_dir)["trial_id"].is_unique and len(load_trials(spec.sweep_dir)) == 9
    again = run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    assert again.trained == 0 and again.skipped == 9 and again.fit is not None


def test_adaptive_prices_trials_by_both_budgets_so_cheap_trials_do_not_eat_the_cap(tmp_path):
    # Priced by FLOPs alone, the cheapest trials look 1,000 times better value than the largest
    # and the trial cap runs out on them; priced by their share of both budgets, the FLOP budget
    # is what binds, and part of it goes to the largest allowed trials.
    _, planner, trials = run_adaptive(tmp_path, flop_budget=3e18, max_trials=150)
    flops = 6.0 * trials["n_params"] * trials["tokens"]
    assert planner.stopped == StopReason.FLOP_BUDGET
    assert len(trials) < 150
    assert flops[flops >= 1e17].sum() > 0.5 * flops.sum()
