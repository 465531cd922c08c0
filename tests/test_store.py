"""The ResultStore contract (workers.store), run against every kind of root: a local
directory and object storage (fsspec's memory://, through the same pyarrow calls as s3://)."""

import math
import uuid

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
        yield ResultStore(str(tmp_path / "sweep"))
        return
    import fsspec

    bucket = f"bucket-{uuid.uuid4().hex[:8]}"
    yield ResultStore(f"memory://{bucket}/sweep")
    memory = fsspec.filesystem("memory")
    if memory.exists(f"/{bucket}"):
        memory.rm(f"/{bucket}", recursive=True)


def test_a_store_opened_on_a_given_filesystem_uses_it(tmp_path):
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(__import__("fsspec").filesystem("memory", skip_instance_cache=True)))
    store = ResultStore(f"/mem-{tmp_path.name}/sweep", filesystem=fs)
    store.write_trial(row("a"))
    assert store.fs is fs and ResultStore(store.root, filesystem=fs).trial_statuses() == {"a": TrialStatus.COMPLETED}


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


def test_damaged_and_old_files_are_skipped_or_conformed(store, caplog):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store.write_trial(row("good"))
    with store.fs.open_output_stream(f"{store.root}/trials/truncated.parquet") as f:
        f.write(b"PAR1\x00\x01 not really parquet")
    old = pa.table({"trial_id": ["old"], "status": ["completed"], "eval_loss": [2.5], "legacy_col": [1]})
    with store.fs.open_output_stream(f"{store.root}/trials/old.parquet") as f:
        pq.write_table(old, f)
    foreign = pa.table({"x": [1]})
    with store.fs.open_output_stream(f"{store.root}/trials/foreign.parquet") as f:
        pq.write_table(foreign, f)
    with caplog.at_level("WARNING"):
        t = store.read_table("trials")
    assert sorted(t.column("trial_id").to_pylist()) == ["good", "old"]
    assert t.schema == TRIALS_SCHEMA and "legacy_col" not in t.column_names
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "truncated.parquet" in warned and "foreign.parquet" in warned and "trains again" in warned
    assert store.trial_statuses() == {"good": TrialStatus.COMPLETED, "old": TrialStatus.COMPLETED}


def test_a_damaged_steps_file_says_what_a_re_run_does(store, caplog):
    """A re-run retrains only trials without a row: the warning once told users to re-run to
    recompute a trial whose steps file was damaged, and the re-run recomputed nothing."""
    store.write_trial(row("a"), _steps("a", 3))
    with store.fs.open_output_stream(f"{store.root}/steps/a.parquet") as f:
        f.write(b"PAR1 damaged")
    with caplog.at_level("WARNING"):
        assert store.read_table("steps").num_rows == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "final result in trials/ is unaffected" in warned and "delete trials/a.parquet and steps/a.parquet" in warned
    assert store.trial_statuses() == {"a": TrialStatus.COMPLETED}  # why a plain re-run trains nothing


def _steps(tid, n):
    return [{f.name: None for f in STEPS_SCHEMA} | {"trial_id": tid, "step": i} for i in range(n)]


def test_compact_merges_every_file_into_one_part_and_loses_nothing(store):
    for i in range(5):
        store.write_trial(row(f"t{i}", loss=2.0 + i), _steps(f"t{i}", 3))
    before = store.read_table("trials").sort_by("trial_id")
    assert store.compact("trials") == 5 and store.compact("steps") == 5
    assert [f.rpartition("/")[2][:5] for f in store.list_files("trials")] == ["part-"]
    assert store.read_table("trials").sort_by("trial_id").equals(before)
    assert store.read_table("steps").num_rows == 15
    assert store.compact("trials") == 0  # one file: nothing to merge


def test_a_later_per_trial_file_supersedes_the_compacted_row(store):
    """A failed trial retried after compaction: its new row wins, and no id appears twice."""
    store.write_trial(row("a", "failed"), _steps("a", 2))
    store.write_trial(row("b"), _steps("b", 2))
    store.compact("trials"), store.compact("steps")
    store.write_trial(row("a", "completed"), _steps("a", 4))
    assert store.trial_statuses() == {"a": TrialStatus.COMPLETED, "b": TrialStatus.COMPLETED}
    steps = store.read_table("steps").to_pydict()
    assert sorted(zip(steps["trial_id"], steps["step"])) == [("a", i) for i in range(4)] + [("b", 0), ("b", 1)]
    store.compact("trials")  # merging again keeps the newer row
    assert store.trial_statuses() == {"a": TrialStatus.COMPLETED, "b": TrialStatus.COMPLETED}


def test_crash_between_writing_a_part_and_deleting_its_sources_duplicates_nothing(store):
    store.write_trial(row("a"))
    store.write_trial(row("b"))
    store.compact("trials")
    store.write_trial(row("a"))  # as if a crash had left a merged source behind
    store.write_trial(row("c"))
    store.compact("trials")
    assert len(store.list_files("trials")) == 1
    assert sorted(store.read_table("trials")["trial_id"].to_pylist()) == ["a", "b", "c"]


def test_compact_leaves_damaged_files_in_place(store, caplog):
    store.write_trial(row("a"))
    store.write_trial(row("b"))
    bad = f"{store.root}/trials/zz-damaged.parquet"
    with store.fs.open_output_stream(bad) as f:
        f.write(b"PAR1 not really")
    assert store.compact("trials") == 2
    assert bad in store.list_files("trials") and "zz-damaged" in caplog.text
    assert sorted(store.read_table("trials")["trial_id"].to_pylist()) == ["a", "b"]


def test_bytes_round_trip_and_delete(store):
    assert store.read_bytes("checkpoints/a.pt") is None
    store.delete("checkpoints/a.pt")  # deleting nothing is fine
    store.write_bytes("checkpoints/a.pt", b"one")
    store.write_bytes("checkpoints/a.pt", b"two")  # replaced in one move
    assert store.read_bytes("checkpoints/a.pt") == b"two"
    names = [i.base_name for i in store.fs.get_file_info(pafs.FileSelector(f"{store.root}/checkpoints"))]
    assert names == ["a.pt"]  # no temporary file left behind
    store.delete("checkpoints/a.pt")
    assert store.read_bytes("checkpoints/a.pt") is None
    with pytest.raises(ValueError, match="relative path"):
        store.write_bytes("../escape.pt", b"x")


def test_a_second_store_on_the_same_root_sees_what_the_first_wrote(store):
    """What the driver relies on: every worker opens its own store on the sweep's root."""
    store.write_trial(row("a"), _steps("a", 2))
    store.write_text("spec.yaml", "name: s\n")
    again = ResultStore(store.uri)
    assert again.exists() and again.trial_statuses() == {"a": TrialStatus.COMPLETED}
    assert again.read_table("steps").num_rows == 2 and again.read_bytes("spec.yaml") == b"name: s\n"
