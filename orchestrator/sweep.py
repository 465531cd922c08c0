"""``run_sweep``: the whole experiment from a validated spec, as the CLI and tests call it.

Order matters for "bad input writes nothing": the data is opened and every trial planned
(both can reject the spec) before the results directory is created. Only then is Ray
started, and only if some trial is left to train: a re-run of a finished sweep costs a
store listing and a fit, not a cluster start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass

import yaml

from orchestrator.analysis import SweepFit, analyse
from orchestrator.driver import Driver, ProgressSink
from orchestrator.errors import UserError
from orchestrator.executor import Executor, RayExecutor
from orchestrator.plan import TrialFactory, plan_trials
from orchestrator.planner import StaticPlanner
from orchestrator.spec import SweepSpec
from workers.flops import train_flops
from workers.store import ResultStore
from workers.train import TrialConfig

__all__ = ["SweepOutcome", "prepare", "run_sweep", "finish"]

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    trials: list[TrialConfig]
    trained: int
    skipped: int
    failed: int
    diverged: int
    fit: SweepFit | None
    fit_error: str
    report: list[str]
    results: str


def prepare(spec: SweepSpec, cache_dir: str = "") -> tuple[ResultStore, list[TrialConfig]]:
    """Open the data, plan every trial and create the results directory (in that order)."""
    trials = plan_trials(spec, TrialFactory(spec, cache_dir))
    store = _open_for_writing(spec)
    plan = {
        "sweep": spec.name,
        "target_compute": spec.fit.target_compute,
        "trials": [
            {"trial_id": t.trial_id, "name": t.name, "budget": t.budget, "n_params": t.n_params,
             "tokens": t.tokens, "flops": train_flops(t.n_params, t.tokens)}
            for t in trials
        ],
    }
    store.write_text("plan.json", json.dumps(plan, indent=1))
    # Content-addressed copy of every spec that ran here: nothing earlier is overwritten.
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    store.write_text(f"spec-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml", text)
    return store, trials


def _open_for_writing(spec: SweepSpec) -> ResultStore:
    root = spec.sweep_dir
    if "://" not in root:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise UserError(f"results: cannot create {root!r} ({e.strerror}; expected a writable directory)") from None
        if not os.access(root, os.W_OK):
            raise UserError(f"results: {root!r} is not writable (expected a writable directory)")
    try:
        return ResultStore(root)
    except Exception as e:
        raise UserError(f"results: cannot open {root!r} ({e})") from None


def run_sweep(spec: SweepSpec, executor_factory=None, sink: ProgressSink | None = None,
              cache_dir: str = "", write_report: bool = True) -> SweepOutcome:
    """Run every unfinished trial of ``spec``, then fit and (optionally) report.

    ``executor_factory`` builds the executor once Ray is needed (default: a RayExecutor with
    the spec's resources; Ray must already be connected, see orchestrator.cluster.connect).
    """
    store, trials = prepare(spec, cache_dir)
    statuses = store.trial_statuses()
    todo = [t for t in trials if not (t.trial_id in statuses and statuses[t.trial_id].is_finished())]
    trained = failed = diverged = 0
    if todo:  # start Ray only when something is left to train
        r = spec.resources
        executor: Executor = (executor_factory or (lambda: RayExecutor(r.cpus, r.gpus, r.max_retries)))()
        driver = Driver(StaticPlanner(todo), store, executor, sink)
        driver.run()
        trained, failed, diverged = driver.progress.done, driver.progress.failed, driver.progress.diverged
    return finish(spec, store, trials, trained, len(trials) - len(todo), failed, diverged, write_report)


def finish(spec: SweepSpec, store: ResultStore, trials, trained, skipped, failed, diverged,
           write_report: bool = True) -> SweepOutcome:
    table = store.read_table("trials").to_pandas()
    planned = {t.trial_id for t in trials}
    table = table[table["trial_id"].isin(planned)]
    fit, fit_error, report = None, "", []
    try:
        fit = analyse(table, spec.fit.target_compute)
    except UserError as e:
        fit_error = str(e)
    if fit is not None and write_report:
        from orchestrator.report import write_report as _write  # matplotlib import only when needed

        report = _write(store, table, fit, spec.name)
    return SweepOutcome(trials, trained, skipped, failed, diverged, fit, fit_error, report, spec.sweep_dir)
