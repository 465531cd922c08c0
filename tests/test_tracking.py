"""Live curves (orchestrator.running.tracking, workers.run.stream) on the session's real Ray, read
back with TensorBoard's own event reader; a tracker failing mid-sweep loses nothing."""

from __future__ import annotations

import glob
import json
import logging
import os

import pytest

from conftest import tiny_spec_dict
from orchestrator.errors import UserError
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from workers.store import ResultStore


def _spec(tmp_path, **tracking):
    return parse_spec(tiny_spec_dict(str(tmp_path / "results"), name="live",
                                     tracking={"tensorboard": True, "every_s": 0.05, **tracking}))


def test_a_tracker_not_installed_is_one_line_before_the_sweep_runs(tmp_path, monkeypatch):
    """Where the driver runs: the spec itself loads (a machine that only submits needs no tracker)."""
    import importlib.util

    from orchestrator.sweep import run_sweep

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    spec = _spec(tmp_path)
    with pytest.raises(UserError, match=r'tracking.tensorboard: the tensorboard package is not installed \(expected '
                                        r'pip install -e "\.\[tensorboard\]"'):
        run_sweep(spec, write_report=False)
    assert not (tmp_path / "results").exists()  # refused before anything was written


def _runs(root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for name in sorted(os.listdir(root)):
        acc = EventAccumulator(os.path.join(root, name))
        acc.Reload()
        out[name] = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return out


@pytest.mark.ray
def test_tensorboard_gets_every_trials_curves_live(ray_cluster, tmp_path, cache_dir):
    os.environ["SCALESWEEP_CACHE"] = cache_dir
    spec = _spec(tmp_path)
    out = run_sweep(spec, cache_dir=cache_dir, write_report=False)
    assert out.failed == 0
    store = ResultStore(spec.sweep_dir)
    trials = store.read_table("trials").to_pandas()
    steps = store.read_table("steps").to_pandas()
    runs = _runs(os.path.join(spec.sweep_dir, "tensorboard"))
    assert len(runs) == len(trials)
    for _, t in trials.iterrows():
        [name] = [n for n in runs if n.endswith(t["trial_id"][:8])]
        assert name.startswith(t["name"].split()[0])  # named as its Ray task: N=... D=... C=... s0
        mine = steps[steps["trial_id"] == t["trial_id"]].sort_values("step")
        train = runs[name]["loss/train"]
        assert [s for s, _ in train] == mine["step"].tolist()
        assert [v for _, v in train] == pytest.approx(mine["train_loss"].tolist(), rel=1e-6)
        held = mine[mine["eval_loss"].notna()]
        assert [s for s, _ in runs[name]["loss/eval"]] == held["step"].tolist()
        assert runs[name]["loss/eval"][-1][1] == pytest.approx(t["eval_loss"], rel=1e-6)
    # a re-run trains nothing, so writes no curve twice
    before = {p: os.path.getsize(os.path.join(dp, p)) for dp, _, fs in os.walk(spec.sweep_dir + "/tensorboard") for p in fs}
    run_sweep(spec, cache_dir=cache_dir, write_report=False)
    after = {p: os.path.getsize(os.path.join(dp, p)) for dp, _, fs in os.walk(spec.sweep_dir + "/tensorboard") for p in fs}
    assert after == before


@pytest.mark.ray
def test_a_tracker_failing_mid_sweep_loses_nothing(ray_cluster, tmp_path, cache_dir, monkeypatch, caplog):
    from orchestrator.running import tracking

    os.environ["SCALESWEEP_CACHE"] = cache_dir
    calls = [0]
    write = tracking._TensorBoard.write

    def flaky(self, *args):
        calls[0] += 1
        if calls[0] > 5:
            raise OSError("disk full")
        write(self, *args)

    monkeypatch.setattr(tracking._TensorBoard, "write", flaky)
    spec = _spec(tmp_path)
    with caplog.at_level(logging.WARNING, logger="orchestrator.running.tracking"):
        out = run_sweep(spec, cache_dir=cache_dir, write_report=False)
    assert out.failed == 0 and out.trained == out.n_trials
    assert sum("tracker tensorboard failed (OSError: disk full)" in r.message for r in caplog.records) == 1
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    assert len(rows) == out.n_trials and (rows["status"] == "completed").all()


def _wandb_history(path) -> list[dict]:
    """The history rows of an offline W&B run file, read with W&B's own record protos: the file is
    a header (":W&B", magic, version) and LevelDB-log records in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, chunks, rows, buf = open(path, "rb").read(), 7, 32768, [], [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            buf = chunk
        elif kind in (3, 4):
            buf += chunk
        if kind in (1, 4):
            chunks.append(buf)
    for raw in chunks:
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item})
    return rows


@pytest.mark.ray
def test_wandb_offline_runs_hold_each_trials_history(ray_cluster, tmp_path, cache_dir, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    os.environ["SCALESWEEP_CACHE"] = cache_dir
    spec = parse_spec(tiny_spec_dict(str(tmp_path / "results"), name="live-wandb",
                                     sweep={"kind": "grid", "model_sizes": [2e3, 4e3], "tokens": [2e4]},
                                     tracking={"wandb": {"project": "scalesweep-test", "mode": "offline"}, "every_s": 0.05}))
    out = run_sweep(spec, cache_dir=cache_dir, write_report=False)
    assert out.failed == 0
    store = ResultStore(spec.sweep_dir)
    steps = store.read_table("steps").to_pandas()
    for tid in store.read_table("trials").to_pandas()["trial_id"]:
        [path] = glob.glob(os.path.join(spec.sweep_dir, "wandb", "wandb", f"offline-run-*-{tid}-*", f"run-{tid}-*.wandb"))
        history = _wandb_history(path)
        mine = steps[steps["trial_id"] == tid].sort_values("step")
        assert [h["trainer/step"] for h in history if "loss/train" in h] == mine["step"].tolist()
        assert [h["loss/train"] for h in history if "loss/train" in h] == pytest.approx(mine["train_loss"].tolist(), rel=1e-6)


@pytest.mark.ray
def test_the_cli_streams_curves_of_a_simulated_sweep(ray_cluster, tmp_path):
    """As a user runs it: `scalesweep run` in its own process, Ray joined (and its auth mode set)
    only when the first trial must train, the hub started then; a simulated world's task
    evaluations become each trial's curves."""
    import subprocess
    import sys

    import ray
    import yaml

    from conftest import ROOT

    spec = {"name": "live-cli", "trainer": "simulated", "results": str(tmp_path / "results"),
            "world": {"law": {"E": 1.7, "A": 400, "B": 400, "alpha": 0.3, "beta": 0.3}, "tasks": 2, "duration_s": 0.2},
            "sweep": {"kind": "isoflop", "budgets": [1e17, 1e18], "model_sizes": [1e7, 3e7, 1e8]},
            "tracking": {"tensorboard": True, "every_s": 0.05}, "fit": {"target_compute": 1e20}}
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"} | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(path), "--address",
                           ray.get_runtime_context().gcs_address], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = _runs(str(tmp_path / "results" / "live-cli" / "tensorboard"))
    assert len(runs) == 6
    assert all(any(t.startswith("tasks/") for t in tags) for tags in runs.values())


