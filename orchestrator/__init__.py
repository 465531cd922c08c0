"""scalesweep's driver side: specs, planning, Ray execution, results, fitting and reports.

Public API (import from here)::

    from orchestrator import load_spec, run_sweep, load_trials, load_steps, query, analyse

Names are imported lazily (PEP 562, as in ``workers``): ``scalesweep query`` should not pay
for scipy and the fitting engine (half a second of a sub-second command).
"""

from workers import lazy_getattr

_EXPORTS = {
    "SweepFit": "orchestrator.fitting.analysis", "analyse": "orchestrator.fitting.analysis", "UserError": "orchestrator.errors",
    "load_steps": "orchestrator.results", "load_trials": "orchestrator.results", "query": "orchestrator.results.sql",
    "SweepSpec": "orchestrator.spec", "load_spec": "orchestrator.spec", "parse_spec": "orchestrator.spec",
    "run_sweep": "orchestrator.sweep",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr('orchestrator', _EXPORTS)
