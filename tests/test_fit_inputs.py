"""Fits of designs that are not IsoFLOP grids, and of degenerate or absurd tables: each is a fit
with the right notes, an exclusion with its reason, or one line on stderr with status 2."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.synthetic_sweeps import synthetic_isoflop
from orchestrator.fitting.analysis import analyse
from orchestrator.cli import main
from orchestrator.fitting.diagnostics import local_scale
from orchestrator.fitting.discrepancy import Discrepancy, discrepancy_sd
from orchestrator.errors import InsufficientData
from orchestrator.fitting.law import LawParams, fit_approach3, predict_loss
from orchestrator.fitting.isoflop import fit_isoflop_parabolas, infer_budgets
from orchestrator.fitting.bootstrap import _envelope_candidates, _refit_approach1, resample_counts
from orchestrator.report.text import format_fit

LAW = LawParams(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def random_design(m: int, seed: int = 0, noise: float = 0.01) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, d = 10 ** rng.uniform(6, 10, m), 10 ** rng.uniform(8, 12, m)
    loss = predict_loss(LAW, n, d) * np.exp(rng.normal(0, noise, m))
    return pd.DataFrame({"name": [f"r{i}" for i in range(m)], "status": "completed", "n_params": n, "tokens": d,
                         "flops": 6 * n * d, "eval_loss": loss})


def isoflop_table(budgets=(1e18, 1e19, 1e20), sizes=5, seed=0) -> pd.DataFrame:
    n, d, loss, _ = synthetic_isoflop(LAW, budgets, sizes, 0.005, seed)
    return pd.DataFrame({"status": "completed", "n_params": n, "tokens": d, "flops": 6 * n * d, "eval_loss": loss})


def test_random_design_skips_approach2_with_a_note_and_no_inferred_budgets():
    fit = analyse(random_design(3000), 1e22, n_boot=100)
    assert fit.approach2 is None and fit.minima == [] and not fit.budgets_inferred
    note = next(x for x in fit.notes if x.startswith("Approach 2 skipped"))
    assert "not clustered at IsoFLOP budgets" in note and "--budget-col" in note
    text = format_fit(fit)
    assert "IsoFLOP minima" not in text and text.count("C=") == 0 and note in text
    assert fit.to_json()["approach2"]["error"].startswith("skipped")


@pytest.mark.parametrize("m", [300, 1000, 3000, 20000])
def test_random_compute_values_are_not_taken_for_budgets(m):
    t = random_design(m, seed=m)
    assert not (infer_budgets(t["flops"], t["n_params"]) > 0).any()


def test_isoflop_runs_without_a_budget_column_keep_approach2():
    fit = analyse(isoflop_table(), 1e22, n_boot=50)  # the quickstart's shape: 3 budgets x 5 sizes
    assert fit.budgets_inferred and fit.approach2 is not None and len(fit.minima) == 3
    assert not any(x.startswith("Approach 2 skipped") for x in fit.notes)


def test_a_budget_per_run_is_summarised_not_listed():
    t = random_design(2000)
    t["budget"] = t["flops"]
    fit = analyse(t, 1e22, n_boot=0)
    msg = fit.unavailable["approach2"]
    assert "and 1995 more budgets" in msg and len(msg) < 400
    assert fit_isoflop_parabolas(t["budget"], t["n_params"], t["tokens"], t["eval_loss"])[1][t["budget"][0]] == 1


def degenerate(kind: str) -> pd.DataFrame:
    t = isoflop_table().reset_index(drop=True)
    if kind == "constant loss":
        t["eval_loss"] = 3.0
    elif kind == "one point":
        t = pd.concat([t.iloc[[0]]] * 30, ignore_index=True)
    elif kind == "two points":
        t = pd.concat([t.iloc[[0, 7]]] * 10, ignore_index=True)
    elif kind == "one N":
        t["n_params"] = 1e8
    elif kind == "one D":
        t["tokens"] = 1e10
    elif kind == "narrow N":
        t["n_params"] = np.linspace(1e8, 1.01e8, len(t))
    return t


@pytest.mark.parametrize("kind, message", [
    ("constant loss", r"every run has the same loss \(3\)"),
    ("one point", r"needs at least 5 distinct \(N, D\) points; the 30 runs have 1"),
    ("two points", r"needs at least 5 distinct \(N, D\) points; the 20 runs have 2"),
    ("one N", r"needs at least 3 distinct N .*the runs have 1"),
    ("one D", r"needs at least 3 distinct D .*the runs have 1"),
    ("narrow N", r"N spread over at least a factor of 1.5"),
])
def test_degenerate_tables_are_one_line_errors_saying_what_is_needed(kind, message, tmp_path, capsys):
    t = degenerate(kind)
    with pytest.raises(InsufficientData, match=message):
        analyse(t, 1e22, n_boot=20)
    path = tmp_path / "runs.csv"
    t.to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scalesweep: error: ") and "Traceback" not in err


def test_an_infinite_d_is_excluded_and_does_not_set_the_default_target(tmp_path, capsys):
    t = isoflop_table()
    t.loc[len(t)] = {"status": "completed", "n_params": 1e9, "tokens": math.inf, "flops": math.inf, "eval_loss": 2.5}
    fit = analyse(t, None, n_boot=0)
    assert fit.excluded["non_finite_size"] == 1 and fit.approach3.n_points == len(t) - 1
    assert fit.target["compute"] == pytest.approx(10 * t["flops"].iloc[:-1].max())
    assert math.isfinite(fit.target["n_opt"]) and fit.target_source
    path = tmp_path / "runs.csv"
    t.drop(columns="flops").to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("Target compute 1e+21 FLOPs (10x the largest run the fit uses") and "inf" not in first
    assert "1 non finite size (N, D or C infinite)" in out and "N_opt" in out and " inf " not in out


@pytest.mark.parametrize("loss, reason", [(-0.5, "non_positive_loss"), (0.0, "non_positive_loss"),
                                          (math.nan, "non_finite_loss"), (math.inf, "non_finite_loss"),
                                          ("n/a", "non_finite_loss")])
def test_a_bad_loss_is_excluded_with_its_own_reason(loss, reason):
    t = isoflop_table().astype({"eval_loss": object})
    t.loc[0, "eval_loss"] = loss
    fit = analyse(t, 1e22, n_boot=0)
    assert fit.excluded[reason] == 1 and sum(fit.excluded.values()) == 1
    assert fit.excluded_runs[0]["reason"] == reason
    assert f"1 {reason.replace('_', ' ')}" in format_fit(fit)


@pytest.mark.parametrize("column, value, reason", [
    ("n_params", -1e8, "non_positive_size"), ("tokens", 0.0, "non_positive_size"), ("flops", -3.0, "non_positive_size"),
    ("n_params", math.nan, "missing_size"), ("tokens", "many", "missing_size"), ("n_params", math.inf, "non_finite_size"),
    ("flops", math.inf, "non_finite_size")])
def test_a_bad_size_is_excluded_with_its_own_reason(column, value, reason):
    t = isoflop_table().astype({column: object})
    t.loc[2, column] = value
    fit = analyse(t, 1e22, n_boot=0)
    assert fit.excluded[reason] == 1 and sum(fit.excluded.values()) == 1


def test_huge_sizes_overflowing_c_are_excluded_not_fitted(tmp_path, capsys):
    t = isoflop_table().drop(columns="flops")
    t.loc[len(t)] = {"status": "completed", "n_params": 1e200, "tokens": 1e200, "eval_loss": 1.9}
    path = tmp_path / "runs.csv"
    t.to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "0", "--json"]) == 0
    assert '"non_finite_size": 1' in capsys.readouterr().out


def test_a_non_numeric_column_is_a_one_line_error(tmp_path, capsys):
    t = isoflop_table()
    t["eval_loss"] = "low"
    path = tmp_path / "runs.csv"
    t.to_csv(path, index=False)
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'eval_loss'" in err and "not numeric" in err


def test_empty_and_tiny_tables_are_one_line_errors(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    isoflop_table().iloc[:0].to_csv(path, index=False)
    assert main(["fit", str(path)]) == 2
    assert "have 0" in capsys.readouterr().err
    isoflop_table().iloc[:3].to_csv(path, index=False)
    assert main(["fit", str(path)]) == 2
    assert "have 3" in capsys.readouterr().err


def test_few_distinct_points_and_zero_width_intervals_are_flagged():
    t = isoflop_table().iloc[[0, 2, 4, 6, 8, 12]].reset_index(drop=True)
    t["eval_loss"] = predict_loss(LAW, t["n_params"], t["tokens"])  # exactly on the law
    t = pd.concat([t] * 5, ignore_index=True)
    fit = analyse(t, 1e22, n_boot=100)
    text = format_fit(fit)
    assert "Flags: none" not in text
    assert any("only 6 distinct (N, D) points" in f for f in fit.flags)
    assert any("repeat another run's N, D and loss exactly" in x for x in fit.notes)


def test_a_law_that_falls_with_neither_n_nor_d_has_no_exponents_and_no_crash():
    p = LawParams(E=3.0, A=1.0, B=1.0, alpha=0.0, beta=0.0)
    assert math.isnan(p.a) and math.isnan(p.b)


def test_pruned_envelope_bootstrap_equals_the_full_one():
    t = random_design(4000, seed=3)
    n, d, loss, c = (t[k].to_numpy(float) for k in ("n_params", "tokens", "eval_loss", "flops"))
    counts = resample_counts(len(n), 40, seed=1)
    env = _envelope_candidates(c, loss)
    assert len(env) < len(n)
    full = _refit_approach1(counts, c, n, d, loss, np.zeros_like(n))
    pruned = _refit_approach1(counts[:, env], c[env], n[env], d[env], loss[env], np.zeros(len(env)))
    for k in full:
        np.testing.assert_allclose(pruned[k], full[k], rtol=1e-12)


def test_gridded_field_sandwich_matches_the_exact_sum():
    import orchestrator.fitting.discrepancy as disc

    t = random_design(3000, seed=4)
    n, d, loss = (t[k].to_numpy(float) for k in ("n_params", "tokens", "eval_loss"))
    theta = fit_approach3(n, d, loss).params.as_vector()
    field = Discrepancy(s_r=0.01, ell=0.5, sigma=0.0, q=1.0, level=3.0)
    gridded = discrepancy_sd(theta, n, d, loss, field, 1e22)
    exact_limit, disc.GRID_MIN_POINTS = disc.GRID_MIN_POINTS, 10**9
    try:
        exact = discrepancy_sd(theta, n, d, loss, field, 1e22)
    finally:
        disc.GRID_MIN_POINTS = exact_limit
    for k in exact:
        assert gridded[k] == pytest.approx(exact[k], rel=0.005), k


def test_strided_local_scale_follows_the_noise_level():
    rng = np.random.default_rng(0)
    level = rng.uniform(2, 6, 50_000)
    resid = rng.normal(0, 0.01 * level)
    scale = local_scale(resid, level)
    np.testing.assert_allclose(scale, 0.01 * level, rtol=0.15)


def test_text_formatting_loads_no_fitting_engine():
    """``scalesweep status`` formats sizes and FLOPs with orchestrator.report.text: importing it
    must not load scipy or the fit (only the numpy-only orchestrator.fitting)."""
    code = ("import sys, orchestrator.report.text; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'scipy' or "
            "m.startswith('orchestrator.fitting.') and m not in ('orchestrator.fitting',)]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stdout + out.stderr


# -- issue 26: options and tables that once gave a traceback, a hang or absurd numbers ------------

def _csv(tmp_path, t: pd.DataFrame, name: str = "runs.csv") -> str:
    path = tmp_path / name
    t.to_csv(path, index=False)
    return str(path)


def _one_line(capsys, argv: list[str], expected: str) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("scalesweep: error: ") and err.count("\n") == 1 and captured.out == "", err
    assert expected in err, err
    return err


@pytest.mark.parametrize("command", ["fit", "hparams"])
def test_a_negative_seed_is_refused_by_the_option_parser(tmp_path, capsys, command):
    """--seed -1 reached numpy's SeedSequence: a ValueError traceback from both commands."""
    path = _csv(tmp_path, isoflop_table())
    with pytest.raises(SystemExit) as e:
        main([command, path, "--seed", "-1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].endswith("argument --seed: expected a number >= 0, got '-1'")


def test_no_bootstrap_says_the_intervals_are_unavailable(tmp_path, capsys):
    import json

    path = _csv(tmp_path, isoflop_table())
    points = _csv(tmp_path, pd.DataFrame({"n_params": [1e9], "tokens": [2e10]}), "points.csv")
    assert main(["fit", path, "--bootstrap", "0", "--predict", points]) == 0
    out = capsys.readouterr().out
    assert "estimate  (no intervals: no bootstrap resamples, --bootstrap 0)" in out
    assert "not the law's own uncertainty" in out and "the law's bootstrap spread" not in out
    assert main(["fit", path, "--bootstrap", "0", "--predict", points, "--json"]) == 0
    out = capsys.readouterr().out
    j = json.loads(out)
    assert j["bootstrap"] is None and j["intervals"] == {} and "NaN" not in out
    assert j["predictions"][0]["95%"][0] < j["predictions"][0]["loss"] < j["predictions"][0]["95%"][1]


def test_a_loss_whose_square_overflows_is_refused_naming_the_column(tmp_path, capsys):
    """A loss of 1e308 printed "in-sample RMS inf" and exited 0."""
    t = isoflop_table()
    t.loc[3, "eval_loss"] = 1e308
    _one_line(capsys, ["fit", _csv(tmp_path, t), "--bootstrap", "0"],
              "--loss-col 'eval_loss' in ")
    t.loc[3, "eval_loss"] = -1e308  # below zero: excluded as a non-positive loss, with its reason
    assert main(["fit", _csv(tmp_path, t), "--bootstrap", "0", "--json"]) == 0
    assert '"non_positive_loss": 1' in capsys.readouterr().out


def test_predict_read_errors_name_the_option_and_the_file(tmp_path, capsys):
    bad = tmp_path / "points.parquet"
    bad.write_text("not parquet\n")
    _one_line(capsys, ["fit", _csv(tmp_path, isoflop_table()), "--bootstrap", "0", "--predict", str(bad)],
              f"--predict: cannot read points from {bad} (")


@pytest.mark.parametrize("argv", [["fit", "{fifo}"], ["fit", "{runs}", "--predict", "{fifo}"], ["hparams", "{fifo}"]],
                         ids=["runs", "predict", "hparams"])
def test_a_named_pipe_is_refused_before_it_is_opened(tmp_path, argv):
    """A FIFO named as a table once blocked the reader forever (run in a subprocess, so that a
    regression fails on the timeout instead of hanging the suite)."""
    fifo = tmp_path / "table.csv"
    os.mkfifo(fifo)
    runs = _csv(tmp_path, isoflop_table())
    argv = [a.format(fifo=fifo, runs=runs) for a in argv]
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *argv, "--bootstrap", "0"], capture_output=True,
                       text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"{fifo}: not a regular file (a named pipe, socket or device" in p.stderr
    assert ("--predict " in p.stderr) == ("--predict" in argv)
