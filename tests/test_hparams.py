"""Hyperparameter laws (orchestrator.fitting.hparams): per-point optima, the laws and their
intervals, the fit and report of a tuned sweep, and ``scalesweep hparams``. Synthetic runs from
the landscape of shared/BENCHMARK.md: ln loss = ln L(N, D) + k_lr u^2 + k_B v^2 + k_x u v."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.bench_hparams_fit import BATCH, CURV, LR, law_coverage, power, true_loss, tuned_sweep
from orchestrator.cli import main
from orchestrator.fitting.hparams.laws import NMap, fit_power_law
from orchestrator.fitting.hparams.optima import Method, point_optima, trials_runs
from orchestrator.fitting.hparams.tuned import analyse_trials, is_tuned
from orchestrator.report.text import format_fit
from workers.flops import train_flops
from workers.store import ResultStore

N0, D0 = 1e8, 2e9
LR0, B0 = float(power(LR, N0, D0)), float(power(BATCH, N0, D0))


def landscape(n, d, lr, batch, curv=CURV):
    u, v = np.log(lr / power(LR, n, d)), np.log(batch / power(BATCH, n, d))
    k_lr, k_b, k_x = curv
    return true_loss(n, d) * np.exp(k_lr * u * u + k_b * v * v + k_x * u * v)


def point_table(lrs, batches=None, n=N0, d=D0, diverged=(), noise=0.0, seed=0, point="p") -> pd.DataFrame:
    """Trials of one point at every (lr, batch) of ``lrs`` x ``batches`` (batch B* when None)."""
    rng = np.random.default_rng(seed)
    rows = []
    for b in batches if batches is not None else [float(power(BATCH, n, d))]:
        for lr in lrs:
            loss = float(landscape(n, d, lr, b)) + rng.normal(0, noise) if noise else float(landscape(n, d, lr, b))
            rows.append((lr, b, loss, "completed"))
    rows += [(lr, rows[0][1], math.nan, "diverged") for lr in diverged]
    return pd.DataFrame([{"name": f"t{i}", "point_id": point, "status": s, "n_params": n, "n_params_nonembed": None,
                          "tokens": d, "budget": 0.0, "lr": lr, "batch_tokens": b, "eval_loss": y}
                         for i, (lr, b, y, s) in enumerate(rows)])


def optimum(table: pd.DataFrame):
    (p,) = point_optima(trials_runs(table))
    return p


# -- per-point optima -----------------------------------------------------------------------------

def test_parabola_recovers_a_known_optimum_and_its_loss():
    p = optimum(point_table(LR0 * 1.3 * 2.0 ** np.arange(-2, 3)))
    assert p.method is Method.PARABOLA and p.lr_bracketed and p.loss_fitted
    assert p.lr_opt == pytest.approx(LR0, rel=1e-6)  # ln loss is exactly quadratic in ln lr here
    assert p.loss_opt == pytest.approx(float(true_loss(N0, D0)), rel=1e-9)
    assert p.batch_opt is None and p.batch_fixed == pytest.approx(B0)


def test_a_refined_search_uses_every_trial_near_the_best():
    lrs = LR0 * np.array([0.25, 0.5, 0.7, 1.0, 1.4, 2.0, 4.0]) * 1.1
    p = optimum(point_table(lrs, noise=0.002, seed=3))
    assert p.method is Method.PARABOLA and abs(math.log(p.lr_opt / LR0)) < 0.25


@pytest.mark.parametrize("shift, edge", [(0.1, "high"), (10.0, "low")])
def test_a_best_at_an_edge_is_not_bracketed_and_keeps_its_best_trial(shift, edge):
    t = point_table(LR0 * shift * 2.0 ** np.arange(-1, 2))
    p = optimum(t)
    assert p.method is Method.EDGE and not p.lr_bracketed and p.lr_edge == edge and not p.loss_fitted
    assert p.loss_opt == t["eval_loss"].min()


def test_diverged_runs_bound_the_search_and_are_never_the_best():
    # The best finished lr is the highest; the next one diverged: bracketed by the divergence.
    p = optimum(point_table(LR0 * 2.0 ** np.arange(-4, -1), diverged=[LR0 * 2.0]))
    assert p.method is Method.DIVERGENCE and p.lr_bracketed and p.lr_opt <= LR0 / 2 * (1 + 1e-9)
    # Without the diverged trial the same runs are not bracketed.
    assert optimum(point_table(LR0 * 2.0 ** np.arange(-4, -1))).method is Method.EDGE
    # A completed row with a NaN loss is a divergence too, and an interior optimum ignores both.
    t = point_table(LR0 * 2.0 ** np.arange(-1, 2), diverged=[LR0 * 8])
    t.loc[len(t)] = t.iloc[0].to_dict() | {"lr": LR0 * 16, "eval_loss": math.nan, "status": "completed"}
    p = optimum(t)
    assert p.method is Method.PARABOLA and p.n_diverged == 2 and p.lr_opt == pytest.approx(LR0, rel=1e-6)


def test_a_spiked_trial_is_not_taken_for_the_basin():
    """A loss spike (shared/BENCHMARK.md: +0.05-0.3 nats on 2 % of trials) at the best lr
    makes it a bump between two lower neighbours, which a basin cannot have: it is left out."""
    t = point_table(LR0 * 1.2 * 2.0 ** np.arange(-2, 3))
    t.loc[2, "eval_loss"] += 0.1
    p = optimum(t)
    assert p.method is Method.PARABOLA and abs(math.log(p.lr_opt / LR0)) < 0.05


def test_a_grid_with_several_batch_sizes_per_lr_recovers_both_optima():
    lrs, bs = LR0 * 1.2 * 2.0 ** np.arange(-2, 3), B0 * 0.8 * 2.0 ** np.arange(-2, 3)
    p = optimum(point_table(lrs, bs))
    assert p.method is Method.SURFACE and p.lr_bracketed and p.batch_bracketed
    assert p.lr_opt == pytest.approx(LR0, rel=1e-6) and p.batch_opt == pytest.approx(B0, rel=1e-6)
    noisy = optimum(point_table(lrs, bs, noise=0.002, seed=1))
    assert abs(math.log(noisy.lr_opt / LR0)) < 0.2 and abs(math.log(noisy.batch_opt / B0)) < 0.2


def test_one_axis_at_a_time_falls_back_to_the_lines_through_the_best():
    """lr searched at one batch, then the batch at the best lr: a cross, on which a quadratic
    surface's tilt term is not determined."""
    lr_line = point_table(LR0 * 2.0 ** np.arange(-1, 2), [B0 * 1.1])
    b_line = point_table([LR0], B0 * 1.1 * 2.0 ** np.arange(-1, 2))
    p = optimum(pd.concat([lr_line, b_line], ignore_index=True))
    assert p.method is Method.LINES and p.lr_bracketed and p.batch_bracketed and "two lines" in p.why
    assert abs(math.log(p.lr_opt / LR0)) < 0.1 and abs(math.log(p.batch_opt / B0)) < 0.1


