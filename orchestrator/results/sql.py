"""``scalesweep query``: one read-only SQL statement (DuckDB) over a sweep's tables, limited in time and memory.

The tables are read as every reader shows them (orchestrator.results.read_labelled) and handed
to DuckDB as Arrow tables, so local and object storage share one code path. In SQL they are
named ``trials``, ``steps`` and ``evals`` (task evaluations).

SQL is user input, and a query command is what people put behind a notebook or a dashboard:
``query`` runs one read statement on a connection that can see the two tables and nothing
else. DuckDB's default connection reads and writes any file (``read_text('~/.ray/auth_token')``,
``COPY ... TO``), attaches databases, installs extensions and can undo its own settings, so
each statement's type is checked by DuckDB's own parser and the connection is opened with
file access, extension loading and spilling off, then locked
(https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import duckdb
import pandas as pd
import pyarrow as pa

from orchestrator.errors import UserError
from orchestrator.results import open_results, read_labelled
from workers.store import TABLES

__all__ = ["query", "read_statement", "read_only_connection", "parse_size", "default_memory_limit", "QUERY_TIMEOUT_S",
           "cmd_query"]

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
        raise UserError(f"query: {name} statements are not allowed (read-only: one SELECT over trials, steps and evals)")
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
# clean "Out of Memory" first. `scalesweep query` forks the child before anything has started a
# thread: it starts at once, with every module imported, and reads the tables itself (a query of
# a million step rows answers in about the time it did in-process). A caller with threads (a
# notebook, Ray's driver, Arrow's pools) must not fork, and multiprocessing's other start methods
# re-run the caller's __main__ script, so there the child is a fresh interpreter (subprocess),
# about a second of imports, sent the tables the caller reads meanwhile. Either child runs in
# its own session, so a terminal's Ctrl-C reaches the caller only, which ends it.

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
    """The fresh interpreter's side (``_run_limited``): from stdin the statement, its limit and
    the tables (Arrow IPC); to stdout ("ready"), then ("ok", DataFrame) or (kind, one line)."""
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(os.dup(0), writable=False), Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # whatever else prints goes to stderr, not into the reply
    sql, names, memory_limit = inbox.recv()
    _execute(outbox, sql, memory_limit,
             lambda: {name: pa.ipc.open_stream(inbox.recv_bytes()).read_all() for name in names})


def _execute(outbox, sql: str, memory_limit: int, tables) -> None:
    """The statement, in the child: ``tables()`` read, then ("ready", None) and the outcome sent
    on ``outbox`` (a multiprocessing Connection)."""
    try:
        tables = tables()
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


class _Forked:
    """A child forked from this process, with the Popen methods ``_run_limited`` uses."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def _start_child(sql: str, names: list[str], read, memory_limit: int, fork: bool):
    """(the child process, the Connection its replies come on). With ``fork``, and no thread
    of this process's but the main one (``scalesweep query``, before it has started any), the
    child is this process forked: it has every module imported and reads the tables itself.
    Only idle library pools (OpenBLAS's, Arrow's) are left behind then, and those re-initialise
    in a forked child. Else it is a fresh interpreter, sent the tables (Arrow IPC) while its
    imports run."""
    from multiprocessing.connection import Pipe

    inbox, outbox = Pipe(duplex=False)
    if fork and hasattr(os, "fork") and threading.active_count() == 1:
        pid = os.fork()
        if pid == 0:  # the child: its own session (a terminal's Ctrl-C reaches the caller only)
            try:
                os.setsid()
                inbox.close()
                os.dup2(2, 1)
                _execute(outbox, sql, memory_limit, lambda: {name: read(name) for name in names})
            finally:
                os._exit(0)  # never the caller's cleanup (atexit, buffered output) twice
        outbox.close()
        return _Forked(pid), inbox
    outbox.close()
    child = subprocess.Popen([sys.executable, "-c", "from orchestrator.results.sql import _query_child; _query_child()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    from multiprocessing.connection import Connection

    inbox.close()
    to_child = Connection(os.dup(child.stdin.fileno()), readable=False)
    inbox = Connection(os.dup(child.stdout.fileno()), writable=False)
    child.stdin.close()
    child.stdout.close()
    try:
        to_child.send((sql, names, memory_limit))
        for name in names:
            to_child.send_bytes(_arrow_ipc(read(name)))
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        to_child.close()
    return child, inbox


def _run_limited(sql: str, names: list[str], read, timeout: float | None, memory_limit: int,
                 shown: str, fork: bool = False) -> pd.DataFrame:
    """Run ``sql`` over the tables ``names`` (``read(name)``: an Arrow table) in a child process
    (``_start_child``); UserError when it passes ``timeout`` seconds or ``memory_limit`` bytes
    resident (``shown``: that limit as the user wrote it), or fails. Its memory is watched
    throughout, its time from its "ready": the child's start and the tables' reading are not
    the statement's (they have _STARTUP_S of their own)."""
    rss, kind, value = 0, "starting", None
    child = None
    try:
        child, inbox = _start_child(sql, names, read, memory_limit, fork)
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
        if child is None:  # it could not start (fork or exec failed)
            raise
        child.wait()
        raise UserError(f"query: the query process ended without a result (exit status {child.returncode}"
                        f"{'; the memory it held: ' + _size_str(rss) if rss else ''})") from None
    finally:
        if child is not None:
            child.kill()  # done, over a limit, Ctrl-C or an error here: the statement must not go on
            child.wait()
            inbox.close()
    if kind == "memory":
        raise UserError(f"query: exceeded the memory limit of {shown} (--memory-limit; {value})")
    if kind == "error":
        raise UserError(f"query: {value}")
    return value


def query(path: str, sql: str, *, timeout: float | str | None = QUERY_TIMEOUT_S,
          memory_limit: int | str | None = None, fork: bool = False) -> pd.DataFrame:
    """Run one read-only ``sql`` statement over the tables ``trials``, ``steps`` and ``evals``; UserError
    on a bad query, one that is not a plain read, or one that runs past ``timeout`` seconds
    (None: no limit) or holds more than ``memory_limit`` (bytes, or a size such as "2GB";
    default :func:`default_memory_limit`), the tables it reads included. ``fork``: run the
    statement in a fork of this process where that is safe (``_start_child``; what the CLI
    does), saving a second of a fresh interpreter's imports."""
    read_statement(sql)
    timeout = _timeout_s(timeout)
    limit = parse_size(memory_limit) if memory_limit is not None else default_memory_limit()
    shown = memory_limit if isinstance(memory_limit, str) else _size_str(limit)
    store = open_results(path)
    # read only what the query names: steps can be millions of rows
    names = [t for t in TABLES if re.search(rf"\b{t}\b", sql, re.IGNORECASE)]
    return _run_limited(sql, names, lambda table: read_labelled(store, table), timeout, limit, shown, fork)


def cmd_query(args: argparse.Namespace) -> int:
    """``scalesweep query``: the table, CSV or JSON on stdout; one line on stderr for a bad or runaway query."""
    timeout = QUERY_TIMEOUT_S if args.timeout is None else args.timeout  # a string: query() names a bad one
    try:
        df = query(args.results, args.sql, timeout=timeout, memory_limit=args.memory_limit, fork=True)
    except KeyboardInterrupt:  # query() has ended the statement's process; nothing was written
        print("scalesweep: query: interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT
    if args.format == "csv":
        df.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))
    else:
        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
            print(df.to_string(index=False))
    return 0
