"""Running one trial on a worker: hand it to its trainer, record the outcome, clean up.

:func:`run_trial` is what an executor calls (in-process or as a Ray task). Every trainer, the
built-in GPT and simulator as much as a lab's function or command, is ``fn(trial, ctx)`` under
the contract of :mod:`workers.trainers.interface` (workers.trainers.loading finds it): it gets the
trial and a context to report rows and checkpoint through, and returns an Outcome. An exception
it raises is recorded as a FAILED row carrying the traceback, never swallowed. What the trial
used (device, GPU-seconds, throughput, MFU, energy) is measured around it by
:class:`workers.run.meter.TrialMeter` and recorded in its row, failed or not.
"""

from __future__ import annotations

import logging
import math
import time
import traceback

from workers.config import TrialConfig, TrialResult, trial_row
from workers.run.meter import TrialMeter
from workers.store import ResultStore, TrialStatus
from workers.trainers.interface import Context, TrialError, outcome_of
from workers.trainers.loading import trainer_for, trial_for

__all__ = ["run_trial"]

log = logging.getLogger(__name__)

# A lab's trainers must report progress (the contract); the simulator has none to report.
LAB_TRAINERS = ("function", "command")


def run_trial(cfg: TrialConfig, store: ResultStore | None = None) -> TrialResult:
    """Train one trial and commit its rows to the result store; see the module docstring.
    ``store``: the sweep's (default), or a rank's read-only view (workers.run.distributed)."""
    t0 = time.perf_counter()
    store = ResultStore(cfg.results) if store is None else store
    ctx = None
    meter = TrialMeter(cfg).start()
    stream = _stream(cfg) if store.writes else None
    try:
        trial = trial_for(cfg)
        ctx = Context(trial, store, log, meter, stream)
        out = outcome_of(trainer_for(cfg)(trial, ctx))
        # Rank 0 records the trial: a lab's trainer on several ranks may report on rank 0 alone.
        if not ctx.rows and cfg.trainer in LAB_TRAINERS and store.writes:
            raise TrialError("the trainer reported no progress rows (expected ctx.report(step, tokens, ...) calls, "
                             "or lines in $SCALESWEEP_OUTPUT/metrics.jsonl)")
        n = out.n_params or cfg.n_params
        if n != cfg.n_params:
            log.warning("trial %s: the trainer reports N=%d, the size was planned at N=%d; the row records %d",
                        cfg.trial_id, n, cfg.n_params, n)
        status = TrialStatus.DIVERGED if out.diverged else TrialStatus.COMPLETED
        tokens = out.tokens or (ctx.rows[-1]["tokens"] if status is TrialStatus.DIVERGED and ctx.rows else cfg.tokens)
        train_loss = out.train_loss if out.train_loss is not None else _last(ctx.rows, "train_loss")
        row = trial_row(cfg, n, status, out.eval_loss if status is TrialStatus.COMPLETED else math.nan, train_loss,
                        ctx.wall_s(), "", tokens, ctx.flops_spent(n, tokens), out.n_params_nonembed, out.n_params_total)
        steps = ctx.rows or None
        evals = ctx.evals or None
        if steps and ctx.extra_columns:
            row["step_columns"] = ",".join(sorted(ctx.extra_columns))
    except Exception as e:  # recorded, not swallowed: the row carries the traceback
        tb = traceback.format_exc()
        wall = ctx.wall_s() if ctx is not None else time.perf_counter() - t0  # earlier attempts' too, as a finished row's
        row = trial_row(cfg, cfg.n_params, TrialStatus.FAILED, math.nan, math.nan, wall,
                        f"{type(e).__name__}: {e}\n{_log_location()}{tb}")
        steps = evals = None
    row.update(_usage(meter, ctx, row))
    store.write_trial(row, steps, evals)
    if stream is not None:
        stream.flush(done=True)
    status = TrialStatus(row["status"])
    # A finished trial is never trained again, so its checkpoint is garbage once the rows are
    # committed. A FAILED one keeps it: the re-run that retries it resumes from there.
    if ctx is not None and status.is_finished():
        try:
            ctx.discard(workspace=cfg.trainer == "command")
        except OSError as e:  # the result is committed; a stale checkpoint only costs storage
            log.warning("trial %s committed, but deleting its checkpoint in %s failed (%s); delete "
                        "checkpoints/%s* by hand", cfg.trial_id, store.uri, e, cfg.trial_id)
    return TrialResult(cfg.trial_id, status, row["eval_loss"], row["wall_s"], row["error"], row)


def _stream(cfg: TrialConfig):
    """The trial's progress stream to the driver's trackers, or None (none named)."""
    if not cfg.stream:
        return None
    from workers.run.stream import ProgressStream

    meta = {"name": cfg.name, "variant": cfg.variant, "sweep": cfg.sweep, "n_params": cfg.n_params,
            "tokens": cfg.tokens, "budget": cfg.budget, "seed": cfg.seed, "lr": cfg.train.lr,
            "batch_tokens": cfg.train.batch_tokens, "workers": cfg.workers}
    return ProgressStream(cfg.stream, cfg.trial_id, cfg.stream_every_s, meta)


def _usage(meter: TrialMeter, ctx: Context | None, row: dict) -> dict:
    """The row's usage columns: its own tokens (a branch's cooldown; a failed trial's last
    reported row) over its wall time, its energy with earlier attempts'."""
    try:
        done = row["tokens"] if row["status"] != TrialStatus.FAILED.value else (ctx.rows[-1]["tokens"] if ctx and ctx.rows else 0)
        own = max(0, done - (ctx.started_tokens if ctx else 0))
        return meter.stop(row["wall_s"], own, row["n_params"], ctx.energy_before if ctx else 0.0,
                          ctx.gpu_seconds() if ctx else None)
    except Exception as e:  # measuring never costs a trial its row
        log.warning("trial %s: measuring its usage failed (%s); its row records none", row["trial_id"], e)
        return {"energy_source": "unavailable", "energy_note": f"measuring failed: {type(e).__name__}: {e}"}


def _last(rows: list[dict], column: str) -> float:
    values = [r[column] for r in rows if r.get(column) is not None]
    return values[-1] if values else math.nan


def _log_location() -> str:
    """'log: <path>' of this Ray worker's stderr file (submitit-style), or '' outside Ray."""
    import glob
    import os
    import sys

    ray = sys.modules.get("ray")
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None) if ray else None
    try:
        logs = node.get_logs_dir_path() if node is not None else None
    except Exception:  # the log location is a convenience; never fail a trial's record over it
        logs = None
    if not logs:
        return ""
    files = sorted(glob.glob(os.path.join(logs, f"worker-*-{os.getpid()}.err")))
    return f"log: {files[-1] if files else logs}\n"