# -- laws ----------------------------------------------------------------------------------------

def _points(m=12, seed=0, noise=0.0, one_budget=False):
    rng = np.random.default_rng(seed)
    n = 10 ** rng.uniform(7, 9, m)
    d = 1e17 / (6 * n) if one_budget else 10 ** rng.uniform(8.5, 10.5, m)
    return n, d, float(power(LR, 1, 1)) * n ** LR[1] * d ** LR[2] * np.exp(rng.normal(0, noise, m))


def test_law_recovery_on_clean_and_noisy_points():
    n, d, y = _points()
    law = fit_power_law(n, d, y, n_boot=200)
    assert (law.coef, law.n_exp, law.d_exp) == pytest.approx(LR, rel=1e-6)
    assert any("exactly" in x for x in law.notes)
    n, d, y = _points(noise=0.1, seed=2)
    law = fit_power_law(n, d, y, n_boot=500)
    iv = law.intervals()
    assert iv["n_exp"]["95%"][0] < LR[1] < iv["n_exp"]["95%"][1] and abs(law.d_exp - LR[2]) < 0.15
    rule = law.rule()
    assert rule.n == "nonembed" and rule.at(N0, D0) == pytest.approx(float(np.exp(law.log_at(N0, D0))))


def test_a_point_far_off_the_law_is_left_out_as_an_outlier():
    n, d, y = _points(m=15, noise=0.05, seed=4)
    y[5] *= math.exp(1.5)
    law = fit_power_law(n, d, y, n_boot=200, names=[f"p{i}" for i in range(15)])
    assert law.dropped == (5,) and law.n_points == 14 and any("outliers" in x and "p5" in x for x in law.notes)
    assert abs(law.n_exp - LR[1]) < 0.1 and abs(law.d_exp - LR[2]) < 0.1


