"""Simulated trials: a loss drawn from a known world instead of training.

Same path as a real trial (Ray task, result store, fit), so planners, fault handling and
dashboards can be exercised at scale in seconds. The noise draw is keyed by the trial's
content-hashed id, so a retried or re-run trial observes exactly the same value, and two
seeds of one point observe independent noise. In a world with a hyperparameter landscape the
trial's lr and batch_tokens move its loss, and a learning rate far above the optimum may
diverge: a NaN, recorded as a DIVERGED row. Simulated trials write no step rows.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache

from workers.store import TrialStatus
from workers.config import TrialConfig, WorldConfig, trial_row
from workers.simulated.world import World

__all__ = ["simulate"]


@lru_cache(maxsize=8)
def _world(cfg: WorldConfig) -> World:
    # Building the residual field is the only costly part; Ray reuses worker processes.
    return World(cfg)


def simulate(cfg: TrialConfig, store=None) -> tuple[dict, None]:
    """(trial row, no step rows) for a simulated trial; sleeps ``world.duration_s`` first."""
    t0 = time.perf_counter()
    world = _world(cfg.world)
    if cfg.world.duration_s > 0:
        time.sleep(cfg.world.duration_s)
    # A trial's TrainConfig holds numbers (orchestrator.planning.trials resolves rules and searches);
    # a world without a hyperparameter landscape ignores them.
    loss = float(world.observe(cfg.n_params, cfg.tokens, int(cfg.trial_id, 16),
                               lr=cfg.train.lr, batch=cfg.train.batch_tokens))
    status = TrialStatus.COMPLETED if math.isfinite(loss) else TrialStatus.DIVERGED
    row = trial_row(cfg, cfg.n_params, status, loss if status is TrialStatus.COMPLETED else math.nan, loss,
                    time.perf_counter() - t0, "")
    return row, None
