"""A trial's progress, streamed to the driver while it trains (for live curves in trackers).

When the spec names a tracker, the driver starts a small Ray actor (orchestrator.running.tracking,
``ProgressHub``) and every trial carries its name (TrialConfig.stream). The trial's context hands
each progress row and task evaluation to :class:`ProgressStream`, which sends what it holds at most
every ``every_s`` seconds, and the rest when the trial ends, as one fire-and-forget actor call: the
trial never waits on the driver or on a tracker. Rank 0 alone streams a trial on several ranks.

Nothing here can fail a trial: a hub that cannot be found or reached is tried again at the next
send, and given up on after MAX_FAILURES in a row, silently (the rows still go to the result
store, which is the record; trackers are views). The context sends what it holds at each
checkpoint too, so a trial that dies loses no row it had checkpointed from its curves.
"""

from __future__ import annotations

import time

__all__ = ["ProgressStream"]

MAX_FAILURES = 3  # consecutive failed sends before the stream gives up (the rows stay in the store)


class ProgressStream:
    """Buffers one trial's rows and sends them to the hub named ``name`` every ``every_s`` seconds."""

    def __init__(self, name: str, trial_id: str, every_s: float, meta: dict | None = None):
        self.name, self.trial_id, self.every_s = name, trial_id, every_s
        self.meta = meta or {}  # the trial's name and settings: sent with the first rows (a run's config)
        self._hub = None
        self._broken = False
        self._failures = 0
        self._rows: list[tuple[str, dict]] = []
        self._sent_at = time.monotonic()

    def add(self, kind: str, row: dict) -> None:
        """One row: kind "step" (a progress row) or "eval" (a task evaluation)."""
        if self._broken:
            return
        self._rows.append((kind, row))
        if time.monotonic() - self._sent_at >= self.every_s:
            self.flush()

    def flush(self, done: bool = False) -> None:
        """Send what is held (and, ``done``, that the trial has ended)."""
        if self._broken or not (self._rows or done):
            return
        rows, self._rows, self._sent_at = self._rows, [], time.monotonic()
        try:
            import ray

            if self._hub is None:
                self._hub = ray.get_actor(self.name)
            ref = self._hub.put.remote(self.trial_id, self.meta, rows, done)
            if done:  # the trial's last rows: delivered before its worker moves on (or its rank is torn down)
                ray.get(ref, timeout=5)
            self._failures = 0
        except Exception:  # no hub (the driver is gone, Ray not initialised): the record is the store
            self._hub, self._failures = None, self._failures + 1
            self._rows = rows + self._rows if not done else []  # kept for the next try, a few times
            self._broken = self._failures >= MAX_FAILURES