def test_a_variable_the_points_cannot_identify_gets_a_fixed_zero_exponent():
    n, d, y = _points(noise=0.05)
    two = np.where(n < 1e8, 3e7, 3e8)  # 2 distinct N
    law = fit_power_law(two, d, y * (two / n) ** LR[1], n_boot=100)
    assert law.free == ("d",) and law.n_exp == 0 and law.intervals()["n_exp"]["fixed"]
    assert any("n_exp fixed at 0" in x for x in law.notes)
    n, d, y = _points(noise=0.05, one_budget=True)  # D = C/6N: collinear
    lr_law, b_law = fit_power_law(n, d, y, "lr", n_boot=100), fit_power_law(n, d, y, "batch", n_boot=100)
    assert lr_law.free == ("n",) and b_law.free == ("d",)
    assert any("collinear" in x for x in lr_law.notes)
    with pytest.raises(Exception, match="at least 3 points"):
        fit_power_law(n[:2], d[:2], y[:2])


def test_the_80_percent_intervals_cover_the_truth_on_simulated_sweeps():
    """50 simulated tuned sweeps (20 points each): the lr law's 80 % interval at a point past the
    largest budget covers the true lr* 70-90 % of the time (bench/bench_hparams_fit.py: 79 % over
    200), and its error stays small."""
    stats = law_coverage(50, "lr", n_boot=400)["lr"]
    assert 0.70 <= stats["cover80"] <= 0.90, stats
    assert stats["p90"] < math.log(1.25), stats


def test_total_to_nonembedding_counts_follow_the_points_and_shrink_the_embedding_share():
    total = np.array([1e6, 1e7, 1e8])
    embed = 3e4 * (total / 1e6) ** (1 / 3)
    m = NMap(total, total - embed)
    assert m(1e7) == pytest.approx(1e7 - embed[1], rel=1e-9)
    big = float(m(1e10))
    assert big < 1e10 and big / 1e10 > (total[-1] - embed[-1]) / total[-1]
    assert NMap(total, total)(5e9) == 5e9


# -- a tuned sweep's fit, report and the command ---------------------------------------------------

def _write_results(tmp_path, table: pd.DataFrame) -> str:
    store = ResultStore(str(tmp_path / "sweep"))
    for i, r in table.reset_index(drop=True).iterrows():
        store.write_trial({"sweep": "s", "trial_id": f"tr{i}", "status": r["status"], "n_params": int(r["n_params"]),
                           "n_params_nonembed": None, "tokens": int(r["tokens"]), "flops": train_flops(r["n_params"], r["tokens"]),
                           "budget": r["budget"], "eval_loss": r["eval_loss"], "lr": r["lr"],
                           "batch_tokens": int(r["batch_tokens"]), "name": r["name"], "point_id": r["point_id"],
                           "seed": 0, "finished_at": float(i)})
    return store.root


