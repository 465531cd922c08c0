"""``scalesweep hparams RUNS_OR_FILE``: the hyperparameter laws of any table of runs.

A results directory, or a CSV/Parquet file whose columns the options name. Of a results directory
only the design points' rows are read, variants named as its plan names them, as ``fit`` reads
them (orchestrator.results.runs.results_runs): a wsd sweep's stem segments are not trials of a
point. One variant is fitted at a time (the baseline, or ``--variant``): another architecture
has laws of its own, and pooled its optima would move the baseline's recommendation. Runs are
grouped into design points by ``point_id`` where the table has one, else by distinct (N, D);
every run is one trial at one (lr, batch). The command is registered by orchestrator.cli (``add_parser``)
and, like every command, reads argv only through it; errors are UserError or FitError, one line.
"""

from __future__ import annotations

import argparse

from workers.config import BASELINE  # a constant module: no pandas

__all__ = ["add_parser", "cmd_hparams", "load_hparam_runs"]

DEFAULTS = {"n": "n_params_nonembed", "n_total": "n_params", "d": "tokens", "lr": "lr", "batch": "batch_tokens",
            "loss": "eval_loss"}
OPTION = {"n": "--n-col", "n_total": "--n-col", "d": "--d-col", "lr": "--lr-col", "batch": "--batch-col",
          "loss": "--loss-col"}
WHAT = {"n": "a parameter count", "n_total": "a parameter count", "d": "a number of tokens", "lr": "a learning rate",
        "batch": "a batch size", "loss": "a loss"}
HELP = {"n": "parameter counts N", "d": "training tokens D", "lr": "learning rates", "batch": "batch sizes (tokens)",
        "loss": "final losses (NaN: diverged)"}


def _positive(what: str):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} such as 1e9, got {s!r}") from None
        if not 0 < v < float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {s!r}")
        return v
    return parse


def add_parser(sub, compute_type, count_type) -> None:
    """Register ``hparams`` on the command line's subparsers (``compute_type``, ``count_type``:
    the CLI's parsers of --compute and of whole numbers >= 0, as ``fit`` reads them)."""
    h = sub.add_parser("hparams", help="fit the learning-rate and batch-size laws lr*(N, D), B*(N, D) to runs",
                       description="Fit lr*(N, D) = coef N^n_exp D^d_exp (and B*(N, D) where points tried several "
                                   "batch sizes) to the optima of each design point of a sweep's results or of any "
                                   "CSV/Parquet table of runs, with bootstrap intervals; recommend both at a point "
                                   "(--at-n/--at-d) or at the compute-optimal point of --compute.")
    h.add_argument("results", metavar="RUNS_OR_FILE", help="sweep results directory or a .csv/.parquet file of runs")
    for key, default in (("n", "n_params_nonembed, else n_params"), ("d", "tokens"), ("lr", "lr"),
                         ("batch", "batch_tokens, if present"), ("loss", "eval_loss")):
        h.add_argument(OPTION[key], dest=f"{key}_col", metavar="COLUMN",
                       help=f"column of {HELP[key]} (default: {default})")
    h.add_argument("--variant", metavar="NAME",
                   help=f"the variant whose runs are fitted (default: {BASELINE}, or the table's only variant)")
    h.add_argument("--variant-col", metavar="COLUMN",
                   help="column naming each run's variant (default: variant, where the table has one)")
    h.add_argument("--at-n", type=_positive("a parameter count"), metavar="N",
                   help="recommend at this N (counted as the laws count it: --n-col's, non-embedding for a sweep)")
    h.add_argument("--at-d", type=_positive("a number of tokens"), metavar="D", help="... and this many tokens")
    h.add_argument("--compute", type=compute_type,
                   help="recommend at N_opt and D_opt of this compute (the Chinchilla law fitted to the points' "
                        "optimal losses)")
    h.add_argument("--json", action="store_true", help="machine-readable output")
    h.add_argument("--bootstrap", type=count_type, default=1000, metavar="B",
                   help="bootstrap draws for the intervals (default 1000; 0: none, no intervals)")
    h.add_argument("--seed", type=count_type, default=0, help="seed of the bootstrap, a whole number >= 0 (default 0)")
    h.set_defaults(fn=cmd_hparams)


