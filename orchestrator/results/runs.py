"""Runs to fit, from a sweep's results directory or from any CSV/Parquet table of runs.

``scalesweep fit`` fits published runs as readily as its own: a table needs a column for the
parameter count N, one for the loss, and one for tokens D or training compute C (C = 6ND
fills in the other). Columns are named by the user; an unknown name is a UserError listing
the columns there are. The result is a trials-shaped table (the columns of
workers.store.TRIALS_SCHEMA that the fit uses) so that ``analyse`` has one input format.

Screening (the second half): a run is left out for one named reason (EXCLUSION_REASONS),
counted and listed, never dropped silently: a failed or diverged trial, a loss that is not a
finite positive number, an N, D or C that is missing, infinite, zero or negative. What remains
must determine the law L = E + A/N^alpha + B/D^beta: five parameters need five distinct (N, D)
points, and the three along each axis (E, A, alpha along N; E, B, beta along D) need three
distinct values of N and of D, spread over more than rounding (``law_data_problem``). A table
that fails is a one-line InsufficientData naming the count it has and the count it needs, not a
fit whose intervals have zero width.
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orchestrator.errors import UserError
from orchestrator.fitting import MAX_MAGNITUDE
from orchestrator.results import label_variants, open_results, plan_record, point_rows
from workers.flops import tokens_for_budget, train_flops
from workers.store import TrialStatus

__all__ = ["Runs", "ColumnMap", "load_runs", "Exclusion", "EXCLUSION_REASONS", "usable", "excluded_text", "law_data_problem", "distinct_count", "distinct_points", "N_PARAMS", "MIN_LEVELS", "MIN_SPREAD", "form_data_problem", "variant_column"]

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


def _read_file(path: str, what: str = "runs", option: str | None = None) -> pd.DataFrame:
    """The table in ``path`` (``_is_file`` has checked it is a regular file); UserError naming
    ``option`` (else the file) and ``what`` it was to hold."""
    try:
        if path.lower().endswith(".csv"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (OSError, ValueError) as e:
        where = f"{option}: cannot read {what} from {path}" if option else f"{path}: cannot read {what}"
        raise UserError(f"{where} ({str(e).splitlines()[0]}; expected a CSV or Parquet file)") from None


# The columns of a tuned sweep's search that a table of runs keeps (orchestrator.fitting.hparams):
# its points, their settings, and the N that the recipe's rules count.
SEARCH_COLUMNS = ("point_id", "lr", "batch_tokens", "n_params_nonembed")
REUSE_COLUMNS = ("parent_id", "flops_spent", "finished_at", "wall_s")


def results_runs(store, source: str) -> Runs:
    """A results directory's trials, with the target and planner its plan.json names."""
    plan = plan_record(store)
    try:
        target = float(plan["target_compute"])
    except (KeyError, TypeError, ValueError):
        target = None
    planner, form, params = plan.get("planner"), plan.get("form"), plan.get("form_params")
    objective = plan.get("tune_objective")
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


def _is_file(path: str, what: str, option: str | None = None) -> bool:
    """Whether ``path`` names a table file (else a results directory); UserError for a missing
    file, or for anything local that is neither a regular file nor a directory: a FIFO or a
    device would block the reader (or never end), so it is refused before it is opened."""
    where = f"{option} {path}" if option else path
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"{where}: not a regular file (a named pipe, socket or device; expected a CSV or Parquet file "
                        f"of {what})")
    is_file = path.lower().endswith(FILE_SUFFIXES) or (mode is not None and stat.S_ISREG(mode))
    if is_file and mode is None and "://" not in path:
        raise UserError(f"{where}: file not found (expected a CSV or Parquet file of {what})")
    return is_file


def load_points(path: str, cols: ColumnMap) -> dict:
    """``--predict`` points: N with D (or C, C = 6ND) and U where the file has them (else U = D:
    fresh data), as arrays keyed N, D, U; the same column names (and options) as the runs."""
    what = "points (N and D, or N and C)"
    if not _is_file(path, what, "--predict") or not os.path.exists(path):
        raise UserError(f"--predict {path}: expected a CSV or Parquet file of {what}")
    df = _read_file(path, "points", "--predict")
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
    _check_magnitude(loss, cols.loss or DEFAULTS.loss, path)
    variant = variant_column(df, cols, path)
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


