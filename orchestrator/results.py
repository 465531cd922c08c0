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

import logging
import math
import os
import re
import subprocess
import sys
import time

import duckdb
import pandas as pd
import pyarrow as pa

from orchestrator.errors import UserError
from workers.config import BASELINE
from workers.store import ResultStore

__all__ = ["account_reuse", "label_variants", "open_results", "load_trials", "load_steps", "point_rows", "spent_flops", "query",
           "parse_size", "default_memory_limit", "QUERY_TIMEOUT_S", "NOT_IN_SPEC", "read_labelled",
           "read_trials"]


log = logging.getLogger(__name__)

# The label of a row whose variant the spec no longer has, after the name it was written with:
# variant names cannot hold spaces (orchestrator.spec.NAME_RE), so it is never a variant's name.
NOT_IN_SPEC = " (not in spec)"


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
    """One row per trial (see workers.store.TRIALS_SCHEMA), variants named as :func:`read_trials` names them."""
    return read_trials(open_results(path)).to_pandas()


def read_trials(store: ResultStore, plan: dict | None = None) -> pa.Table:
    """The trials table as every reader shows it (load_trials, query, status, fit): each row's
    ``variant`` as the sweep's plan (``plan``, default its plan.json) names it now, rows of
    variants no longer in the spec kept and labelled so (:func:`label_variants`)."""
    from orchestrator.fitting.runs import plan_record

    table = store.read_table("trials")
    plan = plan_record(store) if plan is None else plan
    labels, _ = _variant_labels(table.select(["variant", "variant_id", "point_id"]).to_pandas(), plan)
    return table.set_column(table.schema.get_field_index("variant"), "variant",
                            pa.array(labels.to_numpy(dtype=object), pa.string()))


