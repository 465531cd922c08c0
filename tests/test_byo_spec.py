"""A lab's trainer in a spec: its sizes (ladder, hook), the trial ids it gets, and every bad input
refused in one line with exit 2 before Ray starts (no results directory written)."""

import datetime
import sys

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import load_spec

MODULE = """
def train(trial, ctx):
    return {"eval_loss": 1.0, "n_params": trial.n_params}

def size(target_n):
    width = max(1, round(target_n ** 0.5))
    return {"width": width}, width * width

def zero_size(target_n):
    return {"width": 0}, 0

def bad_pair(target_n):
    return 12

def two_args(trial):
    return None
"""

LADDER = [{"name": "s1", "n_params": 1000, "settings": {"w": 1}}, {"name": "s2", "n_params": 4000, "settings": {"w": 2}},
          {"name": "s3", "n_params": 16000, "settings": {"w": 4}}]


@pytest.fixture
def lab(tmp_path, monkeypatch):
    """write(spec overrides) -> the spec file's path, beside a lab module ``labmod``."""
    (tmp_path / "labmod.py").write_text(MODULE)
    (tmp_path / "train.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "train.sh").chmod(0o755)
    monkeypatch.chdir(tmp_path)

    def write(**overrides):
        spec = {"name": "lab", "results": str(tmp_path / "results"),
                "trainer": {"function": "labmod:train"}, "model": {"ladder": LADDER},
                "sweep": {"kind": "grid", "model_sizes": [900, 3000, 20000], "tokens": [1e6]},
                "train": {"batch_tokens": 1000}, "fit": {"target_compute": 1e12}} | overrides
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    yield write
    sys.modules.pop("labmod", None)


def trials(path):
    spec = load_spec(path)
    return plan_trials(spec, TrialFactory(spec))


def test_a_ladder_snaps_each_size_to_the_nearest_rung_and_hashes_its_settings(lab):
    ts = trials(lab())
    assert sorted((t.n_params, t.size_name, t.model["w"]) for t in ts) == [(1000, "s1", 1), (4000, "s2", 2),
                                                                         (16000, "s3", 4)]
    assert all(t.trainer == "function" and t.tokens == 1_000_000 and t.steps == 1000 for t in ts)
    ids = {t.trial_id for t in ts}
    assert {t.trial_id for t in trials(lab())} == ids  # content-hashed: the same spec, the same ids
    rung = dict(LADDER[0], settings={"w": 1, "bias": True})
    changed = {t.trial_id for t in trials(lab(model={"ladder": [rung, *LADDER[1:]]}))}
    assert len(ids - changed) == 1  # only the rung whose settings changed trains again
    for trainer in ({"function": "labmod:train", "version": "2"}, {"function": "labmod:train", "settings": {"x": 1}},
                    {"command": "./train.sh"}):
        assert not ids & {t.trial_id for t in trials(lab(trainer=trainer))}


def test_a_hook_sizes_every_target_and_the_workdir_is_the_specs(lab, tmp_path):
    ts = trials(lab(model={"size": "labmod:size"}))
    assert sorted(t.n_params for t in ts) == [900, 3025, 19881] and ts[0].model == {"width": 141}
    assert load_spec(lab()).trainer.workdir == str(tmp_path)
    assert ts[0].workdir == str(tmp_path) and ts[0].workdir_rel == "."  # for a submitted job's nodes


@pytest.mark.parametrize("overrides, message", [
    ({"trainer": {"function": "nolab.scaling:train"}}, "trainer.function: nolab.scaling:train: cannot import nolab"),
    ({"trainer": {"function": "labmod:missing"}}, "trainer.function: labmod:missing: module labmod has no 'missing'"),
    ({"trainer": {"function": "labmod:two_args"}}, "labmod:two_args: wrong signature (trial) (expected two_args(trial, ctx))"),
    ({"trainer": {"function": "not a path"}}, "trainer.function: 'not a path' is not an import path"),
    ({"trainer": {"command": "no-such-trainer --x"}}, "trainer.command: 'no-such-trainer' not found on PATH"),
    ({"trainer": {"command": "./missing.sh"}}, "trainer.command: ./missing.sh not found or not executable"),
    ({"trainer": {"command": "./train.sh {trial_jsn}"}}, "trainer.command: unknown placeholder {trial_jsn}"),
    ({"trainer": {"command": "./train.sh {model.n-layer}"}}, "trainer.command: unknown placeholder {model.n-layer}"),
    ({"trainer": {"command": "./train.sh 'unclosed"}}, "trainer.command: \"./train.sh 'unclosed\": No closing quotation"),
    ({"trainer": {"function": "labmod:train", "settings": {"since": datetime.date(2026, 1, 1)}}},
     "trainer.settings: expected numbers, strings, booleans, lists and mappings"),
    ({"model": {"ladder": [dict(LADDER[0], settings={"at": {1, 2}})]}}, "model.ladder[0].settings"),
    ({"trainer": {"function": "labmod:train", "command": "x"}}, "expected exactly one of function"),
    ({"model": {"ladder": [{"name": "s1", "settings": {}}]}}, "model.ladder[0].n_params: required field is missing"),
    ({"model": {"ladder": [LADDER[0], LADDER[0]]}}, "model.ladder[1].name: 's1' is also model.ladder[0]'s"),
    ({"model": {"ladder": LADDER, "size": "labmod:size"}}, "model: a lab's trainer needs exactly one of ladder"),
    ({"model": {"seq_len": 64, "ladder": LADDER}}, "model.seq_len: a setting of the built-in GPT"),
    ({"model": {"size": "labmod:zero_size"}}, "model.size: returned N=0 for target N=900"),
    ({"model": {"size": "labmod:bad_pair"}}, "model.size: returned 12 for target N=900 (expected a pair"),
    ({"model": {"size": "labmod:nothing"}}, "model.size: labmod:nothing: module labmod has no 'nothing'"),
    ({"trainer": "gpt", "model": {"ladder": LADDER}, "data": {"builtin": "python-stdlib"}},
     "model.ladder: only for a lab's trainer"),
    ({"train": {"lr": {"coef": 1.0, "n_exp": -0.5}}}, "needs every size's non-embedding N (model.ladder[0] has no"),
])
def test_bad_trainer_input_is_one_line_exit_2_before_anything_is_written(lab, tmp_path, capsys, overrides, message):
    path = lab(**overrides)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()


def test_a_hook_that_raises_names_itself(lab):
    spec = load_spec(lab(model={"size": "labmod:size"}))
    factory = TrialFactory(spec)
    factory.sizes.fn = lambda n: 1 / 0
    factory.sizes._seen.clear()
    with pytest.raises(UserError, match=r"model.size: raised ZeroDivisionError: division by zero for target N=900"):
        factory.make(900, 1e6, 0.0, 0, "x")


def test_an_adaptive_sweeps_hook_is_checked_at_both_ends_of_its_range_before_anything_runs(lab, tmp_path, capsys):
    path = lab(model={"size": "labmod:zero_size"}, sweep=None, planner="adaptive",
               adaptive={"min_flops": 1e12, "max_flops": 1e13, "n_range": [1e4, 1e6], "flop_budget": 1e14})
    assert main(["run", str(path)]) == 2
    assert "model.size: returned N=0 for target N=1e+04" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_labs_trainer_of_unknown_speed_is_not_refused_on_a_time_guess(lab):
    from orchestrator.planning.estimate import check, estimate_sweep, local_capacity

    huge = lab(sweep={"kind": "grid", "model_sizes": [1e9], "tokens": [1e13]})  # 6e22 FLOPs
    spec = load_spec(huge)
    factory = TrialFactory(spec)
    est = estimate_sweep(spec, factory, plan_trials(spec, factory), local_capacity(spec))
    check(est, spec)  # no refusal: the default rate is the built-in GPT's, not this trainer's
    assert "time unknown" in est.summary() and "resources.flops_per_s" in est.summary()
    stated = load_spec(lab(sweep={"kind": "grid", "model_sizes": [1e9], "tokens": [1e13]},
                           resources={"flops_per_s": 1e12}))
    factory = TrialFactory(stated)
    with pytest.raises(UserError, match="beyond resources.max_hours"):
        check(estimate_sweep(stated, factory, plan_trials(stated, factory), local_capacity(stated)), stated)