def _check_magnitude(values: pd.Series, name: str, source: str) -> None:
    """UserError naming the loss column and its first finite value beyond MAX_MAGNITUDE (a non-finite
    loss is not refused but excluded, with its reason, as a size whose C = 6ND overflows is)."""
    v = values.to_numpy(float)
    bad = np.isfinite(v) & (v > MAX_MAGNITUDE)  # below zero: excluded as a non-positive loss
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"{OPTION['loss']} {name!r} in {source}: row {i} has {v[i]:g}, beyond {MAX_MAGNITUDE:g}, where "
                        f"the fit's sums of squares overflow ({int(bad.sum())} such rows; expected a loss in nats)")


def variant_column(df: pd.DataFrame, cols: ColumnMap, source: str) -> pd.Series | None:
    """Each run's variant, or None (no column; or the default column, empty in every row).
    UserError naming the column and the rows where some labels are empty: an empty label is no
    variant's name (it would be fitted and compared as a variant called "")."""
    variant = _column(df, "variant", cols, source, required=False)
    if variant is None:
        return None
    empty = (variant.str.strip() == "").to_numpy()
    if empty.all() and not cols.variant:
        return None
    if empty.any():
        rows = np.flatnonzero(empty)
        listed = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
        raise UserError(f"{OPTION['variant']} {cols.variant or DEFAULTS.variant!r} in {source}: {len(rows)} of "
                        f"{len(variant)} rows have no variant label (rows {listed}); name every run's variant "
                        f"(the baseline's too) or give no variant column")
    return variant


# --- screening: which runs a fit can use, and what the data can determine -----------------------

N_PARAMS = 5  # E, A, B, alpha, beta
MIN_LEVELS = 3  # distinct N (and D): E + A/N^alpha has three parameters along N
MIN_SPREAD = 1.5  # N and D must each span at least this factor: closer values are one size, rounded

class Exclusion(str, enum.Enum):
    """Why a run is left out of a fit; the value is what the JSON and the text print."""

    FAILED = "failed"
    DIVERGED = "diverged"
    NON_FINITE_LOSS = "non_finite_loss"
    NON_POSITIVE_LOSS = "non_positive_loss"
    MISSING_SIZE = "missing_size"
    NON_FINITE_SIZE = "non_finite_size"
    NON_POSITIVE_SIZE = "non_positive_size"
    DROPPED_HIGHEST = "dropped_highest"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Exclusion.FAILED: "the trial raised an error",
    Exclusion.DIVERGED: "the training loss became NaN or infinite",
    Exclusion.NON_FINITE_LOSS: "finished without a finite final loss (missing, NaN or infinite)",
    Exclusion.NON_POSITIVE_LOSS: "a final loss of zero or below (a cross-entropy loss is positive)",
    Exclusion.MISSING_SIZE: "N, D or C missing or not a number",
    Exclusion.NON_FINITE_SIZE: "N, D or C infinite",
    Exclusion.NON_POSITIVE_SIZE: "N, D or C zero or negative",
    Exclusion.DROPPED_HIGHEST: "the highest losses, left out on request (--drop-highest)",
}
EXCLUSION_REASONS = {e.value: e.description for e in Exclusion}  # value -> description, in print order


