"""Reading a sweep's results: pandas DataFrames and SQL (DuckDB) over the Parquet tables.

``RESULTS`` is a sweep directory (``results/<sweep>``) or a URI pyarrow understands. Files are
read through pyarrow's filesystems and handed to DuckDB as Arrow tables, so local and object
storage share one code path. In SQL the tables are named ``trials`` and ``steps``.

SQL is user input, and a query command is what people put behind a notebook or a dashboard:
``query`` runs one read statement on a connection that can see the two tables and nothing
else. DuckDB's default connection reads and writes any file (``read_text('~/.ray/auth_token')``,
``COPY ... TO``), attaches databases, installs extensions and can undo its own settings, so
each statement's type is checked by DuckDB's own parser and the connection is opened with
file access, extension loading and spilling off, then locked
(https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview).
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from orchestrator.errors import UserError
from workers.config import BASELINE
from workers.store import ResultStore

__all__ = ["account_reuse", "label_variants", "open_results", "load_trials", "load_steps", "point_rows", "spent_flops", "query"]


def open_results(path: str) -> ResultStore:
    """The store at ``path``; UserError if it holds no sweep results."""
    try:
        store = ResultStore(path)
    except Exception as e:  # invalid URI, unknown scheme, missing credentials
        raise UserError(f"{path}: cannot open results ({e})") from None
    if not store.exists():
        raise UserError(f"{path}: results directory not found (expected results/<sweep name>, written by 'scalesweep run')")
    if not store.list_files("trials"):
        raise UserError(f"{path}: no trial results yet (expected {path}/trials/*.parquet; has the sweep run?)")
    return store


def load_trials(path: str) -> pd.DataFrame:
    """One row per trial (see workers.store.TRIALS_SCHEMA)."""
    return open_results(path).read_table("trials").to_pandas()


def point_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The design points' rows: stem segments (wsd stable runs, orchestrator.running.reuse) are
    not points of the law and are never fitted. Rows written before roles existed are points."""
    if "role" not in trials:
        return trials
    return trials[trials["role"].astype("string").fillna("point") != "stem"]


def label_variants(trials: pd.DataFrame, plan: dict) -> pd.DataFrame:
    """``trials`` with its ``variant`` column as the sweep's plan (plan.json) names each design
    point's variant now: a variant renamed in the spec keeps its finished trials (ids hash its
    settings, not its name) and their rows are shown under the new name. Rows written before
    variants existed are the baseline's."""
    trials = trials.copy()
    if "variant" not in trials:
        trials["variant"] = BASELINE
    labels = trials["variant"].astype("string").fillna(BASELINE)
    named = {t.get("point_id"): t.get("variant") for t in plan.get("trials", []) if isinstance(t, dict)}
    named = {k: v for k, v in named.items() if isinstance(k, str) and isinstance(v, str)}
    if named and "point_id" in trials:
        labels = trials["point_id"].astype("string").map(named).fillna(labels)
    trials["variant"] = labels.astype(str)
    return trials


def spent_flops(trials: pd.DataFrame) -> float:
    """Training FLOPs the rows computed: ``flops_spent`` (a branch: its cooldown; a stem segment:
    its stretch), else the row's 6 N D (rows written before flops_spent existed)."""
    flops = pd.to_numeric(trials["flops"], errors="coerce")
    if "flops_spent" in trials:
        flops = pd.to_numeric(trials["flops_spent"], errors="coerce").fillna(flops)
    return float(flops.fillna(0).sum())


def account_reuse(fit, points: pd.DataFrame, stems: pd.DataFrame | None) -> str:
    """With a wsd sweep's stem segments: count their FLOPs into ``fit`` (an
    orchestrator.fitting.analysis.SweepFit, or None) and its report's FLOPs-over-time, and return
    the line that says what reuse saved; "" for a sweep without stems. Only the stems of
    ``points`` count (a results directory may hold other sweeps' rows)."""
    if stems is None or not len(stems) or "parent_id" not in points:
        return ""
    stems = stems[stems["parent_id"].isin(set(points["parent_id"]))]
    spent, nominal = spent_flops(points) + spent_flops(stems), float(pd.to_numeric(points["flops"]).sum())
    if fit is not None:
        fit.flops_spent = spent
        rows = pd.concat([points, stems])
        fit.spent_rows = pd.DataFrame({"finished_at": rows["finished_at"], "wall_s": rows["wall_s"],
                                       "flops": rows["flops_spent"].fillna(rows["flops"])})
    if nominal <= 0:
        return ""
    return (f"Run reuse: {stems['parent_id'].nunique()} stems in {len(stems)} segments; "
            f"{spent:.3g} FLOPs computed against the points' {nominal:.3g} ({1 - spent / nominal:.0%} saved)")


def load_steps(path: str) -> pd.DataFrame:
    """Per-step metrics of every trial (see workers.store.STEPS_SCHEMA)."""
    return open_results(path).read_table("steps").to_pandas()


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_statement(sql: str) -> str:
    """``sql`` if it is exactly one SELECT (WITH, FROM-first, VALUES, DESCRIBE, SUMMARIZE and
    SHOW parse as SELECT); UserError naming what is not allowed otherwise. EXPLAIN is refused
    too: EXPLAIN ANALYZE runs the statement it wraps, whatever it is."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise UserError(f"query: {_first_line(e)}") from None
    if len(statements) != 1:
        raise UserError(f"query: expected one SQL statement, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = kind.name if kind != duckdb.StatementType.MULTI else "MULTI (e.g. PIVOT, which creates types)"
        raise UserError(f"query: {name} statements are not allowed (read-only: one SELECT over trials and steps)")
    return sql


def read_only_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads only the Arrow tables registered on it: no files, no
    extensions, no spilling to disk, no Python-variable scans, and settings locked."""
    con = duckdb.connect(":memory:", config={
        "temp_directory": "",  # no spill files: a query writes nothing
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "python_enable_replacements": False,  # `from secret` must not find a caller's DataFrame
    })
    # Set after the rest: with external access off, DuckDB refuses to change temp_directory.
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(path: str, sql: str) -> pd.DataFrame:
    """Run one read-only ``sql`` statement over the tables ``trials`` and ``steps``; UserError
    on a bad query or one that is not a plain read."""
    read_statement(sql)
    store = open_results(path)
    con = read_only_connection()
    try:
        for table in ("trials", "steps"):  # read only what the query names: steps can be millions of rows
            if re.search(rf"\b{table}\b", sql, re.IGNORECASE):
                con.register(table, store.read_table(table))
        return con.execute(sql).df()
    except duckdb.Error as e:
        raise UserError(f"query: {_first_line(e)}") from None
    finally:
        con.close()