def test_steps_reported_again_after_a_resume_replace_the_earlier_ones(tmp_path):
    """A trial retried from its checkpoint reports those steps again; TensorBoard keeps the new rows."""
    from orchestrator.running.tracking import _TensorBoard

    tb = _TensorBoard(str(tmp_path), flush_s=1)
    meta = {"name": "N=1k D=1M C=6e+9 s0"}
    for step, loss in [(1, 5.0), (2, 4.0), (3, 3.5), (4, 3.2)]:
        tb.write("t" * 16, meta, "step", step, {"loss/train": loss})
    for step, loss in [(3, 3.4), (4, 3.1), (5, 3.0)]:  # resumed after step 2
        tb.write("t" * 16, meta, "step", step, {"loss/train": loss})
    tb.close("t" * 16)  # that attempt failed at step 5: its writer is closed
    for step, loss in [(5, 2.9), (6, 2.8)]:  # a retry (or a later run) resumes after step 4
        tb.write("t" * 16, meta, "step", step, {"loss/train": loss})
    tb.close("t" * 16)
    [curve] = [tags["loss/train"] for tags in _runs(str(tmp_path)).values()]
    assert [s for s, _ in curve] == [1, 2, 3, 4, 5, 6]
    assert [v for _, v in curve] == pytest.approx([5.0, 4.0, 3.4, 3.1, 2.9, 2.8])


def test_a_hub_that_stops_answering_is_given_up_on_once(tmp_path, caplog):
    """Pure logic (no Ray): after one failed drain the sink never blocks the driver on the hub again."""
    from orchestrator.running import tracking

    calls = []

    class Hub:
        class take:
            @staticmethod
            def remote():
                calls.append(1)
                return "ref"

    class FakeRay:
        @staticmethod
        def get(ref, timeout):
            raise TimeoutError("no answer")

    sink = tracking.TrackerSink(_spec(tmp_path))
    sink.hub, sink._ray = Hub(), FakeRay()
    with caplog.at_level(logging.WARNING, logger="orchestrator.running.tracking"):
        for _ in range(3):
            sink.update(None, None)
    assert len(calls) == 1 and sink.hub is None and not sink.trackers
    assert sum("live tracking stopped" in r.message for r in caplog.records) == 1
