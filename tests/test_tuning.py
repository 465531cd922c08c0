"""Per-point hyperparameter searches (orchestrator.planning.tuning): the search's logic on
known loss curves, and tuned sweeps end to end on simulated worlds with a landscape."""

from __future__ import annotations

import math

import pytest

from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.planning.tuning import PointSearch, SearchResult, fit_rule
from orchestrator.running.executor import InlineExecutor
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from orchestrator.results import load_trials
from workers.config import TrialResult
from workers.simulated.world import World
from workers.store import TrialStatus

LAW = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
LR_RULE = {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307, "n": "total"}
B_RULE = {"coef": 0.58, "n_exp": 0.0, "d_exp": 0.571, "n": "total"}


def sim_spec(tmp_path, train=None, tune=None, noise="none", sweep=None, **extra):
    spec = {
        "name": "tuned", "trainer": "simulated", "results": str(tmp_path),
        "world": {"law": LAW, "hparams": {"lr": LR_RULE, "batch": B_RULE},
                  "noise": {"tier": noise, "residual_amplitude": 0.0 if noise == "none" else 0.015,
                            "outlier_prob": 0.0 if noise == "none" else 0.02}},
        "sweep": sweep or {"kind": "isoflop", "budgets": [1e15, 1e16, 1e17],
                           "model_sizes": [2e6, 6e6, 2e7]},
        "train": train or {"lr": {"tune": 1e-3}, "batch_tokens": B_RULE},
        "fit": {"target_compute": 1e19},
    }
    if tune:
        spec["tune"] = tune
    return parse_spec(spec | extra)


def drive(search: PointSearch, loss) -> PointSearch:
    """Run a search to its end with ``loss(lr, batch)`` as each trial's outcome."""
    for _ in range(100):
        trials = search.propose()
        if not trials:
            break
        for t in trials:
            value = loss(t.train.lr, t.train.batch_tokens)
            status = TrialStatus.COMPLETED if math.isfinite(value) else TrialStatus.DIVERGED
            search.observe(t, TrialResult(t.trial_id, status, value, 0.0))
    assert search.done
    return search


def new_search(tmp_path, centre_lr, **tune):
    spec = sim_spec(tmp_path, tune=tune or None)
    factory = TrialFactory(spec)
    base = plan_trials(spec, factory)[0]
    from orchestrator.planning.trials import Hparams

    return PointSearch(base, Hparams(centre_lr, base.train.batch_tokens, "tune"), spec.tuned, spec.tune, factory,
                       n_kind="total")


def bowl(lr_opt, k=0.0058, level=2.5, diverge=None):
    def f(lr, batch):
        if diverge is not None and lr >= diverge * lr_opt:
            return math.nan
        return level * math.exp(k * math.log(lr / lr_opt) ** 2)
    return f


@pytest.mark.parametrize("centre_over_opt", [1.0, 0.05, 30.0])
def test_search_brackets_and_finds_the_optimum_from_any_centre(tmp_path, centre_over_opt):
    s = drive(new_search(tmp_path, 3e-3 * centre_over_opt, max_trials_per_point=12), bowl(3e-3))
    opt = s.optimum()
    assert opt.bracketed
    assert opt.lr == pytest.approx(3e-3, rel=0.02)  # a noise-free log-parabola: the vertex is exact
    assert opt.loss == pytest.approx(2.5, rel=1e-6)
    assert opt.trials <= 12
    if centre_over_opt == 1.0:
        assert opt.trials == 3  # centred: three trials bracket it and the vertex is the centre


def test_search_without_refinement_uses_three_trials_when_centred_and_one_more_per_step_off(tmp_path):
    s = drive(new_search(tmp_path, 3e-3 * 2.2, refine=False), bowl(3e-3))
    assert s.optimum().trials == 4 and s.optimum().bracketed
    assert s.optimum().lr == pytest.approx(3e-3, rel=0.02)


def test_diverged_trials_bound_the_search_and_are_never_its_best(tmp_path):
    # Centre at 2x the optimum: 4x diverges; the search must still find the optimum below.
    s = drive(new_search(tmp_path, 6e-3), bowl(3e-3, diverge=4.0))
    opt = s.optimum()
    losses = [t.loss for t in s.tried.values()]
    assert any(math.isnan(v) for v in losses)
    assert opt.bracketed and opt.lr == pytest.approx(3e-3, rel=0.05) and math.isfinite(opt.loss)