def _column(df, key: str, named: str | None, source: str, required: bool):
    import pandas as pd

    from orchestrator.errors import UserError

    name = named or DEFAULTS[key]
    if name not in df.columns:
        if named or required:
            how = f"{OPTION[key]} {named!r}: no such column in {source}" if named else \
                f"{source}: no column {name!r}; name it with {OPTION[key]}"
            raise UserError(f"{how} (columns: {', '.join(map(str, df.columns))})")
        return None
    values = pd.to_numeric(df[name], errors="coerce").astype(float)
    if len(values) and values.isna().all():
        raise UserError(f"{OPTION[key]} {name!r} in {source} is not numeric (first value {df[name].iloc[0]!r})")
    return values


def _check_positive(values, key: str, name: str, source: str, rows, allow_nan: bool = False) -> None:
    """One line naming the first row whose value is not a finite number > 0."""
    import numpy as np

    from orchestrator.errors import UserError

    v = values.to_numpy(float)
    bad = rows & (~np.isfinite(v) | (v <= 0))
    if allow_nan:
        bad &= ~np.isnan(v) & ~np.isinf(v)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{OPTION[key]} {name!r} in {source}: row {i} has {float(v[i]):g} (expected {WHAT[key]} > 0; "
                        f"{int(bad.sum())} such rows)")


def _one_variant(df, args, source: str) -> tuple:
    """(the rows of the variant to fit, its name, the other variants' names); (df, None, [])
    for a table that names no variants. UserError for a --variant the table does not have."""
    from orchestrator.errors import UserError
    from orchestrator.results.runs import ColumnMap, variant_column

    labels = variant_column(df, ColumnMap(variant=args.variant_col), source)
    if labels is None:
        if args.variant is not None:
            raise UserError(f"--variant {args.variant!r}: the runs have no variant column (name it with --variant-col)")
        return df, None, []
    names = list(dict.fromkeys(labels))
    name = args.variant or (names[0] if len(names) == 1 else BASELINE)
    if name not in names:
        asked = f"--variant {name!r}" if args.variant else f"the baseline {name!r} (the default of --variant)"
        raise UserError(f"{asked}: no runs of that variant in {source} (variants: {', '.join(map(repr, names))})")
    return df[(labels == name).to_numpy()], name, [v for v in names if v != name]


def load_hparam_runs(path: str, args) -> tuple:
    """(runs as orchestrator.fitting.hparams.optima.RUN_COLUMNS, the laws' N kind, the variant
    fitted (None: the table names none), the other variants)."""
    import numpy as np
    import pandas as pd

    from orchestrator.fitting.hparams.optima import with_points
    from orchestrator.results.runs import _is_file, _read_file, results_runs
    from workers.store import TrialStatus

    if _is_file(path, "runs, or a results directory"):
        df = _read_file(path)
    else:
        from orchestrator.results import open_results

        df = results_runs(open_results(path), path).table  # design points only, variants as the plan names them
    df, variant, others = _one_variant(df, args, path)
    df = df.reset_index(drop=True)
    col = lambda key, req=True: _column(df, key, getattr(args, f"{key}_col", None), path, req)  # noqa: E731
    if args.n_col:
        n = n_total = col("n")
        n_kind = f"column {args.n_col!r}"
    else:
        n_total = _column(df, "n_total", None, path, False)
        nonembed = pd.to_numeric(df["n_params_nonembed"], errors="coerce").astype(float) \
            if "n_params_nonembed" in df else None  # null for simulated trials: n_params then
        if nonembed is not None and not (nonembed > 0).any():
            nonembed = None
        if n_total is None and nonembed is None:
            _column(df, "n_total", None, path, True)  # raises, naming --n-col
        n_total = nonembed if n_total is None else n_total
        n = nonembed.where(nonembed > 0, n_total) if nonembed is not None else n_total
        n_kind = "nonembed" if nonembed is not None else "total"
    d, lr, loss = col("d"), col("lr"), col("loss")
    batch = col("batch", False) if not args.batch_col else col("batch")
    status = df["status"].astype(str) if "status" in df else None
    if status is None or not set(status) <= {s.value for s in TrialStatus}:
        status = pd.Series(TrialStatus.COMPLETED.value, index=df.index)
    rows = status.isin([s.value for s in TrialStatus if s.is_finished()]).to_numpy()
    if not rows.any():
        from orchestrator.errors import UserError

        raise UserError(f"{path}: no finished runs (completed or diverged) to fit")
    for key, v in (("n", n), ("d", d), ("lr", lr)) + ((("batch", batch),) if batch is not None else ()):
        _check_positive(v, key, getattr(args, f"{key}_col", None) or DEFAULTS[key], path, rows)
    _check_positive(loss, "loss", args.loss_col or DEFAULTS["loss"], path, rows, allow_nan=True)
    runs = pd.DataFrame({
        "point": df["point_id"] if "point_id" in df else None,
        "name": df["name"].astype(str) if "name" in df else [f"row {i}" for i in range(len(df))],
        "n": n, "n_total": n_total, "d": d, "lr": lr, "batch": batch if batch is not None else np.nan,
        "loss": loss.where(np.isfinite(loss)), "status": status,
        "budget": pd.to_numeric(df["budget"], errors="coerce").fillna(0.0) if "budget" in df else 0.0,
    })[rows].reset_index(drop=True)
    return with_points(runs), n_kind, variant, others


