"""Two-step downstream predictions (orchestrator.fitting.downstream, ``scalesweep downstream``):
a known simulated world is recovered within its intervals, the bootstrap resamples whole runs,
and bad input is one line with exit status 2. Worlds from workers.simulated.tasks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from orchestrator.errors import FitError
from orchestrator.fitting.bootstrap import resample_counts
from orchestrator.fitting.downstream import (downstream_data_from_results, fit_downstream, from_frame, predict)
from orchestrator.fitting.downstream.chain import fit_task, task_data
from orchestrator.fitting.downstream.sigmoid import fit_sigmoid
from orchestrator.fitting.downstream.step1 import fit_step1
from workers.simulated import tasks as T
from workers.store import ResultStore

SIZES = (190e6, 370e6, 760e6, 1.3e9)
MULTS = (1, 2, 5, 10)
TARGET = (5.2e9, 1.04e12)  # 4x the largest size, 4x its tokens


def ladder_frame(seed: int = 1, n_ckpt: int = 12, truths=None, sizes=SIZES) -> pd.DataFrame:
    truths = truths if truths is not None else T.default_truths(seed)
    return pd.DataFrame(T.ladder(truths, sizes, MULTS, n_ckpt, np.random.default_rng(seed)))


@pytest.fixture(scope="module")
def world():
    truths = T.default_truths(3)
    df = ladder_frame(3, truths=truths)
    fit = fit_downstream(from_frame(df, source="world"), n_boot=100, seed=0)
    return truths, df, fit


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the fit -------------------------------------------------------------------------------------

def test_recovers_a_known_worlds_accuracy_within_its_interval(world):
    """At 4x the ladder's largest N and D: estimates close to the truth, and the truth inside most
    95 % intervals. The four tasks share one ladder's noise, so their misses are correlated (here
    two task-loss intervals miss by 1.5-2 sds); bench/bench_downstream.py measures coverage."""
    truths, _, fit = world
    rows = predict(fit, [TARGET[0]], [TARGET[1]])
    assert [r["task"] for r in rows] == [t.name for t in truths]
    inside_acc = inside_loss = 0
    for r, t in zip(rows, truths):
        loss = float(T.true_task_loss(t, *TARGET))
        acc = float(T.true_accuracy(t, loss))
        assert abs(r["accuracy"]["estimate"] - acc) < 0.08
        assert abs(r["task_loss"]["estimate"] / loss - 1) < 0.08
        inside_acc += r["accuracy"]["95%"][0] <= acc <= r["accuracy"]["95%"][1]
        inside_loss += r["task_loss"]["95%"][0] <= loss <= r["task_loss"]["95%"][1]
        assert 0 <= r["accuracy"]["95%"][0] <= r["accuracy"]["80%"][0] <= r["accuracy"]["80%"][1] <= \
            r["accuracy"]["95%"][1] <= 1
    assert inside_acc >= 3 and inside_loss >= 2


def test_step2_floor_is_chance_and_ceiling_at_most_one(world):
    truths, _, fit = world
    for tf, t in zip(fit.tasks, truths):
        v = tf.sigmoid.values()
        assert v["floor"] == pytest.approx(t.chance)
        assert v["ceiling"] <= 1.0
        assert (tf.sigmoid.values(tf.sig_draws)["ceiling"] <= 1.0).all()


def test_the_bootstrap_resamples_whole_runs():
    """A resample that leaves a run out refits both steps exactly as a fit without that run."""
    df = ladder_frame(5)
    td = task_data(from_frame(df).frame, "medium")
    counts = np.ones((2, len(td.runs)))
    counts[1, 3] = 0.0  # resample 1: run 3 left out, every other run once
    tf = fit_task(td, counts)
    keep = np.arange(len(td.runs)) != 3
    sub = td.subset(keep)
    sig = fit_sigmoid(sub.x, sub.y, sub.chance)
    grid = np.linspace(0.6, 1.3, 15)
    assert np.allclose(tf.sigmoid(grid, tf.sig_draws[1:2])[0], sig(grid), atol=2e-3)
    assert np.allclose(tf.sigmoid(grid, tf.sig_draws[0:1])[0], tf.sigmoid(grid), atol=1e-4)
    s1 = fit_step1(sub.n, sub.d, sub.loss)
    X = {"N": np.array([1e9, 5e9]), "D": np.array([1e11, 1e12])}
    assert np.allclose(tf.step1.predict(X, tf.step1.draws[1:2])[0], s1.predict(X), rtol=2e-3)
    # The multinomial counts are over runs: a run's checkpoints share one weight in every resample.
    c = resample_counts(len(td.runs), 50, 0)
    assert c.shape == (50, len(td.runs)) and (c.sum(axis=1) == len(td.runs)).all()


def test_emergence_and_baselines_are_reported(world):
    _, _, fit = world
    for tf in fit.tasks:
        em = tf.extras["emergence"]
        assert em["accuracy"] == pytest.approx(tf.data.chance + 0.05)
        assert em["task_loss"] is None or em["task_loss"]["estimate"] > 0
        assert set(tf.extras["baselines"]) == {"one_step", "compute_only"}
    row = predict(fit, [TARGET[0]], [TARGET[1]])[0]
    assert 0 <= row["baselines"]["one_step"] <= 1 and 0 <= row["baselines"]["compute_only"] <= 1


def test_constant_accuracy_task_is_skipped_with_a_note_while_others_go_on():
    df = ladder_frame(2, n_ckpt=8, truths=T.default_truths(2)[:2])
    flat = df[df["task"] == "easy"].copy()
    flat["task"], flat["acc"] = "flat", 0.25
    fit = fit_downstream(from_frame(pd.concat([df, flat]), source="t"), n_boot=20)
    assert "flat" in fit.skipped and "constant" in fit.skipped["flat"]
    assert [t.task for t in fit.tasks] == ["easy", "medium"]
    with pytest.raises(FitError, match="no task could be fitted"):
        fit_downstream(from_frame(flat, source="t"), n_boot=5)


def test_missing_chance_column_fits_the_floor():
    df = ladder_frame(4, n_ckpt=10, truths=T.default_truths(4)[3:]).drop(columns=["chance", "n_items"])
    fit = fit_downstream(from_frame(df, source="t"), n_boot=30)
    tf = fit.task("binary")
    assert tf.data.chance is None and any("floor is fitted" in n for n in tf.notes)
    assert any("scatter" in n for n in tf.notes)
    v = tf.sigmoid.values()
    assert 0 <= v["floor"] < v["ceiling"] <= 1 and abs(v["floor"] - 0.5) < 0.1


def test_fewer_than_three_runs_is_an_error():
    df = ladder_frame(1, n_ckpt=6)
    two = df[df["run"].isin(df["run"].unique()[:2])]
    with pytest.raises(FitError, match="2 runs; the two-step fit needs at least 3"):
        fit_downstream(from_frame(two, source="t"), n_boot=5)


def test_small_ladder_falls_back_to_the_compute_law():
    df = ladder_frame(1, n_ckpt=8, sizes=(190e6, 760e6))
    df = df[df["run"].str.endswith(("-1xC", "-5xC"))]  # 4 runs
    fit = fit_downstream(from_frame(df, source="t"), n_boot=20)
    assert fit.tasks and all("compute alone" in " ".join(t.notes) for t in fit.tasks)
    rows = predict(fit, [1e9], [2e10])
    assert all(np.isfinite(r["accuracy"]["estimate"]) for r in rows)


# -- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("downstream")
    df = ladder_frame(6, n_ckpt=6, truths=T.default_truths(6)[1:3])  # two tasks: medium, hard
    df.to_csv(d / "ladder.csv", index=False)
    pct = df.copy()
    pct["acc"], pct["chance"] = 100 * pct["acc"], 100 * pct["chance"]
    pct.to_parquet(d / "percent.parquet")
    pd.DataFrame({"name": ["a", "b"], "N": [3e9, 6e9], "tokens": [6e11, 1.2e12]}).to_csv(d / "points.csv", index=False)
    pd.DataFrame({"n_params": [3e9], "flops": [6 * 3e9 * 6e11]}).to_csv(d / "points_c.csv", index=False)
    return d


def test_json_shape_and_order(files, capsys):
    code, out, _ = run_cli(["downstream", str(files / "ladder.csv"), "--predict", str(files / "points.csv"),
                            "--json", "--n-boot", "40"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["acc_unit"] == "fraction" and doc["runs"] == 16
    assert [t["task"] for t in doc["tasks"]] == ["medium", "hard"]
    t = doc["tasks"][0]
    assert set(t["step1"]["params"]) == {"A", "B", "E", "alpha", "beta"}
    assert set(t["step2"]["params"]) == {"floor", "ceiling", "k", "L0"} and t["emergence"]["accuracy"] > 0
    preds = doc["predictions"]
    assert [(p["point"], p["task"]) for p in preds] == [(a, b) for a in "ab" for b in ("medium", "hard")]
    for p in preds:
        for key in ("task_loss", "accuracy"):
            v = p[key]
            assert v["95%"][0] <= v["80%"][0] <= v["estimate"] <= v["80%"][1] <= v["95%"][1]
        assert 0 <= p["accuracy"]["95%"][0] and p["accuracy"]["95%"][1] <= 1
        assert set(p["baselines"]) == {"one_step", "compute_only"}
    assert preds[0]["n"] == 3e9 and preds[0]["d"] == 6e11


def test_text_output_and_compute_points(files, capsys):
    code, out, _ = run_cli(["downstream", str(files / "ladder.csv"), "--predict", str(files / "points_c.csv"),
                            "--n-boot", "20"], capsys)
    assert code == 0
    assert "step 1: L(N, D) =" in out and "step 2: acc(L) = 0.25 (chance)" in out and "emergence" in out
    assert "Predictions" in out and "6e+11" in out  # D from C = 6ND


def test_percent_accuracy_is_reported_in_percent(files, capsys):
    args = ["--predict", str(files / "points.csv"), "--json", "--n-boot", "20"]
    _, frac, _ = run_cli(["downstream", str(files / "ladder.csv")] + args, capsys)
    code, pct, _ = run_cli(["downstream", str(files / "percent.parquet")] + args, capsys)
    assert code == 0
    frac, pct = json.loads(frac), json.loads(pct)
    assert pct["acc_unit"] == "percent" and any("percent" in n for n in pct["notes"])
    for a, b in zip(frac["predictions"], pct["predictions"]):
        assert b["accuracy"]["estimate"] == pytest.approx(100 * a["accuracy"]["estimate"], rel=1e-4)
        assert b["accuracy"]["95%"][1] == pytest.approx(100 * a["accuracy"]["95%"][1], rel=1e-3, abs=1e-3)
    assert pct["tasks"][0]["chance"] == pytest.approx(25.0)


@pytest.mark.parametrize("case, message", [
    ("unknown_column", "--acc-col 'accuracy': no such column"),
    ("non_numeric", "expected a number"),
    ("malformed", "cannot read"),
    ("two_runs", "needs at least 3"),
    ("missing", "file not found"),
    ("no_loss_for_compute", "--compute"),
])
def test_bad_input_is_one_line_exit_2(files, tmp_path, capsys, case, message):
    table = files / "ladder.csv"
    extra = []
    if case == "unknown_column":
        extra = ["--acc-col", "accuracy"]
    elif case == "non_numeric":
        df = pd.read_csv(table)
        df["task_bpb"] = df["task_bpb"].astype(object)
        df.loc[5, "task_bpb"] = "abc"
        table = tmp_path / "bad.csv"
        df.to_csv(table, index=False)
    elif case == "malformed":
        table = tmp_path / "bad.parquet"
        table.write_text("this is not parquet")
    elif case == "two_runs":
        df = pd.read_csv(table)
        table = tmp_path / "two.csv"
        df[df["run"].isin(df["run"].unique()[:2])].to_csv(table, index=False)
    elif case == "missing":
        table = tmp_path / "nope.csv"
    elif case == "no_loss_for_compute":
        extra = ["--compute", "1e22"]
    code, out, err = run_cli(["downstream", str(table), "--n-boot", "5"] + extra, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


# -- a sweep's results directory -----------------------------------------------------------------

def test_results_directory_with_evals_table(tmp_path, capsys):
    df = ladder_frame(7, n_ckpt=6, truths=T.default_truths(7)[:2])
    store = ResultStore(str(tmp_path / "sweep"))
    (tmp_path / "sweep" / "evals").mkdir(parents=True)
    for i, (run, g) in enumerate(df.groupby("run", sort=False)):
        tid = f"t{i:02d}"
        n, d = float(g["n_params"].iloc[0]), float(g["tokens"].max())
        store.write_trial({"trial_id": tid, "status": "completed", "role": "point", "n_params": int(n),
                           "tokens": int(d), "flops": 6 * n * d, "eval_loss": 2.0 + 50 / n**0.3 + 400 / d**0.3,
                           "name": run, "sweep": "s"})
        ev = pd.DataFrame({"trial_id": tid, "step": g["step"].astype("int64"), "tokens": g["tokens"].astype("int64"),
                           "task": g["task"], "task_bpb": g["task_bpb"], "acc": g["acc"], "acc_norm": g["acc_norm"],
                           "n_items": g["n_items"].astype("int64"), "chance": g["chance"]})
        pq.write_table(pa.Table.from_pandas(ev, preserve_index=False), tmp_path / "sweep" / "evals" / f"{tid}.parquet")
    store.write_trial({"trial_id": "failed", "status": "failed", "role": "point", "n_params": 10**9, "tokens": 10**10,
                       "name": "f", "sweep": "s"})
    data = downstream_data_from_results(str(tmp_path / "sweep"))
    assert data.n_runs == 16 and set(data.tasks) == {"easy", "medium"}
    assert data.lm_runs is not None and len(data.lm_runs) == 16
    code, out, err = run_cli(["downstream", str(tmp_path / "sweep"), "--compute", "1e21", "--json", "--n-boot", "10"],
                             capsys)
    assert code == 0, err
    preds = json.loads(out)["predictions"]
    assert len(preds) == 2 and preds[0]["point"] == "C=1e+21"


def test_no_resamples_gives_estimates_without_intervals(files, capsys):
    code, out, _ = run_cli(["downstream", str(files / "ladder.csv"), "--predict", str(files / "points.csv"), "--json",
                            "--n-boot", "0"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert any("without intervals" in n for n in doc["notes"])
    p = doc["predictions"][0]
    assert p["accuracy"]["95%"] == [None, None] and 0 < p["accuracy"]["estimate"] < 1
