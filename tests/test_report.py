"""`scalesweep report`: plots and a self-contained page, or one line when it cannot write."""

import os

import pytest

from orchestrator.cli import main
from orchestrator.running.executor import InlineExecutor
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from workers.store import ResultStore
from workers.run import run_trial

T0 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


@pytest.fixture
def sweep(tmp_path):
    spec = parse_spec({"name": "rep", "trainer": "simulated", "results": str(tmp_path), "world": {"law": T0},
                       "sweep": {"kind": "isoflop", "budgets": [1e16, 1e17, 1e18], "model_sizes": [3e6, 1e7, 3e7, 1e8]},
                       "fit": {"target_compute": 1e20}})
    run_sweep(spec, executor_factory=lambda: InlineExecutor(run_trial), write_report=False)
    return spec.sweep_dir


def test_report_writes_every_plot_and_the_page(sweep, capsys):
    assert main(["report", sweep]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[-1].endswith("report/index.html") and len(printed) > 3
    assert all(os.path.getsize(p) > 1000 for p in printed)


def _refuse(self, rel_path, data):
    raise PermissionError(13, "Permission denied", f"{self.root}/{rel_path}")


def test_an_unwritable_results_directory_is_one_line(sweep, capsys, monkeypatch):
    """What pyarrow raises on a read-only mount (the tests run as root, for whom chmod does
    not take away writing): once a traceback, now one line naming the directory, exit 2."""
    monkeypatch.setattr(ResultStore, "write_bytes", _refuse)
    assert main(["report", sweep]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{sweep}/report: cannot write the report (Permission denied" in err
    assert not os.path.exists(f"{sweep}/report")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_results_directory_is_one_line(sweep, capsys):
    os.chmod(sweep, 0o555)
    try:
        assert main(["report", sweep]) == 2
        assert "cannot write the report" in capsys.readouterr().err
    finally:
        os.chmod(sweep, 0o755)
