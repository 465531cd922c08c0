"""Live curves: trials' streamed rows (workers.run.stream) written to TensorBoard and W&B.

:class:`ProgressHub` is a Ray actor holding no resources, named per sweep, that trials send their
rows to (fire and forget) and the driver drains once per driver step; :class:`TrackerSink`, a
ProgressSink of the driver, writes what it drains to each tracker the spec names:

- **TensorBoard**: one run per trial, named as its Ray task is (N, D, budget, seed; the variant
  when not the baseline), under ``<results>/<sweep>/tensorboard/`` on the driver's machine, so a
  cluster without shared storage still has its curves where ``tensorboard --logdir`` runs.
  Scalars: ``loss/train``, ``loss/eval``, ``lr``, a trainer's own step columns as ``step/<name>``,
  and per task ``tasks/<task>/acc``, ``/acc_norm``, ``/bpb``, at the optimiser step.
- **W&B**: one run per trial, grouped by sweep, its settings as the run's config (``online``, or
  ``offline`` under ``<results>/<sweep>/wandb`` for ``wandb sync`` later).

A trial's writers are closed when it ends, so the driver holds writers for the trials in flight
only. A tracker that raises is dropped with one warning and the sweep goes on: the Parquet tables
are the record, trackers are views. Finished trials are never run again, so a resumed sweep never
writes their curves twice.
"""

from __future__ import annotations

import logging
import math
import os
import re

__all__ = ["ProgressHub", "TrackerSink", "run_name"]

log = logging.getLogger(__name__)

HUB_TIMEOUT_S = 5.0  # a hub that does not answer in this long is given up on (never blocks the driver again)


class ProgressHub:
    """What trials have sent and the driver not yet taken (a Ray actor; see the module docstring)."""

    def __init__(self):
        self._pending: list = []

    def put(self, trial_id: str, meta: dict, rows: list, done: bool) -> None:
        self._pending.append((trial_id, meta, rows, done))

    def take(self) -> list:
        out, self._pending = self._pending, []
        return out


def run_name(meta: dict, trial_id: str) -> str:
    """A tracker run's name: the trial's (as its Ray task is named), its variant, its id's start."""
    name = meta.get("name") or trial_id
    variant = meta.get("variant")
    if variant and variant != "baseline":
        name = f"{variant} {name}"
    return re.sub(r"[^A-Za-z0-9=.+_-]+", "_", f"{name} {trial_id[:8]}").strip("_")


