"""Simulated trials: a loss drawn from a known world instead of training.

Same path as a real trial (Ray task, result store, fit), so planners, fault handling and
dashboards can be exercised at scale in seconds. The noise draw is keyed by the trial's
content-hashed id, so a retried or re-run trial observes exactly the same value, and two
seeds of one point observe independent noise. In a world with a hyperparameter landscape the
trial's lr and batch_tokens move its loss, and a learning rate far above the optimum may
diverge: a NaN, recorded as a DIVERGED row. Simulated trials write no step rows.

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

from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus, stem_checkpoint_path
from workers.config import Role, TrainConfig, TrialConfig, WorldConfig, trial_row
from workers.simulated.world import World

__all__ = ["STABLE_GAP", "schedule_factor", "simulate"]

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


def _checkpoint(store: ResultStore, cfg: TrialConfig, step: int) -> None:
    blob = {"version": 1, "stem_id": cfg.stem_id, "step": step}
    store.write_bytes(stem_checkpoint_path(cfg.stem_id, step), json.dumps(blob).encode())


def _has_checkpoint(store: ResultStore, cfg: TrialConfig, step: int) -> bool:
    path = stem_checkpoint_path(cfg.stem_id, step)
    try:
        data = store.read_bytes(path)
        if data is None:
            return False
        blob = json.loads(data)
        if (blob.get("version"), blob.get("stem_id"), blob.get("step")) != (1, cfg.stem_id, step):
            raise ValueError(f"(version, stem_id, step) = {(blob.get('version'), blob.get('stem_id'), blob.get('step'))}")
        return True
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        log.warning("trial %s: ignoring unusable checkpoint %s/%s (%s); trying the stem's previous checkpoint",
                    cfg.trial_id, store.uri, path, e)
        return False


def _stem_start(store: ResultStore, cfg: TrialConfig, want: int) -> int:
    """The latest step <= ``want`` with a usable checkpoint of the trial's stem (0: none)."""
    steps = reversed(store.stem_steps(cfg.stem_id))
    return next((s for s in steps if s <= want and _has_checkpoint(store, cfg, s)), 0)


@lru_cache(maxsize=8)
def _world(cfg: WorldConfig) -> World:
    # Building the residual field is the only costly part; Ray reuses worker processes.
    return World(cfg)


def simulate(cfg: TrialConfig, store: ResultStore | None = None) -> tuple[dict, None]:
    """(trial row, no step rows) for a simulated trial; sleeps ``world.duration_s`` times the
    share of its tokens it trains (all of them but for stems and branches)."""
    t0 = time.perf_counter()
    store = store if store is not None else ResultStore(cfg.results)
    world = _world(cfg.world)
    start = 0
    if cfg.role is Role.STEM or cfg.start_step:
        want = cfg.steps - 1 if cfg.role is Role.STEM else cfg.start_step
        start = _stem_start(store, cfg, want)
        if cfg.role is not Role.STEM and start < cfg.start_step:
            log.warning("trial %s: no usable stem checkpoint %s/%s; training the stem from step %d", cfg.trial_id,
                        store.uri, stem_checkpoint_path(cfg.stem_id, cfg.start_step), start)
    if cfg.world.duration_s > 0:
        time.sleep(cfg.world.duration_s * (cfg.tokens - start) / max(1, cfg.tokens))
    # A trial's TrainConfig holds numbers (orchestrator.planning.trials resolves rules and searches);
    # a world without a hyperparameter landscape ignores them.
    loss = float(world.observe(cfg.n_params, cfg.tokens, int(cfg.trial_id, 16),
                               lr=cfg.train.lr, batch=cfg.train.batch_tokens))
    if cfg.role is Role.STEM:
        loss *= 1.0 + STABLE_GAP
        for step in cfg.stops:
            if step > start:
                _checkpoint(store, cfg, step)
    else:
        loss *= schedule_factor(cfg.train)
        if start < cfg.start_step:  # the stem part trained here is saved for the branch point's others
            _checkpoint(store, cfg, cfg.start_step)
    status = TrialStatus.COMPLETED if math.isfinite(loss) else TrialStatus.DIVERGED
    row = trial_row(cfg, cfg.n_params, status, loss if status is TrialStatus.COMPLETED else math.nan, loss,
                    time.perf_counter() - t0, "", flops_spent=train_flops(cfg.n_params, cfg.tokens - start))
    return row, None
