"""Preemption: a trial checkpoints to the result store and a retry resumes where it stopped.

The interruption is an exception raised from ``workers.gpt.train._after_log_boundary`` (called
after each log boundary's checkpoint): run_trial records a FAILED row and keeps the
checkpoint, as after a killed worker, and the retry must load it back from storage. Counting
real optimiser steps proves the retry did not quietly start over (which would give the same
loss, since the run is deterministic).
"""

import io
import logging
import math

import pyarrow.parquet as pq
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import workers.gpt.train
from conftest import tiny_spec_dict
from orchestrator.planning.trials import TrialFactory
from orchestrator.spec import parse_spec
from orchestrator.errors import UserError
from workers.gpt.arch import shape_for_params
from workers.store import ResultStore, TrialStatus, checkpoint_path
from workers.config import DataConfig, TrainConfig, TrialConfig
from workers.run import run_trial
from workers.trainers.interface import read_checkpoint, write_checkpoint

STEPS = 40  # log boundaries (log_every=5, evals after steps 13 and 27): 5 10 13 18 23 27 32 37 40
STOP_AT = 18  # just after an evaluation, so restored rows carry an eval_loss


def trial(root, cache_dir, every_s, tid="t0"):
    shape = shape_for_params(4e3, 256, 32)
    return TrialConfig(
        trial_id=tid, name="test", sweep="unit", shape=shape, tokens=256 * STEPS, seed=0, budget=0.0,
        train=TrainConfig(batch_tokens=256, n_evals=2, log_every=5, checkpoint_every_s=every_s),
        data=DataConfig(builtin="python-stdlib", eval_tokens=1024, block_tokens=1024),
        results=str(root), cache_dir=cache_dir,
    )


class Preempted(Exception):
    pass


def stop_after(n):
    def hook(steps_done):
        if steps_done == n:
            raise Preempted(f"preempted after step {n}")
    return hook


def step_rows(root, tid="t0"):
    """Step rows without wall_s and energy_j, the fields that differ between equal runs."""
    rows = pq.read_table(f"{root}/steps/{tid}.parquet").to_pylist()
    return [{k: v for k, v in r.items() if k not in ("wall_s", "energy_j")} for r in rows]


class OptimizerSteps:
    """Counts every optimiser step taken anywhere while active."""

    def __enter__(self):
        self.n = 0
        self._handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: setattr(self, "n", self.n + 1))
        return self

    def __exit__(self, *exc):
        self._handle.remove()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("uninterrupted")
    with OptimizerSteps() as opt_steps:
        result = run_trial(trial(root, cache_dir, every_s=0))
    assert result.status is TrialStatus.COMPLETED and opt_steps.n == STEPS
    return result, step_rows(root)


@pytest.fixture
def interrupted(tmp_path, cache_dir, monkeypatch):
    """A trial stopped after STOP_AT steps with a checkpoint at every boundary: (cfg, store)."""
    cfg = trial(tmp_path / "res", cache_dir, every_s=1e-9)
    monkeypatch.setattr(workers.gpt.train, "_after_log_boundary", stop_after(STOP_AT))
    first = run_trial(cfg)
    monkeypatch.undo()
    assert first.status is TrialStatus.FAILED and "preempted after step 18" in first.error
    return cfg, ResultStore(cfg.results)


def test_interrupted_then_resumed_equals_uninterrupted(interrupted, uninterrupted):
    cfg, store = interrupted
    header, data = read_checkpoint(store.read_bytes(checkpoint_path("t0")))
    saved = torch.load(io.BytesIO(data), weights_only=True)
    assert saved["step"] == STOP_AT  # the FAILED row kept the checkpoint for the retry
    assert [r["step"] for r in header["rows"]] == [5, 10, 13, 18]  # the context keeps the rows with it

    resumed = run_trial(cfg)
    whole, whole_rows = uninterrupted
    assert resumed.status is TrialStatus.COMPLETED
    assert resumed.eval_loss == whole.eval_loss  # CPU, one thread: bit for bit
    assert resumed.row["train_loss"] == whole.row["train_loss"]
    assert step_rows(cfg.results) == whole_rows
    # wall_s carries on from the interrupted run instead of restarting at 0
    steps = pq.read_table(f"{cfg.results}/steps/t0.parquet")
    walls = steps.column("wall_s").to_pylist()
    assert walls == sorted(walls) and resumed.wall_s >= header["elapsed_s"]
    # and so does energy: the resumed row counts the interrupted attempt's joules too
    energy = steps.column("energy_j").to_pylist()
    assert energy == sorted(energy) and resumed.row["energy_j"] >= header["energy_j"] > 0


