"""One name per trial, everywhere: a trial's row records its variant's identity (the hash of the
settings it changes), and every reader (load_trials, query, status, fit, the end-of-run fit)
names it as the spec names that identity now. A renamed variant's rows, static or adaptive, all
move to the new name without training anything again; rows of a variant the spec no longer has
are labelled '<name> (not in spec)' and never fitted. Simulated sweeps, in process."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import tiny_spec_dict
from orchestrator.cli import main
from orchestrator.results import NOT_IN_SPEC, label_variants, load_trials, read_trials
from orchestrator.results.sql import query
from orchestrator.running.executor import InlineExecutor
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from workers.store import ResultStore

T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
BETTER = {"law": {"A": 453.02, "B": 1953.73}, "seed": 1}
NOISE = {"tier": "none", "residual_amplitude": 0.0, "outlier_prob": 0.0}


def static(results, variants: list) -> dict:
    """3 budgets x 4 sizes: 12 runs a variant, enough to fit and compare."""
    spec = tiny_spec_dict(str(results), name="labels", trainer="simulated", variants=variants,
                          world={"law": T0, "seed": 0, "noise": NOISE}, fit={"target_compute": 1e19})
    spec.pop("data")
    spec["sweep"] = {"kind": "isoflop", "budgets": [1e15, 1e16, 1e17], "model_sizes": [1e6, 3e6, 1e7, 3e7]}
    return spec


def adaptive(results, variants: list) -> dict:
    spec = static(results, variants)
    spec |= {"planner": "adaptive", "sweep": None,
             "adaptive": {"min_flops": 1e15, "max_flops": 1e17, "n_range": [1e6, 1e8], "flop_budget": 1e19,
                          "max_trials": 24, "initial_trials": 6}}
    return spec


def run(d: dict):
    return run_sweep(parse_spec(d), executor_factory=lambda: InlineExecutor(slots=2), write_report=False)


READERS = ("load_trials", "read_trials", "query", "status", "fit")


def names(d: dict, capsys, fit: bool = True) -> dict[str, set]:
    """The variant names each reader shows for the sweep of ``d`` (``fit``: `scalesweep fit` too,
    seconds of fitting)."""
    path = parse_spec(d).sweep_dir
    points = load_trials(path)
    points = points[points["role"] != "stem"]
    capsys.readouterr()
    assert main(["status", path, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    shown = {"load_trials": set(points["variant"]), "read_trials": set(read_trials(ResultStore(path))["variant"].to_pylist()),
             "query": set(query(path, "select variant from trials where role is distinct from 'stem'")["variant"]),
             "status": set(status["variants"])}
    if fit:
        assert main(["fit", path, "--json", "--bootstrap", "0"]) == 0
        shown["fit"] = set(json.loads(capsys.readouterr().out)["variants"])
    return shown


@pytest.mark.parametrize("make", [static, pytest.param(adaptive, marks=pytest.mark.slow)], ids=["static", "adaptive"])
def test_a_renamed_variant_s_rows_take_the_new_name_everywhere(tmp_path, capsys, make):
    first = make(tmp_path, [{"name": "better", "world": BETTER}])
    out = run(first)
    assert out.variants is not None and set(out.variants.fits) == {"baseline", "better"}
    assert names(first, capsys, fit=False) == dict.fromkeys(READERS[:-1], {"baseline", "better"})
    renamed = make(tmp_path, [{"name": "cheaper", "world": BETTER}])
    again = run(renamed)
    assert again.trained == 0  # the variant's ids hash its settings, not its name
    assert again.variants is not None and set(again.variants.fits) == {"baseline", "cheaper"}
    assert names(renamed, capsys) == dict.fromkeys(READERS, {"baseline", "cheaper"})
    rows = ResultStore(parse_spec(renamed).sweep_dir).read_table("trials").to_pandas()
    assert set(rows["variant"]) == {"baseline", "better"}  # what was written stays; readers relabel


def wsd(results, variants: list) -> dict:
    return static(results, variants) | {"train": {"schedule": "wsd", "cooldown": {"fraction": 0.5}}}


def tuned(results, variants: list) -> dict:
    spec = static(results, variants)
    spec["world"]["hparams"] = {"lr": {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307, "n": "total"},
                                "batch": {"coef": 0.58, "n_exp": 0.0, "d_exp": 0.571, "n": "total"}}
    return spec | {"train": {"lr": {"tune": 1e-3}, "batch_tokens": 4096}}


# 20-26 s each: the static rename above covers the labelling; these, the wsd and tuned rows (-m slow)
@pytest.mark.parametrize("make", [pytest.param(wsd, marks=pytest.mark.slow), pytest.param(tuned, marks=pytest.mark.slow)],
                         ids=["wsd", "tuned"])
def test_a_renamed_variant_of_a_wsd_or_tuned_sweep_moves_every_row(tmp_path, capsys, make):
    """wsd: the stems' segment rows too; tuned: every trial of every point's search."""
    first = make(tmp_path, [{"name": "better", "world": BETTER}])
    run(first)
    renamed = make(tmp_path, [{"name": "cheaper", "world": BETTER}])
    out = run(renamed)
    assert out.trained == 0 and set(out.variants.fits) == {"baseline", "cheaper"}
    path = parse_spec(renamed).sweep_dir
    rows = load_trials(path)
    assert len(rows) > 24 and set(rows["variant"]) == {"baseline", "cheaper"}  # stems / searches included
    assert set(ResultStore(path).read_table("trials")["variant"].to_pylist()) == {"baseline", "better"}
    assert names(renamed, capsys) == dict.fromkeys(READERS, {"baseline", "cheaper"})


@pytest.mark.parametrize("make", [static, pytest.param(adaptive, marks=pytest.mark.slow)], ids=["static", "adaptive"])
def test_a_removed_variant_s_rows_are_labelled_and_never_fitted(tmp_path, capsys, caplog, make):
    first = make(tmp_path, [{"name": "better", "world": BETTER}])
    run(first)
    n_better = int((load_trials(parse_spec(first).sweep_dir)["variant"] == "better").sum())
    # the name kept, other settings: the old rows are not this variant's
    changed = make(tmp_path, [{"name": "better", "world": {"law": {"A": 400.0}, "seed": 3}}])
    out = run(changed)
    assert out.trained > 0 and out.variants is not None
    path = parse_spec(changed).sweep_dir
    trials = load_trials(path)
    old = f"better{NOT_IN_SPEC}"
    assert (trials["variant"] == old).sum() == n_better and set(trials["variant"]) == {"baseline", "better", old}
    assert out.variants.fits["better"].n_runs == (trials["variant"] == "better").sum()  # the new rows only
    assert any("better" in r.getMessage() and "not in the spec" in r.getMessage() for r in caplog.records)
    # the variant removed: the baseline alone is fitted, the removed rows are shown as such
    alone = make(tmp_path, [])
    out = run(alone)  # adaptive: the baseline's planner gets the whole budget now, and spends more
    trials = load_trials(path)
    assert out.variants is None and out.fit is not None and out.fit.n_runs == (trials["variant"] == "baseline").sum()
    assert set(trials["variant"]) == {"baseline", old}  # both sets of better's rows, now
    capsys.readouterr()
    assert main(["status", path, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status["variants"]) == {"baseline"} and status["trials"] == out.fit.n_runs
    assert status["not_in_spec"] == {old: int((trials["variant"] == old).sum())}
    assert main(["status", path]) == 0
    assert "not in the spec" in capsys.readouterr().out
    assert main(["fit", path, "--json", "--bootstrap", "0"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert "variants" not in fit and fit["n_trials"] == out.fit.n_runs


def test_labels_by_identity_then_by_the_plan_s_points_then_as_written():
    plan = {"variants": [{"name": "baseline", "changes": {}, "id": "b0"}, {"name": "new", "changes": {"x": 1}, "id": "v1"}],
            "trials": [{"point_id": "p2", "variant": "planned"}]}
    rows = pd.DataFrame({"point_id": ["p1", "p2", "p3", "p4", "p5"],
                         "variant": ["old", "x", "baseline", None, "gone"],
                         "variant_id": ["v1", None, "b0", None, "v9"]})
    assert list(label_variants(rows, plan, keep_removed=True)["variant"]) == \
        ["new", "planned", "baseline", "baseline", f"gone{NOT_IN_SPEC}"]
    assert list(label_variants(rows, plan)["point_id"]) == ["p1", "p2", "p3", "p4"]  # not fitted
    assert list(label_variants(rows.drop(columns=["variant", "variant_id"]), {})["variant"]) == ["baseline"] * 5


def test_rows_written_before_variant_ids_are_read_and_labelled_by_their_point(tmp_path):
    """A results directory written before rows recorded variant_id: its files read (the column
    null), and a static sweep's rows take the variant the plan gives their point."""
    import glob

    import pyarrow.parquet as pq

    run(static(tmp_path, [{"name": "better", "world": BETTER}]))
    renamed = static(tmp_path, [{"name": "cheaper", "world": BETTER}])
    path = parse_spec(renamed).sweep_dir
    for f in glob.glob(f"{path}/trials/*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns(["variant_id"]), f)
    assert run(renamed).trained == 0
    raw = ResultStore(path).read_table("trials")
    assert raw["variant_id"].null_count == len(raw) and set(raw["variant"].to_pylist()) == {"baseline", "better"}
    assert set(load_trials(path)["variant"]) == {"baseline", "cheaper"}
