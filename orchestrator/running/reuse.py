"""Run reuse: wsd points become stem segments and cooldown branches, under the driver.

With ``train.schedule: wsd`` (and ``train.reuse``, its default) the trials of one shape, recipe
and seed that differ only in D share everything before their cooldowns (workers.schedule): one
stable run, the stem, serves them all, and each point is a branch that starts from the stem's
checkpoint at its cooldown start and trains only its cooldown (Hägele et al. 2024, section 4;
MiniCPM and Marin fit their laws this way). A shape trained at D_1 < ... < D_k then costs
(1 - f) D_k + f sum(D_i) instead of sum(D_i).

:class:`ReuseExecutor` wraps the sweep's executor, so planners keep proposing points and the
driver keeps its exactly-once bookkeeping for them; only this layer knows about stems:

- ``submit(branch)``: when the stem's checkpoint at the branch point exists, the branch runs at
  once; else it waits, and the stem gets a segment (a STEM row, its own Ray task) from its latest
  checkpoint to the lowest branch point still missing. Segments of one stem run one after
  another, each releasing its branches as it commits, so branches of a stem, later segments of
  it and other stems all run side by side.
- A segment that diverges makes its waiting branches DIVERGED rows; one that fails (or whose
  worker is lost) fails them with its error, and a re-run retries both.
- Checkpoints: a stem's checkpoint at a step is deleted once the branches that start there have
  finished and a later checkpoint of the stem exists (the next segment starts from the latest).
  ``close`` removes what is left when the sweep ends, except each stem's last checkpoint with
  ``train.keep_stems`` (a later run adds a longer D for the price of its extension and cooldown),
  and any a failed branch still needs.
- Exactly-once after a crash: a segment's row is committed after its checkpoints, and the
  checkpoint listing is the truth this layer starts from, so a resumed driver trains no
  committed segment again; an interrupted one resumes from its own preemption checkpoint. (A
  driver killed in the instant between a segment's last checkpoint and its row leaves that
  segment without a row: nothing is trained twice, but its FLOPs go uncounted.)

Ids: a stem hashes everything but D and its cooldown (orchestrator.planning.trials), a segment
its stem and its end step, a branch its stem, D and cooldown. A stretch of a stem trained again
(a failed segment retried, or a checkpoint deleted, lost or damaged that a later run needs) is
another segment with its attempt in its id, so every segment that computed FLOPs keeps its own
row and ``flops_spent`` counts them all (ReuseExecutor._segment).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from orchestrator.planning.trials import content_id, trial_name
from orchestrator.running.executor import Completion, Executor
from workers.config import Role, TrialConfig, TrialResult, trial_row
from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus, stem_checkpoint_path

__all__ = ["ReuseExecutor", "planned_flops", "segment"]

log = logging.getLogger(__name__)


def segment(branch: TrialConfig, until: int, attempt: int = 0) -> TrialConfig:
    """The STEM trial that trains ``branch``'s stem up to step ``until`` and saves it there; its
    ``attempt``-th training (0: the first), see :meth:`ReuseExecutor._segment`."""
    key = {"stem": branch.stem_id, "until": int(until)} | ({"attempt": attempt} if attempt else {})
    again = f" (attempt {attempt + 1})" if attempt else ""
    return dataclasses.replace(
        branch, trial_id=content_id(key), role=Role.STEM,
        tokens=until * branch.step_tokens, start_step=0, stops=(int(until),), point_id="",
        name=f"stem {trial_name(branch.n_params, until * branch.step_tokens, 0.0, branch.seed)}{again}")


def planned_flops(trials: list[TrialConfig]) -> tuple[float, float]:
    """(FLOPs the trials compute with reuse, FLOPs of the longest chain that must run in order):
    each stem once up to its last branch point plus every branch's cooldown; a chain is a stem
    and its longest branch (segments of one stem run one after another)."""
    total, longest, reach = 0.0, 0.0, {}
    for t in trials:
        total += train_flops(t.n_params, t.tokens - t.branch_tokens)
        if t.stem_id and t.start_step:
            reach[t.stem_id] = max(reach.get(t.stem_id, (0, t))[0], t.start_step), t
        longest = max(longest, train_flops(t.n_params, t.tokens))
    for step, t in reach.values():
        total += train_flops(t.n_params, step * t.step_tokens)
    return total, longest


@dataclass
class _Stem:
    template: TrialConfig  # a branch of the stem: what its segments are made from
    ready: set[int]  # steps with a checkpoint
    waiting: dict[int, list[TrialConfig]] = field(default_factory=lambda: defaultdict(list))
    users: Counter = field(default_factory=Counter)  # branch point -> branches not yet finished
    running: int | None = None  # end step of the segment in flight
    kept_for_retry: set[int] = field(default_factory=set)  # checkpoints a failed branch needs


class ReuseExecutor:
    """An :class:`~orchestrator.running.executor.Executor` that runs wsd branches off stems (see
    the module docstring); other trials pass straight through to ``inner``."""

    def __init__(self, inner: Executor, store: ResultStore, keep_stems: bool = False):
        self.inner, self.store, self.keep_stems = inner, store, keep_stems
        self._stems: dict[str, _Stem] = {}
        self._ready: list[Completion] = []  # branches ended by their stem, not by a run of their own
        self._points = 0  # submitted and not yet returned by wait
        self._segment_ids: set[str] | None = None  # ids of the segments with a row, or started in this run

    @property
    def started(self) -> bool:
        return getattr(self.inner, "started", True)

    def slots(self) -> int:
        return self.inner.slots()

    def in_flight(self) -> int:
        return self._points

    def submit(self, trial: TrialConfig) -> None:
        self._points += 1
        if not (trial.stem_id and trial.start_step > 0):  # cosine, reuse off, or all cooldown
            self.inner.submit(trial)
            return
        stem = self._stems.get(trial.stem_id)
        if stem is None:
            stem = self._stems[trial.stem_id] = _Stem(trial, set(self.store.stem_steps(trial.stem_id)))
        b = trial.start_step
        stem.users[b] += 1
        if b in stem.ready:
            self.inner.submit(trial)
        else:
            stem.waiting[b].append(trial)  # its segment starts at the next wait: see there

    def wait(self, timeout: float) -> list[Completion]:
        # Segments start here, not in submit: the driver submits a batch before it waits, and a
        # stem that sees all of its batch's branch points goes up them in order instead of
        # training to the largest D first and again from step 0 for the smaller ones.
        for stem in self._stems.values():
            self._advance(stem)
        out, self._ready = self._ready, []
        for c in self.inner.wait(0.0 if out else timeout):
            if c.trial.role is Role.STEM:
                self._segment_done(c)
            else:
                self._branch_done(c)
                out.append(c)
        out += self._ready
        self._ready = []
        self._points -= len(out)
        return out

    def close(self, complete: bool) -> None:
        """Delete the stems' checkpoints no branch needs any more: those of the stems this run
        touched, and (``complete``: the sweep has run every point) every stem's, but each stem's
        last one with ``keep_stems``, and those a failed branch will need on a re-run."""
        # Every folder of checkpoints/ is a stem's but a command trainer's workspace (<trial_id>.run),
        # which a failed trial keeps for its retry.
        stems = {d for d in self.store.list_names("checkpoints", dirs=True) if not d.endswith(".run")} if complete \
            else set(self._stems)
        for stem_id in stems:
            stem = self._stems.get(stem_id)
            steps = self.store.stem_steps(stem_id)
            keep = (stem.kept_for_retry | {b for b, n in stem.users.items() if n}) if stem else set()
            if self.keep_stems and steps:
                keep.add(steps[-1])
            if not keep & set(steps):
                try:
                    self.store.delete_dir(f"checkpoints/{stem_id}")
                except OSError as e:  # a leftover checkpoint only costs storage
                    log.warning("deleting stem checkpoints %s/checkpoints/%s failed (%s); delete them by hand",
                                self.store.uri, stem_id, e)
                continue
            for step in steps:
                if step not in keep:
                    self._delete(stem_id, step)

    # -- internals ----------------------------------------------------------------------------
    def _advance(self, stem: _Stem) -> None:
        """Start the stem's next segment, to its lowest branch point still missing, if none runs."""
        if stem.running is not None or not stem.waiting:
            return
        until = min(stem.waiting)
        stem.running = until
        self.inner.submit(self._segment(stem, until))

    def _segment(self, stem: _Stem, until: int) -> TrialConfig:
        """The stem's segment to ``until``, under an id no row has yet. A segment is submitted
        only when the stem has no checkpoint at ``until``, so a row with its first id means that
        stretch is being trained again: a failed attempt retried, or a checkpoint gone since
        (deleted once its branches committed, lost, or damaged) that a later run needs. That
        training computes FLOPs too, and rows are one file per id (workers.store), so it gets the
        next attempt's id instead of replacing the earlier row and its flops_spent. A segment
        interrupted before its commit left no row: its retry keeps the id, and so finds its own
        preemption checkpoints (their ``writer``, which the trainer's context records: workers.trainers.interface)."""
        if self._segment_ids is None:
            t = self.store.read_table("trials").select(["trial_id", "role"]).to_pydict()
            self._segment_ids = {i for i, role in zip(t["trial_id"], t["role"]) if role == Role.STEM.value}
        attempt = 0
        while (seg := segment(stem.template, until, attempt)).trial_id in self._segment_ids:
            attempt += 1
        self._segment_ids.add(seg.trial_id)
        return seg

    def _segment_done(self, c: Completion) -> None:
        stem = self._stems[c.trial.stem_id]
        until, stem.running = stem.running, None
        result = c.result
        if result is not None and result.status is TrialStatus.COMPLETED:
            stem.ready.add(until)
            for branch in stem.waiting.pop(until, []):
                self.inner.submit(branch)
            self._collect(stem)
            self._advance(stem)
            return
        # The stem cannot reach its branch points: every waiting branch ends with it.
        waiting = [t for ts in stem.waiting.values() for t in ts]
        stem.waiting.clear()
        if result is not None and result.status is TrialStatus.DIVERGED:
            msg = f"stem {c.trial.stem_id} diverged before step {until} ({c.trial.name})"
            log.warning("%s: %d branches diverge with it", msg, len(waiting))
            for t in waiting:
                row = trial_row(t, t.n_params, TrialStatus.DIVERGED, math.nan, math.nan, 0.0, msg, flops_spent=0.0)
                self.store.write_trial(row)
                self._ready.append(Completion(t, TrialResult(t.trial_id, TrialStatus.DIVERGED, math.nan, 0.0, msg, row)))
                stem.users[t.start_step] -= 1
        else:
            if result is None:  # its worker was lost on every retry: the segment's failure is recorded here
                self.store.write_trial(trial_row(c.trial, c.trial.n_params, TrialStatus.FAILED, math.nan, math.nan,
                                                 0.0, c.error, flops_spent=0.0))
            error = c.error if result is None else (result.error.splitlines() or [""])[0]
            msg = f"stem {c.trial.stem_id} failed before step {until} ({c.trial.name}): {error}"
            log.error("%s; failing its %d waiting branches", msg, len(waiting))
            for t in waiting:
                self._ready.append(Completion(t, None, msg))  # the driver commits the FAILED row
                stem.users[t.start_step] -= 1
                stem.kept_for_retry.add(t.start_step)

    def _branch_done(self, c: Completion) -> None:
        stem = self._stems.get(c.trial.stem_id) if c.trial.start_step > 0 else None
        if stem is None:
            return
        stem.users[c.trial.start_step] -= 1
        if c.result is None or not c.result.status.is_finished():
            stem.kept_for_retry.add(c.trial.start_step)  # a re-run retries the branch from here
        self._collect(stem)

    def _collect(self, stem: _Stem) -> None:
        """Delete checkpoints no branch waits for and that are not the stem's latest (the next
        segment starts from that one)."""
        latest = max(stem.ready, default=0)
        for step in sorted(stem.ready):
            if step != latest and not stem.users[step] and step not in stem.kept_for_retry:
                self._delete(stem.template.stem_id, step)
                stem.ready.discard(step)

    def _delete(self, stem_id: str, step: int) -> None:
        try:
            self.store.delete(stem_checkpoint_path(stem_id, step))
        except OSError as e:  # a leftover checkpoint only costs storage
            log.warning("deleting stem checkpoint %s/%s failed (%s); delete it by hand", self.store.uri,
                        stem_checkpoint_path(stem_id, step), e)
