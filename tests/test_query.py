"""`scalesweep query` and ``query()``: one read-only statement over the sweep's two tables.

Every attack here worked on DuckDB's default connection: reading any file the user can read
(Ray's token among them), writing files, attaching databases, installing extensions, undoing
settings, scanning the caller's Python variables.
"""

from __future__ import annotations

import os

import pytest

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.results.sql import query
from workers.store import STEPS_SCHEMA, TRIALS_SCHEMA, ResultStore


@pytest.fixture
def results(tmp_path):
    store = ResultStore(str(tmp_path / "sweep"))
    for i in range(3):
        row = {f.name: None for f in TRIALS_SCHEMA} | {
            "sweep": "s", "trial_id": f"t{i}", "status": "completed", "n_params": 1000 * (i + 1),
            "tokens": 5000, "flops": 3e7, "budget": 3e7, "eval_loss": 2.0 + i}
        steps = [{f.name: None for f in STEPS_SCHEMA} | {"trial_id": f"t{i}", "step": s, "tokens": 10 * s}
                 for s in (1, 2)]
        store.write_trial(row, steps)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN-abc123\n")
    return str(tmp_path / "sweep"), secret


def test_reads_work(results):
    path, _ = results
    df = query(path, "select trial_id, eval_loss from trials order by eval_loss")
    assert list(df["trial_id"]) == ["t0", "t1", "t2"]
    assert query(path, "with s as (select trial_id, max(step) m from steps group by 1) "
                       "select count(*) n from s join trials using (trial_id)")["n"][0] == 3
    assert len(query(path, "from trials")) == 3
    assert len(query(path, "describe trials")) > 5
    assert query(path, "select 1 as x;")["x"][0] == 1  # a trailing semicolon is still one statement


@pytest.mark.parametrize("sql, named", [
    ("copy (select * from trials) to '{out}'", "COPY"),
    ("attach '{out}' as x", "ATTACH"),
    ("install httpfs", "LOAD"),
    ("load httpfs", "LOAD"),
    ("set enable_external_access = true", "SET"),
    ("reset lock_configuration", "SET"),
    ("pragma enable_profiling", "PRAGMA"),
    ("create table t as select * from trials", "CREATE"),
    ("export database '{out}'", "EXPORT"),
    ("insert into trials select * from trials", "INSERT"),
    ("explain analyze copy (select 1) to '{out}'", "EXPLAIN"),
    ("call pragma_version()", "CALL"),
    ("select 1; copy (select 1) to '{out}'", "one SQL statement"),
])
def test_statements_that_write_or_reconfigure_are_refused(results, tmp_path, sql, named):
    path, _ = results
    out = tmp_path / "written"
    with pytest.raises(UserError) as e:
        query(path, sql.format(out=out))
    assert named in str(e.value) and "\n" not in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize("fn", ["read_text", "read_csv", "read_blob", "read_parquet", "glob", "sniff_csv"])
def test_no_file_outside_the_sweep_can_be_read(results, fn):
    path, secret = results
    with pytest.raises(UserError) as e:
        query(path, f"select * from {fn}('{secret}')")
    assert "TOKEN" not in str(e.value) and "disabled" in str(e.value)


def test_the_sweeps_own_files_are_not_readable_by_path_either(results):
    path, _ = results  # the tables are the interface; their files are reached only through them
    with pytest.raises(UserError):
        query(path, f"select * from read_parquet('{path}/trials/*.parquet')")


def test_callers_python_variables_are_invisible(results):
    path, _ = results
    import pandas as pd

    leaked = pd.DataFrame({"password": ["hunter2"]})  # noqa: F841  (what a replacement scan would find)
    with pytest.raises(UserError):
        query(path, "select * from leaked")


