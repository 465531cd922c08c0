"""Variants in a spec: validation at the edge, ids that hash what a variant changes, one plan,
rows labelled by the variant's current name, one planner per variant behind one driver."""

import json

import pandas as pd
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.planning.protocol import StaticPlanner
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.planning.variants import VariantPlanner, adaptive_share, journal_name, plan_variants, variant_factories
from orchestrator.results import label_variants
from orchestrator.spec import parse_spec
from conftest import tiny_spec_dict

T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def sim_dict(results: str, variants: list, **over) -> dict:
    spec = tiny_spec_dict(results, trainer="simulated", world={"law": T0, "seed": 0}, variants=variants, **over)
    spec.pop("data")
    spec["sweep"] = {"kind": "isoflop", "budgets": [1e15, 1e16], "model_sizes": [1e6, 3e6]}
    return spec


def test_overrides_merge_into_the_baseline_and_are_validated_like_it(tmp_path):
    spec = parse_spec(tiny_spec_dict(str(tmp_path), variants=[
        {"name": "deep", "model": {"aspect_ratio": 4}},
        {"name": "slow", "train": {"lr": 1e-3, "schedule": "wsd", "cooldown": {"fraction": 0.3}}},
    ]))
    base, deep, slow = spec.variants_resolved()
    assert base.name == "baseline" and base.key == {} and not base.spec.variants
    assert deep.spec.model.aspect_ratio == 4 and deep.spec.model.seq_len == 32  # the rest is the baseline's
    assert deep.key == {"model.aspect_ratio": 4.0}
    assert slow.spec.train.lr == 1e-3 and slow.spec.train.batch_tokens == 256
    assert slow.spec.train.cooldown.fraction == 0.3 and slow.spec.train.cooldown.shape == "1-sqrt"
    assert set(slow.key) == {"train.lr", "train.schedule", "train.cooldown.fraction", "train.cooldown.shape"}


def test_a_world_override_merges_into_the_law_and_a_data_source_replaces_the_baseline_s(tmp_path):
    spec = parse_spec(sim_dict(str(tmp_path), [{"name": "v", "world": {"law": {"A": 400.0}, "seed": 3}}]))
    v = spec.variants_resolved()[1]
    assert v.spec.world.law.A == 400.0 and v.spec.world.law.B == T0["B"] and v.spec.world.seed == 3
    text = tmp_path / "corpus.txt"
    text.write_text("hello " * 2000)
    spec = parse_spec(tiny_spec_dict(str(tmp_path), variants=[{"name": "mix", "data": {"text": str(text)}}]))
    mix = spec.variants_resolved()[1].spec.data
    assert mix.text == str(text) and mix.builtin is None and mix.eval_tokens == 2048