def test_a_tuned_sweep_is_fitted_through_its_point_optima(tmp_path, capsys):
    t = tuned_sweep(0, "lr", budgets=(1e17, 1e18, 1e19), sizes=(0.33, 1.0, 3.0))
    assert is_tuned(t) and not is_tuned(t.drop_duplicates("point_id"))
    fit = analyse_trials(t, 1e20, n_boot=100, compare=False)
    assert fit.law.n_points == 9 and fit.n_runs == len(t)
    h = fit.hparams
    assert h.lr_law is not None and h.batch_law is None and "not tuned" in h.batch_fixed
    assert set(h.lr_opt) == {"estimate", "80%", "95%"} and h.at["compute"] == 1e20
    text = format_fit(fit)
    assert "Hyperparameter laws" in text and "learning rate" in text and "batch size (tokens)" in text
    root = _write_results(tmp_path, t)
    assert main(["fit", root, "--bootstrap", "50", "--compute", "1e20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"lr_law", "batch_law", "lr_opt", "batch_opt", "notes"} <= set(out["hparams"]) and out["n_fitted"] == 9
    assert main(["hparams", root, "--bootstrap", "50", "--at-n", "1e9", "--at-d", "2e10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lr_opt"]["estimate"] > 0
    assert main(["report", root]) == 0
    printed = capsys.readouterr().out.split()
    assert any(p.endswith("lr_loss.png") for p in printed) and any(p.endswith("hparam_laws.png") for p in printed)


def test_an_untuned_table_prints_no_hyperparameter_section():
    t = tuned_sweep(0, "lr", budgets=(1e17, 1e18, 1e19), sizes=(0.33, 1.0, 3.0))
    one = t.sort_values("eval_loss").drop_duplicates("point_id")  # one trial per point
    fit = analyse_trials(one, 1e20, n_boot=0, compare=False)
    assert fit.hparams is None and "Hyperparameter" not in format_fit(fit)


def _grid_csv(tmp_path) -> str:
    t = tuned_sweep(1, "grid", budgets=(1e17, 1e18, 1e19), sizes=(0.33, 1.0, 3.0))
    path = tmp_path / "grid.csv"
    t.rename(columns={"n_params": "N", "tokens": "D", "lr": "learning_rate", "batch_tokens": "bs",
                      "eval_loss": "loss"}).drop(columns=["point_id", "status"]).to_csv(path, index=False)
    return str(path)


def test_hparams_command_fits_a_published_style_grid(tmp_path, capsys):
    path = _grid_csv(tmp_path)
    cols = ["--n-col", "N", "--d-col", "D", "--lr-col", "learning_rate", "--batch-col", "bs", "--loss-col", "loss"]
    assert main(["hparams", path, *cols, "--bootstrap", "200", "--compute", "1e20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for law in ("lr_law", "batch_law"):
        assert {"coef", "n_exp", "d_exp"} <= set(out[law]) and set(out[law]["coef"]) >= {"estimate", "80%", "95%"}
    for rec in ("lr_opt", "batch_opt"):
        assert set(out[rec]) == {"estimate", "80%", "95%"} and out[rec]["80%"][0] < out[rec]["estimate"] < out[rec]["80%"][1]
    assert main(["hparams", path, *cols, "--bootstrap", "100", "--at-n", "1e9", "--at-d", "2e10"]) == 0
    text = capsys.readouterr().out
    assert "lr* = " in text and "B* = " in text and "Recommended at N = 1B, D = 20B" in text


def _one_line_error(capsys, argv, *needles) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err and not captured.out
    for s in needles:
        assert s in captured.err, captured.err


def test_bad_input_is_one_line_and_status_2(tmp_path, capsys):
    path = _grid_csv(tmp_path)
    cols = ["--n-col", "N", "--d-col", "D", "--lr-col", "learning_rate", "--loss-col", "loss"]
    df = pd.read_csv(path)
    bad = tmp_path / "bad.csv"
    df.assign(learning_rate=df["learning_rate"].where(df.index != 3, 0.0)).to_csv(bad, index=False)
    _one_line_error(capsys, ["hparams", str(bad), *cols], "--lr-col 'learning_rate'", "row 3", "learning rate > 0")
    df.assign(bs=-df["bs"]).to_csv(bad, index=False)
    _one_line_error(capsys, ["hparams", str(bad), *cols, "--batch-col", "bs"], "--batch-col 'bs'", "batch size > 0")
    _one_line_error(capsys, ["hparams", path, *cols, "--batch-col", "nope"], "--batch-col 'nope': no such column")
    _one_line_error(capsys, ["hparams", path, "--d-col", "D"], "no column", "--n-col")
    few = df[df["N"] <= df["N"].unique()[1]]  # two design points
    few.to_csv(bad, index=False)
    _one_line_error(capsys, ["hparams", str(bad), *cols], "needs at least 3 points")
    _one_line_error(capsys, ["hparams", path, *cols, "--at-n", "1e9"], "--at-n and --at-d")
    _one_line_error(capsys, ["hparams", str(tmp_path / "missing.csv")], "file not found")


def test_no_bootstrap_draws_mean_no_intervals_not_nan_or_zero_width(tmp_path, capsys):
    """--bootstrap 0 printed "[nan, nan]" (the joint fit) or an interval of zero width (the
    regression over the points: the fit itself as the one draw)."""
    path = _grid_csv(tmp_path)
    cols = ["--n-col", "N", "--d-col", "D", "--lr-col", "learning_rate", "--batch-col", "bs", "--loss-col", "loss"]
    assert main(["hparams", path, *cols, "--bootstrap", "0", "--compute", "1e20"]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text and text.count("(no intervals: no bootstrap resamples, --bootstrap 0)") == 2
    assert "learning rate" in text and "Recommended at" in text
    assert main(["hparams", path, *cols, "--bootstrap", "0", "--compute", "1e20", "--json"]) == 0
    out = capsys.readouterr().out
    j = json.loads(out)
    assert "NaN" not in out and j["lr_law"]["n_draws"] == 0 and j["lr_opt"]["80%"] == [None, None]
    law = fit_power_law([1e8, 3e8, 1e9, 3e9], [2e9, 2e9, 2e10, 6e9], [3e-3, 2e-3, 1.1e-3, 8e-4], n_boot=0)
    assert law.draws.shape == (0, 3) and law.intervals()["coef"]["80%"] != [law.coef, law.coef]


def test_hparams_on_a_wsd_sweep_with_variants_fits_one_variants_design_points(tmp_path, capsys):
    """`hparams RESULTS` counted a wsd sweep's stem segments as design points and pooled the
    variants (148 "design points" for 2 x 9), which moved the law (lr* = 5.87 N^-0.826 D^0.370
    for a world of 1.79 N^-0.713 D^0.307 and a variant at twice its lr*)."""
    from test_tuning import B_RULE, LR_RULE, sim_spec

    from orchestrator.running.executor import InlineExecutor
    from orchestrator.sweep import run_sweep

    hot = {**LR_RULE, "coef": 2 * LR_RULE["coef"]}
    spec = sim_spec(tmp_path, train={"lr": {"tune": 1e-3}, "batch_tokens": B_RULE, "schedule": "wsd"},
                    variants=[{"name": "hot", "world": {"hparams": {"lr": hot}}}])
    run_sweep(spec, executor_factory=InlineExecutor, write_report=False)
    rows = ResultStore(spec.sweep_dir).read_table("trials").to_pandas()
    assert (rows["role"] == "stem").sum() > 0 and set(rows["variant"]) == {"baseline", "hot"}
    for variant, rule in (("baseline", LR_RULE), ("hot", hot)):
        chosen = ["--variant", variant] if variant != "baseline" else []  # the baseline by default
        assert main(["hparams", spec.sweep_dir, "--bootstrap", "50", "--json", *chosen]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["variant"] == variant and out["design_points"] == 9 and len(out["points"]) == 9
        assert out["other_variants"] == [{"baseline": "hot", "hot": "baseline"}[variant]]
        law = out["lr_law"]
        assert law["coef"]["estimate"] == pytest.approx(rule["coef"], rel=0.05)
        assert law["n_exp"]["estimate"] == pytest.approx(rule["n_exp"], abs=0.02)
    assert main(["hparams", spec.sweep_dir, "--bootstrap", "0"]) == 0
    assert capsys.readouterr().out.startswith(f"Hyperparameter laws of {spec.sweep_dir} (variant baseline: 9 design "
                                              "points, ")
    _one_line_error(capsys, ["hparams", spec.sweep_dir, "--variant", "cold"],
                    "--variant 'cold': no runs of that variant in", "'baseline', 'hot'")


def test_a_table_without_variants_is_fitted_whole_and_refuses_variant(tmp_path, capsys):
    path = _grid_csv(tmp_path)
    cols = ["--n-col", "N", "--d-col", "D", "--lr-col", "learning_rate", "--loss-col", "loss", "--bootstrap", "0"]
    assert main(["hparams", path, *cols]) == 0
    assert capsys.readouterr().out.startswith(f"Hyperparameter laws of {path} (9 design points, ")
    _one_line_error(capsys, ["hparams", path, *cols, "--variant", "moe"],
                    "--variant 'moe': the runs have no variant column (name it with --variant-col)")
    df = pd.read_csv(path).assign(arch="dense")
    df.to_csv(path, index=False)
    assert main(["hparams", path, *cols, "--variant-col", "arch"]) == 0  # its only variant, whatever its name
    assert "(variant dense: " in capsys.readouterr().out.splitlines()[0]