def test_cli_rejects_in_one_line_and_writes_nothing(results, tmp_path, capsys):
    path, secret = results
    out = tmp_path / "dump.csv"
    assert main(["query", path, f"copy (select * from trials) to '{out}'"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scalesweep: error: query: COPY") and "\n" not in err and not out.exists()
    assert main(["query", path, f"select * from read_text('{secret}')"]) == 2
    captured = capsys.readouterr()
    assert "TOKEN" not in captured.out + captured.err
    assert main(["query", path, "selec 1"]) == 2
    assert "syntax error" in capsys.readouterr().err.lower()
    assert len(query(path, "select * from trials")) == 3  # the results are untouched


def test_a_closed_pipe_ends_quietly(results):
    """`scalesweep query ... | head` once ended in a BrokenPipeError traceback."""
    import subprocess
    import sys

    path, _ = results
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "query", path, "select * from range(300000)",
                          "--format", "csv"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"range"
    p.stdout.close()  # what head does after its first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == ""


# -- limits: a runaway statement ends in one line, in time and within its memory -----------------

RUNAWAY = {
    "sum over 1e11 rows": "select sum(range) from range(100000000000)",
    "unbounded recursive CTE": "with recursive r(i) as (select 1 union all select i+1 from r) select count(*) from r",
}


@pytest.mark.parametrize("sql", RUNAWAY.values(), ids=RUNAWAY.keys())
def test_a_runaway_query_stops_at_its_time_limit(results, sql):
    import time

    path, _ = results
    start = time.monotonic()
    with pytest.raises(UserError, match=r"^query: stopped after 1\.5 s \(--timeout\)$"):
        query(path, sql, timeout=1.5)
    assert time.monotonic() - start < 10  # the statement's process is killed, not waited for


def test_the_time_limit_is_the_statements_not_the_query_process_start(results):
    """The child interpreter's imports take about a second: a limit shorter than that still
    runs a quick statement."""
    path, _ = results
    assert query(path, "select count(*) n from trials", timeout=0.5)["n"][0] == 3


@pytest.mark.parametrize("sql", [
    "select len(range(4000000000))",  # a list DuckDB allocates outside its own memory_limit (15.8 GB under 1 GB)
    "select count(*) from (select range % 100000000 k from range(200000000) group by k)",  # a hash table
])
def test_a_query_over_its_memory_limit_stops(results, sql):
    path, _ = results
    with pytest.raises(UserError, match=r"^query: exceeded the memory limit of 300MB \(--memory-limit; ") as e:
        query(path, sql, memory_limit="300MB", timeout=120)
    assert "\n" not in str(e.value)


def test_duckdbs_own_limit_is_set_below_the_cap_and_locked(results):
    path, _ = results
    (setting,) = query(path, "select current_setting('memory_limit') as m", memory_limit="1GB")["m"]
    assert setting.endswith("MiB") and 0 < float(setting.split()[0]) < 1e9 / 2**20
    with pytest.raises(UserError, match="SET"):
        query(path, "set memory_limit = '100GB'")


@pytest.mark.parametrize("option, value, expected", [
    ("--timeout", "soon", "--timeout: expected a positive number of seconds"),
    ("--timeout", "0", "--timeout: expected a positive number of seconds"),
    ("--memory-limit", "lots", "--memory-limit: expected a size such as 2GB"),
    ("--memory-limit", "10KB", "--memory-limit: expected a size of at least 1MiB"),
])
def test_bad_limits_are_one_line(results, capsys, option, value, expected):
    path, _ = results
    assert main(["query", path, "select 1", option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"scalesweep: error: {expected}") and err.count("\n") == 1


def test_parse_size_reads_duckdbs_units():
    from orchestrator.results.sql import parse_size

    assert parse_size("2GB") == 2_000_000_000 and parse_size("1.5 GiB") == 1.5 * 2**30
    assert parse_size("512mb") == 512_000_000 and parse_size(3 * 2**20) == 3 * 2**20


def test_cli_limits_end_in_one_line_with_status_2(results, capsys):
    path, _ = results
    assert main(["query", path, RUNAWAY["sum over 1e11 rows"], "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "scalesweep: error: query: stopped after 1 s (--timeout)\n"
    assert main(["query", path, "select len(range(4000000000))", "--memory-limit", "300MB"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scalesweep: error: query: exceeded the memory limit of 300MB (--memory-limit") \
        and err.count("\n") == 1
    assert main(["query", path, "select count(*) n from trials", "--timeout", "30", "--memory-limit", "1GB",
                 "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n3\n"


def test_the_cli_help_names_the_default_timeout():
    from orchestrator.cli import build_parser
    from orchestrator.results.sql import QUERY_TIMEOUT_S

    query_parser = build_parser()._subparsers._group_actions[0].choices["query"]
    (timeout,) = [a for a in query_parser._actions if "--timeout" in a.option_strings]
    assert f"default {QUERY_TIMEOUT_S:g}" in timeout.help


def test_ctrl_c_ends_the_query_in_one_line(results):
    import signal
    import subprocess
    import sys
    import time

    path, _ = results
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "query", path, RUNAWAY["sum over 1e11 rows"]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not _children(p.pid) and time.monotonic() < deadline:  # the statement's process has started
        time.sleep(0.1)
    time.sleep(1)  # and the statement runs
    children = _children(p.pid)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130 and err == "scalesweep: query: interrupted (Ctrl-C)\n" and out == ""
    time.sleep(0.2)
    assert not [c for c in children if os.path.exists(f"/proc/{c}") and "Z" not in _state(c)]


def test_the_cli_forks_its_statement_and_still_stops_it_at_its_limits(results):
    """`scalesweep query` in its own process forks the statement's child (orchestrator.results.sql
    ._start_child): the limits hold there as in a fresh interpreter."""
    import subprocess
    import sys

    path, _ = results
    for sql, option, value, expected in [
        ("select len(range(4000000000))", "--memory-limit", "300MB", "exceeded the memory limit of 300MB"),
        (RUNAWAY["sum over 1e11 rows"], "--timeout", "1", "stopped after 1 s (--timeout)"),
    ]:
        p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "query", path, sql, option, value],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and p.stderr.startswith(f"scalesweep: error: query: {expected}"), p.stderr
        assert p.stderr.count("\n") == 1 and p.stdout == ""
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "query", path, "select count(*) n from trials",
                        "--format", "csv"], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, "n\n3\n")


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _children(pid: int) -> list[int]:
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
        except OSError:
            pass
    return out


def test_trials_show_variants_as_the_plan_names_them(results):
    """query reads the trials as load_trials, status and fit show them (read_labelled): a
    variant renamed in the spec keeps its rows, under its new name."""
    import json

    path, _ = results
    store = ResultStore(path)
    row = {f.name: None for f in TRIALS_SCHEMA} | {"sweep": "s", "trial_id": "t9", "status": "completed",
                                                   "point_id": "p9", "variant": "old-name", "eval_loss": 1.5}
    store.write_trial(row)
    with open(os.path.join(path, "plan.json"), "w") as f:
        json.dump({"trials": [{"point_id": "p9", "variant": "new-name"}]}, f)
    df = query(path, "select variant, count(*) n from trials group by 1 order by 1")
    assert dict(zip(df["variant"], df["n"])) == {"baseline": 3, "new-name": 1}
