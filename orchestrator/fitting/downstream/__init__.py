"""Downstream task accuracy from a model ladder, in two steps (``scalesweep downstream``).

Accuracy on a benchmark is not a power law in compute: it sits at chance, then rises along a
sigmoid. Bhagia et al. 2024 ("Establishing Task Scaling Laws via Compute-Efficient Model
Ladders", arXiv 2412.04403) and the Llama 3 report (section 3.2.1) predict it in two steps:

1. the *task loss* (NLL of the correct answer, bits per byte) as a law
   L(N, D) = E + A / N^alpha + B / D^beta, fitted to each ladder run's final evaluation
   (:mod:`.step1`, through the project's Approach 3 and its bootstrap);
2. accuracy as a sigmoid of the task loss, fitted to every checkpoint of every run after each
   run's first 10 % (:mod:`.sigmoid`), floored at the chance level where it is known;

and chain them. On the OLMo ladder (190M-1.3B, four token multipliers) they predicted a 7B and
a 13B model's accuracy on 8 tasks with a mean absolute error of about 4 points (within 2 on
four tasks, 6.9 on the other four).

Here every prediction carries 80 % and 95 % intervals from a bootstrap over whole runs through
both steps, one run's noise and the residual field of the law, the target's own evaluation
noise, and an extrapolation term measured by refitting without the ladder's largest size
(:mod:`.chain`); the emergence point and two one-step baselines come beside it (:mod:`.extras`).

Modules: ``table`` (inputs: a long table or a results directory), ``step1``, ``sigmoid``,
``chain`` (one task: both steps, bootstrap, draws, held-out calibration), ``fit`` (all tasks),
``extras``, ``text`` (lines and JSON), ``command`` (the CLI).

Python API (what the report and ``fit`` integration call)::

    data = load_table(path, Columns(...))             # or downstream_data_from_results(store_or_path)
    fit = fit_downstream(data, n_boot=1000, seed=0)   # DownstreamFit: .tasks (TaskFit), .skipped {task: reason}
    rows = predict(fit, N, D)                         # one dict per (point, task): task_loss, accuracy
                                                      #   {"estimate", "80%", "95%"}, baselines
    lines = describe(fit)                             # text lines per task; prediction_lines(rows) per point
    doc = fit_json(fit, rows)                         # what --json prints

Names are loaded on first use, so that building the command line's parser (which registers
``downstream``) loads neither pandas nor the fitting engine.
"""

from __future__ import annotations

import importlib

_WHERE = {"DownstreamFit": "fit", "fit_downstream": "fit", "predict": "fit", "Columns": "table",
          "DownstreamData": "table", "downstream_data_from_results": "table", "from_frame": "table",
          "load_points": "table", "load_table": "table", "describe": "text", "fit_json": "text",
          "prediction_lines": "text"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
