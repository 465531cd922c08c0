"""Executors run trials somewhere and hand back completions.

Contract (one test suite runs against every implementation, tests/test_executor.py):
- ``submit(trial)`` starts the trial asynchronously and returns at once;
- ``wait(timeout)`` returns the completions that arrived (possibly none after ``timeout``
  seconds), each exactly once; a completion carries the worker's :class:`TrialResult`, or
  ``result=None`` and ``error`` when the trial's process died more often than it may be retried;
- ``slots()`` is how many trials can run at once (the driver keeps that many busy);
- ``in_flight()`` counts submitted trials not yet returned by ``wait``;
- ``admits(trial)`` (optional; True where absent) says whether the trial fits in what the
  trials in flight leave free: the driver submits nothing past a trial it does not admit.

:class:`RayExecutor` runs each trial as a Ray task named after the trial (visible in the Ray
dashboard) with the spec's CPUs and GPUs; fractional GPUs let Ray pack small trials onto one
device. Ray retries a task whose worker process dies (``max_retries``) but not an exception
raised by the trial (``retry_exceptions=False``): the worker already records those as FAILED
rows, and retrying deterministic code would only fail again.

A trial with ``workers`` > 1 runs on Ray Train (workers.run.distributed) from a launcher task
that holds no resources; its ranks hold ``workers`` x (CPUs, GPUs) in Ray Train's placement
group. Small trials queued in Ray would take every CPU a placement group frees before the group
is whole, starving it for ever, so a sweep with such trials keeps a ledger: trials go to Ray only
when the resources they ask for are free (``admits``), in the planner's order (largest first),
and the driver admits nothing behind a trial that waits (head of line): the big trial starts as
soon as enough small ones end. A simulated trial with ``workers`` > 1 is one task holding them all.

:class:`InlineExecutor` runs trials in the calling process, one per ``wait``: for unit tests
of the driver and for debugging a trial under pdb (as submitit's DebugExecutor).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from workers.config import TrialConfig, TrialResult
from workers.run import run_trial

__all__ = ["Completion", "Executor", "InlineExecutor", "OnDemandExecutor", "RayExecutor", "demand"]

log = logging.getLogger(__name__)


@dataclass
class Completion:
    trial: TrialConfig
    result: TrialResult | None
    error: str = ""


@runtime_checkable
class Executor(Protocol):
    def submit(self, trial: TrialConfig) -> None: ...
    def wait(self, timeout: float) -> list[Completion]: ...
    def slots(self) -> int: ...
    def in_flight(self) -> int: ...


class OnDemandExecutor:
    """An executor built at the first ``submit`` (``factory()``): until then it has one slot and
    nothing in flight, so a sweep whose trials are all in the store never starts Ray."""

    def __init__(self, factory: Callable[[], Executor]):
        self._factory, self._inner = factory, None

    @property
    def started(self) -> bool:
        return self._inner is not None

    def submit(self, trial: TrialConfig) -> None:
        if self._inner is None:
            self._inner = self._factory()
        self._inner.submit(trial)

    def wait(self, timeout: float) -> list[Completion]:
        return self._inner.wait(timeout) if self._inner is not None else []

    def slots(self) -> int:
        return self._inner.slots() if self._inner is not None else 1

    def in_flight(self) -> int:
        return self._inner.in_flight() if self._inner is not None else 0

    def admits(self, trial: TrialConfig) -> bool:
        return getattr(self._inner, "admits", lambda t: True)(trial) if self._inner is not None else True


class InlineExecutor:
    """Runs trials synchronously in this process (tests, debugging)."""

    def __init__(self, fn: Callable[[TrialConfig], TrialResult] = run_trial, slots: int = 1):
        self._fn, self._slots, self._queue = fn, slots, []

    def submit(self, trial: TrialConfig) -> None:
        self._queue.append(trial)

    def wait(self, timeout: float) -> list[Completion]:
        if not self._queue:
            return []
        trial = self._queue.pop(0)
        return [Completion(trial, self._fn(trial))]

    def slots(self) -> int:
        return self._slots

    def in_flight(self) -> int:
        return len(self._queue)


def _trial_task(trial: TrialConfig) -> TrialResult:
    return run_trial(trial)


def _distributed_task(trial: TrialConfig, max_retries: int) -> TrialResult:
    from workers.run.distributed import run_distributed

    return run_distributed(trial, max_retries)


def demand(trial: TrialConfig) -> tuple[float, float]:
    """(CPUs, GPUs) a trial holds while it runs: every rank's."""
    return trial.cpus * trial.workers, trial.gpus * trial.workers


