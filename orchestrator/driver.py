"""The sweep driver: a loop with a ``step()`` that keeps every executor slot busy.

The driver owns sweep state; collaborators come in through the constructor (STYLE.md rule
7), so tests drive it with an :class:`~orchestrator.executor.InlineExecutor` and a fake
trainer. Workers report only through the result store; the driver reads the store once at
start to skip finished trials, and afterwards learns of completions from the executor.

A trial whose process died on every retry comes back without a result; the driver then
commits a FAILED row with the error itself, so every planned trial ends with exactly one row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.executor import Completion, Executor
from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus
from workers.train import TrialConfig, trial_row

__all__ = ["Driver", "SweepProgress", "ProgressSink"]

log = logging.getLogger(__name__)


@dataclass
class SweepProgress:
    total: int
    skipped: int  # finished in an earlier run
    total_flops: float
    done: int = 0
    failed: int = 0
    diverged: int = 0
    running: int = 0
    flops_done: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds_left(self) -> float | None:
        """Remaining FLOPs at the FLOP rate seen so far (None until a trial has finished)."""
        elapsed = time.monotonic() - self.started
        if self.flops_done <= 0 or elapsed <= 0:
            return None
        return (self.total_flops - self.flops_done) / (self.flops_done / elapsed)


class ProgressSink(Protocol):
    def update(self, progress: SweepProgress, completion: Completion | None) -> None: ...


class Driver:
    """Runs ``trials`` to completion on ``executor``, skipping those ``store`` has finished."""

    def __init__(self, trials: list[TrialConfig], store: ResultStore, executor: Executor,
                 sink: ProgressSink | None = None, poll_s: float = 1.0):
        self.store, self.executor, self.sink, self.poll_s = store, executor, sink, poll_s
        statuses = store.trial_statuses()
        finished = {tid for tid, s in statuses.items() if s.is_finished()}
        self.pending = [t for t in trials if t.trial_id not in finished]
        retried = sum(1 for t in self.pending if statuses.get(t.trial_id) is TrialStatus.FAILED)
        if retried:
            log.info("re-running %d trial(s) that failed in an earlier run", retried)
        flops = sum(train_flops(t.shape.n_params, t.tokens) for t in self.pending)
        self.progress = SweepProgress(total=len(self.pending), skipped=len(trials) - len(self.pending), total_flops=flops)
        self.results: list[Completion] = []

    def done(self) -> bool:
        return not self.pending and self.executor.in_flight() == 0

    def step(self) -> list[Completion]:
        """Submit until every slot (plus a small queue) is busy, then collect what finished."""
        # A queue one slot deep beyond capacity means a freed worker never waits on the driver.
        window = self.executor.slots() + 1
        while self.pending and self.executor.in_flight() < window:
            self.executor.submit(self.pending.pop(0))
        completions = self.executor.wait(timeout=self.poll_s)
        for c in completions:
            self._record(c)
        self.progress.running = self.executor.in_flight()
        if self.sink:
            self.sink.update(self.progress, None)
        return completions

    def run(self) -> list[Completion]:
        if self.sink:
            self.sink.update(self.progress, None)
        while not self.done():
            self.step()
        return self.results

    def _record(self, c: Completion) -> None:
        p = self.progress
        if c.result is None:
            # The worker could not record anything: commit the failure for it.
            row = trial_row(c.trial, c.trial.shape.n_params, TrialStatus.FAILED, float("nan"), float("nan"), 0.0, c.error)
            self.store.write_trial(row)
            log.error("trial %s (%s) lost its worker on every retry: %s", c.trial.trial_id, c.trial.name, c.error)
            p.failed += 1
        elif c.result.status is TrialStatus.FAILED:
            log.error("trial %s (%s) failed: %s", c.trial.trial_id, c.trial.name, c.result.error.splitlines()[0])
            p.failed += 1
        elif c.result.status is TrialStatus.DIVERGED:
            log.warning("trial %s (%s) diverged (non-finite loss)", c.trial.trial_id, c.trial.name)
            p.diverged += 1
        p.done += 1
        p.flops_done += train_flops(c.trial.shape.n_params, c.trial.tokens)
        self.results.append(c)
        if self.sink:
            self.sink.update(p, c)
