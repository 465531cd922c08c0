"""What a sweep cost, and what the run it recommends will: GPU-hours (or CPU core-hours), energy,
CO2e and money, measured per trial and projected for the target with intervals.

- :mod:`usage`: every run's device, devices held, wall time and energy, from a sweep's trials
  (workers.run.meter wrote them) or a table of runs; the sweep's totals.
- :mod:`model`: the per-device throughput (and power) line against N, with its prediction interval.
- :mod:`projection`: the target run (the fit's N_opt at a compute, or any N and D) on K devices.
- :mod:`command`: ``scalesweep cost``, and the lines ``status``, ``fit`` and ``report`` print.

Carbon intensity, PUE and prices are the spec's ``cost:`` section (orchestrator.spec.cost),
recorded in plan.json, each shown with its provenance (a default says it is one).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.errors import UserError
from orchestrator.results.cost.projection import project, target_from_fit
from orchestrator.results.cost.usage import sweep_totals, usage_frame
from orchestrator.spec.cost import provenance

__all__ = ["cost_lines", "results_cost", "store_cost", "sweep_cost"]


def sweep_cost(trials: pd.DataFrame, plan: dict, source: str = "trials") -> dict:
    """The totals of a sweep's trials (every row: failed trials and stem segments were paid for too)."""
    return sweep_totals(usage_frame(trials, source), provenance(plan.get("cost")))


def results_cost(path: str, fit) -> dict | None:
    """What ``fit`` and ``report`` show for a results directory (:func:`store_cost`); None for a
    table of runs (``scalesweep cost`` reads those)."""
    import os

    from orchestrator.results import open_results
    from orchestrator.results.runs import FILE_SUFFIXES

    if path.lower().endswith(FILE_SUFFIXES) or os.path.isfile(path):
        return None
    return store_cost(open_results(path), fit, path)


def store_cost(store, fit, source: str = "trials") -> dict:
    """{"sweep": the totals of every trial in ``store``, "projection": ``fit``'s target run or None,
    "unavailable": why not} (``fit`` None: no projection)."""
    from orchestrator.results import plan_record

    from orchestrator.results.cost.command import finite

    plan = plan_record(store)
    usage, settings = usage_frame(store.read_table("trials").to_pandas(), source), provenance(plan.get("cost"))
    projection, why = None, "no fit"
    if fit is not None:
        try:
            projection, why = project(usage, target_from_fit(fit), settings), ""
        except UserError as e:
            why = str(e)
    return finite({"sweep": sweep_totals(usage, settings), "projection": projection, "unavailable": why or None})


def cost_lines(cost: dict | None) -> list[str]:
    """The text of :func:`results_cost` (nothing for None)."""
    if cost is None:
        return []
    from orchestrator.results.cost.command import projection_lines, totals_lines

    return totals_lines(cost["sweep"]) + projection_lines(cost["projection"], cost["unavailable"] or "")
