"""The trainer contract (workers.entry), run through ``run_trial`` against every registered
trainer: a tiny GPT (about a second) and the simulated world."""

import math
import typing
from dataclasses import replace

import pyarrow as pa
import pytest

from conftest import tiny_spec_dict
from bench.worlds import VISIBLE_LAWS, law_spec
from orchestrator.planning.trials import TrialFactory
from orchestrator.spec import SweepSpec, parse_spec
from workers.entry import TRAINERS, run_trial
from workers.flops import train_flops
from workers.config import DataConfig
from workers.store import TRIALS_SCHEMA, ResultStore, TrialStatus, checkpoint_path

T0 = law_spec(VISIBLE_LAWS["T0"])
# trainer -> (N, D) of its contract trial
POINTS = {"gpt": (4e3, 256 * 40), "simulated": (1e7, 2e8)}


def test_contract_covers_every_registered_trainer():
    assert set(POINTS) == set(TRAINERS) == set(typing.get_args(SweepSpec.model_fields["trainer"].annotation))


@pytest.fixture(params=sorted(POINTS))
def make(request, tmp_path, cache_dir):
    """make(seed) -> a trial of this trainer, as a sweep would plan it (content-hashed id)."""
    kind = request.param
    results = str(tmp_path / "results")
    if kind == "gpt":
        spec = parse_spec(tiny_spec_dict(results))
    else:
        spec = parse_spec({"name": "sim", "trainer": "simulated", "results": results, "world": {"law": T0},
                           "sweep": {"kind": "isoflop", "budgets": [1e16], "model_sizes": [1e7]},
                           "fit": {"target_compute": 1e20}})
    factory = TrialFactory(spec, cache_dir)
    n, d = POINTS[kind]
    return lambda seed=0: factory.make(n, d, 0.0, seed, "contract")


def broken(trial):
    """The trial with an input its trainer cannot use, and the exception that names it."""
    if trial.trainer == "gpt":
        return replace(trial, data=DataConfig(text="/nonexistent/corpus.txt")), "DataError"
    return replace(trial, world=None), "TypeError"


def test_the_row_has_the_trials_schema_and_describes_the_trial(make):
    cfg = make()
    r = run_trial(cfg)
    assert isinstance(r.status, TrialStatus) and r.status is TrialStatus.COMPLETED, r.error
    assert r.trial_id == cfg.trial_id and math.isfinite(r.eval_loss) and r.eval_loss > 0
    assert list(r.row) == TRIALS_SCHEMA.names
    pa.Table.from_pylist([r.row], schema=TRIALS_SCHEMA)  # every value has its column's type
    row = r.row
    assert (row["trial_id"], row["sweep"], row["name"], row["seed"]) == (cfg.trial_id, cfg.sweep, cfg.name, cfg.seed)
    assert row["status"] == r.status.value and row["eval_loss"] == r.eval_loss and row["error"] == ""
    assert row["n_params"] == cfg.n_params and row["tokens"] == cfg.tokens
    assert row["flops"] == train_flops(cfg.n_params, cfg.tokens) == 6 * cfg.n_params * cfg.tokens


def test_the_result_is_committed_and_leaves_no_checkpoint(make):
    cfg = make()
    r = run_trial(cfg)
    store = ResultStore(cfg.results)
    [stored] = store.read_table("trials").to_pylist()
    assert stored["trial_id"] == cfg.trial_id and stored["status"] == r.status.value
    assert stored["eval_loss"] == pytest.approx(r.eval_loss)
    assert store.read_bytes(checkpoint_path(cfg.trial_id)) is None


def test_same_trial_same_result_a_replicate_differs(make):
    a = run_trial(make(seed=1))
    b = run_trial(make(seed=1))
    c = run_trial(make(seed=2))
    assert a.eval_loss == b.eval_loss
    assert a.eval_loss != c.eval_loss


def test_an_error_in_the_trial_is_a_failed_row_with_its_traceback_not_an_exception(make):
    bad, error = broken(make())
    r = run_trial(bad)
    assert r.status is TrialStatus.FAILED and math.isnan(r.eval_loss)
    assert list(r.row) == TRIALS_SCHEMA.names
    [row] = ResultStore(bad.results).read_table("trials").to_pylist()
    assert row["status"] == TrialStatus.FAILED.value
    assert error in row["error"] and "Traceback" in row["error"]
