"""``scalesweep downstream TABLE_OR_RESULTS``: task accuracy predicted in two steps, with intervals.

Reads a long table of task evaluations (one row per run, checkpoint and task) or a sweep's
results directory (its completed design points joined with its ``evals`` table), fits every
task (orchestrator.fitting.downstream) and predicts each task's loss and accuracy at the points
of ``--predict`` and/or at the compute-optimal point of ``--compute``. The command is registered
by orchestrator.cli (``add_parser``) and, like every command, reads argv only through it; errors
are UserError or FitError, one line, exit status 2, nothing written.
"""

from __future__ import annotations

__all__ = ["add_parser", "cmd_downstream"]

COLUMN_HELP = {"run": "run names (default: run)", "n": "parameter counts N (default: n_params)",
               "d": "tokens D at the checkpoint, or the run's total (default: tokens)",
               "step": "checkpoint steps (default: step)", "task": "task names (default: task)",
               "task_loss": "task losses, bits per byte of the correct answer (default: task_bpb)",
               "acc": "accuracies, fractions or percent (default: acc)",
               "chance": "the task's chance accuracy (default: chance, if present; else the floor is fitted)",
               "n_items": "the task's number of items (default: n_items, if present)",
               "loss": "the language-model loss, for --compute on a table (default: eval_loss, if present)"}


def add_parser(sub, compute_type, count_type) -> None:
    """Register ``downstream`` on the command line's subparsers (``compute_type``, ``count_type``:
    the CLI's parsers of --compute and of whole numbers >= 0)."""
    p = sub.add_parser("downstream", help="predict task accuracy in two steps: (N, D) -> task loss -> accuracy",
                       description="Fit each task's loss as a law in N and D (final checkpoints) and its accuracy as "
                                   "a sigmoid of the task loss (all checkpoints), chain the two and predict both at "
                                   "any (N, D) with 80 % and 95 % intervals (Bhagia et al. 2024).")
    p.add_argument("results", metavar="TABLE_OR_RESULTS",
                   help="a .csv/.parquet table of task evaluations, or a sweep results directory with evals")
    for key, text in COLUMN_HELP.items():
        p.add_argument(f"--{key.replace('_', '-')}-col", dest=f"{key}_col", metavar="COLUMN", help=f"column of {text}")
    p.add_argument("--predict", metavar="POINTS",
                   help="CSV/Parquet of points to predict at: N and D columns (or N and compute C)")
    p.add_argument("--compute", type=compute_type,
                   help="predict at the compute-optimal N and D of this compute (the loss law of the runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--n-boot", type=count_type, default=1000, metavar="B",
                   help="bootstrap resamples of the runs (default 1000; 0: no intervals)")
    p.add_argument("--seed", type=count_type, default=0, help="seed of the bootstrap, a whole number >= 0 (default 0)")
    p.set_defaults(fn=cmd_downstream)


def _compute_point(data, compute: float) -> tuple[float, float, str]:
    """N_opt, D_opt at ``compute`` from the language-model loss law of the runs, and a label."""
    from orchestrator.errors import FitError, UserError
    from orchestrator.fitting.law import compute_optimal, fit_approach3

    lm = data.lm_runs
    if lm is None or not len(lm):
        raise UserError(f"--compute: {data.source} has no language-model loss to fit the compute-optimal point to "
                        "(name its column with --loss-col; a results directory uses its trials' eval_loss)")
    lm = lm[(lm["loss"] > 0) & (lm["n"] > 0) & (lm["d"] > 0)]
    try:
        p = fit_approach3(lm["n"].to_numpy(float), lm["d"].to_numpy(float), lm["loss"].to_numpy(float)).params
    except (FitError, ValueError) as e:
        raise FitError(f"--compute: the loss law of the runs cannot be fitted: {e}") from None
    opt = compute_optimal(p, compute)
    return opt["n_opt"], opt["d_opt"], f"C={compute:.3g}"


def cmd_downstream(args) -> int:
    import json

    import numpy as np

    from orchestrator.fitting.downstream.fit import fit_downstream, predict
    from orchestrator.fitting.downstream.table import Columns, load_points, load_table
    from orchestrator.fitting.downstream.text import describe, fit_json, prediction_lines

    cols = Columns(**{k: getattr(args, f"{k}_col") for k in COLUMN_HELP})
    data = load_table(args.results, cols)
    # Bad points and a --compute without a loss law fail before the (slower) fit.
    points = load_points(args.predict, cols) if args.predict else None
    n, d, labels = [], [], []
    if points is not None:
        n, d, labels = list(points["N"]), list(points["D"]), list(points["label"])
    if args.compute is not None:
        n_opt, d_opt, label = _compute_point(data, args.compute)
        n, d, labels = n + [n_opt], d + [d_opt], labels + [label]
    fit = fit_downstream(data, n_boot=args.n_boot, seed=args.seed)
    rows = predict(fit, np.array(n), np.array(d), labels) if n else []
    if args.json:
        print(json.dumps(fit_json(fit, rows), indent=1, allow_nan=False, default=_json_default))
    else:
        print("\n".join(describe(fit) + prediction_lines(rows, fit.acc_scale)))
    return 0


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")
