"""A trial's progress, streamed to the driver while it trains (for live curves in trackers).

When the spec names a tracker, the driver starts a small Ray actor (orchestrator.running.tracking,
``ProgressHub``) and every trial carries its name (TrialConfig.stream). The trial's context hands
each progress row and task evaluation to :class:`ProgressStream`, which sends what it holds at most
every ``every_s`` seconds, and the rest when the trial ends, as one fire-and-forget actor call: the
trial never waits on the driver or on a tracker. Rank 0 alone streams a trial on several ranks.

Nothing here can fail a trial: a hub that cannot be found or reached is given up on once,
silently (the rows still go to the result store, which is the record; trackers are views).
"""

from __future__ import annotations

import time

__all__ = ["ProgressStream"]


class ProgressStream:
    """Buffers one trial's rows and sends them to the hub named ``name`` every ``every_s`` seconds."""

    def __init__(self, name: str, trial_id: str, every_s: float, meta: dict | None = None):
        self.name, self.trial_id, self.every_s = name, trial_id, every_s
        self.meta = meta or {}  # the trial's name and settings: sent with the first rows (a run's config)
        self._hub = None
        self._broken = False
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
            if self._hub is None:
                import ray

                self._hub = ray.get_actor(self.name)
            self._hub.put.remote(self.trial_id, self.meta, rows, done)
        except Exception:  # no hub (the driver is gone, Ray not initialised): the record is the store
            self._broken = True
