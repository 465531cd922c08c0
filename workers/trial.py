"""What a trial is, independent of how it is run: configs, the result, the trial row.

Kept free of torch so the driver, planners and simulated workers import it cheaply; the
GPT trainer (:mod:`workers.train`) and the simulator (:mod:`workers.simulated`) both build
their rows with :func:`trial_row`, and :func:`run_trial` dispatches between them.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workers.arch import GPTShape
from workers.data import DataConfig
from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus, checkpoint_path

if TYPE_CHECKING:
    from workers.world import WorldConfig

__all__ = ["TrainConfig", "TrialConfig", "TrialResult", "trial_row", "run_trial"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 6e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    batch_tokens: int = 1024
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_tokens: int = 65536
    n_evals: int = 4  # evaluations during training, plus the final one
    log_every: int = 10
    # Wall seconds between checkpoints of a GPT trial (0: never). Saved at the first log
    # boundary after the interval, so a retried trial resumes there (workers.train).
    checkpoint_every_s: float = 600.0
    compile: bool = False  # torch.compile the training forward (workers.train)


@dataclass(frozen=True)
class TrialConfig:
    """Everything a worker needs; the fields that change the result go into the trial id."""

    trial_id: str
    name: str
    sweep: str
    shape: GPTShape | None  # None for simulated trials, which have a parameter count only
    tokens: int
    seed: int
    budget: float
    train: TrainConfig
    data: DataConfig | None
    results: str
    threads: int = 1
    device: str = "auto"
    world: "WorldConfig | None" = None  # set for trainer: simulated (workers.world)
    sim_n_params: int = 0

    @property
    def n_params(self) -> int:
        """Total parameters N: exact for a GPT shape, as planned for a simulated trial."""
        return self.shape.n_params if self.shape is not None else self.sim_n_params

    @property
    def steps(self) -> int:
        return self.tokens // self.train.batch_tokens


@dataclass
class TrialResult:
    trial_id: str
    status: TrialStatus
    eval_loss: float
    wall_s: float
    error: str = ""
    row: dict = field(default_factory=dict)


def trial_row(cfg: TrialConfig, n_params: int, status: TrialStatus, eval_loss: float, train_loss: float,
         wall_s: float, error: str, tokens: int | None = None) -> dict:
    tokens = cfg.tokens if tokens is None else tokens
    return {
        "sweep": cfg.sweep,
        "trial_id": cfg.trial_id,
        "status": status.value,
        "n_params": n_params,
        "n_params_nonembed": cfg.shape.n_params_nonembed if cfg.shape else None,
        "n_layer": cfg.shape.n_layer if cfg.shape else None,
        "d_model": cfg.shape.d_model if cfg.shape else None,
        "n_head": cfg.shape.n_head if cfg.shape else None,
        "tokens": tokens,
        "flops": train_flops(n_params, tokens),
        "budget": cfg.budget,
        "eval_loss": eval_loss,
        "train_loss": train_loss,
        "seed": cfg.seed,
        "lr": cfg.train.lr,
        "batch_tokens": cfg.train.batch_tokens,
        "wall_s": wall_s,
        "error": error,
        "name": cfg.name,
        "finished_at": time.time(),
    }


def run_trial(cfg: TrialConfig) -> TrialResult:
    """Train one trial and commit its rows to the result store; see the module docstring."""
    t0 = time.perf_counter()
    store = ResultStore(cfg.results)
    try:
        if cfg.world is not None:
            from workers.simulated import simulate  # no torch import for simulated worlds

            row, steps = simulate(cfg)
        else:
            from workers.train import train

            row, steps = train(cfg, store)
    except Exception as e:  # recorded, not swallowed: the row carries the traceback
        tb = traceback.format_exc()
        row = trial_row(cfg, cfg.n_params, TrialStatus.FAILED, float("nan"), float("nan"),
                        time.perf_counter() - t0, f"{type(e).__name__}: {e}\n{_log_location()}{tb}")
        steps = None
    store.write_trial(row, steps)
    status = TrialStatus(row["status"])
    # A finished trial is never trained again, so its checkpoint is garbage once the rows are
    # committed. A FAILED one keeps it: the re-run that retries it resumes from there.
    if cfg.world is None and status.is_finished():
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