def point_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The design points' rows: stem segments (wsd stable runs, orchestrator.running.reuse) are
    not points of the law and are never fitted. Rows written before roles existed are points."""
    if "role" not in trials:
        return trials
    return trials[trials["role"].astype("string").fillna("point") != "stem"]


def read_labelled(store: ResultStore, table: str) -> pa.Table:
    """``table`` ("trials" or "steps") of ``store`` as readers show it: the trials through
    :func:`read_trials`, the steps (which name no variant) as stored."""
    return read_trials(store) if table == "trials" else store.read_table(table)


def label_variants(trials: pd.DataFrame, plan: dict, keep_removed: bool = False) -> pd.DataFrame:
    """``trials`` with its ``variant`` column as the sweep's plan (plan.json) names each row's
    variant now, the rows of variants the spec no longer has left out (with a warning naming
    them) unless ``keep_removed``: what is fitted and compared is the spec's variants.

    A row records its variant's identity (``variant_id``: the hash of the settings it changes,
    orchestrator.planning.trials.variant_id), and the plan names the identities of the spec's
    variants (its "variants"): a renamed variant keeps its finished trials (ids hash its
    settings, not its name) and all their rows show the new name, an adaptive sweep's too. A row
    whose identity the spec does not have (the variant removed, or its settings changed under its
    name) is another variant's: labelled '<name it was written with> (not in spec)'. Rows written
    before ``variant_id`` existed take the variant the plan gives their point (a static sweep's),
    else the name they were written with (before variants existed: the baseline)."""
    trials = trials.copy()
    labels, removed = _variant_labels(trials, plan)
    trials["variant"] = labels
    if keep_removed or not removed.any():
        return trials
    for label, n in trials.loc[removed, "variant"].value_counts().items():
        log.warning("%d rows of variant %r are not fitted: its settings are not in the spec now (status, query and "
                    "load_trials show them as %r)", n, label.removesuffix(NOT_IN_SPEC), label)
    return trials[~removed]


def _variant_labels(trials: pd.DataFrame, plan: dict) -> tuple[pd.Series, pd.Series]:
    """(each row's variant as :func:`label_variants` names it, whether the spec no longer has it)."""
    written = (trials["variant"].astype(object) if "variant" in trials else pd.Series(None, index=trials.index,
                                                                                      dtype=object))
    written = written.where(written.map(lambda v: isinstance(v, str)), BASELINE)
    labels = written
    named = {t.get("point_id"): t.get("variant") for t in plan.get("trials") or [] if isinstance(t, dict)}
    named = {k: v for k, v in named.items() if isinstance(k, str) and isinstance(v, str)}
    if named and "point_id" in trials:
        labels = trials["point_id"].map(named).astype(object).where(lambda v: v.notna(), labels)
    removed = pd.Series(False, index=trials.index)
    names = {v["id"]: v["name"] for v in plan.get("variants") or []
             if isinstance(v, dict) and isinstance(v.get("id"), str) and isinstance(v.get("name"), str)}
    if names and "variant_id" in trials:
        ids = trials["variant_id"].astype(object)
        known = ids.map(lambda v: isinstance(v, str) and v != "").astype(bool)
        now = ids.map(names).astype(object)
        removed = known & now.isna()
        labels = now.where(known & now.notna(), labels).where(~removed, written + NOT_IN_SPEC)
    return labels.astype(str), removed.astype(bool)


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


def read_only_connection(memory_limit: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads only the Arrow tables registered on it: no files, no
    extensions, no spilling to disk, no Python-variable scans, and settings locked (the
    ``memory_limit`` in bytes among them: the query cannot raise it)."""
    config = {
        "temp_directory": "",  # no spill files: a query writes nothing
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "python_enable_replacements": False,  # `from secret` must not find a caller's DataFrame
    }
    if memory_limit is not None:
        config["memory_limit"] = f"{max(1, memory_limit // 2**20)}MiB"
    con = duckdb.connect(":memory:", config=config)
    # Set after the rest: with external access off, DuckDB refuses to change temp_directory.
    con.execute("SET enable_external_access = false")
    con.execute("SET enable_progress_bar = false")  # the output is the result, or one line
    con.execute("SET lock_configuration = true")
    return con


# --- limits: a query runs in a child process that the caller watches and kills ------------------
#
# DuckDB's memory_limit bounds its buffer manager only: `select len(range(4000000000))` builds
# its list outside it and reached 15.8 GB under a limit of 1 GB (measured with DuckDB 2.0.1),
# and `con.interrupt()` took effect 20 s after it was called, once the list was built. Neither
# a thread nor DuckDB's own settings can stop such a statement in time, so the statement runs
# in a child process: the caller samples the child's resident memory (not RLIMIT_AS: the imports
# alone reserve 1.2 GB of address space for 0.14 GB resident) and its time, and kills it at
# either limit. The child keeps DuckDB's own limit too, so that what DuckDB does count fails as a
# clean "Out of Memory" first. The child is a fresh interpreter (subprocess), not a
# multiprocessing fork or fork server: forking a process with threads (Ray's, Arrow's) is unsafe,
# and multiprocessing's other start methods re-run the caller's __main__ script in the child.
# It runs in its own session, so a terminal's Ctrl-C reaches the caller only, which ends it.

QUERY_TIMEOUT_S = 60.0
_STARTUP_S = 60.0  # for the child's imports and the tables' transfer, before the statement's clock
_POLL_S = 0.02  # the watchdog's period: at a few GB/s of page faults, the overshoot is tens of MB
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def default_memory_limit() -> int:
    """Bytes a query may hold by default: 4 GiB, or half the machine's memory where that is less."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        ram = 8 * 2**30
    return min(4 * 2**30, ram // 2)


def parse_size(text: str | int | float, option: str = "--memory-limit") -> int:
    """Bytes in ``text``: a number with an optional unit, KB/MB/GB/TB (powers of 1000) or
    KiB/MiB/GiB/TiB (powers of 1024), as DuckDB reads them; UserError naming ``option``."""
    m = _SIZE.match(str(text))
    if not m:
        raise UserError(f"{option}: expected a size such as 2GB or 512MB, got {text!r}")
    number, unit, binary = m.groups()
    value = float(number) * (1024 if binary else 1000) ** " kmgt".index(unit.lower() or " ")
    if not value >= 2**20:
        raise UserError(f"{option}: expected a size of at least 1MiB, got {text!r}")
    return int(value)


def _timeout_s(value) -> float | None:
    """Seconds in ``value`` (None: no limit); UserError naming --timeout."""
    try:
        s = None if value is None else float(value)
    except (TypeError, ValueError):
        s = math.nan
    if s is not None and not 0 < s < math.inf:
        raise UserError(f"--timeout: expected a positive number of seconds such as 60, got {value!r}")
    return s


def _size_str(b: float) -> str:
    return f"{b / 1e9:.3g} GB" if b >= 1e9 else f"{b / 1e6:.3g} MB"  # the units --memory-limit is given in


def _resident_bytes(pid: int) -> int | None:
    """A process's resident memory (Linux's /proc); None where there is no /proc (there DuckDB's
    own limit is the only one)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _query_child() -> None:
    """The child (``_run_limited``): from stdin the statement, its limit and the tables (Arrow
    IPC); to stdout ("ok", DataFrame) or (kind, one line)."""
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # whatever else prints goes to stderr, not into the reply
    sql, names, memory_limit = inbox.recv()
    try:
        tables = {name: pa.ipc.open_stream(inbox.recv_bytes()).read_all() for name in names}
        left = memory_limit - (_resident_bytes(os.getpid()) or 0)
        if left <= 0:
            outbox.send(("memory", "the tables it reads hold more"))
            return
        con = read_only_connection(memory_limit=left)
        for name, table in tables.items():
            con.register(name, table)
        outbox.send(("ready", None))  # the statement's clock starts here
        outbox.send(("ok", con.execute(sql).df()))
    except duckdb.OutOfMemoryException as e:
        outbox.send(("memory", _first_line(e)))
    except duckdb.Error as e:
        outbox.send(("error", _first_line(e)))
    except Exception as e:  # noqa: BLE001 (a result pandas cannot hold, say): one line, not a lost child
        outbox.send(("error", f"{type(e).__name__}: {_first_line(e)}"))


def _arrow_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _run_limited(sql: str, names: list[str], read, timeout: float | None, memory_limit: int,
                 shown: str) -> pd.DataFrame:
    """Run ``sql`` over the tables ``names`` (``read(name)``: an Arrow table) in a child process;
    UserError when it passes ``timeout`` seconds or ``memory_limit`` bytes resident (``shown``:
    that limit as the user wrote it), or fails. The child starts first: its imports overlap the
    reads. Its memory is watched throughout, its time from its "ready": the interpreter's start
    and the tables' transfer are not the statement's (they have _STARTUP_S of their own)."""
    from multiprocessing.connection import Connection

    child = subprocess.Popen([sys.executable, "-c", "from orchestrator.results import _query_child; _query_child()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    outbox, inbox = Connection(os.dup(child.stdin.fileno()), readable=False), \
        Connection(os.dup(child.stdout.fileno()), writable=False)
    child.stdin.close()
    child.stdout.close()
    rss, kind, value = 0, "starting", None
    try:
        outbox.send((sql, names, memory_limit))
        for name in names:
            outbox.send_bytes(_arrow_ipc(read(name)))
        clock, allowed = time.monotonic(), _STARTUP_S
        while kind in ("starting", "ready"):
            if inbox.poll(_POLL_S):
                kind, value = inbox.recv()
                if kind == "ready":
                    clock, allowed = time.monotonic(), timeout
                continue
            rss = _resident_bytes(child.pid) or 0
            if rss > memory_limit:
                raise UserError(f"query: exceeded the memory limit of {shown} (--memory-limit; stopped at "
                                f"{_size_str(rss)})")
            if allowed is not None and time.monotonic() - clock > allowed:
                raise UserError(f"query: stopped after {timeout:g} s (--timeout)" if kind == "ready" else
                                f"query: the query process did not start within {_STARTUP_S:g} s")
    except (EOFError, OSError):  # the child died: killed from outside (the OOM killer), or crashed
        child.wait()
        raise UserError(f"query: the query process ended without a result (exit status {child.returncode}"
                        f"{'; the memory it held: ' + _size_str(rss) if rss else ''})") from None
    finally:
        child.kill()  # done, over a limit, Ctrl-C or an error here: the statement must not go on
        child.wait()
        outbox.close()
        inbox.close()
    if kind == "memory":
        raise UserError(f"query: exceeded the memory limit of {shown} (--memory-limit; {value})")
    if kind == "error":
        raise UserError(f"query: {value}")
    return value


def query(path: str, sql: str, *, timeout: float | str | None = QUERY_TIMEOUT_S,
          memory_limit: int | str | None = None) -> pd.DataFrame:
    """Run one read-only ``sql`` statement over the tables ``trials`` and ``steps``; UserError
    on a bad query, one that is not a plain read, or one that runs past ``timeout`` seconds
    (None: no limit) or holds more than ``memory_limit`` (bytes, or a size such as "2GB";
    default :func:`default_memory_limit`), the tables it reads included."""
    read_statement(sql)
    timeout = _timeout_s(timeout)
    limit = parse_size(memory_limit) if memory_limit is not None else default_memory_limit()
    shown = memory_limit if isinstance(memory_limit, str) else _size_str(limit)
    store = open_results(path)
    # read only what the query names: steps can be millions of rows
    names = [t for t in ("trials", "steps") if re.search(rf"\b{t}\b", sql, re.IGNORECASE)]
    return _run_limited(sql, names, lambda table: read_labelled(store, table), timeout, limit, shown)
