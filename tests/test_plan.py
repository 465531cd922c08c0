"""Planning: IsoFLOP arithmetic, content-hashed trial ids, duplicates run once."""

import pytest

from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import parse_spec
from conftest import tiny_spec_dict


def plan(spec, cache_dir):
    return plan_trials(spec, TrialFactory(spec, cache_dir))


def test_isoflop_points_spend_their_budget(tiny_spec, cache_dir):
    spec = tiny_spec()
    trials = plan(spec, cache_dir)
    assert len(trials) == 6
    for t in trials:
        spent = 6 * t.n_params * t.tokens
        assert t.tokens % spec.train.batch_tokens == 0
        # rounding to whole batches moves the spend by at most half a batch
        assert abs(spent - t.budget) <= 6 * t.n_params * spec.train.batch_tokens / 2
    assert trials[0].n_params * trials[0].tokens >= trials[-1].n_params * trials[-1].tokens


def test_grid_sweep(tmp_path, cache_dir):
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep={"kind": "grid", "model_sizes": [2e3, 8e3], "tokens": [2.56e4, 5.12e4], "seeds": [0, 1]}))
    trials = plan(spec, cache_dir)
    assert len(trials) == 8 and {t.tokens for t in trials} == {25600, 51200}
    assert all(t.budget == 0 for t in trials)


def test_trial_id_hashes_what_changes_the_result(tmp_path, cache_dir):
    def tid(**over):
        f = TrialFactory(parse_spec(tiny_spec_dict(str(tmp_path), **over)), cache_dir)
        return f.make(4e3, 25600, 0.0, 0, "x").trial_id

    base = tid()
    assert base == tid()
    assert base != tid(train={"lr": 1e-3})
    assert base != tid(train={"batch_tokens": 512})
    assert base != tid(model={"seq_len": 64})  # another shape
    assert base != tid(data={"eval_fraction": 0.1})
    # how often metrics are logged does not change the result
    assert base == tid(train={"log_every": 99, "n_evals": 7})
    f = TrialFactory(parse_spec(tiny_spec_dict(str(tmp_path))), cache_dir)
    assert base != f.make(4e3, 25600, 0.0, 1, "x").trial_id
    assert base != f.make(4e3, 51200, 0.0, 0, "x").trial_id
    assert base != f.make(8e3, 25600, 0.0, 0, "x").trial_id


T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


@pytest.mark.parametrize("world,point,expected", [
    ({"law": T0}, (1e8, 2e9, 0.0, 0), "39a6588c704cf6e4"),
    ({"law": T0, "seed": 3, "duration_s": 0.5, "noise": {"tier": "hard", "outlier_prob": 0.0}},
     (3e7, 6e8, 0.0, 1), "0e13d995ab3b7495"),
    ({"law": {"E": 1.69, "A": 400, "B": 400, "alpha": 0.31, "beta": 0.31}, "noise": {"residual_amplitude": 0}},
     (1e6, 1e9, 0.0, 2), "5184ee6740d2df69"),
    ({"expression": "1.69 + 400/N**0.31 + 400/D**0.31"}, (2e8, None, 1e18, 0), "0ee173beb317cc7a"),
])
def test_simulated_trial_ids_are_pinned(tmp_path, world, point, expected):
    """Finished trials are found again by id: a change to what ids hash would retrain every sweep."""
    spec = tiny_spec_dict(str(tmp_path), trainer="simulated", world=world)
    spec.pop("data")
    assert TrialFactory(parse_spec(spec)).make(*point, "x").trial_id == expected


@pytest.mark.parametrize("over,expected", [
    ({}, "ceb034c67cdea1c0"),
    ({"train": {"betas": [0.8, 0.99], "weight_decay": 0, "n_evals": 9},
      "data": {"eval_fraction": 0.1, "eval_tokens": 4096}}, "0a5a1e5b13925536"),
])
def test_gpt_trial_ids_are_pinned_up_to_the_corpus(tmp_path, over, expected):
    # vocab_size given: the corpus is not opened and its fingerprint is a constant, so the
    # payload's other parts (shape, training settings, split) are pinned on any machine.
    f = TrialFactory(parse_spec(tiny_spec_dict(str(tmp_path), **over)), vocab_size=256)
    assert f.make(4e3, 25600, 0.0, 0, "x").trial_id == expected


def test_ids_do_not_depend_on_sweep_name_or_results(tmp_path, cache_dir):
    a = plan(parse_spec(tiny_spec_dict(str(tmp_path / "a"), name="one")), cache_dir)
    b = plan(parse_spec(tiny_spec_dict(str(tmp_path / "b"), name="two")), cache_dir)
    assert [t.trial_id for t in a] == [t.trial_id for t in b]


def test_sizes_mapping_to_one_shape_run_once(tmp_path, cache_dir):
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep={"kind": "isoflop", "budgets": [1e9], "model_sizes": [4e3, 4.01e3]}))
    assert len(plan(spec, cache_dir)) == 1


def test_budget_too_small_names_the_field(tmp_path, cache_dir):
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep={"kind": "isoflop", "budgets": [1e7], "model_sizes": [8e3]}))
    with pytest.raises(UserError, match=r"sweep\.budgets \(1e\+07 FLOPs for model size 8000\)"):
        plan(spec, cache_dir)


def test_trial_names_are_readable(tiny_spec, cache_dir):
    names = [t.name for t in plan(tiny_spec(), cache_dir)]
    assert all(n.startswith("N=") and " D=" in n and " C=" in n and n.endswith("s0") for n in names)
