"""The trainer contract as a test suite a lab runs against its own trainer (as Optuna ships one
test class that every storage must pass).

Subclass :class:`TrainerContract` in a test file, name your trainer and a tiny model, and run
pytest::

    from scalesweep.testing import TrainerContract

    class TestMyTrainer(TrainerContract):
        trainer = {"function": "mylab.scaling:train"}     # or {"command": "python train.py {trial_json}"}
        workdir = "path/to/the/spec/directory"            # where the module or train.py is
        model = {"n_layer": 2, "d_model": 64}             # settings of a tiny model (trial.model)
        n_params = 113_000                                # its exact N
        tokens, batch_tokens, lr = 16_384, 512, 3e-3      # a trial of a few seconds

Every check runs the trial as a sweep would (its spec validated, its id hashed, the trial run by
the same code as on a Ray worker, its rows committed to a results directory):

- it reports progress rows (increasing steps, tokens within the trial's) and returns the exact N;
- interrupted after its first checkpoint (a Python trainer: an exception from ``ctx.report`` once
  it has saved; a command: SIGKILL to its process group once its checkpoint directory is not
  empty) and run again, it resumes from that checkpoint and ends with the uninterrupted run's
  final loss and rows;
- with ``diverging_train`` (default: a learning rate of 1e4) it reports a diverged run (NaN), not
  a crash;
- an exception (an error injected into every context call; a command: ``failing_model``) is a
  FAILED row with the error.

The contract trial checkpoints as often as it can: its ``train.checkpoint_every_s`` is 1e-9, so a
trainer that honours that setting saves at its first chance. The suite needs pytest (the
project's ``dev`` extra: ``pip install "scalesweep[dev]"``).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from typing import Any, ClassVar

import pytest

__all__ = ["TrainerContract"]


class _Preempted(Exception):
    """The contract suite's stand-in for a preemption, raised from the context after a checkpoint."""


