"""``analyse`` and ``scalesweep fit``: exclusions, flags, the extrapolation check, any table of
runs, and the Chinchilla reference refit (when ../shared/data is there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.synthetic_sweeps import synthetic_isoflop
from orchestrator.fitting.analysis import analyse
from orchestrator.cli import main
from orchestrator.fitting.diagnostics import approach2_flags, law_flags, residual_scale
from orchestrator.errors import InsufficientData
from orchestrator.fitting.law import LawParams, predict_loss
from orchestrator.fitting.bootstrap import Interval
from orchestrator.report.text import format_fit
from workers.store import ResultStore

LAW = LawParams(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
BUDGETS = (1e18, 1e19, 1e20, 1e21)
CHINCHILLA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_svg_extracted.csv"


def trials(seed=0, noise=0.01, sizes=7, budgets=BUDGETS) -> pd.DataFrame:
    n, d, loss, budget = synthetic_isoflop(LAW, budgets, sizes, noise, seed)
    return pd.DataFrame({"name": [f"t{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                         "tokens": d, "flops": 6 * n * d, "budget": budget, "eval_loss": loss, "error": None})


def test_failed_and_diverged_trials_are_left_out_and_counted():
    t = trials()
    t.loc[0, ["status", "error"]] = ["failed", "RuntimeError: CUDA out of memory\n  traceback..."]
    t.loc[1, ["status", "eval_loss"]] = ["diverged", np.nan]
    t.loc[2, "eval_loss"] = np.inf
    fit = analyse(t, 1e23, n_boot=0)
    assert fit.approach3.n_points == len(t) - 3
    assert (fit.excluded["failed"], fit.excluded["diverged"], fit.excluded["non_finite_loss"]) == (1, 1, 1)
    text = format_fit(fit)
    assert "1 failed (the trial raised an error)" in text and "CUDA out of memory" in text
    assert {r["reason"] for r in fit.to_json()["excluded_runs"]} == {"failed", "diverged", "non_finite_loss"}


def test_too_few_completed_trials_is_an_error_saying_why():
    t = trials().iloc[:6].copy()
    t.loc[t.index[:2], "status"] = "failed"
    with pytest.raises(InsufficientData, match="needs at least 5 completed runs.*have 4.*2 failed"):
        analyse(t, 1e23, n_boot=0)


def test_intervals_for_every_quantity_in_text_and_json():
    fit = analyse(trials(), 1e23, n_boot=200)
    j = fit.to_json()
    for k in ("E", "A", "B", "alpha", "beta", "a", "b", "n_opt", "d_opt", "loss_opt", "approach2.a", "approach2.b"):
        assert j["intervals"][k]["80%"][0] <= j["intervals"][k]["80%"][1], k
        assert len(j["intervals"][k]["95%"]) == 2
    text = format_fit(fit)
    assert "80 % interval" in text and "95 % interval" in text and "200 bootstrap resamples" in text
    json.dumps(j, allow_nan=False)  # NaN has no JSON spelling


def test_a_well_specified_law_raises_no_flags_and_passes_the_extrapolation_check():
    fit = analyse(trials(noise=0.005, sizes=9), 1e23, n_boot=200)
    assert fit.flags == []
    assert fit.holdout is not None and fit.holdout.max_abs_z < 3
    assert set(fit.holdout.names) == {f"t{i}" for i in range(27, 36)}  # the largest budget's runs


def test_a_law_that_bends_at_large_compute_fails_the_extrapolation_check():
    t = trials(noise=0.003, sizes=9, budgets=(1e18, 1e19, 1e20, 1e21, 1e22))
    big = t["budget"] == 1e22
    t.loc[big, "eval_loss"] += 0.08  # the largest budget is worse than the law extrapolates
    fit = analyse(t, 1e23, n_boot=0)
    assert fit.holdout.max_abs_z > 3
    assert any("held-out runs" in f for f in fit.flags)
    assert fit.holdout.errors.mean() < -0.05  # predicted - observed: the law was optimistic


def test_an_unbracketed_budget_and_an_outlier_are_reported():
    t = trials(noise=0.003)
    low = (t["budget"] == 1e19) & (t["n_params"] < 1.2 * compute_n_opt(1e19))
    t = t[~low].copy()  # budget 1e19 keeps only sizes above its optimum: its minimum is at the edge
    t.loc[t.index[5], "eval_loss"] *= 1.08
    fit = analyse(t, 1e23, n_boot=0)
    assert [m.at_edge for m in fit.minima] == [False, True, False, False]
    assert any("edge of the swept sizes for budget(s) 1e19" in f for f in fit.flags)
    assert fit.outliers[0]["name"] == t["name"].iloc[5]
    assert fit.outliers[0]["z"] < -3  # predicted - observed: the run is worse than the law
    assert fit.notes == []


def test_an_adaptive_design_turns_approach_2_flags_into_notes():
    """An adaptive sweep's points per compute level do not bracket a minimum by design."""
    t = trials(noise=0.003)
    t = t[~((t["budget"] == 1e19) & (t["n_params"] < 1.2 * compute_n_opt(1e19)))].copy()
    fit = analyse(t, 1e23, n_boot=0, isoflop=False)
    assert not any("edge of the swept sizes" in f for f in fit.flags)
    assert any("edge of the swept sizes for budget(s) 1e19" in f for f in fit.notes)
    assert "adaptive design" in fit.notes[-1] and fit.to_json()["notes"] == fit.notes
    assert "Notes:" in format_fit(fit)