@pytest.mark.parametrize("variants,expected", [
    ([{"name": "a", "model": {"aspect_ratio": 4}}, {"name": "a", "model": {"aspect_ratio": 8}}],
     "variants[1].name: 'a' is also variants[0]'s"),
    ([{"name": "a", "model": {"aspect_ratio": 4}}, {"name": "b", "model": {"aspect_ratio": 4.0}}],
     "variants[1] (b): the same settings as variant 'a'"),
    ([{"name": "a", "model": {"aspect_ratio": 16}}], "variants[0] (a): changes nothing"),
    ([{"name": "a", "train": {"log_every": 3, "n_evals": 9}}],
     "variants[0] (a): changes only train.log_every, train.n_evals, which no trial's result depends on"),
    ([{"name": "a", "model": {"aspect_ratioo": 4}}], "variants[0] (a): model.aspect_ratioo: unknown key (valid keys:"),
    ([{"name": "a", "modle": {"aspect_ratio": 4}}], "variants[0].modle: unknown key (valid keys: data, model, name"),
    ([{"name": "a", "world": {"seed": 2}}], "variants[0] (a): world: does not apply to trainer: gpt"),
    ([{"name": "baseline", "model": {"aspect_ratio": 4}}], "variants[0].name: 'baseline' names the spec without"),
    ([{"name": "../x", "model": {"aspect_ratio": 4}}], "variants[0].name: expected 1-100 letters"),
    ([{"name": "a", "model": {"seq_len": 100}}], "variants[0] (a): train.batch_tokens=256 is not a multiple of model.seq_len=100"),
    ([{"name": "a", "train": {"lr": -1}}], "variants[0] (a): train.lr"),
])
def test_bad_variants_are_one_line_exit_2_nothing_written(tmp_path, capsys, variants, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(str(tmp_path / "results"), variants=variants)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert expected in err, err
    assert not (tmp_path / "results").exists()


def test_ids_hash_the_variant_s_settings_not_its_name_and_the_baseline_keeps_its_ids(tmp_path, cache_dir):
    def ids(variants):
        factories = variant_factories(parse_spec(tiny_spec_dict(str(tmp_path), variants=variants)), cache_dir)
        return {name: {t.trial_id for t in plan_trials(f.spec, f)} for name, f in factories.items()}

    plain = TrialFactory(parse_spec(tiny_spec_dict(str(tmp_path))), cache_dir)
    alone = {t.trial_id for t in plan_trials(plain.spec, plain)}
    deep = ids([{"name": "deep", "model": {"aspect_ratio": 4}}])
    assert deep["baseline"] == alone  # adding variants retrains nothing of the baseline
    assert not deep["deep"] & alone
    renamed = ids([{"name": "narrow", "model": {"aspect_ratio": 4}}])
    assert renamed["narrow"] == deep["deep"]  # a renamed variant finds its finished trials
    # a variant whose shapes coincide with the baseline's at some size still has its own trials
    lr = ids([{"name": "lr", "train": {"lr": 6.0001e-3}}])
    assert not lr["lr"] & alone


def test_static_plan_runs_every_point_for_every_variant_largest_first(tmp_path):
    spec = parse_spec(sim_dict(str(tmp_path), [{"name": "v", "world": {"law": {"A": 400.0}}}]))
    trials = plan_variants(variant_factories(spec))
    assert [t.variant for t in trials].count("baseline") == [t.variant for t in trials].count("v") == 4
    assert {(t.n_params, t.tokens) for t in trials if t.variant == "v"} == \
        {(t.n_params, t.tokens) for t in trials if t.variant == "baseline"}
    flops = [t.n_params * t.tokens for t in trials]
    assert flops == sorted(flops, reverse=True)


def test_adaptive_variants_split_the_budget_and_keep_their_own_journals(tmp_path):
    spec = parse_spec(sim_dict(str(tmp_path), [{"name": "v", "world": {"law": {"A": 400.0}}}], planner="adaptive",
                               sweep=None, adaptive={"min_flops": 1e15, "max_flops": 1e17, "n_range": [1e6, 1e8],
                                                     "flop_budget": 1e18, "max_trials": 41}))
    base, v = spec.variants_resolved()
    assert adaptive_share(v, 2).adaptive.flop_budget == 5e17 and adaptive_share(v, 2).adaptive.max_trials == 21
    assert journal_name(base, "planner.journal") == "planner.journal"
    assert journal_name(v, "planner.journal").startswith("planner-") and journal_name(v, "planner.journal") != \
        journal_name(spec.variants_resolved()[1], "x.journal")


def test_variant_planner_alternates_and_tells_each_result_to_its_variant(tmp_path):
    spec = parse_spec(sim_dict(str(tmp_path), [{"name": "v", "world": {"law": {"A": 400.0}}}]))
    trials = plan_variants(variant_factories(spec))
    planners = {name: StaticPlanner([t for t in trials if t.variant == name]) for name in ("baseline", "v")}
    vp = VariantPlanner(planners)
    assert vp.eager and vp.expected()[0] == 8
    first = vp.ask(4)
    assert [t.variant for t in first].count("v") == 2
    for t in first:
        vp.tell(t, None)
    assert set(planners["v"].told) == {t.trial_id for t in first if t.variant == "v"}
    assert len(vp.ask(10)) == 4 and vp.finished() and vp.ask(3) == []


def test_rows_take_the_variant_name_the_plan_gives_their_point():
    rows = pd.DataFrame({"point_id": ["p1", "p2", "p3"], "variant": ["old", "baseline", None]})
    plan = {"trials": [{"point_id": "p1", "variant": "new"}]}
    assert list(label_variants(rows, plan)["variant"]) == ["new", "baseline", "baseline"]
    assert list(label_variants(rows.drop(columns="variant"), {})["variant"]) == ["baseline"] * 3


def test_simulated_sweep_with_variants_writes_the_variant_column(ray_cluster, tmp_path):
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_dict(str(tmp_path), [{"name": "better", "world": {"law": {"A": 400.0}, "seed": 1}}]))
    out = run_sweep(spec, write_report=False)
    assert out.trained == 8
    table = pd.read_parquet(f"{spec.sweep_dir}/trials")
    assert sorted(table["variant"].astype(str)) == ["baseline"] * 4 + ["better"] * 4
    plan = json.loads(open(f"{spec.sweep_dir}/plan.json").read())
    assert [v["name"] for v in plan["variants"]] == ["baseline", "better"]
    assert plan["variants"][1]["changes"] == {"world.law": [T0["E"], 400.0, T0["B"], T0["alpha"], T0["beta"]], "world.seed": 1}