def usable(trials: pd.DataFrame, drop_highest: int = 0, need_d: bool = True,
           extra: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, int], list[dict]]:
    """Completed trials with finite, positive N, D, C and loss; the count of each kind left out
    (keys of EXCLUSION_REASONS) and one record per excluded run. ``need_d`` False: a law of N
    alone (D and C may be missing); ``extra``: more size columns the law needs (unique tokens)."""
    status = trials["status"].astype(str)
    keep = (status == TrialStatus.COMPLETED.value).to_numpy()
    loss = pd.to_numeric(trials["eval_loss"], errors="coerce").astype(float).to_numpy()
    cols = (["n_params", "tokens"] + (["flops"] if "flops" in trials else []) if need_d else ["n_params"]) + list(extra)
    sizes = np.stack([pd.to_numeric(trials[c], errors="coerce").astype(float).to_numpy() for c in cols], axis=1)
    reason = np.full(len(trials), "", dtype=object)
    # Later lines win: a failed trial is "failed" whatever its loss; a run with a bad loss and a
    # bad size is named for its loss.
    reason[keep & np.isnan(sizes).any(axis=1)] = Exclusion.MISSING_SIZE.value
    reason[keep & np.isinf(sizes).any(axis=1)] = Exclusion.NON_FINITE_SIZE.value
    reason[keep & (sizes <= 0).any(axis=1)] = Exclusion.NON_POSITIVE_SIZE.value
    reason[keep & (loss <= 0)] = Exclusion.NON_POSITIVE_LOSS.value
    reason[keep & ~np.isfinite(loss)] = Exclusion.NON_FINITE_LOSS.value
    reason[(status == TrialStatus.FAILED.value).to_numpy()] = Exclusion.FAILED.value
    reason[(status == TrialStatus.DIVERGED.value).to_numpy()] = Exclusion.DIVERGED.value
    reason[~keep & (reason == "")] = Exclusion.FAILED.value  # any other state (lost, pending) did not finish
    ok = reason == ""
    if drop_highest > 0:
        # Besiroglu et al. (2024, section 2) drop Chinchilla's 5 highest-loss runs, outliers of
        # the digitisation; the option reproduces that and says so.
        idx = np.flatnonzero(ok)
        worst = idx[np.argsort(-loss[idx], kind="stable")[:drop_highest]]
        reason[worst] = Exclusion.DROPPED_HIGHEST.value
        ok = reason == ""
    excluded = {k: int((reason == k).sum()) for k in EXCLUSION_REASONS}
    bad = np.flatnonzero(~ok)
    names = trials["name"].astype(str).to_numpy() if "name" in trials else np.asarray(trials.index.astype(str))
    errors = trials["error"].to_numpy() if "error" in trials else np.full(len(trials), None)
    records = [{"name": str(names[i]), "reason": reason[i],
                "error": str(errors[i]).splitlines()[0] if isinstance(errors[i], str) and errors[i] else None}
               for i in bad]
    return trials[ok].copy(), excluded, records


def excluded_text(excluded: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')} ({EXCLUSION_REASONS[k]})" for k, v in excluded.items() if v) or "none"


def distinct_count(x) -> int:
    """Distinct values of a positive array, equal to 9 significant digits counting as one
    (C / 6N and a CSV's rounding make copies of one size differ in the last bits)."""
    return len(np.unique(np.round(np.log(np.asarray(x, float)), 9)))


def distinct_points(n, d) -> int:
    """Distinct (N, D) pairs, with :func:`distinct_count`'s tolerance (a sort, not np.unique's
    row comparison: a million runs in 0.3 s, not 2 s)."""
    if not len(n):
        return 0
    kn, kd = (np.round(np.log(np.asarray(x, float)), 9) for x in (n, d))
    order = np.lexsort((kd, kn))
    kn, kd = kn[order], kd[order]
    return 1 + int(((kn[1:] != kn[:-1]) | (kd[1:] != kd[:-1])).sum())


def form_data_problem(n_params: int, n, loss, d=None) -> str:
    """Why runs cannot determine a form of ``n_params`` parameters (a general form), or ""."""
    points = distinct_points(n, d) if d is not None else distinct_count(n)
    if points < n_params:
        return (f"the form has {n_params} parameters and needs at least {n_params} distinct "
                f"{'(N, D) points' if d is not None else 'N'}; the {len(n)} runs have {points}")
    if distinct_count(n) < MIN_LEVELS:
        return f"the law needs at least {MIN_LEVELS} distinct N; the runs have {distinct_count(n)}"
    if np.max(loss) <= np.min(loss) * (1 + 1e-9):
        return f"every run has the same loss ({loss[0]:.6g}): there is no fall with N or D to fit"
    return ""


def law_data_problem(n, d, loss) -> str:
    """Why runs with these finite, positive N, D and losses cannot determine the law, or ""."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    points = distinct_points(n, d)
    if points < N_PARAMS:
        return (f"the law has {N_PARAMS} parameters (E, A, B, alpha, beta) and needs at least {N_PARAMS} distinct "
                f"(N, D) points; the {len(n)} runs have {points}")
    for name, x, form in (("N", n, "E + A/N^alpha"), ("D", d, "E + B/D^beta")):
        levels = distinct_count(x)
        if levels < MIN_LEVELS:
            return (f"the law needs at least {MIN_LEVELS} distinct {name} ({form} has {MIN_LEVELS} parameters along "
                    f"{name}); the runs have {levels} ({name} = {', '.join(f'{v:.4g}' for v in np.unique(x)[:3])})")
        if x.max() < MIN_SPREAD * x.min():
            return (f"the law needs {name} spread over at least a factor of {MIN_SPREAD:g} to fit how loss falls "
                    f"with {name}; the runs' {name} only span {x.min():.4g} to {x.max():.4g}")
    if loss.max() <= loss.min() * (1 + 1e-9):
        return f"every run has the same loss ({loss[0]:.6g}): there is no fall with N or D to fit"
    return ""