def test_a_search_that_cannot_bracket_says_so(tmp_path):
    # The optimum is far below the range allowed: the best stays at its lower end.
    s = drive(new_search(tmp_path, 1e-2, lr_range=[2e-3, 1.0]), bowl(1e-5))
    opt = s.optimum()
    assert not opt.bracketed and "lr" in s.unbracketed
    assert min(t.lr for t in s.tried.values()) >= 2e-3
    s = drive(new_search(tmp_path, 1e-2, max_trials_per_point=4), bowl(1e-5))
    assert not s.optimum().bracketed and s.optimum().trials == 4


def test_fit_rule_recovers_a_power_law_and_fixes_an_unidentified_exponent():
    pts = [SearchResult(str(i), int(n), n, d, 1.79 * n ** -0.713 * d ** 0.307, None, 2.0, True, 3, 0.0)
           for i, (n, d) in enumerate([(1e6, 1e8), (1e7, 1e8), (1e6, 1e10), (1e8, 1e11)])]
    rule = fit_rule(pts, "lr", "total")
    assert (rule.coef, rule.n_exp, rule.d_exp) == pytest.approx((1.79, -0.713, 0.307), rel=1e-6)
    same_d = [SearchResult(str(i), int(n), n, 1e9, 0.1 * n ** -0.5, None, 2.0, True, 3, 0.0) for i, n in
              enumerate([1e6, 1e7, 1e8])]
    rule = fit_rule(same_d, "lr", "total")
    assert rule.d_exp == 0.0 and rule.n_exp == pytest.approx(-0.5)
    assert fit_rule(same_d[:2], "lr", "total") is None  # too few points for a rule


def test_tuned_grid_sweep_finds_each_points_optimum_and_replays_from_the_store(tmp_path):
    spec = sim_spec(tmp_path)
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(), write_report=False)
    t = load_trials(spec.sweep_dir)
    assert out.failed == 0 and len(t) == out.trained
    groups = t.groupby("point_id")
    assert groups.ngroups == 9 and groups.size().min() >= 3
    assert set(t["recipe"]) == {"tune"}
    world = World(spec.world)
    for _, g in groups:
        g = g[g["status"] == "completed"]
        best = g.loc[g["eval_loss"].idxmin()]
        lr_true, _ = world.optimal_hparams(best["n_params"], best["tokens"])
        assert abs(math.log(best["lr"] / lr_true)) <= math.log(2) / 2 + 1e-9  # within half a step
    # A re-run proposes the same searches; every trial is in the store: nothing trains, no Ray.
    again = run_sweep(spec, executor_factory=lambda: pytest.fail("nothing should train"), write_report=False)
    assert again.trained == 0 and again.skipped == len(t)


def test_ladder_runs_points_above_up_to_flops_once_at_the_fitted_rule(tmp_path):
    spec = sim_spec(tmp_path, tune={"up_to_flops": 2e16},
                    sweep={"kind": "isoflop", "budgets": [1e15, 1e16, 1e17],
                           "model_sizes": [2e6, 6e6, 2e7]})
    run_sweep(spec, executor_factory=lambda: InlineExecutor(), write_report=False)
    t = load_trials(spec.sweep_dir)
    big = t[t["budget"] == 1e17]
    assert len(big) == 3 and big["recipe"].str.startswith("ladder: lr = ").all()
    assert big["recipe"].str.contains("fitted to 6 tuned points").all()
    world = World(spec.world)
    for _, r in big.iterrows():  # the rule fitted on 1e15-1e16 carries to 1e17
        lr_true, _ = world.optimal_hparams(r["n_params"], r["tokens"])
        assert abs(math.log(r["lr"] / lr_true)) < math.log(1.3)
    assert (t[t["budget"] < 1e17].groupby("point_id").size() >= 3).all()


