"""Simulated trials: a loss drawn from a known world instead of training.

Same path as a real trial (Ray task, result store, fit), so planners, fault handling and
dashboards can be exercised at scale in seconds. The noise draw is keyed by the trial's
content-hashed id, so a retried or re-run trial observes exactly the same value, and two
seeds of one point observe independent noise. In a world with a hyperparameter landscape the
trial's lr and batch_tokens move its loss, and a learning rate far above the optimum may
diverge: a NaN, recorded as a DIVERGED row. Simulated trials write no step rows; a world with
``tasks`` writes task evaluations (workers.simulated.tasks) at checkpoints of the run.

A wsd schedule (workers.schedule) is emulated through the same stems and branches as real
training (orchestrator.running.reuse): a stem segment writes a small checkpoint blob at each of
its stops, a branch reads its stem's (and, finding none, "trains" the stem part itself and writes
it, with a warning), and each sleeps ``world.duration_s`` times the share of its row's tokens it
trains. Both count FLOPs as real ones do. The loss of a wsd trial is the world's, times
:func:`schedule_factor`; a stem's row (never fitted) carries the stable phase's loss, higher by
:data:`STABLE_GAP`. Step units are tokens: a simulated trial has no batches.
"""

from __future__ import annotations

import json
import logging
import math
import time
from functools import lru_cache

import numpy as np

from workers.config import Role, TrainConfig, WorldConfig
from workers.simulated.tasks import sample
from workers.simulated.world import World, observation_key
from workers.trainers.interface import Context, Outcome, Trial

__all__ = ["STABLE_GAP", "schedule_factor", "simulate", "world_of"]

log = logging.getLogger(__name__)

# The schedule effect, relative to cosine at the same D, read off Hägele et al. 2024's figures
# (124M-360M models on SlimPajama): a (1-sqrt) cooldown over 20 % of the steps ends slightly below
# cosine, a linear one at about cosine's loss, and shorter cooldowns lose more the shorter they
# are (their Fig. 5 saturates near 20 %). Relative changes of the final loss; approximate by design.
_SHAPE_EFFECT = {"1-sqrt": -0.002, "linear": 0.001}
_SHORT_COOLDOWN = 0.01  # extra relative loss per unit of cooldown fraction below 0.2
# A stem's loss (constant learning rate, no cooldown) sits above a cooled run of the same tokens:
# the cooldown's sharp drop in their Fig. 3 is a few percent of the loss.
STABLE_GAP = 0.03


def schedule_factor(train: TrainConfig) -> float:
    """The multiplier of a trial's loss for its schedule: 1 for cosine (the world's law is a
    cosine-trained frontier), ``1 + effect`` for wsd (see above)."""
    if train.schedule != "wsd":
        return 1.0
    f = train.cooldown.fraction
    return 1.0 + _SHAPE_EFFECT[train.cooldown.shape] + _SHORT_COOLDOWN * max(0.0, 0.2 - f)


def _checkpoint(ctx: Context, step: int) -> None:
    blob = {"version": 1, "stem_id": ctx.trial.stem_id, "step": step}
    ctx.save_stem(step, json.dumps(blob).encode())


def _has_checkpoint(ctx: Context, step: int) -> bool:
    data = ctx.load_stem(step)
    if data is None:
        return False
    try:
        blob = json.loads(data)
        found = (blob.get("version"), blob.get("stem_id"), blob.get("step"))
        if found != (1, ctx.trial.stem_id, step):
            raise ValueError(f"(version, stem_id, step) = {found}")
        return True
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        log.warning("trial %s: ignoring unusable checkpoint of stem %s at step %d (%s); trying the stem's previous "
                    "checkpoint", ctx.trial.trial_id, ctx.trial.stem_id, step, e)
        ctx.forget()
        return False


def _stem_start(ctx: Context, want: int) -> int:
    """The latest step <= ``want`` with a usable checkpoint of the trial's stem (0: none)."""
    steps = reversed(ctx.stem_steps())
    return next((s for s in steps if s <= want and _has_checkpoint(ctx, s)), 0)


@lru_cache(maxsize=8)
def _world(cfg: WorldConfig) -> World:
    # Building the residual field is the only costly part; Ray reuses worker processes.
    return World(cfg)


def world_of(trial: Trial) -> WorldConfig:
    """The world a simulated trial samples: the spec's world: section, in the trial's settings."""
    world = trial.settings.get("world")
    if world is None:
        raise TypeError("a simulated trial needs settings.world (the spec's world: section)")
    return WorldConfig.model_validate(world)


def simulate(trial: Trial, ctx: Context) -> Outcome:
    """The simulator as a trainer (workers.trainers.interface's contract): the outcome of a
    simulated trial; sleeps ``world.duration_s`` times the share of its tokens it trains (all of
    them but for stems and branches)."""
    cfg = world_of(trial)
    world = _world(cfg)
    stem = trial.role == Role.STEM.value
    start = 0
    if stem or trial.start_step:
        want = trial.steps - 1 if stem else trial.start_step
        start = _stem_start(ctx, want)
        if not stem and start < trial.start_step:
            log.warning("trial %s: no usable checkpoint of stem %s at step %d; training the stem from step %d",
                        trial.trial_id, trial.stem_id, trial.start_step, start)
    if cfg.duration_s > 0:
        time.sleep(cfg.duration_s * (trial.tokens - start) / max(1, trial.tokens))
    # A trial's lr and batch are numbers (orchestrator.planning.trials resolves rules and searches);
    # a world without a hyperparameter landscape ignores them.
    loss = float(world.observe(trial.n_params, trial.tokens, int(trial.trial_id, 16),
                               lr=trial.lr, batch=trial.batch_tokens))
    if stem:
        loss *= 1.0 + STABLE_GAP
        for step in trial.stops:
            if step > start:
                _checkpoint(ctx, step)
    else:
        loss *= schedule_factor(TrainConfig.model_validate(trial.train))
        if start < trial.start_step:  # the stem part trained here is saved for the branch point's others
            _checkpoint(ctx, trial.start_step)
    if not stem and math.isfinite(loss):
        _report_tasks(trial, ctx, cfg)
    return Outcome(eval_loss=loss if math.isfinite(loss) else None, n_params=trial.n_params, train_loss=loss)


def _report_tasks(trial: Trial, ctx: Context, cfg: WorldConfig) -> None:
    """The world's task evaluations at ``task_checkpoints`` evenly spaced points of the run (the
    last at its end), drawn from the tasks' truths with noise keyed by the trial id: a re-run
    reports the same values (workers.simulated.tasks)."""
    truths = cfg.task_truths()
    if not truths:
        return
    k = cfg.task_checkpoints
    tokens = np.array([trial.tokens * (i + 1) // k for i in range(k)], dtype=np.int64)
    tokens = tokens[tokens > 0]
    rng = np.random.default_rng([observation_key(trial.trial_id), 28])
    for truth in truths:
        bpb, acc, acc_norm = sample(truth, np.full(len(tokens), float(trial.n_params)), tokens.astype(float), rng)
        for i, t in enumerate(tokens):
            ctx.report_task(int(t), int(t), truth.name, task_bpb=float(bpb[i]), acc=float(acc[i]),
                            acc_norm=float(acc_norm[i]), n_items=truth.n_items, chance=truth.chance)
