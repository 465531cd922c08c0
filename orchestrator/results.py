"""Reading a sweep's results: pandas DataFrames and SQL (DuckDB) over the Parquet tables.

``RESULTS`` is a sweep directory (``results/<sweep>``) or a URI pyarrow understands. Files are
read through pyarrow's filesystems and handed to DuckDB as Arrow tables, so local and object
storage share one code path. In SQL the tables are named ``trials`` and ``steps``.
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from orchestrator.errors import UserError
from workers.store import ResultStore

__all__ = ["open_results", "load_trials", "load_steps", "query"]


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


def load_steps(path: str) -> pd.DataFrame:
    """Per-step metrics of every trial (see workers.store.STEPS_SCHEMA)."""
    return open_results(path).read_table("steps").to_pandas()


def query(path: str, sql: str) -> pd.DataFrame:
    """Run ``sql`` over the tables ``trials`` and ``steps``; UserError on a bad query."""
    store = open_results(path)
    con = duckdb.connect()
    for table in ("trials", "steps"):  # read only what the query names: steps can be millions of rows
        if re.search(rf"\b{table}\b", sql, re.IGNORECASE):
            con.register(table, store.read_table(table))
    try:
        return con.execute(sql).df()
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"query: {first}") from None
