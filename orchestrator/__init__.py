"""scalesweep's driver side: specs, planning, Ray execution, results, fitting and reports.

Public API (import from here)::

    from orchestrator import load_spec, run_sweep, load_trials, load_steps, query, analyse
"""

from orchestrator.analysis import SweepFit, analyse
from orchestrator.errors import UserError
from orchestrator.results import load_steps, load_trials, query
from orchestrator.spec import SweepSpec, load_spec, parse_spec
from orchestrator.sweep import run_sweep

__all__ = ["SweepSpec", "SweepFit", "UserError", "analyse", "load_spec", "load_steps", "load_trials",
           "parse_spec", "query", "run_sweep"]
