"""``run_sweep``: the whole experiment from a validated spec, as the CLI and tests call it.

Order matters for "bad input writes nothing": the data (or world) is opened, every static
trial planned and the sweep's cost estimated and checked (orchestrator.planning.estimate; all three can
reject the spec) before the results directory is created. Ray is started only if something
is left to do: a re-run of a finished static sweep costs a store listing and a fit, not a
cluster start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable

import yaml

from orchestrator.fitting.analysis import SweepFit
from orchestrator.running.driver import Driver, ProgressSink, finished_rows
from orchestrator.errors import FitError, UserError
from orchestrator.planning.estimate import Capacity, check, estimate_sweep, local_capacity
from orchestrator.running.metrics import FanOut
from orchestrator.running.executor import OnDemandExecutor, RayExecutor
from orchestrator.running.lock import DriverLock
from orchestrator.planning.trials import TrialFactory, variant_id
from orchestrator.planning.variants import VariantPlanner, adaptive_share, journal_name, plan_variants, variant_factories
from orchestrator.planning.protocol import Planner, StaticPlanner
from orchestrator.spec import SweepSpec
from workers.config import BASELINE
from workers.flops import train_flops
from workers.store import ResultStore, StoreError

__all__ = ["SweepOutcome", "run_sweep", "finish", "PLANNER_JOURNAL"]

log = logging.getLogger(__name__)

PLANNER_JOURNAL = "planner.journal"  # the adaptive planner's Optuna study, under the sweep dir


@dataclass
class SweepOutcome:
    n_trials: int
    trained: int
    skipped: int
    failed: int
    diverged: int
    fit: SweepFit | None
    fit_error: str
    report: list[str]
    results: str
    stop_reason: str = ""
    recipe: str = ""  # what a tuned sweep's searches found (TuningPlanner.summary)
    reuse: str = ""  # wsd with reuse: the stems and the FLOPs they saved
    # A spec with variants: each variant's fit and its comparison with the baseline (``fit`` is
    # the baseline's); orchestrator.fitting.variants.VariantComparison
    variants: "VariantComparison | None" = None  # noqa: F821
    # Task evaluations' two-step predictions at the target (orchestrator.report.downstream)
    downstream: "Downstream | None" = None  # noqa: F821
    # What the sweep cost and the target run will (orchestrator.results.cost.store_cost)
    cost: dict | None = None


def _open_for_writing(spec: SweepSpec) -> ResultStore:
    root = spec.sweep_dir
    if "://" not in root:
        try:
            os.makedirs(root, exist_ok=True)
        except OSError as e:
            raise UserError(f"results: cannot create {root!r} ({e.strerror}; expected a writable directory)") from None
        if not os.access(root, os.W_OK):
            raise UserError(f"results: {root!r} is not writable (expected a writable directory)")
    elif spec.planner == "adaptive":
        raise UserError(f"results: {root!r} is remote; the adaptive planner keeps its Optuna journal next to "
                        "the results and needs a local or mounted directory")
    try:
        return ResultStore(root)
    except Exception as e:
        raise UserError(f"results: cannot open {root!r} ({e})") from None


def _record_spec(spec: SweepSpec, store: ResultStore, trials: list) -> None:
    plan = {
        "sweep": spec.name,
        "planner": spec.planner,
        "target_compute": spec.fit.target_compute,
        "form": spec.fit.form,  # `scalesweep fit` and `report` on these results fit it by default
        "form_params": list(spec.fit.params),
        "tuned": list(spec.tuned),  # searched per point: the trials below are the points' centres
        "tune_objective": spec.tune.objective,  # how `fit` takes a searched point's loss
        # The tasks every trial is evaluated on (workers.evals): `status` lists what finished trials lack.
        "eval_tasks": spec.eval_task_names,
        # What turns device-hours and energy into CO2e and money, and which settings the spec wrote
        # (the rest are labelled as defaults: orchestrator.spec.cost.provenance).
        "cost": {"settings": spec.cost.model_dump(), "set": sorted(spec.cost.model_fields_set)},
        # Each variant's name now and its identity, which its rows record (variant_id): readers
        # name rows by it (orchestrator.results.label_variants), adaptive sweeps' rows included.
        "variants": [{"name": v.name, "changes": v.key, "id": variant_id(v)} for v in spec.variants_resolved()],
        "trials": [
            {"trial_id": t.trial_id, "point_id": t.point_id, "name": t.name, "budget": t.budget,
             "n_params": t.n_params, "tokens": t.tokens, "flops": train_flops(t.n_params, t.tokens),
             "variant": t.variant}
            for t in trials
        ],
    }
    store.write_text("plan.json", json.dumps(plan, indent=1))
    # Content-addressed copy of every spec that ran here: nothing earlier is overwritten.
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    store.write_text(f"spec-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml", text)


def run_sweep(spec: SweepSpec, executor_factory=None, sink: ProgressSink | None = None,
              cache_dir: str = "", write_report: bool = True, fit_progress=None,
              capacity: Capacity | None = None, allow_long: bool = False,
              announce: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every unfinished trial of ``spec`` (or what the adaptive planner proposes), then fit
    and (optionally) report.

    ``executor_factory`` builds the executor once there is work (default: a RayExecutor with
    the spec's resources; Ray must already be connected, see orchestrator.running.cluster.connect).
    ``fit_progress`` is the end-of-sweep fit's stage callback (``analyse``'s ``progress``).
    ``capacity`` is what the resources offer (default: this node's, ``local_capacity``); the
    sweep is refused (UserError) if a trial cannot fit or run in it, or the estimated time is
    beyond resources.max_hours and not ``allow_long``. ``announce`` gets the estimate's line.
    """
    factories = variant_factories(spec, cache_dir)
    factory = factories[BASELINE]
    static = plan_variants(factories) if spec.planner == "static" else []
    # Before anything is written and before Ray starts: an absurd spec fails here, in a second.
    est = estimate_sweep(spec, factory, static, capacity or local_capacity(spec))
    check(est, spec, allow_long)
    missing = spec.tracking.missing()
    if missing:
        raise UserError(missing)
    if announce:
        announce(est.summary())
    store = _open_for_writing(spec)
    if "://" in spec.sweep_dir:
        log.warning("no driver lock on object storage: do not run two drivers on %s at once", spec.sweep_dir)
        return _run(spec, store, factories, static, executor_factory, sink, write_report, fit_progress)
    with DriverLock(spec.sweep_dir):
        return _run(spec, store, factories, static, executor_factory, sink, write_report, fit_progress)