def cmd_hparams(args) -> int:
    import json

    from orchestrator.errors import FitError, UserError
    from orchestrator.fitting.hparams.optima import point_optima
    from orchestrator.fitting.hparams.tuned import fit_hparams
    from orchestrator.report.text import hparam_lines, hparams_json, n_words

    if (args.at_n is None) != (args.at_d is None):
        raise UserError("--at-n and --at-d: give both (the point's N and D), or neither")
    if args.at_n is not None and args.compute is not None:
        raise UserError("--at-n/--at-d and --compute: give one point to recommend at, not two")
    runs, n_kind, variant, others = load_hparam_runs(args.results, args)
    points = point_optima(runs)
    h = fit_hparams(points, runs, n_boot=args.bootstrap, seed=args.seed, n_kind=n_kind, require=True)
    if h.lr_law is None and h.batch_law is None:
        raise FitError(f"{args.results}: no design point tried two or more learning rates or batch sizes "
                       f"(learning rate {h.lr_fixed.removeprefix('not tuned: ')}): there is no optimum to fit a law to")
    if args.at_n is not None:
        h.recommend_at(args.at_n, args.at_d)
    elif args.compute is not None:
        _recommend_at_compute(h, points, args)
    if args.json:
        print(json.dumps(hparams_json(h) | {"variant": variant, "other_variants": others, "design_points": len(points),
                                            "runs": len(runs)}, indent=1))
    else:
        which = f"variant {variant}: " if variant is not None else ""
        rest = f"; other variants: {', '.join(others)} (--variant)" if others else ""
        print("\n".join(hparam_lines(h, head=f"Hyperparameter laws of {args.results} ({which}{len(points)} design "
                                             f"points, {len(runs)} runs; N: {n_words(n_kind)}; D: tokens{rest}):")))
    return 0


def _recommend_at_compute(h, points, args) -> None:
    """The Chinchilla law through the points' optimal losses, and the recommendation at its
    N_opt(C), D_opt(C) (the laws' N mapped from the total where the two counts differ)."""
    from orchestrator.errors import FitError
    from orchestrator.fitting.analysis import analyse
    from orchestrator.fitting.hparams.tuned import optima_table, recommend_at_target

    try:
        fit = analyse(optima_table(points), args.compute, n_boot=args.bootstrap, seed=args.seed, extrapolation=False)
    except FitError as e:
        raise FitError(f"--compute: the law through the points' optimal losses cannot be fitted: {e}") from None
    recommend_at_target(h, fit)
    h.notes.append(f"N_opt and D_opt from the Chinchilla law fitted to the {fit.law.n_points} points' optimal losses "
                   f"(L = {fit.approach3.params.E:.4g} + {fit.approach3.params.A:.4g}/N^{fit.approach3.params.alpha:.4f} "
                   f"+ {fit.approach3.params.B:.4g}/D^{fit.approach3.params.beta:.4f})")
