"""Sweep metrics through Ray's metrics API, for the Ray dashboard and Prometheus/Grafana.

The driver's progress becomes gauges tagged with the sweep name (``scalesweep_*``): trials
pending (not yet submitted), queued in Ray, running, finished, failed and diverged; FLOPs spent and budgeted; best held-out loss
so far; training throughput in tokens per second (tokens of finished trials over the time
their workers spent); energy and GPU-seconds used so far (the trials' rows, workers.run.meter:
measured where a counter could be read, estimated otherwise). Ray exports them from the node's metrics agent in Prometheus format
(docs/observability.md says where to find them). Metrics are a side channel: a failure to
record one is logged once and never stops the sweep.
"""

from __future__ import annotations

import logging
import math

__all__ = ["RayMetricsSink", "FanOut"]

log = logging.getLogger(__name__)

GAUGES = {
    "trials_pending": "trials planned but not yet submitted to Ray",
    "trials_running": "trials in flight, up to the trial slots the cluster's resources offer",
    "trials_queued": "trials submitted to Ray and waiting for resources",
    "trials_finished": "trials finished in this run (any status)",
    "trials_failed": "trials that raised or lost their worker on every retry",
    "trials_diverged": "trials whose loss became NaN or infinite",
    "flops_spent": "training FLOPs (6ND) of the trials finished in this run",
    "flops_budget": "training FLOPs the run expects to spend",
    "best_eval_loss": "lowest held-out loss of any trial finished in this run",
    "tokens_per_second": "trained tokens per second of worker time, over finished trials",
    "energy_joules": "energy used by the trials finished in this run (measured or estimated: trials.energy_source)",
    "gpu_seconds": "wall seconds x GPUs held, over the trials finished in this run",
}


class RayMetricsSink:
    """A ProgressSink that mirrors the driver's progress into Ray gauges."""

    def __init__(self, sweep: str):
        from ray.util.metrics import Gauge

        self.tags = {"sweep": sweep}
        self.gauges = {k: Gauge(f"scalesweep_{k}", description=d, tag_keys=("sweep",)) for k, d in GAUGES.items()}
        self.best = math.inf
        self.tokens = 0.0
        self.worker_s = 0.0
        self.energy_j = 0.0
        self.gpu_s = 0.0
        self._warned = False

    def update(self, p, completion) -> None:
        if completion is not None and completion.result is not None:
            r = completion.result
            if math.isfinite(r.eval_loss):
                self.best = min(self.best, r.eval_loss)
            self.tokens += completion.trial.tokens
            self.worker_s += max(r.wall_s, 0.0)
            self.energy_j += _finite(r.row.get("energy_j"))
            self.gpu_s += _finite(r.row.get("gpu_seconds"))
        values = {
            "trials_pending": max(0, p.total - p.done - p.running - p.queued),
            "trials_running": p.running,
            "trials_queued": p.queued,
            "trials_finished": p.done,
            "trials_failed": p.failed,
            "trials_diverged": p.diverged,
            "flops_spent": p.flops_done,
            "flops_budget": p.total_flops,
            "best_eval_loss": self.best if math.isfinite(self.best) else None,
            "tokens_per_second": self.tokens / self.worker_s if self.worker_s > 0 else None,
            "energy_joules": self.energy_j,
            "gpu_seconds": self.gpu_s,
        }
        try:
            for key, value in values.items():
                if value is not None:
                    self.gauges[key].set(float(value), tags=self.tags)
        except Exception as e:  # never let observability stop a sweep; say so once
            if not self._warned:
                log.warning("could not record Ray metrics (%s); the sweep goes on", e)
                self._warned = True


def _finite(x) -> float:
    """A row's number, 0 where it is null (not measured) or not finite."""
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else 0.0


class FanOut:
    """Several progress sinks as one."""

    def __init__(self, *sinks):
        self.sinks = [s for s in sinks if s is not None]

    def update(self, p, completion) -> None:
        for s in self.sinks:
            s.update(p, completion)
