"""Inputs of the downstream fit: a long table of task evaluations, from a file or a sweep.

One row per (run, checkpoint, task): the run's parameter count N, its tokens D (at that
checkpoint or in total: step 1 reads only each run's final checkpoint, where the two agree),
the checkpoint's step, the task, its task loss (bits per byte of the correct answer) and
accuracy, and where known the task's chance level and number of items. Columns are named by
the user (``--run-col`` ...; defaults in DEFAULTS); an unknown name is a UserError listing the
columns there are, as ``fit`` words it (orchestrator.results.runs).

A sweep's results directory holds the same data in two tables joined on ``trial_id``: its
trials (completed design points only: N is ``n_params``) and ``evals``, one row per
(trial, step, task), which the simulated and GPT workers write.

Accuracy in percent (any value above 1) is divided by 100 here and ``acc_scale`` remembers it,
so that everything downstream works in fractions and the output is given back in the input's
unit. Rows with an empty task loss or accuracy are dropped and counted; a non-numeric value
is an error naming its row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.errors import UserError

__all__ = ["DownstreamData", "Columns", "DEFAULTS", "load_table", "downstream_data_from_results", "from_frame",
           "load_points"]

KEYS = ("run", "n", "d", "step", "task", "task_loss", "acc", "chance", "n_items")
DEFAULTS = {"run": "run", "n": "n_params", "d": "tokens", "step": "step", "task": "task", "task_loss": "task_bpb",
            "acc": "acc", "chance": "chance", "n_items": "n_items", "loss": "eval_loss"}
OPTION = {k: f"--{k.replace('_', '-')}-col" for k in DEFAULTS}
REQUIRED = ("run", "n", "d", "step", "task", "task_loss", "acc")
TEXT = ("run", "task")
POINT_N = ("n_params", "N", "n", "params")  # --predict's fallbacks when --n-col's name is not there
POINT_D = ("tokens", "D", "d")
POINT_C = ("flops", "C", "c", "compute")


@dataclass(frozen=True)
class Columns:
    """The source column of each quantity; None: the default (DEFAULTS)."""

    run: str | None = None
    n: str | None = None
    d: str | None = None
    step: str | None = None
    task: str | None = None
    task_loss: str | None = None
    acc: str | None = None
    chance: str | None = None
    n_items: str | None = None
    loss: str | None = None  # the language-model loss, for --compute on a table


@dataclass
class DownstreamData:
    """The evaluations in one frame with columns KEYS (chance, n_items NaN where unknown) and,
    where the source has one, ``loss`` (the run's language-model loss, for --compute)."""

    frame: pd.DataFrame
    source: str
    acc_scale: float = 1.0  # 100 when the input's accuracy was in percent
    notes: list[str] = field(default_factory=list)
    lm_runs: pd.DataFrame | None = None  # n, d, loss per run: the loss law behind --compute

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(self.frame["task"]))

    @property
    def n_runs(self) -> int:
        return int(self.frame["run"].nunique())


def _numeric(df: pd.DataFrame, name: str, key: str, source: str) -> pd.Series:
    col = df[name]
    values = pd.to_numeric(col, errors="coerce").astype(float)
    bad = values.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.argmax(bad.to_numpy()))
        raise UserError(f"{OPTION[key]} {name!r} in {source}: row {i} has {col.iloc[i]!r} (expected a number)")
    return values


def _pick(df: pd.DataFrame, key: str, named: str | None, source: str, required: bool) -> str | None:
    name = named or DEFAULTS[key]
    if name in df.columns:
        return name
    if named:
        raise UserError(f"{OPTION[key]} {named!r}: no such column in {source} (columns: {', '.join(map(str, df.columns))})")
    if required:
        raise UserError(f"{source}: no column {name!r}; name the column with {OPTION[key]} "
                        f"(columns: {', '.join(map(str, df.columns))})")
    return None


def from_frame(df: pd.DataFrame, cols: Columns = Columns(), source: str = "table") -> DownstreamData:
    """Validate and standardise a long table (module docstring); UserError for bad input."""
    if not len(df):
        raise UserError(f"{source}: the table has no rows")
    names = {k: _pick(df, k, getattr(cols, k), source, k in REQUIRED) for k in KEYS + ("loss",)}
    out = pd.DataFrame(index=df.index)
    for key in KEYS:
        name = names[key]
        if name is None:
            out[key] = np.nan
        elif key in TEXT:
            out[key] = df[name].astype("string").fillna("").astype(str)
        else:
            out[key] = _numeric(df, name, key, source)
    notes = []
    if names["loss"] is not None:
        out["loss"] = _numeric(df, names["loss"], "loss", source)
    for key in ("n", "d"):
        v = out[key].to_numpy(float)
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"{OPTION[key]} {names[key]!r} in {source}: row {i} has {v[i]!r} (expected a number > 0)")
    empty = out["task_loss"].isna() | out["acc"].isna() | out["step"].isna()
    if empty.any():
        notes.append(f"{int(empty.sum())} rows without a task loss, accuracy or step left out")
        out = out[~empty]
    loss = out["task_loss"].to_numpy(float)
    if len(loss) and not (np.isfinite(loss) & (loss > 0)).all():
        i = int(np.argmax(~(np.isfinite(loss) & (loss > 0))))
        raise UserError(f"{OPTION['task_loss']} {names['task_loss']!r} in {source}: a row has {loss[i]!r} "
                        "(expected a task loss > 0, bits per byte)")
    acc = out["acc"].to_numpy(float)
    scale = 1.0
    if len(acc) and np.nanmax(acc) > 1.0:
        scale = 100.0
        notes.append("accuracy read as percent (values above 1): fitted as fractions, reported in percent")
        out["acc"] = out["acc"] / 100.0
        if (out["chance"] > 1.0).any():
            out["chance"] = out["chance"] / 100.0
    a = out["acc"].to_numpy(float)
    if len(a) and ((a < 0) | (a > 1)).any():
        i = int(np.argmax((a < 0) | (a > 1)))
        raise UserError(f"{OPTION['acc']} {names['acc']!r} in {source}: a row has {a[i] * scale!r} "
                        "(expected an accuracy in [0, 1], or in percent)")
    if not len(out):
        raise UserError(f"{source}: no rows with a task loss and an accuracy")
    lm = None
    if "loss" in out:
        last = out.sort_values("step").groupby("run", sort=False).tail(1)
        lm = last[["run", "n", "d", "loss"]].dropna().reset_index(drop=True)
    return DownstreamData(out.reset_index(drop=True), source, scale, notes, lm)


