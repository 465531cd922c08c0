"""The sweep driver: a loop with a ``step()`` that keeps every executor slot busy.

The driver owns sweep state; collaborators come in through the constructor (as in
Ray Tune's controller), so tests drive it with an :class:`~orchestrator.running.executor.InlineExecutor` and a fake
trainer. A planner decides what to run (:mod:`orchestrator.planning.protocol`); workers report only
through the result store and the executor's completions; only the driver tells the planner.

Exactly-once: the driver reads the store once at start. A proposed trial whose id the store
already holds as finished (completed or diverged) is never trained again: its stored result
is told to the planner at once. A trial whose process died on every retry comes back
without a result; the driver then commits a FAILED row itself, so every trial that was run
ends with exactly one row.

Large sweeps: every COMPACT_EVERY results, a background thread merges the per-trial files of
the trials recorded since the last merge (nothing in this run rewrites those files) into one
Parquet part (``ResultStore.compact``); the sweep merges everything else at its end
(``orchestrator.sweep``), so a 10,000-trial sweep leaves a few files to query, not 20,000. Memory: the driver keeps ids, counters and the finished
rows it needs to answer for skipped trials (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.running.executor import Completion, Executor
from orchestrator.planning.protocol import Planner
from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus
from workers.config import TrialResult, trial_row

__all__ = ["Driver", "SweepProgress", "ProgressSink", "finished_rows"]

log = logging.getLogger(__name__)

EAGER_WINDOW = 10_000  # most trials a static sweep queues in Ray at once
COMPACT_EVERY = 1_000  # results between merges of settled trials' files


@dataclass
class SweepProgress:
    total: int  # trials expected to train in this run
    total_flops: float
    skipped: int = 0  # finished in an earlier run
    done: int = 0
    failed: int = 0
    diverged: int = 0
    # In flight = running + queued. Ray does not tell a driver which of its tasks have started
    # without the state API (a dashboard round trip per poll), so "running" is the in-flight
    # trials up to the slots the cluster's resources offer (Executor.slots), the rest queued.
    running: int = 0
    queued: int = 0
    flops_done: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds_left(self) -> float | None:
        """Remaining FLOPs at the FLOP rate seen so far (None until a trial has finished)."""
        elapsed = time.monotonic() - self.started
        if self.flops_done <= 0 or elapsed <= 0:
            return None
        return max(0.0, self.total_flops - self.flops_done) / (self.flops_done / elapsed)


class ProgressSink(Protocol):
    def update(self, progress: SweepProgress, completion: Completion | None) -> None: ...


def _release_freed_memory() -> None:
    """Give glibc's free pages back to the OS after a merge. The merge thread allocates in an
    arena of its own, and glibc keeps what it frees there: measured over trials 1,000-4,000 of
    a simulated sweep on Ray, the driver's RSS grew 143 MB with merges, 49 MB without them and
    47 MB with merges and this trim."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def finished_rows(store: ResultStore) -> dict[str, dict]:
    """trial id -> row of every finished (completed or diverged) trial in ``store``: what a
    driver answers from the store instead of training."""
    return {r["trial_id"]: r for r in store.read_table("trials").to_pylist() if TrialStatus(r["status"]).is_finished()}


