"""Planners decide *what* to train next; the driver decides *when* (Optuna's sampler/study split).

Contract (tests/test_planner.py runs it against every planner):
- ``ask(n)`` returns at most ``n`` trials to start now. An empty list means "nothing now":
  the planner is waiting for results (or is finished).
- ``tell(trial, result)`` is called exactly once for every trial that ``ask`` returned, when
  it ends: with the worker's :class:`TrialResult`, or ``None`` when the trial was lost. A
  trial the store already holds is told at once, from the stored row, without training.
- ``finished()`` is True once the planner will propose nothing more; the driver then drains
  what is in flight and stops.
- ``expected()`` is (trials, FLOPs) the planner expects to run, for progress display; an
  adaptive planner gives its budget.
- ``eager`` says whether the driver may queue every trial at once (see :class:`Planner`).
- ``stopped`` is why the planner stopped proposing (see :class:`Planner`).
Only the driver calls a planner, from one thread.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workers.flops import train_flops
from workers.config import TrialConfig, TrialResult

__all__ = ["Planner", "StaticPlanner"]


@runtime_checkable
class Planner(Protocol):
    eager: bool
    """True for a planner that knows every trial up front and learns nothing from results: the
    driver then queues them all at once (up to its EAGER_WINDOW), so a cluster autoscaler sees
    the whole demand. False for a planner that learns from results: the driver keeps only the
    executor's slots plus one queued, so each proposal sees every result there is."""

    stopped: str
    """Why the planner decided to propose nothing more (a budget spent, intervals narrow
    enough); empty while it has not, and always for a planner that just runs out of trials.
    The sweep reports it (SweepOutcome.stop_reason)."""

    def ask(self, n: int) -> list[TrialConfig]: ...
    def tell(self, trial: TrialConfig, result: TrialResult | None) -> None: ...
    def finished(self) -> bool: ...
    def expected(self) -> tuple[int, float]: ...


class StaticPlanner:
    """A fixed list of trials (grid or IsoFLOP), proposed in order."""

    eager = True  # nothing to learn from results: the driver may queue every trial at once
    stopped = ""  # it only runs out of trials

    def __init__(self, trials: list[TrialConfig]):
        self._queue = list(trials)
        self._total = (len(trials), sum(train_flops(t.n_params, t.tokens) for t in trials))
        self.told: dict[str, TrialResult | None] = {}

    def ask(self, n: int) -> list[TrialConfig]:
        batch, self._queue = self._queue[:n], self._queue[n:]
        return batch

    def tell(self, trial: TrialConfig, result: TrialResult | None) -> None:
        self.told[trial.trial_id] = result

    def finished(self) -> bool:
        return not self._queue

    def expected(self) -> tuple[int, float]:
        return self._total
