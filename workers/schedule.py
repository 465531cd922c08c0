"""The learning-rate schedule: one pure function of the step, for every trainer and every check.

``cosine`` (the default): linear warmup over ``warmup_fraction`` of the trial's steps, then a
cosine from the peak to ``min_lr_ratio`` of it, ending exactly at the last step (Hoffmann et al.
2022, section 3: the cycle must match the trial's tokens, or the loss is overestimated).

``wsd`` (warmup-stable-decay): linear warmup, a constant phase, and a cooldown over the last
``cooldown.fraction`` of the steps to ``min_lr_ratio`` of the peak, in the ``1-sqrt`` or
``linear`` shape (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
Training Durations", section 3: about 20 % in (1 - sqrt) matches cosine). Everything before the
cooldown depends on the shape and the recipe only, not on D: that is what lets one stable run
(a stem) serve every D of a shape, each D a branch off the stem's checkpoint at
:func:`cooldown_start`. So the warmup cannot be a fraction of D: it is ``warmup_fraction`` of
the shape's compute-optimal run, 20 tokens per parameter (:data:`WARMUP_TOKENS_PER_PARAM`),
and where a short trial's cooldown starts inside it, the cooldown multiplies what the warmup
has reached.
"""

from __future__ import annotations

import math

from workers.config import TrainConfig

__all__ = ["WARMUP_TOKENS_PER_PARAM", "cooldown_start", "lr_at", "warmup_steps"]

# The wsd warmup is warmup_fraction of a run this long (Hoffmann et al. 2022's compute-optimal
# 20 tokens per parameter): it grows with the model, as cosine's does across a frontier.
WARMUP_TOKENS_PER_PARAM = 20


def warmup_steps(cfg: TrainConfig, total_steps: int | None, n_params: int, step_tokens: int) -> int:
    """Warmup steps of a trial of ``total_steps`` (cosine), or of any trial of a shape with
    ``n_params`` parameters (wsd, independent of its length)."""
    if cfg.schedule == "wsd":
        return max(1, round(cfg.warmup_fraction * WARMUP_TOKENS_PER_PARAM * n_params / step_tokens))
    return max(1, int(cfg.warmup_fraction * total_steps))


def cooldown_start(total_steps: int, cfg: TrainConfig) -> int:
    """The first cooldown step of a wsd trial of ``total_steps``: where its branch leaves the stem
    (at least one cooldown step; 0 when the whole trial is cooldown)."""
    return max(0, total_steps - max(1, round(cfg.cooldown.fraction * total_steps)))


def lr_at(step: int, total_steps: int | None, cfg: TrainConfig, n_params: int = 0, step_tokens: int = 1) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``. For wsd,
    ``total_steps=None`` is the stem: warmup and the constant phase, no cooldown."""
    warmup = warmup_steps(cfg, total_steps, n_params, step_tokens)
    warm = min(1.0, (step + 1) / warmup)
    min_lr = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        if total_steps is None or step < (start := cooldown_start(total_steps, cfg)):
            return cfg.lr * warm
        # progress 1/k .. 1 over the k cooldown steps: the last step is at min_lr exactly
        progress = (step + 1 - start) / (total_steps - start)
        decay = 1.0 - math.sqrt(progress) if cfg.cooldown.shape == "1-sqrt" else 1.0 - progress
        return min_lr + decay * (cfg.lr * warm - min_lr)
    if step < warmup:  # 1) linear warmup
        return cfg.lr * warm
    # 2) cosine from lr to min_lr over the remaining steps, ending exactly at the last step
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return min_lr + coeff * (cfg.lr - min_lr)
