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
from orchestrator.results import query
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