def _scalars(kind: str, row: dict) -> tuple[int, dict[str, float]]:
    """(step, {tag: value}) of one streamed row."""
    if kind == "eval":
        task = row["task"]
        values = {f"tasks/{task}/acc": row.get("acc"), f"tasks/{task}/acc_norm": row.get("acc_norm"),
                  f"tasks/{task}/bpb": row.get("task_bpb")}
    else:
        values = {"loss/train": row.get("train_loss"), "loss/eval": row.get("eval_loss"), "lr": row.get("lr")}
        skip = {"trial_id", "step", "tokens", "flops", "train_loss", "eval_loss", "lr", "wall_s", "energy_j"}
        values |= {f"step/{k}": v for k, v in row.items() if k not in skip}
    return int(row["step"]), {k: float(v) for k, v in values.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class _TensorBoard:
    def __init__(self, root: str, flush_s: float):
        self.root, self.flush_s, self.writers, self.last = root, flush_s, {}, {}

    def write(self, trial_id: str, meta: dict, kind: str, step: int, values: dict) -> None:
        w = self.writers.get(trial_id)
        # A progress row before the last one written: the trial resumed from a checkpoint (a retry)
        # and reports those steps again. Purge what was written from there, as the store keeps the new rows.
        # A run opened anew (a retry after its failed attempt closed it, a later sweep run) purges from
        # its first row: what an earlier attempt wrote there or after is superseded too.
        purge = step if w is None or (kind == "step" and step <= self.last.get(trial_id, -1)) else None
        if w is None or purge is not None:
            from torch.utils.tensorboard import SummaryWriter

            if w is not None:
                w.close()
            w = self.writers[trial_id] = SummaryWriter(os.path.join(self.root, run_name(meta, trial_id)),
                                                       purge_step=purge, flush_secs=max(1, round(self.flush_s)))
        if kind == "step":
            self.last[trial_id] = step
        for tag, v in values.items():
            w.add_scalar(tag, v, step)

    def close(self, trial_id: str) -> None:
        self.last.pop(trial_id, None)
        w = self.writers.pop(trial_id, None)
        if w is not None:
            w.close()


class _Wandb:
    def __init__(self, spec, sweep: str, root: str, salt: str):
        self.spec, self.sweep, self.root, self.salt, self.runs = spec, sweep, root, salt, {}

    def write(self, trial_id: str, meta: dict, kind: str, step: int, values: dict) -> None:
        run = self.runs.get(trial_id)
        if run is None:
            import wandb

            os.makedirs(self.root, exist_ok=True)
            # Trial ids are content hashes, the same in two sweeps that share a trial: the run id adds
            # the results directory's; a retried trial resumes its run rather than colliding with it.
            run = self.runs[trial_id] = wandb.init(
                project=self.spec.project, entity=self.spec.entity, group=self.sweep, name=run_name(meta, trial_id),
                id=f"{trial_id}-{self.salt}", resume="allow", config=meta, mode=self.spec.mode, dir=self.root,
                reinit="create_new")
            # W&B drops a log whose step is below one already logged; task evaluations arrive task by
            # task, and a retry reports steps again: every metric is plotted against its own step column.
            run.define_metric("trainer/step")
            run.define_metric("*", step_metric="trainer/step")
        run.log({"trainer/step": step, **values})

    def close(self, trial_id: str) -> None:
        run = self.runs.pop(trial_id, None)
        if run is not None:
            run.finish()


class TrackerSink:
    """A ProgressSink that drains the hub each driver step into the spec's trackers."""

    def __init__(self, spec):
        t = spec.tracking
        local = spec.sweep_dir if "://" not in spec.sweep_dir else os.path.join(os.getcwd(), "tracking", spec.name)
        self.trackers = {}
        if t.tensorboard:
            self.trackers["tensorboard"] = _TensorBoard(os.path.join(local, "tensorboard"), t.every_s)
        if t.wandb is not None:
            import hashlib

            salt = hashlib.sha256(spec.sweep_dir.encode()).hexdigest()[:8]
            self.trackers["wandb"] = _Wandb(t.wandb, spec.name, os.path.join(local, "wandb"), salt)
        self.name, self.where, self.hub, self._ray = None, local, None, None
        self._hub_name = spec.name, spec.sweep_dir

    def start(self) -> None:
        """Start the hub, once Ray is up and before the first trial is submitted (the executor's
        factory calls it: importing Ray earlier would fix its auth mode before the CLI sets it)."""
        import ray

        from orchestrator.spec.tracking import hub_name

        if not ray.is_initialized():
            log.warning("tracking: no Ray connected, so trials cannot stream their rows; no live curves this run")
            self.trackers = {}
            return
        self._ray = ray
        self.hub = ray.remote(num_cpus=0)(ProgressHub).options(name=hub_name(*self._hub_name)).remote()
        log.info("live curves: %s", self.where)

    def update(self, progress, completion) -> None:
        if self.hub is None:
            return
        try:
            batches = self._ray.get(self.hub.take.remote(), timeout=HUB_TIMEOUT_S)
        except Exception as e:  # the hub is gone or hung: live curves stop, the sweep does not wait on it
            self._drop_all(f"its progress hub failed ({type(e).__name__}: {e})")
            self.hub = None
            return
        for trial_id, meta, rows, done in batches:
            for kind, row in rows:
                step, values = _scalars(kind, row)
                for name in list(self.trackers):
                    self._call(name, "write", trial_id, meta, kind, step, values)
            if done:
                self._close_trial(trial_id)
        if completion is not None:  # ended, streamed its end or not (a worker lost on every retry)
            self._close_trial(completion.trial.trial_id)

    def _close_trial(self, trial_id: str) -> None:
        for name in list(self.trackers):
            self._call(name, "close", trial_id)

    def _call(self, name: str, method: str, *args) -> None:
        tracker = self.trackers.get(name)
        if tracker is None:
            return
        try:
            getattr(tracker, method)(*args)
        except Exception as e:  # a view failing never stops the sweep; say so once
            log.warning("tracker %s failed (%s: %s); the sweep goes on without it (its rows are in the results)",
                        name, type(e).__name__, e)
            self._shut(self.trackers.pop(name))

    @staticmethod
    def _shut(tracker) -> None:
        """Close what a dropped tracker holds open (what it queued is written, if it still can be)."""
        for trial_id in list(getattr(tracker, "writers", getattr(tracker, "runs", {}))):
            try:
                tracker.close(trial_id)
            except Exception:  # already failing: nothing more to save
                pass

    def _drop_all(self, why: str) -> None:
        if self.trackers:
            log.warning("live tracking stopped: %s; the sweep goes on (its rows are in the results)", why)
            for tracker in self.trackers.values():
                self._shut(tracker)
            self.trackers = {}

    def close(self) -> None:
        """Drain what is left, close every writer, end the hub."""
        if self.hub is None:
            return
        self.update(None, None)
        for tracker in self.trackers.values():
            self._shut(tracker)
        if self.hub is None:
            return
        try:
            self._ray.kill(self.hub)
        except Exception:  # already gone with its job
            pass