class Driver:
    """Runs what ``planner`` proposes on ``executor``, skipping what ``store`` has finished."""

    def __init__(self, planner: Planner, store: ResultStore, executor: Executor,
                 sink: ProgressSink | None = None, poll_s: float = 1.0, finished: dict[str, dict] | None = None):
        """``finished``: the store's finished rows by trial id, where the caller has read them
        (:func:`finished_rows`); read from ``store`` otherwise."""
        self.planner, self.store, self.executor, self.sink, self.poll_s = planner, store, executor, sink, poll_s
        self.finished = finished_rows(store) if finished is None else finished
        n, flops = planner.expected()
        self.progress = SweepProgress(total=n, total_flops=flops)
        self._unmerged: list[str] = []  # recorded since the last merge: nothing in this run rewrites their files
        self._compactor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compact")
        self._compacting: Future | None = None
        self._slots = 1
        self._waiting: deque = deque()  # asked of the planner, not yet admitted by the executor's ledger

    def _count_in_flight(self) -> None:
        n = self.executor.in_flight()
        self.progress.running = min(n, self._slots)
        self.progress.queued = n - self.progress.running + len(self._waiting)

    def done(self) -> bool:
        return self.planner.finished() and self.executor.in_flight() == 0 and not self._waiting

    def _fill(self) -> None:
        # A queue one slot deep beyond capacity means a freed worker never waits on the driver. A
        # planner that knows every trial up front (``eager``) gets them all queued in Ray at once,
        # so a cluster autoscaler sees the whole demand and scales out in one step.
        self._slots = self.executor.slots()
        window = self._slots + 1
        if self.planner.eager:
            window = max(window, EAGER_WINDOW)
        admits = getattr(self.executor, "admits", None)
        while True:
            # Head of line: an executor with a ledger (trials on several ranks) takes a trial only
            # when its resources are free, and nothing behind it is submitted meanwhile, so small
            # trials never starve a big one (orchestrator.running.executor).
            while self._waiting and (admits is None or admits(self._waiting[0])):
                self.executor.submit(self._waiting.popleft())
            if self._waiting or self.executor.in_flight() >= window:
                return
            batch = self.planner.ask(window - self.executor.in_flight())
            if not batch:
                return
            for trial in batch:
                row = self.finished.get(trial.trial_id)
                if row is None:
                    self._waiting.append(trial)
                    continue
                p = self.progress
                p.skipped += 1
                p.total = max(0, p.total - 1)
                p.total_flops = max(0.0, p.total_flops - train_flops(trial.n_params, trial.tokens))
                self.planner.tell(trial, TrialResult.from_row(row))

    def step(self) -> list[Completion]:
        """Submit until every slot (plus a small queue) is busy, then collect what finished."""
        self._fill()
        completions = self.executor.wait(timeout=self.poll_s)
        for c in completions:
            self._record(c)
            self.planner.tell(c.trial, c.result)
        self._count_in_flight()
        if self.sink:
            self.sink.update(self.progress, None)
        return completions

    def run(self) -> SweepProgress:
        if self.sink:
            self.sink.update(self.progress, None)
        try:
            while not self.done():
                self.step()
        finally:
            if self._compacting is not None:
                self._compacting.result()  # let a merge finish (or fail loudly), never half-done
            self._compactor.shutdown()
        return self.progress

    def _maybe_compact(self) -> None:
        if len(self._unmerged) < COMPACT_EVERY or (self._compacting is not None and not self._compacting.done()):
            return
        if self._compacting is not None:
            self._compacting.result()
        ids, self._unmerged = frozenset(self._unmerged), []

        def merge():
            for table in ("steps", "evals", "trials"):  # trials last, as ResultStore.compact_if_large
                self.store.compact(table, only=ids)
            _release_freed_memory()

        self._compacting = self._compactor.submit(merge)

    def _record(self, c: Completion) -> None:
        p = self.progress
        if c.result is None:
            # The worker could not record anything: commit the failure for it.
            row = trial_row(c.trial, c.trial.n_params, TrialStatus.FAILED, math.nan, math.nan, 0.0, c.error)
            self.store.write_trial(row)
            log.error("trial %s (%s) ended without a result: %s", c.trial.trial_id, c.trial.name, c.error)
            p.failed += 1
        elif c.result.status is TrialStatus.FAILED:
            log.error("trial %s (%s) failed: %s", c.trial.trial_id, c.trial.name, c.result.error.splitlines()[0])
            p.failed += 1
        elif c.result.status is TrialStatus.DIVERGED:
            log.warning("trial %s (%s) diverged (non-finite loss)", c.trial.trial_id, c.trial.name)
            p.diverged += 1
        if c.result is not None and c.result.status.is_finished():
            self.finished[c.trial.trial_id] = c.result.row
        p.done += 1
        self._count_in_flight()
        p.flops_done += train_flops(c.trial.n_params, c.trial.tokens)
        self._unmerged.append(c.trial.trial_id)
        self._maybe_compact()
        if self.sink:
            self.sink.update(p, c)