class TrainerContract:
    """Base class of a trainer's contract tests; see the module docstring for the settings."""

    trainer: ClassVar[Any] = None  # {"function": ...} or {"command": ...} (a spec's trainer:), or gpt / simulated
    workdir: ClassVar[str] = "."
    model: ClassVar[dict] = {}  # the tiny model's settings (a lab's trainer)
    n_params: ClassVar[int] = 0  # its exact N (0: the built-in trainers size their own)
    tokens: ClassVar[int] = 16_384
    batch_tokens: ClassVar[int] = 512
    lr: ClassVar[float] = 1e-3
    settings: ClassVar[dict] = {}  # trainer.settings
    spec: ClassVar[dict] = {}  # further spec sections, merged in (data:, train:, world:, model: ...)
    diverging_train: ClassVar[dict] = {"lr": 1e4}
    failing_model: ClassVar[dict | None] = None  # model settings that make a command fail
    failing_spec: ClassVar[dict] = {}  # spec sections for the failure check (a trainer that never calls ctx)
    reports_rows: ClassVar[bool] = True  # False: a trainer without progress (the simulator)
    checkpoints: ClassVar[bool] = True  # False: a trainer with nothing to resume (the simulator)
    resume_rel: ClassVar[float] = 0.0  # tolerance of the resumed final loss (0: bit for bit)
    cache_dir: str = ""  # where the built-in data is materialised ("": ~/.cache/scalesweep)

    # --- building and running the contract trial ---------------------------------------------------
    def make_trial(self, results: str, train: dict | None = None, spec: dict | None = None, model: dict | None = None):
        """The contract trial (a workers.config.TrialConfig), planned from a spec as a sweep does."""
        from orchestrator.planning.trials import TrialFactory
        from orchestrator.spec import SweepSpec, parse_spec

        data: dict = {"name": "contract", "trainer": self.trainer, "results": results,
                      "sweep": {"kind": "grid", "model_sizes": [self.n_params or 1e4], "tokens": [self.tokens]},
                      "train": {"lr": self.lr, "batch_tokens": self.batch_tokens, "checkpoint_every_s": 1e-9,
                                "min_steps": 1, **(train or {})},
                      "fit": {"target_compute": 1e20}}
        if isinstance(self.trainer, dict):
            trainer = dict(self.trainer)
            trainer.setdefault("workdir", os.path.abspath(self.workdir))
            if self.settings:
                trainer["settings"] = self.settings
            data["trainer"] = trainer
            data["model"] = {"ladder": [{"name": "contract", "n_params": self.n_params,
                                         "settings": model if model is not None else self.model}]}
        for section, value in {**self.spec, **(spec or {})}.items():
            data[section] = {**data[section], **value} if isinstance(data.get(section), dict) and isinstance(value, dict) \
                else value
        parsed: SweepSpec = parse_spec(data, "contract spec")
        factory = TrialFactory(parsed, cache_dir=self.cache_dir)
        return factory.make(self.n_params or 1e4, self.tokens, 0.0, 0, "the contract trial")

    @staticmethod
    def run(cfg):
        from workers.run import run_trial

        return run_trial(cfg)

    @staticmethod
    def rows(cfg) -> list[dict]:
        from workers.store import ResultStore

        steps = ResultStore(cfg.results).read_table("steps").to_pylist()
        return sorted((r for r in steps if r["trial_id"] == cfg.trial_id), key=lambda r: r["step"])

    # --- the checks -------------------------------------------------------------------------------
    def test_reports_rows_and_returns_its_exact_n(self, tmp_path):
        from workers.store import TrialStatus

        cfg = self.make_trial(str(tmp_path / "results"))
        r = self.run(cfg)
        assert r.status is TrialStatus.COMPLETED, f"the contract trial did not complete: {r.error}"
        assert math.isfinite(r.eval_loss) and r.eval_loss > 0, f"final eval_loss {r.eval_loss!r}"
        expected = self.n_params or cfg.n_params
        assert r.row["n_params"] == expected, f"the trainer reports N={r.row['n_params']}, its size has N={expected}"
        from workers.store import TRIALS_SCHEMA, ResultStore

        store = ResultStore(cfg.results)
        [row] = store.read_table("trials").to_pylist()  # committed, with every column of the trials table
        assert list(row) == TRIALS_SCHEMA.names and row["trial_id"] == cfg.trial_id and row["status"] == "completed"
        assert row["flops"] == 6 * row["n_params"] * row["tokens"]
        left = store.list_names("checkpoints") + store.list_names("checkpoints", dirs=True)
        assert not left, f"a finished trial left checkpoints behind: {left}"
        if not self.reports_rows:
            return
        rows = self.rows(cfg)
        assert rows, "the trainer reported no progress rows (ctx.report, or metrics.jsonl)"
        steps = [row["step"] for row in rows]
        assert steps == sorted(set(steps)), f"steps are not increasing: {steps}"
        assert all(0 <= row["tokens"] <= cfg.tokens for row in rows), "a row's tokens are outside the trial's"
        assert any(row["train_loss"] is not None or row["eval_loss"] is not None for row in rows), "no row has a loss"

    def test_resumes_from_its_checkpoint_to_the_same_final_loss(self, tmp_path, monkeypatch):
        if not self.checkpoints:
            pytest.skip("this trainer has nothing to resume (checkpoints = False)")
        from workers.store import TrialStatus

        whole = self.make_trial(str(tmp_path / "whole"))
        uninterrupted = self.run(whole)
        assert uninterrupted.status is TrialStatus.COMPLETED, uninterrupted.error
        cfg = self.make_trial(str(tmp_path / "interrupted"))
        with monkeypatch.context() as m:
            interrupted = self._interrupted(cfg, m)
        assert interrupted, ("the trial finished before the suite could interrupt it after a checkpoint: save a "
                             "checkpoint early (trial.train['checkpoint_every_s'] is 1e-9 here) or raise tokens")
        resumed = self.run(cfg)
        assert resumed.status is TrialStatus.COMPLETED, resumed.error
        assert resumed.eval_loss == pytest.approx(uninterrupted.eval_loss, rel=self.resume_rel, abs=0), \
            "the resumed run ends with another loss than the uninterrupted one"
        if self.reports_rows:
            got = [(r["step"], r["tokens"]) for r in self.rows(cfg)]
            want = [(r["step"], r["tokens"]) for r in self.rows(whole)]
            assert got == want, "the resumed run's rows are not the uninterrupted run's"

    def _interrupted(self, cfg, m) -> bool:
        """Run ``cfg`` and interrupt it after its first checkpoint; whether that happened."""
        from workers.store import TrialStatus
        from workers.trainers.interface import Context

        if isinstance(self.trainer, dict) and "command" in self.trainer:
            import workers.trainers.command as command

            checkpoint = f"{cfg.results}/checkpoints/{cfg.trial_id}.run/checkpoint"
            killed = threading.Event()

            def watch(proc):
                def kill():
                    while proc.poll() is None:
                        if os.path.isdir(checkpoint) and os.listdir(checkpoint):
                            time.sleep(0.05)  # let a write in progress finish renaming
                            killed.set()
                            os.killpg(proc.pid, signal.SIGKILL)
                            return
                        time.sleep(0.005)
                threading.Thread(target=kill, daemon=True).start()

            m.setattr(command, "_on_start", watch)
            r = self.run(cfg)
            return killed.is_set() and r.status is TrialStatus.FAILED

        saved = {"n": 0}
        save, report = Context.save_checkpoint, Context.report

        def save_and_count(ctx, *a, **k):
            save(ctx, *a, **k)
            saved["n"] += 1

        def report_until_saved(ctx, *a, **k):
            if saved["n"]:
                raise _Preempted("the contract suite's preemption")
            report(ctx, *a, **k)

        m.setattr(Context, "save_checkpoint", save_and_count)
        m.setattr(Context, "report", report_until_saved)
        r = self.run(cfg)
        return saved["n"] > 0 and r.status is TrialStatus.FAILED and "_Preempted" in r.error

    def test_a_nan_loss_is_a_diverged_row(self, tmp_path):
        from workers.store import TrialStatus

        cfg = self.make_trial(str(tmp_path / "results"), train=self.diverging_train)
        r = self.run(cfg)
        assert r.status is TrialStatus.DIVERGED, f"expected a diverged row with {self.diverging_train}, got " \
                                                 f"{r.status.value} {r.error}"
        assert math.isnan(r.eval_loss)

    def test_an_exception_is_a_failed_row_with_its_error(self, tmp_path, monkeypatch):
        from workers.store import ResultStore, TrialStatus
        from workers.trainers.interface import Context

        if isinstance(self.trainer, dict) and "command" in self.trainer:
            if self.failing_model is None:
                pytest.skip("set failing_model: model settings that make the command fail")
            cfg = self.make_trial(str(tmp_path / "results"), model=self.failing_model)
            expected = "trainer.command"
        else:
            def fail(*a, **k):
                raise RuntimeError("the contract suite's injected error")

            for name in ("report", "save_checkpoint", "load_checkpoint", "save_stem", "load_stem", "stem_steps"):
                monkeypatch.setattr(Context, name, fail)
            cfg = self.make_trial(str(tmp_path / "results"), spec=self.failing_spec)
            expected = "injected error"
        r = self.run(cfg)
        assert r.status is TrialStatus.FAILED, f"expected a FAILED row, got {r.status.value}"
        assert expected in r.error and math.isnan(r.eval_loss)
        [row] = ResultStore(cfg.results).read_table("trials").to_pylist()
        assert row["status"] == "failed" and expected in row["error"]