def test_adaptive_sweep_plans_each_variant_on_its_share_and_resumes_it(tmp_path):
    """Each variant's planner spends at most its half of the FLOP budget, proposes only its own
    variant's trials and keeps its own journal; a second run trains nothing again."""
    import os

    from orchestrator.running.executor import InlineExecutor
    from orchestrator.sweep import run_sweep

    spec = parse_spec(sim_dict(str(tmp_path), [{"name": "v", "world": {"law": {"A": 400.0}, "seed": 1}}],
                               planner="adaptive", sweep=None, fit={"target_compute": 1e20},
                               adaptive={"min_flops": 1e15, "max_flops": 1e18, "n_range": [1e6, 3e9],
                                         "flop_budget": 6e18, "max_trials": 24, "initial_trials": 6}))
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(slots=2), write_report=False)
    table = pd.read_parquet(f"{spec.sweep_dir}/trials")
    for name, rows in table.groupby(table["variant"].astype(str)):
        assert 6 <= len(rows) <= 12, name
        assert (6 * rows["n_params"] * rows["tokens"]).sum() <= 3e18 * 1.001
    assert set(table["variant"].astype(str)) == {"baseline", "v"}
    journals = sorted(f for f in os.listdir(spec.sweep_dir) if f.endswith(".journal"))
    assert len(journals) == 2 and "planner.journal" in journals
    assert out.variants is not None or out.fit_error
    again = run_sweep(spec, executor_factory=lambda: InlineExecutor(slots=2), write_report=False)
    assert again.trained == 0


def test_a_cosine_variant_of_a_wsd_baseline_drops_the_wsd_only_settings(tmp_path):
    """The baseline's cooldown, reuse and keep_stems apply to wsd only: a variant that switches
    the schedule to cosine does not inherit them (as a dense variant drops an MoE baseline's
    expert settings), and trains cosine trials."""
    wsd = {"schedule": "wsd", "cooldown": {"fraction": 0.3}, "reuse": True, "keep_stems": True}
    spec = parse_spec(tiny_spec_dict(str(tmp_path), train=wsd, variants=[{"name": "cos", "train": {"schedule": "cosine"}}]))
    base, cos = spec.variants_resolved()
    assert base.spec.train.cooldown.fraction == 0.3 and base.spec.train.keep_stems
    t = cos.spec.train
    assert t.schedule == "cosine" and t.cooldown is None and t.reuse is None and not t.keep_stems
    assert cos.key["train.schedule"] is None and t.lr == base.spec.train.lr  # the rest is the baseline's
    cosine_alone = TrialFactory(parse_spec(tiny_spec_dict(str(tmp_path))))
    trial = plan_trials(cos.spec, TrialFactory(cos.spec, variant=cos))[0]
    assert trial.stem_id == "" and trial.start_step == 0 and trial.train.schedule == "cosine"
    assert trial.trial_id not in {t.trial_id for t in plan_trials(cosine_alone.spec, cosine_alone)}


@pytest.mark.parametrize("train, field", [
    ({"schedule": "cosine", "cooldown": {"fraction": 0.5}}, "cooldown"),
    ({"cooldown": {"fraction": 0.5}}, "cooldown"),
    ({"schedule": "cosine", "reuse": True}, "reuse"),
    ({"schedule": "cosine", "keep_stems": True}, "keep_stems"),
])
def test_a_cosine_variant_that_sets_a_wsd_setting_itself_is_refused_naming_it(tmp_path, train, field):
    base = {} if "schedule" not in train else {"train": {"schedule": "wsd"}}
    d = tiny_spec_dict(str(tmp_path), variants=[{"name": "v", "train": train}], **base)
    with pytest.raises(Exception) as e:
        parse_spec(d)
    msg = str(e.value)
    assert msg.startswith(f"spec: variants[0].train.{field}: applies to schedule: wsd"), msg
    assert "\n" not in msg
