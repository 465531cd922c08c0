"""The spec's ``tracking:`` section: live curves in the trackers a user already watches.

Trials stream their progress rows and task evaluations to the driver while they train
(workers.run.stream), every ``every_s`` seconds at most, and the driver writes them to each
tracker named here (orchestrator.running.tracking). The Parquet tables stay the record; trackers
are views, and a tracker that fails mid-sweep is dropped with one warning. A tracker whose
package is not installed is refused when the spec loads, naming the extra that installs it.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import Field

from orchestrator.spec.model import _Strict

__all__ = ["TrackingSpec", "WandbSpec", "hub_name"]


def hub_name(sweep_name: str, sweep_dir: str) -> str:
    """The Ray actor name of a sweep's progress hub (one driver per results directory)."""
    import hashlib

    return f"scalesweep-progress-{sweep_name}-{hashlib.sha256(sweep_dir.encode()).hexdigest()[:8]}"


class WandbSpec(_Strict):
    project: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    entity: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    mode: Literal["online", "offline"] = "online"  # offline: runs under <results>/<sweep>/wandb, `wandb sync` later


class TrackingSpec(_Strict):
    tensorboard: bool = False  # one run per trial under <results>/<sweep>/tensorboard/ on the driver's machine
    wandb: WandbSpec | None = None  # one W&B run per trial, grouped by sweep
    every_s: float = Field(5.0, gt=0, le=3600)  # how often a trial sends what it has reported

    @property
    def active(self) -> bool:
        return self.tensorboard or self.wandb is not None

    def missing(self) -> str:
        """Why a tracker named cannot run here ("" if all can). Asked where the driver runs them
        (orchestrator.sweep.run_sweep), not at load: `scalesweep submit` installs them on the
        cluster, and the machine submitting needs none."""
        for on, package, extra in ((self.tensorboard, "tensorboard", "tensorboard"), (self.wandb, "wandb", "wandb")):
            if on and importlib.util.find_spec(package) is None:
                return (f"tracking.{extra}: the {package} package is not installed (expected "
                        f"pip install -e \".[{extra}]\", or remove tracking.{extra})")
        return ""