@pytest.mark.parametrize("law, noted", [(LAW, False), (LawParams(E=1.7, A=1500.0, B=900.0, alpha=0.45, beta=0.25), True)],
                         ids=["optimum-inside", "optimum-at-13500-tokens-per-parameter"])
def test_an_optimum_outside_the_runs_tokens_per_parameter_is_noted(law, noted):
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(6, 8.5, 60)
    d = n * 10 ** rng.uniform(0, 3, 60)  # 1-1,000 tokens per parameter
    loss = predict_loss(law, n, d) * np.exp(rng.normal(0, 0.002, 60))
    t = pd.DataFrame({"name": [f"t{i}" for i in range(60)], "status": "completed", "n_params": n, "tokens": d,
                      "eval_loss": loss})
    fit = analyse(t, 1e20, n_boot=0, isoflop=False)
    notes = [x for x in fit.notes if "tokens per parameter, outside the runs'" in x]
    assert bool(notes) == noted and not any("tokens per parameter" in f for f in fit.flags)


def compute_n_opt(c):
    from orchestrator.fitting.law import compute_optimal

    return compute_optimal(LAW, c)["n_opt"]


def test_approaches_2_and_3_disagreeing_is_flagged():
    iv = lambda est, lo, hi: Interval(est, {0.8: (lo, hi), 0.95: (lo, hi)}, 100)  # noqa: E731
    flags = approach2_flags({"a": iv(0.5, 0.48, 0.52), "approach2.a": iv(0.6, 0.55, 0.65)}, [])
    assert len(flags) == 1 and "disagree on a" in flags[0]
    assert approach2_flags({"a": iv(0.5, 0.48, 0.52), "approach2.a": iv(0.53, 0.51, 0.55)}, []) == []


def test_residual_scale_is_robust_to_one_outlier():
    r = np.random.default_rng(0).normal(0, 0.01, 200)
    assert residual_scale(r) == pytest.approx(0.01, rel=0.15)
    r[0] = 10.0
    assert residual_scale(r) == pytest.approx(0.01, rel=0.15)


def test_form_the_data_cannot_support_is_named_not_fatal():
    t = trials()
    t = t[(t["budget"] == 1e21) | (t.index % 7 < 2)]  # three budgets with 2 sizes each
    fit = analyse(t, 1e23, n_boot=0)
    assert fit.approach2 is None
    assert "only budget 1e21 has" in fit.unavailable["approach2"]
    assert "Approach 2: not fitted" in format_fit(fit)