def test_resumed_trial_does_not_redo_early_steps(interrupted, caplog):
    cfg, _ = interrupted
    seen = []
    caplog.set_level(logging.INFO, logger="workers.gpt.train")
    with OptimizerSteps() as opt_steps:
        workers.gpt.train._after_log_boundary, restore = seen.append, workers.gpt.train._after_log_boundary
        try:
            assert run_trial(cfg).status is TrialStatus.COMPLETED
        finally:
            workers.gpt.train._after_log_boundary = restore
    assert opt_steps.n == STEPS - STOP_AT
    assert seen == [23, 27, 32, 37, 40]
    assert "resuming trial t0 from step 18" in caplog.text


def _truncated(store):
    return store.read_bytes(checkpoint_path("t0"))[:2000]


def _other_trial(store):
    header, data = read_checkpoint(store.read_bytes(checkpoint_path("t0")))
    return write_checkpoint({**header, "owner": "someone-else"}, data)


class Payload:
    """An object a checkpoint must never contain: unpickling it would run code."""

    ran = False

    def __reduce__(self):
        return (Payload._run, ())

    @staticmethod
    def _run():
        Payload.ran = True


def _pickled_object(store):
    buf = io.BytesIO()
    torch.save({"version": 1, "trial_id": "t0", "step": 18, "evil": Payload()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("damage", [lambda s: b"not a checkpoint", _truncated, _other_trial, _pickled_object],
                         ids=["garbage", "truncated", "other-trial", "pickled-object"])
def test_unusable_checkpoint_is_ignored_with_a_warning(interrupted, uninterrupted, damage, caplog):
    cfg, store = interrupted
    store.write_bytes(checkpoint_path("t0"), damage(store))
    with OptimizerSteps() as opt_steps:
        result = run_trial(cfg)
    assert result.status is TrialStatus.COMPLETED and opt_steps.n == STEPS  # started over
    assert result.eval_loss == uninterrupted[0].eval_loss
    assert "ignoring unusable checkpoint" in caplog.text
    assert not Payload.ran


def test_checkpoint_is_deleted_once_the_trial_is_committed(tmp_path, cache_dir, monkeypatch):
    cfg = trial(tmp_path / "res", cache_dir, every_s=1e-9)
    store = ResultStore(cfg.results)
    saved = []
    monkeypatch.setattr(workers.gpt.train, "_after_log_boundary",
                        lambda n: saved.append(store.read_bytes(checkpoint_path("t0")) is not None))
    assert run_trial(cfg).status is TrialStatus.COMPLETED
    assert len(saved) == 9 and all(saved)  # there from the first log boundary on
    assert store.read_bytes(checkpoint_path("t0")) is None
    assert list((tmp_path / "res" / "checkpoints").iterdir()) == []  # no temporary files left


def test_checkpoint_every_s_zero_writes_none(tmp_path, cache_dir, monkeypatch):
    cfg = trial(tmp_path / "res", cache_dir, every_s=0)
    writes = []
    monkeypatch.setattr(ResultStore, "write_bytes", lambda self, path, data: writes.append(path))
    assert run_trial(cfg).status is TrialStatus.COMPLETED
    assert writes == [] and not (tmp_path / "res" / "checkpoints").exists()


def test_spec_passes_checkpoint_interval_through_without_changing_ids(tmp_path, cache_dir):
    def factory(**train):
        return TrialFactory(parse_spec(tiny_spec_dict(str(tmp_path), train=train)), cache_dir)

    assert factory().train.checkpoint_every_s == 600.0
    f = factory(checkpoint_every_s=30)
    assert f.train.checkpoint_every_s == 30.0
    assert f.make(4e3, 25600, 0.0, 0, "x").trial_id == factory().make(4e3, 25600, 0.0, 0, "x").trial_id
    for bad in (-1, math.inf):
        with pytest.raises(UserError, match="checkpoint_every_s"):
            parse_spec(tiny_spec_dict(str(tmp_path), train={"checkpoint_every_s": bad}))
