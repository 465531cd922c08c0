"""Running one trial on a worker: dispatch to its trainer, record the outcome, clean up.

:func:`run_trial` is what an executor calls (in-process or as a Ray task). It looks the trainer
up in :data:`TRAINERS` by the trial's ``trainer`` field, so adding a trainer is one entry here
and one module; trainers are imported on first use, so a simulated trial never imports torch.
A trainer is ``fn(cfg, store) -> (trial row, step rows or None)``; an exception it raises is
recorded as a FAILED row carrying the traceback, never swallowed.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from dataclasses import dataclass

from workers.config import TrialConfig, TrialResult, trial_row
from workers.store import ResultStore, TrialStatus, checkpoint_path

__all__ = ["Trainer", "TRAINERS", "run_trial"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trainer:
    """Where a trainer lives (``module:function``) and whether it leaves checkpoints behind."""

    target: str
    checkpoints: bool

    def load(self):
        module, _, fn = self.target.partition(":")
        return getattr(importlib.import_module(module), fn)


TRAINERS: dict[str, Trainer] = {
    "gpt": Trainer("workers.gpt.train:train", checkpoints=True),
    "simulated": Trainer("workers.simulated.trainer:simulate", checkpoints=False),
}


def run_trial(cfg: TrialConfig) -> TrialResult:
    """Train one trial and commit its rows to the result store; see the module docstring."""
    t0 = time.perf_counter()
    store = ResultStore(cfg.results)
    try:
        trainer = TRAINERS.get(cfg.trainer)
        if trainer is None:
            raise ValueError(f"unknown trainer {cfg.trainer!r} (expected one of {', '.join(TRAINERS)})")
        row, steps = trainer.load()(cfg, store)
    except Exception as e:  # recorded, not swallowed: the row carries the traceback
        tb = traceback.format_exc()
        row = trial_row(cfg, cfg.n_params, TrialStatus.FAILED, float("nan"), float("nan"),
                        time.perf_counter() - t0, f"{type(e).__name__}: {e}\n{_log_location()}{tb}")
        steps = None
    store.write_trial(row, steps)
    status = TrialStatus(row["status"])
    # A finished trial is never trained again, so its checkpoint is garbage once the rows are
    # committed. A FAILED one keeps it: the re-run that retries it resumes from there.
    if trainer is not None and trainer.checkpoints and status.is_finished():
        try:
            store.delete(checkpoint_path(cfg.trial_id))
        except OSError as e:  # the result is committed; a stale checkpoint only costs storage
            log.warning("trial %s committed, but deleting its checkpoint %s/%s failed (%s); delete it by hand",
                        cfg.trial_id, store.uri, checkpoint_path(cfg.trial_id), e)
    return TrialResult(cfg.trial_id, status, row["eval_loss"], row["wall_s"], row["error"], row)


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