def _planner(spec: SweepSpec, factory: TrialFactory, static: list, store: ResultStore, k: int,
             finished: dict[str, dict]) -> Planner:
    """The planner of one variant (``factory.variant``; ``k`` variants in all); ``finished``:
    the store's finished rows by trial id."""
    variant = factory.variant
    if spec.planner == "adaptive":
        from orchestrator.planning.adaptive import AdaptivePlanner

        journal = os.path.join(store.root, journal_name(variant, PLANNER_JOURNAL))
        planner = AdaptivePlanner(adaptive_share(variant, k), factory, journal)
    elif variant.spec.tuned:  # searches replay from the store: every point is proposed, the driver skips what is done
        planner = StaticPlanner(static)
    else:
        planner = StaticPlanner([t for t in static if t.trial_id not in finished])
    if variant.spec.tuned:
        from orchestrator.planning.tuning import TuningPlanner

        planner = TuningPlanner(planner, factory, variant.spec, store, finished)
    return planner


def _run(spec, store, factories, static, executor_factory, sink, write_report, fit_progress) -> SweepOutcome:
    # What is stored is read, and the planners opened, before anything is written: a damaged
    # trials file or planner journal is refused (UserError) with the directory as it was.
    try:
        finished = finished_rows(store)
    except StoreError as e:
        raise UserError(str(e)) from None
    planners = {name: _planner(spec, f, [t for t in static if t.variant == name], store, len(factories), finished)
                for name, f in factories.items()}
    _record_spec(spec, store, static)
    planner = planners[BASELINE] if len(planners) == 1 else VariantPlanner(planners)
    reuses = any(f.spec.train.reuses for f in factories.values())
    tuned = any(f.spec.tuned for f in factories.values())
    trained = failed = diverged = skipped = 0
    if not planner.finished():
        r = spec.resources
        # Ray starts at the first trial that must train: a finished tuned sweep replays its
        # searches from the store without it.
        make = executor_factory or (lambda: RayExecutor(r.cpus, r.gpus, r.max_retries, ledger=r.multi_rank))
        trackers = None
        if spec.tracking.active:  # live curves (orchestrator.running.tracking): the hub starts with Ray
            from orchestrator.running.tracking import TrackerSink

            trackers = TrackerSink(spec)
            make = _then(make, trackers.start)
        executor = OnDemandExecutor(make)
        if reuses:  # wsd: points become stem segments and cooldown branches
            from orchestrator.running.reuse import ReuseExecutor

            executor = ReuseExecutor(executor, store, any(f.spec.train.keep_stems for f in factories.values()))
        driver = Driver(planner, store, executor, FanOut(sink, trackers) if trackers else sink, finished=finished)
        try:
            driver.run()
        finally:
            if trackers is not None:
                trackers.close()
        if reuses:
            executor.close(complete=planner.finished())
        if executor.started:
            store.compact_if_large()  # nothing runs now; queries of large sweeps read 2 files, not 20,000
        p = driver.progress
        trained, failed, diverged, skipped = p.done, p.failed, p.diverged, p.skipped
    if spec.planner == "static" and not tuned:
        skipped = len(static) - trained
    # A static sweep's rows: its planned trials, or (tuned) every trial of its planned points.
    ids = {t.trial_id for t in static} | {t.point_id for t in static} if spec.planner == "static" else None
    out = finish(spec, store, ids, write_report, fit_progress)
    out.trained, out.skipped, out.failed, out.diverged = trained, skipped, failed, diverged
    out.stop_reason = planner.stopped
    out.recipe = planner.summary() if tuned else ""
    return out


