"""Runs to fit, from a sweep's results directory or from any CSV/Parquet table of runs.

``scalesweep fit`` fits published runs as readily as its own: a table needs a column for the
parameter count N, one for the loss, and one for tokens D or training compute C (C = 6ND
fills in the other). Columns are named by the user; an unknown name is a UserError listing
the columns there are. The result is a trials-shaped table (the columns of
workers.store.TRIALS_SCHEMA that the fit uses) so that ``analyse`` has one input format.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.errors import UserError
from workers.flops import tokens_for_budget, train_flops
from workers.store import TrialStatus

__all__ = ["Runs", "ColumnMap", "load_runs"]

FILE_SUFFIXES = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class ColumnMap:
    """Source column for each quantity; None means "the default, if the table has it"."""

    n: str | None = None
    d: str | None = None
    c: str | None = None
    loss: str | None = None
    budget: str | None = None
    name: str | None = None
    u: str | None = None  # unique tokens (the data-constrained form)
    variant: str | None = None  # which variant a run belongs to (orchestrator.fitting.variants)


DEFAULTS = ColumnMap(n="n_params", d="tokens", c="flops", loss="eval_loss", budget="budget", name="name",
                     u="unique_tokens", variant="variant")
OPTION = {"n": "--n-col", "d": "--d-col", "c": "--c-col", "loss": "--loss-col", "budget": "--budget-col",
          "name": "--name-col", "u": "--u-col", "variant": "--variant-col"}
LABELS = ("name", "variant")  # columns read as text, not numbers


@dataclass
class Runs:
    table: pd.DataFrame  # n_params, tokens, flops, budget, eval_loss, status, name, error
    source: str
    target_compute: float | None  # the sweep's, when the source is a results directory
    planner: str | None = None  # the sweep's planner ("static", "adaptive"), when known
    form: str | None = None  # the sweep's fit.form, when known
    form_params: tuple[str, ...] = ()  # and its fit.params
    objective: str = "parabola"  # the sweep's tune.objective: how a searched point's loss is taken
    # A wsd sweep's stem segments (never fitted; their FLOPs were spent: orchestrator.results.account_reuse)
    stems: pd.DataFrame | None = None

    @property
    def isoflop(self) -> bool:
        """Whether the runs can be taken as IsoFLOP sets (orchestrator.fitting.analysis.analyse): every
        source but an adaptive sweep, whose points per compute level are not chosen to bracket
        a minimum."""
        return self.planner != "adaptive"


def _read_file(path: str) -> pd.DataFrame:
    try:
        if path.lower().endswith(".csv"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read runs ({str(e).splitlines()[0]}; expected a CSV or Parquet file)") from None


# The columns of a tuned sweep's search that a table of runs keeps (orchestrator.fitting.hparams):
# its points, their settings, and the N that the recipe's rules count.
SEARCH_COLUMNS = ("point_id", "lr", "batch_tokens", "n_params_nonembed")
REUSE_COLUMNS = ("parent_id", "flops_spent", "finished_at", "wall_s")


def plan_record(store) -> dict:
    """The sweep's plan.json (orchestrator.sweep writes it): {} when there is none."""
    try:
        with store.fs.open_input_stream(f"{store.root}/plan.json") as f:
            plan = json.loads(f.read())
        return plan if isinstance(plan, dict) else {}
    except (FileNotFoundError, OSError, ValueError):
        return {}


def results_runs(store, source: str) -> Runs:
    """A results directory's trials, with the target and planner its plan.json names."""
    plan = plan_record(store)
    try:
        target = float(plan["target_compute"])
    except (KeyError, TypeError, ValueError):
        target = None
    planner, form, params = plan.get("planner"), plan.get("form"), plan.get("form_params")
    objective = plan.get("tune_objective")
    from orchestrator.results import label_variants, point_rows

    every = label_variants(store.read_table("trials").to_pandas(), plan)
    points = point_rows(every)
    return Runs(points, source, target, planner if isinstance(planner, str) else None,
                form if isinstance(form, str) else None,
                tuple(str(p) for p in params) if isinstance(params, list) else (),
                objective if objective in ("parabola", "best") else "parabola",
                every[~every.index.isin(points.index)] if len(points) < len(every) else None)


def _column(df: pd.DataFrame, key: str, cols: ColumnMap, source: str, required: bool) -> pd.Series | None:
    named = getattr(cols, key)
    name = named or getattr(DEFAULTS, key)
    if name not in df.columns:
        if named:
            raise UserError(f"{OPTION[key]} {named!r}: no such column in {source} (columns: {', '.join(map(str, df.columns))})")
        if required:
            raise UserError(f"{source}: no column {name!r}; name the column with {OPTION[key]} "
                            f"(columns: {', '.join(map(str, df.columns))})")
        return None
    col = df[name]
    if key in LABELS:  # a missing variant label is no variant, not the text "nan"
        return col.astype(str) if key == "name" else col.astype("string").fillna("").astype(str)
    values = pd.to_numeric(col, errors="coerce").astype(float)
    if len(col) and values.isna().all():
        raise UserError(f"{OPTION[key]} {name!r} in {source} is not numeric (first value {col.iloc[0]!r})")
    return values


