"""Results on object storage take the same code path as local ones: a whole sweep, then
status, query, fit and report, against fsspec's in-memory filesystem (memory://) behind
pyarrow's adapter, as s3:// or gs:// would be behind pyarrow's own filesystems."""

import json

from orchestrator.cli import main
from orchestrator.running.executor import InlineExecutor
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from workers.store import ResultStore
from workers.run import run_trial

T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


def test_sweep_status_query_fit_report_on_object_storage(bucket, capsys):
    spec = parse_spec({"name": "remote", "trainer": "simulated", "results": bucket, "world": {"law": T0},
                       "sweep": {"kind": "isoflop", "budgets": [1e16, 1e17, 1e18], "model_sizes": [3e6, 1e7, 3e7, 1e8]},
                       "fit": {"target_compute": 1e20}})
    out = run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial))
    assert out.trained == 12 and out.fit is not None
    root = f"{bucket}/remote"
    store = ResultStore(root)
    assert len(store.read_table("trials")) == 12
    assert store.read_bytes("report/index.html").startswith(b"<!doctype html>")
    capsys.readouterr()
    assert main(["status", root]) == 0 and "12" in capsys.readouterr().out
    assert main(["query", root, "select count(*) as n from trials where status = 'completed'", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["n"] == 12
    assert main(["fit", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trials"] == 12
    assert main(["report", root]) == 0 and "report/index.html" in capsys.readouterr().out
    again = run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    assert again.trained == 0 and again.skipped == 12  # resumption reads the bucket too


def test_unknown_scheme_is_a_one_line_error(capsys):
    assert main(["status", "nosuch://bucket/sweep"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch://bucket/sweep" in err
