"""``scalesweep``: the command line. The only module that reads argv and the user's environment
variables (orchestrator.running.cluster writes Ray's own configuration variables, which Ray
reads from the environment only, before it imports Ray).

Exit status: 0 on success, 2 on bad input (one line on stderr, no traceback), 130 on Ctrl-C
and 143 on SIGTERM (what Kubernetes sends a RayJob's driver pod and ``ray job stop`` sends),
both with the command that resumes, 141 when the reader of a pipe goes away (``| head``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time

from orchestrator.errors import FitError, UserError

log = logging.getLogger("scalesweep")


class FitBar:
    """A progress bar over the fit's stages (a 10,000-run fit takes seconds), on a terminal
    only, so piped and --json output stay clean. Pass the instance as ``analyse``'s
    ``progress``; the bar starts at the first stage (after any sweep bar has finished)."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = self.task = None

    def __call__(self, stage: str) -> None:
        if not self.console.is_terminal:
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            from orchestrator.fitting.analysis import FIT_STAGES

            self.bar = Progress(SpinnerColumn(), TextColumn("fit: {task.description}"), BarColumn(),
                                TimeElapsedColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(stage, total=len(FIT_STAGES))
        else:
            self.bar.advance(self.task)
        self.bar.update(self.task, description=stage, refresh=True)

    def __enter__(self) -> "FitBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class ConsoleSink:
    """Progress for the terminal: a rich bar on a TTY, one line per finished trial otherwise."""

    def __init__(self):
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        self.task = None

    def update(self, p, completion) -> None:
        from orchestrator.report.text import duration, si

        desc = (f"trials {p.done}/{p.total} ({p.running} running, {p.queued} queued, {p.failed} failed, {p.diverged} diverged) "
                f"FLOPs {si(p.flops_done)}/{si(p.total_flops)} left ~{duration(p.seconds_left)}")
        if self.console.is_terminal:
            if self.bar is None:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                                    console=self.console, transient=False)
                self.bar.start()
                self.task = self.bar.add_task(desc, total=max(1.0, p.total_flops))
            self.bar.update(self.task, completed=p.flops_done, description=desc)
            if p.done == p.total:
                self.bar.stop()
        elif completion is not None:
            r = completion.result
            what = f"{r.status.value} loss={r.eval_loss:.4f}" if r else f"lost: {completion.error}"
            print(f"[{p.done}/{p.total}] {completion.trial.name}: {what} ({desc})", file=sys.stderr, flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the driver is so that it stops as on Ctrl-C: finished trials are
    already committed, and the resume skips them."""


_terminated = threading.Event()  # set by the SIGTERM handler: the exit status must not depend on
# which frame the exception surfaces in (Ray's blocking calls may re-raise it as a plain
# KeyboardInterrupt)


def _raise_terminated(signum, frame):
    _terminated.set()
    raise Terminated()


def _on_sigterm_stop() -> None:
    # Ray's init installs its own SIGTERM handler in the driver (it exits with a C++ stack
    # dump), so this is installed again once Ray is up.
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextlib.contextmanager
def _sigterm_stops():
    """SIGTERM raises Terminated inside, and the process's own handler is back after: a
    notebook or test that calls main() in-process keeps its SIGTERM behaviour."""
    before = signal.getsignal(signal.SIGTERM)
    _terminated.clear()
    _on_sigterm_stop()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


_ARGV: list[str] = []  # main()'s arguments, for the resume hint


def _command_line() -> str:
    """The command as the user gave it, to resume with: every option they passed included."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "scalesweep"
    prog = ["python", "-m", "orchestrator.cli"] if argv0 in ("cli.py", "__main__.py", "-m", "-c") else [argv0]
    return shlex.join(prog + list(_ARGV))


def _with_results(spec, args):
    """The spec with the command line's --results and --results-shared, which override its own."""
    update = {"results": args.results} if args.results else {}
    if args.results_shared:
        update["results_shared"] = True
    return spec.model_copy(update=update) if update else spec


def cmd_run(args) -> int:
    from orchestrator.report.text import format_fit, variants_text
    from orchestrator.running.cluster import check_results_reach_every_node, connect
    from orchestrator.planning.estimate import cluster_capacity, local_capacity
    from orchestrator.running.metrics import FanOut
    from orchestrator.spec import load_spec
    from orchestrator.sweep import run_sweep

    spec = _with_results(load_spec(args.spec), args)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    auth = os.environ.get("RAY_AUTH_MODE") or "token"
    cache = os.environ.get("SCALESWEEP_CACHE", "")

    sink = FanOut(ConsoleSink())

    def executor():
        from orchestrator.running.executor import RayExecutor
        from orchestrator.running.metrics import RayMetricsSink

        t0 = time.monotonic()
        print(f"Starting {connect(address, auth, args.num_cpus, not args.no_dashboard)} "
              f"in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        _on_sigterm_stop()
        if address:
            check_results_reach_every_node(spec.results, spec.results_shared, address)
        sink.sinks.append(RayMetricsSink(spec.name))  # Ray is up now: its metrics API works
        r = spec.resources
        return RayExecutor(r.cpus, r.gpus, r.max_retries, ledger=r.multi_rank)

    # Before Ray starts, the estimate knows this node only when the sweep runs on it.
    capacity = cluster_capacity(spec) if address else local_capacity(spec, args.num_cpus)
    t0 = time.monotonic()
    try:
        with _sigterm_stops(), FitBar() as fit_bar:
            out = run_sweep(spec, executor_factory=executor, sink=sink, cache_dir=cache, fit_progress=fit_bar,
                            capacity=capacity, allow_long=args.allow_long,
                            announce=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt as e:
        what, code = ("Terminated (SIGTERM)", 143) if isinstance(e, Terminated) or _terminated.is_set() \
            else ("Interrupted", 130)
        print(f"\n{what}. Finished trials are saved; resume with: {_command_line()}", file=sys.stderr)
        return code
    print(f"Sweep {spec.name}: {out.n_trials} trials, {out.trained} trained now, {out.skipped} already finished, "
          f"{out.failed} failed, {out.diverged} diverged ({time.monotonic() - t0:.0f}s)")
    if out.stop_reason:
        print(f"Adaptive planner stopped: {out.stop_reason}")
    if out.recipe:
        print(out.recipe)
    if out.reuse:
        print(out.reuse)
    if out.fit:
        print(format_fit(out.fit) if out.variants is None else variants_text(out.variants))
        if out.downstream is not None:
            from orchestrator.report.downstream import lines

            print("\n".join(lines(out.downstream)))
    else:
        print(f"No fit: {out.fit_error}")
    if out.cost is not None:
        from orchestrator.results.cost import cost_lines

        print("\n".join(cost_lines(out.cost)))
    for path in out.report:
        if path.endswith(".html"):
            print(f"Report: {path}")
    where = out.results if "://" in out.results else os.path.abspath(out.results)
    print(f"Results: {where}  (scalesweep status|query|fit|report {where})")
    return 0


def _jobs_address(args) -> str:
    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise UserError("--address: expected the cluster's dashboard URL, e.g. http://127.0.0.1:8265 "
                        "(or set RAY_ADDRESS)")
    # Ray's SDK sends the token itself once the mode says token (read at import).
    os.environ["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE") or "token"
    return address


def cmd_submit(args) -> int:
    from orchestrator.planning.estimate import check_submission
    from orchestrator.running.jobs import check_submitted_results, submit, wait_job
    from orchestrator.spec import load_spec

    spec = _with_results(load_spec(args.spec), args)  # a bad spec never reaches the cluster ...
    # ... nor an absurd one: the estimate's FLOPs/time check, and memory only against a stated
    # resources.memory_gb (the cluster's nodes are unknown from here; orchestrator.planning.estimate) ...
    print(check_submission(spec, os.environ.get("SCALESWEEP_CACHE", ""), args.allow_long), file=sys.stderr)
    check_submitted_results(spec.results, spec.results_shared)  # ... nor one whose results it would lose
    address = _jobs_address(args)
    extra = (["--results-shared"] if args.results_shared else []) + (["--allow-long"] if args.allow_long else [])
    trackers = tuple(k for k, on in (("tensorboard", spec.tracking.tensorboard), ("wandb", spec.tracking.wandb)) if on)
    job_id = submit(address, args.spec, args.results, pip=not args.no_pip, extra_args=extra, extras=trackers)
    print(f"Submitted job {job_id}")
    print(f"Results (written by the job): {spec.sweep_dir}")
    print(f"Dashboard: {address.rstrip('/')}/#/jobs/{job_id}")
    print(f"Follow: scalesweep logs {job_id} --address {address}   Stop: scalesweep stop {job_id} --address {address}")
    if not args.wait:
        return 0
    status = wait_job(address, job_id, on_output=lambda text: print(text, end="", flush=True))
    print(f"Job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_jobs(args) -> int:
    from orchestrator.running.jobs import list_jobs

    for j in sorted(list_jobs(_jobs_address(args)), key=lambda j: j.start_time or 0):
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime((j.start_time or 0) / 1000))
        print(f"{j.submission_id}  {j.status.value:<9}  {started}  {(j.metadata or {}).get('spec', '')}")
    return 0


def cmd_logs(args) -> int:
    from orchestrator.running.jobs import job_logs, wait_job

    address = _jobs_address(args)
    if args.follow:
        status = wait_job(address, args.job_id, on_output=lambda text: print(text, end="", flush=True))
        print(f"Job {args.job_id}: {status}")
    else:
        print(job_logs(address, args.job_id), end="")
    return 0


def cmd_stop(args) -> int:
    from orchestrator.running.jobs import stop_job

    stopped = stop_job(_jobs_address(args), args.job_id)
    print(f"Job {args.job_id}: {'stop requested' if stopped else 'already finished'}")
    return 0


def cmd_status(args) -> int:
    from orchestrator.results.status import cmd_status as status

    return status(args)


def cmd_query(args) -> int:
    from orchestrator.results.sql import cmd_query as run  # DuckDB and pandas only for this command

    return run(args)


def _target(args, runs) -> float | None:
    """The user's target compute, else the sweep's; None lets ``analyse`` choose (10x the
    largest run it uses, so an excluded run with D = inf never sets it)."""
    if args.compute is not None:
        return args.compute
    return runs.target_compute


def _target_line(fit) -> str:
    if not fit.target_source or not fit.law.form.has_optimum:
        return ""
    return f"Target compute {fit.target['compute']:.3g} FLOPs ({fit.target_source}; set it with --compute)"


def _form(args, runs=None):
    """--form/--param as a law form, or "auto"; without --form, the sweep's fit.form (its
    plan.json), else Chinchilla's."""
    from orchestrator.fitting.forms import resolve_form

    name, params = args.form, args.param or ()
    if name is None:
        name = (runs.form if runs is not None else None) or "chinchilla"
        params = params or (runs.form_params if runs is not None and runs.form else ())
    if name == "auto":
        if params:
            raise UserError("--param applies to a custom --form expression, not to --form auto")
        return "auto"
    return resolve_form(name, params)


def cmd_fit(args) -> int:
    from orchestrator.fitting.variants import fit_variants
    from orchestrator.fitting.forms.predict import predict_points
    from orchestrator.fitting.hparams.tuned import analyse_trials
    from orchestrator.results.runs import ColumnMap, load_points, load_runs
    from orchestrator.report.text import fit_json, format_fit, prediction_lines, variants_text
    from orchestrator.results import account_reuse

    asked = _form(args) if args.form is not None else None
    cols = ColumnMap(n=args.n_col, d=args.d_col, c=args.c_col, loss=args.loss_col, budget=args.budget_col,
                     name=args.name_col, u=args.u_col, variant=args.variant_col)
    # auto on a table without D: the forms of N alone
    need_d = asked is None or (asked != "auto" and "D" in asked.inputs)
    runs = load_runs(args.results, cols, need_d=need_d)
    form = asked if asked is not None else _form(args, runs)
    points = load_points(args.predict, cols) if args.predict else None
    with FitBar() as progress:
        fit, variants = fit_variants(runs.table, _target(args, runs), baseline=args.baseline,
                                     always=args.variant_col is not None, fit_one=analyse_trials, n_boot=args.bootstrap,
                                     seed=args.seed, drop_highest=args.drop_highest, isoflop=runs.isoflop,
                                     progress=progress, form=form, compare=True, objective=runs.objective)
    reuse = account_reuse(fit, runs.table, runs.stems)
    predictions = predict_points(fit, _point_inputs(points, fit.form)) if points is not None else None
    tasks = _downstream(args, fit)
    from orchestrator.results.cost import cost_lines, results_cost

    cost = results_cost(args.results, fit)
    if args.json:
        out = fit_json(fit)
        if cost is not None:
            out["cost"] = cost
        if tasks is not None:
            from orchestrator.report.downstream import to_json

            out["downstream"] = to_json(tasks)
        if variants is not None:
            comparison = variants.to_json()
            out |= {"baseline": comparison["baseline"], "variants": comparison["variants"],
                    "comparison": comparison["comparison"], "variant_notes": comparison["notes"]}
        if predictions is not None:
            out["predictions"] = predictions
        print(json.dumps(out, indent=1, default=float))
    else:
        if _target_line(fit):
            print(_target_line(fit))
        print(format_fit(fit) if variants is None else variants_text(variants))
        if reuse:
            print(reuse)
        if predictions is not None:
            print("\n".join(prediction_lines(predictions, fit.form.name, resampled=fit.bootstrap is not None)))
        if tasks is not None:
            from orchestrator.report.downstream import lines

            print("\n".join(lines(tasks)))
        if cost is not None:
            print("\n".join(cost_lines(cost)))
    return 0


def _downstream(args, fit):
    """A results directory with task evaluations: their two-step predictions at the fit's target."""
    from orchestrator.results.runs import FILE_SUFFIXES
    from orchestrator.results import open_results
    from orchestrator.report.downstream import downstream_for

    if args.results.lower().endswith(FILE_SUFFIXES) or os.path.isfile(args.results):
        return None
    return downstream_for(open_results(args.results), fit, n_boot=args.bootstrap, seed=args.seed)


def _point_inputs(points, form) -> dict:
    missing = [k for k in form.inputs if k not in points]
    if missing:
        raise UserError(f"--predict: the {form.name} form needs {', '.join(missing)} for each point; the file has "
                        f"{', '.join(points) or 'none of N, D, U'}")
    return {k: v for k, v in points.items() if k in form.inputs}


def cmd_report(args) -> int:
    from orchestrator.fitting.variants import fit_variants
    from orchestrator.fitting.hparams.tuned import analyse_trials
    from orchestrator.report.page import write_report
    from orchestrator.results import account_reuse, open_results
    from orchestrator.results.runs import results_runs

    store = open_results(args.results)
    runs = results_runs(store, args.results)
    trials = runs.table
    with FitBar() as progress:
        fit, variants = fit_variants(trials, _target(args, runs), fit_one=analyse_trials, isoflop=runs.isoflop,
                                     progress=progress, form=_form(args, runs), compare=True, objective=runs.objective)
    account_reuse(fit, trials, runs.stems)
    if _target_line(fit):
        print(_target_line(fit), file=sys.stderr)
    from orchestrator.report.downstream import downstream_for

    tasks = downstream_for(store, fit)
    from orchestrator.results.cost import results_cost

    cost = results_cost(args.results, fit)
    for path in write_report(store, trials, fit, os.path.basename(args.results.rstrip("/")), variants, tasks, cost):
        print(path)
    return 0


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of FLOPs such as 1e21, got {s!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of FLOPs, got {s!r}")
    return v


def _non_negative_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 5, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {s!r}")
    return v


SHARED_HELP = ("the results directory is mounted at the same path on every node (NFS, a Kubernetes volume); "
               "overrides the spec's results_shared")


def _form_options(p) -> None:
    from orchestrator.fitting.forms import FORMS

    p.add_argument("--form", default=None, metavar="FORM",
                   help=f"law form: {', '.join(FORMS)}; auto (the best extrapolator of those the runs allow); or an "
                        "expression in N, D and U, e.g. \"E + A/N**alpha + B/D**beta + G/(N**alpha * D**beta)\" "
                        "(default: a sweep's fit.form, else chinchilla)")
    p.add_argument("--param", action="append", metavar="NAME=INIT:LO:HI",
                   help="initial value and bounds of a custom form's parameter (repeat per parameter; E, A, B, alpha "
                        "and beta have defaults)")


def _fit_parser(sub) -> None:
    from workers.config import BASELINE

    f = sub.add_parser("fit", help="fit a scaling law (default L = E + A/N^alpha + B/D^beta) with intervals, "
                                   "compare forms, predict",
                       description="Fit the scaling law (Approaches 3, 2 and 1) with bootstrap intervals, an "
                                   "extrapolation check and misspecification flags, to a sweep's results or to any "
                                   "CSV/Parquet table of runs (name its columns with the --*-col options). With 3 or "
                                   "more budgets the built-in law forms are compared by how well they extrapolate.")
    f.add_argument("results", metavar="RESULTS_OR_FILE",
                   help="sweep results directory (results/<sweep>) or a .csv/.parquet file of runs")
    f.add_argument("--compute", type=_positive_float,
                   help="target compute in FLOPs (default: the spec's; for a file, 10x its largest run)")
    f.add_argument("--json", action="store_true", help="machine-readable output")
    f.add_argument("--n-col", metavar="COLUMN", help="column of parameter counts N (default: n_params)")
    f.add_argument("--d-col", metavar="COLUMN", help="column of training tokens D (default: tokens, else C/6N)")
    f.add_argument("--c-col", metavar="COLUMN", help="column of training FLOPs C (default: flops, else 6ND)")
    f.add_argument("--loss-col", metavar="COLUMN", help="column of final losses (default: eval_loss)")
    f.add_argument("--budget-col", metavar="COLUMN",
                   help="column of IsoFLOP budgets (default: budget; else runs with C within 3%% are grouped)")
    f.add_argument("--name-col", metavar="COLUMN", help="column naming each run (default: name)")
    f.add_argument("--drop-highest", type=_non_negative_int, default=0, metavar="K",
                   help="leave out the K highest losses (Besiroglu et al. 2024 drop 5 of Chinchilla's)")
    f.add_argument("--bootstrap", type=_non_negative_int, default=1000, metavar="B",
                   help="bootstrap resamples of the runs for the intervals (default 1000; 0: none, no intervals)")
    f.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the bootstrap resampling, a whole number >= 0 (default 0)")
    _form_options(f)
    f.add_argument("--u-col", metavar="COLUMN",
                   help="column of unique tokens U, for --form data-constrained (default: unique_tokens)")
    f.add_argument("--variant-col", metavar="COLUMN",
                   help="column naming each run's variant (architecture, recipe, data): fit each variant and compare "
                        "it with the baseline by its compute multiplier (default: variant, when a sweep has variants)")
    f.add_argument("--baseline", metavar="NAME",
                   help=f"the variant the others are compared with (default: {BASELINE}); it must be in the variant "
                        "column")
    f.add_argument("--predict", metavar="POINTS",
                   help="CSV/Parquet file of points (N and D, or N and C; the same column options as the runs): "
                        "print the predicted loss at each with 80 %% and 95 %% predictive intervals")
    f.set_defaults(fn=cmd_fit)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scalesweep", description="Scaling-law sweeps on Ray: train, fit, report.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run (or resume) the sweep in a spec")
    r.add_argument("spec", help="sweep spec, e.g. specs/quickstart.yaml")
    r.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    r.add_argument("--results", help="override the spec's results location")
    r.add_argument("--results-shared", action="store_true", help=SHARED_HELP)
    r.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    r.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard locally")
    r.add_argument("--allow-long", action="store_true",
                   help="run even if the estimated time is beyond the spec's resources.max_hours")
    r.set_defaults(fn=cmd_run)

    sb = sub.add_parser("submit", help="submit a sweep to a Ray cluster as a Ray job")
    sb.add_argument("spec", help="sweep spec inside this project, e.g. specs/quickstart.yaml")
    sb.add_argument("--address", help="the cluster's dashboard URL, e.g. http://127.0.0.1:8265 (default: RAY_ADDRESS)")
    sb.add_argument("--results", help="where the job writes results, e.g. s3://bucket/sweeps (default: the spec's)")
    sb.add_argument("--results-shared", action="store_true", help=SHARED_HELP)
    sb.add_argument("--no-pip", action="store_true",
                    help="do not install the pinned requirements in the job (the cluster image has them)")
    sb.add_argument("--wait", action="store_true", help="follow the job's log until it ends; exit 1 if it failed")
    sb.add_argument("--allow-long", action="store_true",
                    help="submit (and run) even if the estimated time is beyond resources.max_hours")
    sb.set_defaults(fn=cmd_submit)
    for name, fn, helptext in (("jobs", cmd_jobs, "list scalesweep jobs on a cluster"),
                               ("logs", cmd_logs, "print (or --follow) a job's log"),
                               ("stop", cmd_stop, "stop a running job")):
        jp = sub.add_parser(name, help=helptext)
        if name != "jobs":
            jp.add_argument("job_id")
        if name == "logs":
            jp.add_argument("--follow", action="store_true", help="follow until the job ends")
        jp.add_argument("--address", help="the cluster's dashboard URL (default: RAY_ADDRESS)")
        jp.set_defaults(fn=fn)

    s = sub.add_parser("status", help="trial counts, FLOPs spent, best loss per budget, tasks finished trials lack")
    s.add_argument("--json", action="store_true", help="counts and FLOPs (flops_spent, flops_points) as JSON")
    s.add_argument("results", help="sweep results directory, e.g. results/quickstart")
    s.set_defaults(fn=cmd_status)

    q = sub.add_parser("query", help="SQL over the trials, steps and evals tables (DuckDB)")
    q.add_argument("results")
    q.add_argument("sql", help='e.g. "select budget, min(eval_loss) from trials group by budget"')
    q.add_argument("--format", choices=("table", "csv", "json"), default="table")
    q.add_argument("--timeout", metavar="SECONDS", help="stop the query after this many seconds (default 60)")
    q.add_argument("--memory-limit", metavar="SIZE",
                   help="stop the query when it holds more memory than this, the tables it reads included, e.g. "
                        "2GB or 512MB (default: 4GiB, or half the machine's memory where that is less)")
    q.set_defaults(fn=cmd_query)

    _fit_parser(sub)
    from orchestrator.fitting.hparams.command import add_parser as hparams_parser  # argparse only: no pandas

    hparams_parser(sub, _positive_float, _non_negative_int)
    from orchestrator.fitting.downstream.command import add_parser as downstream_parser; downstream_parser(sub, _positive_float, _non_negative_int)  # noqa: E702
    from orchestrator.results.cost.command import add_parser as cost_parser; cost_parser(sub, _positive_float, _non_negative_int)  # noqa: E702
    from orchestrator.spec.schema import add_parser as schema_parser; schema_parser(sub)  # noqa: E702

    rp = sub.add_parser("report", help="write PNG plots and an HTML report under RESULTS/report")
    rp.add_argument("results")
    rp.add_argument("--compute", type=_positive_float, help="target compute in FLOPs (default: the spec's)")
    _form_options(rp)
    rp.set_defaults(fn=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    _ARGV[:] = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from workers.store import StoreError

    try:
        code = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    # A FitError (the runs cannot support the fit) is the user's input too, and so is a
    # StoreError (a results file holding what no sweep writes, named).
    except (UserError, FitError, StoreError) as e:
        print(f"scalesweep: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`scalesweep query ... | head`): stop quietly, as Unix tools do.
        # stdout goes to /dev/null so that the interpreter's last flush does not raise again
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
