"""The learning rate a trial's schedule gives at a step, for a lab's trainer to follow."""

from __future__ import annotations

from workers.config import TrainConfig
from workers.schedule import lr_at as _lr_at
from workers.trainers.interface import Trial

__all__ = ["lr_at"]


def lr_at(trial: Trial, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``trial``: its warmup, then cosine
    to ``min_lr_ratio`` over exactly its steps, or warmup-stable-decay (a stem trial: no cooldown).
    The built-in GPT uses the same function (workers.schedule.lr_at)."""
    total = None if trial.role == "stem" else trial.steps
    step_tokens = max(1, trial.tokens // max(1, trial.steps))
    return _lr_at(step, total, TrainConfig.model_validate(trial.train), trial.n_params, step_tokens)
