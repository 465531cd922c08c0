"""ResultStore contract, run against a local directory and an in-memory filesystem."""

import math

import pyarrow.fs as pafs
import pytest

from workers.store import STEPS_SCHEMA, TRIALS_SCHEMA, ResultStore, TrialStatus


def row(tid, status="completed", loss=2.0):
    r = {f.name: None for f in TRIALS_SCHEMA}
    r.update(sweep="s", trial_id=tid, status=status, n_params=1000, tokens=5000, flops=3e7, budget=3e7, eval_loss=loss)
    return r


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return ResultStore(str(tmp_path / "sweep"))
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(__import__("fsspec").filesystem("memory", skip_instance_cache=True)))
    return ResultStore(f"/mem-{tmp_path.name}/sweep", filesystem=fs)


def test_write_then_read(store):
    steps = [{f.name: None for f in STEPS_SCHEMA} | {"trial_id": "a", "step": i, "tokens": i * 10} for i in (1, 2)]
    store.write_trial(row("a"), steps)
    store.write_trial(row("b", "diverged", math.nan))
    assert store.trial_statuses() == {"a": TrialStatus.COMPLETED, "b": TrialStatus.DIVERGED}
    assert store.read_table("trials").num_rows == 2
    assert store.read_table("steps").column("step").to_pylist() == [1, 2]


def test_rewrite_replaces_the_row(store):
    store.write_trial(row("a", "failed"))
    store.write_trial(row("a", "completed"))
    assert store.trial_statuses() == {"a": TrialStatus.COMPLETED}


def test_no_temporary_files_remain_and_none_are_read(store):
    store.write_trial(row("a"))
    store.fs.create_dir(f"{store.root}/trials", recursive=True)
    with store.fs.open_output_stream(f"{store.root}/trials/.tmp-half-written.parquet") as f:
        f.write(b"PAR1 garbage")
    assert [p.rsplit("/", 1)[1] for p in store.list_files("trials")] == ["a.parquet"]


def test_empty_store(store):
    assert store.trial_statuses() == {} and store.read_table("steps").num_rows == 0


def test_status_finished():
    assert TrialStatus.COMPLETED.is_finished() and TrialStatus.DIVERGED.is_finished()
    assert not TrialStatus.FAILED.is_finished()
