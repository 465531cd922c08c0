"""The adaptive planner under run reuse (wsd): points moved onto their stems' N, priced by the FLOPs
they add to them (orchestrator.planning.reuse_cost), and a FLOP budget that counts what is spent."""

import math
import os

import numpy as np
import pytest

from orchestrator.planning.adaptive import AdaptivePlanner, StopReason
from orchestrator.planning.reuse_cost import SNAP
from orchestrator.planning.trials import TrialFactory
from orchestrator.results import point_rows, spent_flops
from orchestrator.running.driver import Driver
from orchestrator.running.executor import InlineExecutor
from orchestrator.running.reuse import ReuseExecutor
from orchestrator.spec import parse_spec
from workers.run import run_trial
from workers.flops import train_flops
from workers.store import ResultStore

T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
LOG6 = math.log10(6)


def wsd_spec(root, **adaptive):
    return parse_spec({
        "name": "reuse", "trainer": "simulated", "results": str(root), "fit": {"target_compute": 1e20},
        "world": {"law": T0, "seed": 3, "noise": {"residual_amplitude": 0.01}},
        "train": {"schedule": "wsd"},  # cooldown: 20 %, 1-sqrt
        "planner": "adaptive",
        "adaptive": {"min_flops": 1e15, "max_flops": 1e18, "n_range": [1e6, 3e9], "dn_range": [1, 1000],
                     "flop_budget": 3e18, "max_trials": 40, "initial_trials": 6} | adaptive})


def planner_for(root, **adaptive):
    spec = wsd_spec(root, **adaptive)
    os.makedirs(spec.sweep_dir, exist_ok=True)
    return spec, AdaptivePlanner(spec, TrialFactory(spec), os.path.join(spec.sweep_dir, "planner.journal"))


def price(planner, ln, lc):
    """The planner's price of the point at (log10 N, log10 C), and its D."""
    ld = lc - LOG6 - ln
    return float(planner._price(np.array([ln]), np.array([ld]), np.array([lc]), np.array([True]))[0]), 10**ld


def register(planner, ln, lc):
    """Propose (ln, lc) as the planner's own picks are proposed: registered, then submitted (commit)."""
    trial = planner._register(ln, lc - LOG6 - ln, 10**lc)
    planner.stems.commit()
    return trial


def test_points_are_priced_by_what_they_add_to_their_stem(tmp_path):
    _, planner = planner_for(tmp_path)
    ln = 7.0  # 1e7 parameters
    # A new shape costs its whole run.
    cost, d = price(planner, ln, 16.0)
    assert cost == pytest.approx(1e16) == pytest.approx(train_flops(10**ln, d))
    first = register(planner, ln, 16.0)
    assert planner.pending[first.trial_id][2] == pytest.approx(1e16)
    b1 = first.start_step * first.step_tokens
    assert b1 == pytest.approx(0.8 * first.tokens, abs=1)
    # A longer D on the same stem: its cooldown, plus the stem's extension from b1 to its own branch point.
    cost, d2 = price(planner, ln, 16.5)
    b2 = d2 - round(0.2 * d2)
    assert cost == pytest.approx(train_flops(10**ln, 0.2 * d2 + (b2 - b1)), rel=1e-6)
    assert cost < 0.75 * train_flops(10**ln, d2)  # D_2 - 0.8 D_1, D_1 = D_2 / 10^0.5
    second = register(planner, ln, 16.5)
    assert planner.pending[second.trial_id][2] == pytest.approx(cost, rel=1e-6)  # the trial, priced exactly
    # A shorter D, below the stem's reach: retrained from step 0 (only its latest checkpoint stays).
    cost, d0 = price(planner, ln, 15.5)
    assert cost == pytest.approx(train_flops(10**ln, d0))
    # The same point again is a replicate: a new seed, a new stem, the whole run.
    cost, _ = price(planner, ln, 16.0)
    assert cost == pytest.approx(1e16)
    again = register(planner, ln, 16.0)
    assert again.seed == 1 and again.stem_id != first.stem_id
    # Another shape is a stem of its own.
    assert price(planner, 7.25, 16.5)[0] == pytest.approx(10**16.5)