def _then(make, after):
    """``make`` (an executor factory), then ``after()`` once it has returned (Ray is up by then)."""
    def both():
        executor = make()
        after()
        return executor
    return both


def finish(spec: SweepSpec, store: ResultStore, trial_ids: set[str] | None, write_report: bool = True,
           fit_progress=None) -> SweepOutcome:
    """Fit (and report) the sweep's trials: ``trial_ids``, or every trial in the store."""
    from orchestrator.results import account_reuse, label_variants, plan_record, point_rows

    every = label_variants(store.read_table("trials").to_pandas(), plan_record(store))
    table = point_rows(every)
    stems = every.drop(table.index)  # before the filter: points of other specs run here are not stems
    if trial_ids is not None:  # trial ids, or point ids (every trial of a point's search)
        table = table[table["trial_id"].isin(trial_ids) | table["point_id"].isin(trial_ids)]
    fit, fit_error, report, variants = None, "", [], None
    from orchestrator.fitting.hparams.tuned import analyse_trials  # a tuned sweep: fits its per-point optima
    from orchestrator.fitting.variants import fit_variants

    fit_kw = dict(isoflop=spec.planner != "adaptive", progress=fit_progress, form=spec.fit.law_form(), compare=True,
                  objective=spec.tune.objective)
    try:  # with variants: each fitted, and compared with the baseline (whose fit is ``fit``)
        fit, variants = fit_variants(table, spec.fit.target_compute, fit_one=analyse_trials, **fit_kw)
    except (FitError, UserError) as e:
        fit_error = str(e)
    # wsd with reuse: the stems' FLOPs were spent too
    reuse = account_reuse(fit, table, stems)
    downstream = None
    if fit is not None:  # task evaluations: accuracy at the target, in two steps
        from orchestrator.report.downstream import downstream_for

        downstream = downstream_for(store, fit)
    from orchestrator.results.cost import store_cost

    cost = store_cost(store, fit, spec.sweep_dir)
    if fit is not None and write_report:
        from orchestrator.report.page import write_report as _write  # matplotlib import only when needed

        report = _write(store, table, fit, spec.name, variants, downstream, cost)
    return SweepOutcome(len(table), 0, 0, 0, 0, fit, fit_error, report, spec.sweep_dir, reuse=reuse, variants=variants,
                        downstream=downstream, cost=cost)
