"""Live curves (orchestrator.running.tracking, workers.run.stream) on the session's real Ray, read
back with TensorBoard's own event reader; a tracker failing mid-sweep loses nothing."""

from __future__ import annotations

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


def test_a_tracker_not_installed_is_one_line_at_load(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UserError, match=r'tracking.tensorboard: the tensorboard package is not installed \(expected '
                                        r'pip install -e "\.\[tensorboard\]"'):
        _spec(tmp_path)


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