def test_tuning_lr_and_batch_moves_both_towards_the_joint_optimum(tmp_path):
    spec = sim_spec(tmp_path, train={"lr": {"tune": 1e-3}, "batch_tokens": {"tune": 3e4}},
                    tune={"max_trials_per_point": 14},
                    sweep={"kind": "grid", "model_sizes": [6e6], "tokens": [1e9]})
    run_sweep(spec, executor_factory=lambda: InlineExecutor(), write_report=False)
    t = load_trials(spec.sweep_dir)
    best = t.loc[t["eval_loss"].idxmin()]
    lr_true, b_true = World(spec.world).optimal_hparams(best["n_params"], best["tokens"])
    assert abs(math.log(best["lr"] / lr_true)) < math.log(2) and abs(math.log(best["batch_tokens"] / b_true)) < math.log(2)
    assert t["batch_tokens"].nunique() >= 3 and len(t) <= 14


def test_adaptive_planner_with_tuning_counts_the_searches_flops(tmp_path):
    spec = sim_spec(tmp_path, planner="adaptive", sweep=None, tune={"up_to_flops": 1e16},
                    adaptive={"min_flops": 1e15, "max_flops": 1e17, "n_range": [1e6, 1e8],
                              "flop_budget": 1e18, "max_trials": 14, "initial_trials": 6})
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(), write_report=False)
    t = load_trials(spec.sweep_dir)
    assert out.failed == 0 and out.stop_reason
    assert t["flops"].sum() <= 1.1e18 + t["flops"].max()  # the budget counts every trial of a search
    assert (t["recipe"] == "tune").any()


@pytest.mark.parametrize("bad, message", [
    ({"train": {"lr": {"coef": -1, "n": "total"}}}, "train.lr.coef: Input should be greater than 0"),
    ({"tune": {"initial": 9, "max_trials_per_point": 5}}, "tune.initial=9 > tune.max_trials_per_point=5"),
    ({"tune": {"lr_range": [1e-3, 2e-3]}}, "tune.lr_range [0.001, 0.002] cannot hold 3 values"),
    ({"train": {"lr": "tuned"}}, "train.lr: expected a number, a power rule"),
    ({"train": {"lr": "tune", "batch_tokens": "tune"}, "tune": {"max_trials_per_point": 4}},
     "cannot bracket both lr and batch_tokens"),
])
def test_bad_recipe_settings_are_one_line(tmp_path, bad, message):
    with pytest.raises(UserError) as e:
        sim_spec(tmp_path, **{k: v for k, v in bad.items() if k != "tune"}, tune=bad.get("tune"))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mup_needs_a_base_width(tmp_path):
    with pytest.raises(UserError, match="model.parametrization: mup needs model.base_width"):
        parse_spec({"name": "m", "data": {"builtin": "python-stdlib"}, "model": {"parametrization": "mup"},
                    "sweep": {"kind": "grid", "model_sizes": [1e4], "tokens": [1e6]}})


def test_mup_enters_the_trial_and_its_id_and_standard_ids_stay(tmp_path):
    def spec(model):
        return parse_spec({"name": "m", "data": {"builtin": "python-stdlib"}, "model": model,
                           "sweep": {"kind": "grid", "model_sizes": [2e4], "tokens": [1e6]}})
    std = spec({})
    mup = spec({"parametrization": "mup", "base_width": 32})
    t_std = plan_trials(std, TrialFactory(std))[0]
    t_mup = plan_trials(mup, TrialFactory(mup))[0]
    assert t_std.mup_base_width == 0 and t_mup.mup_base_width == 32
    assert t_std.trial_id != t_mup.trial_id and t_std.shape == t_mup.shape


def test_rules_resolve_per_trial_and_count_n_as_they_say(tmp_path):
    spec = parse_spec({"name": "r", "data": {"builtin": "python-stdlib"},
                       "sweep": {"kind": "grid", "model_sizes": [2e4, 8e4], "tokens": [2e6]},
                       "train": {"lr": {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307},
                                 "batch_tokens": {"coef": 0.58, "d_exp": 0.571, "n": "total"}}})
    for t in plan_trials(spec, TrialFactory(spec)):
        n_ne = t.shape.n_params_nonembed
        assert t.train.lr == pytest.approx(1.79 * n_ne ** -0.713 * 2e6 ** 0.307)
        assert t.train.batch_tokens % 128 == 0  # whole sequences
        assert abs(t.train.batch_tokens - 0.58 * 2e6 ** 0.571) <= 64
        assert t.recipe == "rule" and t.tokens % t.train.batch_tokens == 0
