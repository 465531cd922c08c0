"""The spec's ``resources:`` section: what each trial holds, and how many ranks it trains on.

A trial holds ``cpus`` and ``gpus`` (a fraction packs small trials on one GPU); with ``workers``
> 1 it trains data-parallel on that many ranks, each holding them (workers.run.distributed), by
``strategy`` ddp or fsdp. ``by_size`` rules give the big rungs of a ladder more ranks than the
small ones in the same sweep. None of it changes what a trial trains: none of it is in trial ids.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from orchestrator.spec.model import _Strict
from workers.config import PositiveFloat

__all__ = ["ModelSize", "ResourceSpec", "SizeResources"]

# A target parameter count. Past ~1e300 the shape arithmetic (workers/gpt/arch.py) overflows
# floats; 1e18 is far past any trial that fits anywhere (16 B/param of weights and AdamW
# state: 16 EB), so sizes between the hardware and this bound get the estimate's memory
# refusal, which names the trial (orchestrator/planning/estimate.py).
ModelSize = Annotated[float, Field(gt=0, le=1e18, allow_inf_nan=False)]


class SizeResources(_Strict):
    """How trials of at least ``min_params`` parameters run (resources.by_size): the last rule
    whose min_params a trial's N reaches overrides the section's workers, cpus, gpus and strategy."""

    min_params: ModelSize
    workers: int | None = Field(None, ge=1, le=4096)
    cpus: float | None = Field(None, gt=0)
    gpus: float | None = Field(None, ge=0)
    strategy: Literal["ddp", "fsdp"] | None = None

    @field_validator("gpus")
    @classmethod
    def _gpu_fraction(cls, v: float | None) -> float | None:
        return v if v is None else ResourceSpec._gpu_fraction(v)


class ResourceSpec(_Strict):
    cpus: float = Field(1, gt=0)  # per trial, or per rank of a trial with workers > 1
    gpus: float = Field(0, ge=0)
    # Ranks per trial: > 1 trains the trial data-parallel on Ray Train (workers.run.distributed),
    # the global batch split across ranks; strategy ddp (DistributedDataParallel) or fsdp (FSDP2,
    # fully_shard: parameters, gradients and optimiser state sharded). Neither changes what a trial
    # trains, so neither is in its id; both are in its row.
    workers: int = Field(1, ge=1, le=4096)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    by_size: list[SizeResources] = []
    max_retries: int = Field(2, ge=0, le=100)
    # The pre-run estimate (orchestrator.planning.estimate) refuses a sweep whose estimated wall time is
    # beyond this; null means no limit (as does `scalesweep run --allow-long`). A day, because
    # a sweep longer than that is rarely meant on a first run and is cheap to allow on purpose.
    max_hours: PositiveFloat | None = 24.0
    # Training FLOPs per second one trial sustains, counted as C = 6 N D (workers.flops). Unset:
    # the estimate's per-device default (orchestrator.planning.estimate), a rough figure; state the one
    # you measured for estimates worth trusting.
    flops_per_s: PositiveFloat | None = None
    # Memory one trial may use, in GB, checked against every trial's estimate before the sweep
    # starts. Unset: this node's memory (CPU) or the GPU's memory x gpus, on a local run; on a
    # cluster (--address, submit) nothing is known before it runs, so nothing is checked.
    memory_gb: PositiveFloat | None = None
    # Peak FLOP/s of one device a trial holds (one GPU, or one CPU thread), for each trial's
    # model FLOPs utilisation (trials.mfu). Unset: the dense bf16 peak of the GPU's name in
    # workers.run.devices, and none on CPUs (mfu null).
    peak_flops: PositiveFloat | None = None
    # Rated power of one device (W per GPU, or per CPU thread) for trials whose energy no counter
    # measures (energy_source "estimated"). Unset: the GPU table's board power, 4 W per CPU thread.
    watts: PositiveFloat | None = None

    @field_validator("gpus")
    @classmethod
    def _gpu_fraction(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError("a fraction of a GPU must be at most 1 (expected 0 < gpus <= 1, or a whole number)")
        return v

    @model_validator(mode="after")
    def _ranks(self):
        """A multi-rank trial takes whole GPUs per rank: NCCL cannot share a GPU between the ranks
        of one process group. Rules by size are checked the same way, in order."""
        for i, (where, r) in enumerate([("", self.for_rule(None))] + [(f"by_size[{i}].", self.for_rule(rule))
                                                                       for i, rule in enumerate(self.by_size)]):
            workers, gpus = r["workers"], r["gpus"]
            if workers > 1 and gpus not in (0, 1):
                raise ValueError(f"{where}gpus={gpus:g} with {where or ''}workers={workers}: a rank trains on one "
                                 "whole GPU (NCCL cannot share one between ranks; a rank uses one device): expected "
                                 "gpus: 0 or 1 per rank, and more workers")
        mins = [r.min_params for r in self.by_size]
        if mins != sorted(mins):
            raise ValueError("by_size: rules must be in increasing min_params (the last one a trial reaches applies)")
        return self

    def for_rule(self, rule: "SizeResources | None") -> dict:
        """workers, cpus, gpus and strategy under ``rule`` (None: the section's own)."""
        out = {"workers": self.workers, "cpus": self.cpus, "gpus": self.gpus, "strategy": self.strategy}
        if rule is not None:
            out.update({k: v for k, v in rule.model_dump(exclude={"min_params"}).items() if v is not None})
        return out

    def for_size(self, n_params: float) -> dict:
        """workers, cpus, gpus and strategy of a trial of ``n_params`` parameters."""
        rule = None
        for r in self.by_size:
            if n_params >= r.min_params:
                rule = r
        return self.for_rule(rule)

    @property
    def multi_rank(self) -> bool:
        """Whether any trial may run on several ranks."""
        return self.workers > 1 or any((r.workers or 1) > 1 for r in self.by_size)