def test_points_of_one_ask_share_their_stem_in_any_order(tmp_path):
    """The executor goes up a stem's branch points in order, whatever order one ask lists them in."""
    _, planner = planner_for(tmp_path)
    high = planner._register(7.0, 16.5 - LOG6 - 7.0, 10**16.5)
    low = planner._register(7.0, 16.0 - LOG6 - 7.0, 10**16.0)
    assert planner.pending[high.trial_id][2] == pytest.approx(10**16.5)
    assert planner.pending[low.trial_id][2] == pytest.approx(train_flops(low.n_params, low.tokens - low.start_step))
    assert low.stem_id == high.stem_id


def test_an_n_near_a_stems_is_moved_onto_it(tmp_path):
    _, planner = planner_for(tmp_path)
    lc, lr = np.full(50, 17.0), np.linspace(0.5, 2.5, 50)
    raw = 0.5 * (lc - LOG6 - lr)
    ln, _, _ = planner._feasible(lc, lr)
    assert np.array_equal(ln, raw)  # no stem yet: N as proposed
    for x in (7.0, 7.5):
        register(planner, x, 16.0)
    ln, ld, ok = planner._feasible(lc, lr)
    near = [np.abs(raw - x) <= SNAP for x in (7.0, 7.5)]
    assert near[0].any() and near[1].any()
    assert np.allclose(ln[near[0]], 7.0) and np.allclose(ln[near[1]], 7.5)
    far = ~(near[0] | near[1])
    assert far.any() and np.array_equal(ln[far], raw[far])
    assert np.allclose(ln + ld + LOG6, lc)  # D = C / 6N after moving N
    # what was moved onto the stem 7.0 at C = 1e17 extends it from its point at 1e16 (branch 0.8 D_1)
    cost = planner._price(ln, ld, lc, ok)
    assert cost[near[0] & ok] == pytest.approx(1e17 * (1 - 0.8 / 10), rel=1e-6)
    assert cost[far & ok] == pytest.approx(1e17)


def test_the_budget_counts_marginal_flops_and_the_sweep_spends_them(tmp_path):
    spec, planner = planner_for(tmp_path, max_flops=1e17, flop_budget=3e17, max_trials=40)
    store = ResultStore(spec.sweep_dir)
    Driver(planner, store, ReuseExecutor(InlineExecutor(slots=4), store), poll_s=0).run()
    every = store.read_table("trials").to_pandas()
    points = point_rows(every)
    assert planner.stopped == StopReason.FLOP_BUDGET
    # The planner's account is what was computed: stem segments and cooldown branches.
    assert planner.spent == pytest.approx(spent_flops(every), rel=1e-6)
    assert planner.spent <= spec.adaptive.flop_budget * 1.001
    # ... and it bought more points than their 6ND: stems were shared.
    nominal = (6.0 * points["n_params"].astype(float) * points["tokens"].astype(float)).sum()
    assert nominal > 1.1 * planner.spent
    assert points["parent_id"].value_counts().max() >= 2


def test_resume_keeps_the_spent_flops_and_the_stems(tmp_path):
    spec, first = planner_for(tmp_path)
    batch = first.ask(4)  # the initial design
    first.tell(batch[0], run_trial(batch[0]))
    nxt = first._register(7.0, 16.0 - LOG6 - 7.0, 1e16)
    first.stems.commit()
    ext, _ = price(first, 7.0, 16.5)
    first.tell(nxt, run_trial(nxt))
    # the driver dies here: batch[1:] are RUNNING in the journal
    second = AdaptivePlanner(spec, TrialFactory(spec), os.path.join(spec.sweep_dir, "planner.journal"))
    assert second.spent == pytest.approx(first.spent)
    assert second.stems.reach == pytest.approx(first.stems.reach)
    assert price(second, 7.0, 16.5)[0] == pytest.approx(ext)  # the stem's extension, not a new run
    assert price(second, 7.0, 16.0)[0] == pytest.approx(1e16)  # a replicate: seed 1
    # The re-queued trials keep the price they were proposed at.
    again = second.ask(3)
    assert {t.trial_id for t in again} == {t.trial_id for t in batch[1:]}
    assert sorted(f for _, _, f in second.pending.values()) == pytest.approx(
        sorted(first.pending[t.trial_id][2] for t in batch[1:]))
    assert second._remaining() == pytest.approx(first._remaining())