def _read(path: str, what: str, option: str | None = None) -> pd.DataFrame:
    from orchestrator.results.runs import _is_file, _read_file

    if not _is_file(path, what, option) or not os.path.exists(path):
        where = f"{option} {path}" if option else path
        raise UserError(f"{where}: expected a CSV or Parquet file of {what}")
    return _read_file(path, what, option)


def load_table(path: str, cols: Columns = Columns()) -> DownstreamData:
    """A CSV/Parquet long table, or a sweep's results directory (:func:`downstream_data_from_results`)."""
    from orchestrator.results.runs import _is_file

    if not _is_file(path, "task evaluations, or a results directory"):
        return downstream_data_from_results(path)
    return from_frame(_read(path, "task evaluations"), cols, path)


def _evals_table(store) -> pd.DataFrame:
    """The ``evals`` table (workers.store.EVALS_SCHEMA; damaged files skipped with a warning, as the store does)."""
    if not store.list_files("evals"):
        raise UserError(f"{store.root}: no task evaluations (expected {store.root}/evals/*.parquet, written by "
                        "trainers that evaluate tasks)")
    return store.read_table("evals").to_pandas()


def downstream_data_from_results(store_or_path) -> DownstreamData:
    """A sweep's completed design points joined with their task evaluations (module docstring)."""
    from orchestrator.results import open_results, point_rows
    from workers.store import TrialStatus

    store = open_results(store_or_path) if isinstance(store_or_path, str) else store_or_path
    source = str(store_or_path) if isinstance(store_or_path, str) else str(store.root)
    trials = point_rows(store.read_table("trials").to_pandas())
    trials = trials[trials["status"].astype(str) == TrialStatus.COMPLETED.value]
    evals = _evals_table(store)
    missing = [c for c in ("trial_id", "step", "tokens", "task", "task_bpb", "acc") if c not in evals.columns]
    if missing:
        raise UserError(f"{source}/evals: no column {missing[0]!r} (columns: {', '.join(map(str, evals.columns))})")
    keep = ["trial_id", "n_params"] + [c for c in ("name", "eval_loss", "tokens") if c in trials]
    runs = trials[keep].rename(columns={"tokens": "run_tokens"})
    df = evals.merge(runs, on="trial_id", how="inner")
    if not len(df):
        raise UserError(f"{source}: no task evaluations of completed design points")
    df = df.rename(columns={"trial_id": "run"})
    data = from_frame(df, Columns(), source)
    if "eval_loss" in trials:
        # The sweep's loss law for --compute: one row per completed point, its total tokens.
        lm = trials[["trial_id", "n_params", "tokens", "eval_loss"]].dropna()
        data.lm_runs = pd.DataFrame({"run": lm["trial_id"].astype(str), "n": lm["n_params"].astype(float),
                                     "d": lm["tokens"].astype(float), "loss": lm["eval_loss"].astype(float)})
    return data


def _first(df: pd.DataFrame, named: str | None, fallbacks: tuple) -> str | None:
    for name in ((named,) if named else ()) + fallbacks:
        if name in df.columns:
            return name
    return None


def load_points(path: str, cols: Columns = Columns()) -> dict:
    """``--predict`` points: arrays N and D (D from C = 6ND where the file gives compute), in
    the file's order, and ``label`` per row (its ``name`` column, else "row i")."""
    from workers.flops import tokens_for_budget

    what = "points (N and D, or N and C)"
    df = _read(path, what, "--predict")
    if not len(df):
        raise UserError(f"--predict {path}: the file has no rows")
    n_name = _first(df, cols.n, POINT_N)
    d_name = _first(df, cols.d, POINT_D)
    c_name = None if d_name else _first(df, None, POINT_C)
    if n_name is None or (d_name is None and c_name is None):
        raise UserError(f"--predict {path}: needs N ({', '.join(POINT_N)}) and D ({', '.join(POINT_D)}) or compute "
                        f"({', '.join(POINT_C)}) columns (columns: {', '.join(map(str, df.columns))})")
    n = pd.to_numeric(df[n_name], errors="coerce").to_numpy(float)
    if d_name:
        d = pd.to_numeric(df[d_name], errors="coerce").to_numpy(float)
    else:
        d = np.asarray(tokens_for_budget(pd.to_numeric(df[c_name], errors="coerce").to_numpy(float), n), float)
    for key, v in (("N", n), ("D", d)):
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"--predict {path}: row {i} has {key} = {float(v[i])!r} (expected a finite number > 0)")
    label_col = _first(df, None, ("name", "label", "model", "target"))
    labels = df[label_col].astype(str).tolist() if label_col else [f"row {i}" for i in range(len(df))]
    return {"N": n, "D": d, "label": labels}