def _is_file(path: str, what: str) -> bool:
    is_file = path.lower().endswith(FILE_SUFFIXES) or os.path.isfile(path)
    if is_file and not os.path.exists(path) and "://" not in path:
        raise UserError(f"{path}: file not found (expected a CSV or Parquet file of {what})")
    return is_file


def load_points(path: str, cols: ColumnMap) -> dict:
    """``--predict`` points: N with D (or C, C = 6ND) and U where the file has them (else U = D:
    fresh data), as arrays keyed N, D, U; the same column names (and options) as the runs."""
    if not _is_file(path, "points (N and D, or N and C)") or not os.path.exists(path):
        raise UserError(f"--predict {path}: expected a CSV or Parquet file of points (N and D, or N and C)")
    df = _read_file(path)
    if not len(df):
        raise UserError(f"--predict {path}: the file has no rows")
    n = _column(df, "n", cols, path, required=True)
    d = _column(df, "d", cols, path, required=False)
    c = _column(df, "c", cols, path, required=False)
    u = _column(df, "u", cols, path, required=False)
    if d is None and c is not None:
        d = pd.Series(tokens_for_budget(c.to_numpy(float), n.to_numpy(float)), index=df.index)
    out = {"N": n.to_numpy(float)}
    if d is not None:
        out["D"] = d.to_numpy(float)
    if u is not None:
        out["U"] = u.to_numpy(float)
    elif "D" in out:
        out["U"] = out["D"]  # no unique-token column: fresh data, no repetition
    for key, v in out.items():
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"--predict {path}: row {i} has {key} = {float(v[i])!r} (expected a finite number > 0)")
    return out


def load_runs(path: str, cols: ColumnMap = ColumnMap(), need_d: bool = True) -> Runs:
    """Read ``path`` (results directory or .csv/.parquet file) into a trials-shaped table.
    ``need_d`` False: the law reads N alone, and a table without D or C is fine."""
    is_file = _is_file(path, "runs, or a results directory")
    found = None
    if is_file:
        df, target, planner = _read_file(path), None, None
    else:
        from orchestrator.results import open_results

        found = results_runs(open_results(path), path)
        df, target, planner = found.table, found.target_compute, found.planner
    n = _column(df, "n", cols, path, required=True)
    loss = _column(df, "loss", cols, path, required=True)
    d = _column(df, "d", cols, path, required=False)
    c = _column(df, "c", cols, path, required=False)
    if d is None and c is None and not need_d:
        d = c = pd.Series(np.nan, index=df.index)
    if d is None and c is None:
        raise UserError(f"{path}: needs tokens D (--d-col) or training compute C (--c-col); found neither "
                        f"{DEFAULTS.d!r} nor {DEFAULTS.c!r} (columns: {', '.join(map(str, df.columns))}; a law of N "
                        "alone: --form n-only)")
    # The project's one FLOPs formula (C = 6ND) fills in whichever of D and C is missing.
    if d is None:
        d = pd.Series([tokens_for_budget(cc, nn) if nn else np.nan for cc, nn in zip(c, n)], index=df.index)
    if c is None:
        c = pd.Series([train_flops(nn, dd) for nn, dd in zip(n, d)], index=df.index)
    budget = _column(df, "budget", cols, path, required=False)
    names = _column(df, "name", cols, path, required=False)
    status = df["status"].astype(str) if "status" in df else None
    if status is None or not set(status) <= {s.value for s in TrialStatus}:
        status = pd.Series(TrialStatus.COMPLETED.value, index=df.index)  # a table of published runs: all finished
    table = pd.DataFrame({
        "name": names if names is not None else pd.Series(
            [f"row {i} (N={nn:.3g}, C={cc:.3g})" for i, (nn, cc) in enumerate(zip(n, c))], index=df.index),
        "status": status,
        "n_params": n, "tokens": d, "flops": c,
        "budget": budget.fillna(0.0) if budget is not None else 0.0,
        "eval_loss": loss,
        "error": df["error"] if "error" in df else None,
    })
    u = _column(df, "u", cols, path, required=False)
    if u is not None:
        table["unique_tokens"] = u
    variant = _column(df, "variant", cols, path, required=False)
    if variant is not None:
        table["variant"] = variant
    # A tuned sweep's search (orchestrator.fitting.hparams): its points, settings and the rules' N;
    # a wsd sweep's stems and FLOPs (orchestrator.results.account_reuse)
    for key in SEARCH_COLUMNS + REUSE_COLUMNS:
        if key in df and key not in table:
            table[key] = df[key]
    table = table.reset_index(drop=True)
    if found is not None:
        return Runs(table, path, target, planner, found.form, found.form_params, found.objective, found.stems)
    return Runs(table, path, target, planner)
