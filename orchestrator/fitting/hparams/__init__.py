"""Hyperparameter laws from tuned sweeps and published grids.

``optima``: each design point's optimal learning rate (and batch size) and loss, from its
trials (parabolas in ln lr of ln loss; a quadratic surface in ln lr and ln B); ``laws``: the
power laws lr*(N, D) and B*(N, D) over the points' optima, with t-scaled wild-bootstrap
intervals; ``tuned``: the fit of a tuned sweep (the scaling law through the per-point optima,
the laws, and the recommendation at the target's N_opt and D_opt); ``command``: ``scalesweep
hparams``. Names are loaded on first use, so that building the command line's parser (which
registers ``hparams``) loads neither pandas nor the fitting engine.
"""

from __future__ import annotations

import importlib

__all__ = ["Method", "PointOptimum", "point_optima", "trials_runs", "PowerLawFit", "fit_power_law", "NMap",
           "HparamFit", "fit_hparams", "is_tuned", "analyse_trials", "optima_table"]

_WHERE = {"Method": "optima", "PointOptimum": "optima", "point_optima": "optima", "trials_runs": "optima",
          "PowerLawFit": "laws", "fit_power_law": "laws", "NMap": "laws", "HparamFit": "tuned",
          "fit_hparams": "tuned", "is_tuned": "tuned", "analyse_trials": "tuned", "optima_table": "tuned"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
