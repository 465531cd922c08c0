"""What a trial is, independent of how it is run: configs, the result, the trial row.

The data contract between the driver and the trainers. Kept free of torch so the driver,
planners and simulated workers import it cheaply; every trainer builds its row with
:func:`trial_row`, and :func:`workers.entry.run_trial` dispatches on ``TrialConfig.trainer``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workers.gpt.arch import GPTShape
from workers.gpt.data import DataConfig
from workers.flops import train_flops
from workers.store import TrialStatus

if TYPE_CHECKING:
    from workers.simulated.world import WorldConfig

__all__ = ["TrainConfig", "TrialConfig", "TrialResult", "trial_row"]


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
    # boundary after the interval, so a retried trial resumes there (workers.gpt.train).
    checkpoint_every_s: float = 600.0
    compile: bool = False  # torch.compile the training forward (workers.gpt.train)


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
    world: "WorldConfig | None" = None  # set for trainer: simulated (workers.simulated.world)
    sim_n_params: int = 0
    trainer: str = "gpt"  # a key of workers.entry.TRAINERS

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