def write_results(root: Path, t: pd.DataFrame) -> None:
    store = ResultStore(str(root))
    for i, r in t.reset_index(drop=True).iterrows():
        store.write_trial({"sweep": "s", "trial_id": f"id{i}", "status": r["status"], "n_params": int(r["n_params"]),
                           "tokens": int(r["tokens"]), "flops": float(r["flops"]), "budget": float(r["budget"]),
                           "eval_loss": float(r["eval_loss"]), "name": r["name"], "error": r["error"] or ""})


def test_cli_fits_a_results_directory(tmp_path, capsys):
    t = trials()
    t.loc[3, "status"] = "diverged"
    write_results(tmp_path / "sweep", t)
    assert main(["fit", str(tmp_path / "sweep"), "--compute", "1e22", "--bootstrap", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_fitted"] == len(t) - 1 and out["n_trials"] == len(t) and out["excluded"]["diverged"] == 1
    assert out["target"]["compute"] == 1e22 and out["bootstrap"]["resamples"] == 100


def test_cli_fits_a_csv_of_published_runs_with_named_columns(tmp_path, capsys):
    t = trials()
    path = tmp_path / "runs.csv"
    pd.DataFrame({"Model Size": t["n_params"], "Training FLOP": t["flops"], "loss": t["eval_loss"]}).to_csv(path)
    args = ["fit", str(path), "--n-col", "Model Size", "--c-col", "Training FLOP", "--loss-col", "loss"]
    assert main(args + ["--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "Fitted law (Approach 3, 28 runs" in text and "budgets inferred from C" in text
    assert "10x the largest run" in text
    t.assign(**{"Model Size": t["n_params"]}).to_parquet(tmp_path / "runs.parquet")
    assert main(["fit", str(tmp_path / "runs.parquet"), "--n-col", "Model Size", "--bootstrap", "0"]) == 0


def test_cli_unknown_column_is_one_line_on_stderr_and_status_2(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    trials().to_csv(path, index=False)
    assert main(["fit", str(path), "--n-col", "Model Sz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--n-col 'Model Sz': no such column" in err and "n_params" in err


def test_cli_names_the_missing_token_or_compute_column(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    trials()[["n_params", "eval_loss"]].to_csv(path, index=False)
    assert main(["fit", str(path)]) == 2
    assert "--d-col" in capsys.readouterr().err


@pytest.mark.skipif(not CHINCHILLA.exists(), reason=f"reference data not found at {CHINCHILLA} (../shared/data)")
def test_chinchilla_reference_refit_and_interval_for_a():
    df = pd.read_csv(CHINCHILLA)
    t = pd.DataFrame({"name": [f"row {i}" for i in range(len(df))], "status": "completed",
                      "n_params": df["Model Size"], "flops": df["Training FLOP"],
                      "tokens": df["Training FLOP"] / (6 * df["Model Size"]), "eval_loss": df["loss"]})
    fit = analyse(t, 5.76e23, drop_highest=5)  # default: 1,000 resamples
    p = fit.approach3.params
    assert fit.approach3.n_points == 240 and fit.excluded["dropped_highest"] == 5
    assert p.alpha == pytest.approx(0.3473, abs=0.003) and p.beta == pytest.approx(0.3672, abs=0.003)
    assert p.E == pytest.approx(1.8172, abs=0.005)
    assert p.A == pytest.approx(477.8, rel=0.05) and p.B == pytest.approx(2143, rel=0.05)
    assert fit.approach3.objective <= 1.0185e-3
    a80 = fit.intervals["a"]
    assert a80.contains(0.51, 0.80) and 0.02 <= a80.width(0.80) <= 0.12
    assert np.all(np.isfinite(predict_loss(p, t["n_params"], t["tokens"])))


def test_fit_reports_each_stage_and_the_terminal_bar_shows_them():
    import io

    from rich.console import Console

    from orchestrator.fitting.analysis import FIT_STAGES
    from orchestrator.cli import FitBar

    seen = []
    analyse(trials(), 1e22, n_boot=50, progress=seen.append)
    assert [s.split(" (")[0] for s in seen] == list(FIT_STAGES)
    out = io.StringIO()
    with FitBar() as bar:
        bar.console = Console(file=out, force_terminal=True, width=120)
        analyse(trials(), 1e22, n_boot=50, progress=bar)
    assert "fit: bootstrap refits (50 resamples)" in out.getvalue()
    piped = FitBar()  # not a terminal (pytest captures stderr): no bar, no output
    piped("Approach 3 global fit")
    assert piped.bar is None


def test_outliers_are_judged_against_the_noise_at_their_loss_level():
    """Seed noise grows with the loss: a large sweep flags its planted outliers, not its noisy end."""
    from orchestrator.fitting.diagnostics import outliers

    rng = np.random.default_rng(0)
    level = np.linspace(2.0, 8.0, 2000)
    resid = rng.normal(0, 0.002 + 0.01 * (level - 2.0))  # 0.002 nats at L = 2, 0.062 at L = 8
    planted = [100, 700]
    resid[planted] += 0.05  # > 10 local sigma, < 1 sigma at the high-loss end
    flagged = outliers(resid, np.arange(2000).astype(str), level)
    names = {int(f["name"]) for f in flagged}
    assert set(planted) <= names and len(names) < 40  # ~0.3 % of Gaussian noise exceeds 3 sigma


def test_one_outlier_among_many_held_out_runs_is_not_a_misspecification_flag():
    from orchestrator.fitting.diagnostics import Holdout

    z_one = np.zeros(100)
    z_one[3] = 30.0  # one wild run: an outlier, listed as such
    quiet = Holdout(1e21, [f"r{i}" for i in range(100)], z_one * 0.01, 0.01)
    assert law_flags(quiet) == []
    z_many = np.zeros(100)
    z_many[:10] = 5.0  # a tenth of the held-out runs off: the law does not extrapolate
    bent = Holdout(1e21, [f"r{i}" for i in range(100)], z_many * 0.01, 0.01)
    assert "10 of 100 held-out runs" in law_flags(bent)[0]
    few = Holdout(1e21, ["a", "b", "c"], np.array([0.0, 0.05, 0.0]), 0.01)
    assert law_flags(few)  # in a small held-out set one miss is enough


def test_a_law_of_another_form_is_flagged_by_its_smooth_residual():
    # The truth has an N-D interaction term the fitted form lacks; the runs carry seed noise only.
    from workers.config import NoiseConfig, WorldConfig
    from workers.simulated.world import World

    world = World(WorldConfig(expression="1.69 + 400 / N**0.34 + 410 / D**0.28 + 3000 / (N**0.3 * D**0.15)",
                              noise=NoiseConfig(residual_amplitude=0.0, outlier_prob=0.0)))
    t = trials(budgets=(1e16, 1e17, 1e18, 1e19), sizes=9)
    t["eval_loss"] = [world.observe(n, d, key=i) for i, (n, d) in enumerate(zip(t["n_params"], t["tokens"]))]
    fit = analyse(t, 1e21, n_boot=100)
    assert fit.discrepancy.s_r > 0.04
    assert any("smooth residual" in f for f in fit.flags), fit.flags
    # the targets' intervals cover the residual model fitted for them, a and b's the local one
    disc = fit.to_json()["discrepancy"]
    assert disc["s_r_nats"] == fit.discrepancy.s_r and disc["targets"]["s_r_nats"] == fit.discrepancy_targets.s_r
    assert fit.discrepancy_targets.ell >= fit.discrepancy.ell
    # the same runs from the law's own form: no such flag
    right = World(WorldConfig.chinchilla((1.69, 400.0, 410.0, 0.34, 0.28),
                                         noise=NoiseConfig(residual_amplitude=0.02, outlier_prob=0.0)))
    t["eval_loss"] = [right.observe(n, d, key=i) for i, (n, d) in enumerate(zip(t["n_params"], t["tokens"]))]
    assert not any("smooth residual" in f for f in analyse(t, 1e21, n_boot=100).flags)


def test_a_field_weaker_than_the_noise_beside_it_is_no_flag():
    assert law_flags(None, field_sd=0.045, noise_sd=0.01)  # clear of both
    assert law_flags(None, field_sd=0.045, noise_sd=0.07) == []  # poorly determined
    assert law_flags(None, field_sd=0.03, noise_sd=0.0) == []  # what real sweeps show