class RayExecutor:
    """Runs each trial as a named Ray task with the spec's resources (Ray must be initialised)."""

    def __init__(self, cpus: float, gpus: float, max_retries: int, ledger: bool = False):
        import ray

        self._ray = ray
        self._cpus, self._gpus, self._retries = cpus, gpus, max_retries
        # max_calls=0: reuse worker processes between trials. Ray's default for GPU tasks is a
        # fresh process per call, which would pay interpreter start, torch import and CUDA
        # context creation on every trial.
        self._remote = ray.remote(max_calls=0)(_trial_task)
        self._launch = ray.remote(max_calls=0)(_distributed_task)
        self._refs: dict = {}
        self._ledger = ledger
        self._held = [0.0, 0.0]  # CPUs, GPUs of the trials in flight (the ledger)
        self._warned: set[str] = set()

    def submit(self, trial: TrialConfig) -> None:
        if trial.workers > 1 and trial.trainer != "simulated":
            # The launcher holds nothing: the ranks' placement group holds the trial's resources.
            ref = self._launch.options(name=trial.name, num_cpus=0, num_gpus=0, max_retries=0).remote(
                trial, self._retries)
        else:
            cpus, gpus = demand(trial)
            ref = self._remote.options(name=trial.name, num_cpus=cpus, num_gpus=gpus, max_retries=self._retries,
                                       retry_exceptions=False).remote(trial)
        self._refs[ref] = trial
        cpus, gpus = demand(trial)
        self._held[0] += cpus
        self._held[1] += gpus

    def admits(self, trial: TrialConfig) -> bool:
        """Whether ``trial`` fits in what the trials in flight leave free (always, without a ledger)."""
        if not self._ledger:
            return True
        total = self._ray.cluster_resources()
        cpus, gpus = demand(trial)
        free = (total.get("CPU", 0.0) - self._held[0], total.get("GPU", 0.0) - self._held[1])
        if cpus > total.get("CPU", 0.0) + 1e-9 or gpus > total.get("GPU", 0.0) + 1e-9:
            # More than the whole cluster has now: Ray queues it, so an autoscaler sees the demand.
            if trial.trial_id not in self._warned:
                self._warned.add(trial.trial_id)
                log.warning("trial %s asks for %g CPUs and %g GPUs, more than the cluster has now (%g, %g): "
                            "queued in Ray until nodes join", trial.name, cpus, gpus, total.get("CPU", 0.0),
                            total.get("GPU", 0.0))
            return not self._refs  # alone, so it never blocks trials that fit behind it for ever
        return cpus <= free[0] + 1e-9 and gpus <= free[1] + 1e-9

    def wait(self, timeout: float) -> list[Completion]:
        if not self._refs:
            time.sleep(min(timeout, 0.1))
            return []
        # Block until one result is ready, then take every other one already done: waiting for
        # all of them (num_returns=len) would leave freed workers idle until the slowest ends.
        ready, rest = self._ray.wait(list(self._refs), num_returns=1, timeout=timeout, fetch_local=True)
        if not ready:
            return []
        if rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=True)
            ready += more
        done = []
        for ref in ready:
            trial = self._refs.pop(ref)
            cpus, gpus = demand(trial)
            self._held[0] -= cpus
            self._held[1] -= gpus
            try:
                done.append(Completion(trial, self._ray.get(ref)))
            except Exception as e:  # worker died after every retry, node lost, task cancelled
                done.append(Completion(trial, None, f"{type(e).__name__}: {e}"))
        return done

    def slots(self) -> int:
        res = self._ray.cluster_resources()
        n = math.floor(res.get("CPU", 0) / self._cpus + 1e-9)
        if self._gpus > 0:
            n = min(n, math.floor(res.get("GPU", 0) / self._gpus + 1e-9))
        return max(1, n)

    def in_flight(self) -> int:
        return len(self._refs)
