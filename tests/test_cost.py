"""What a sweep cost and what the target run will (orchestrator.results.cost): the projection's
arithmetic and intervals against hand-computed cases, totals with their settings' provenance, and
`scalesweep cost` as a user runs it on a table of runs (bad input included)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.results.cost.model import LogLinear
from orchestrator.results.cost.projection import Target, project
from orchestrator.results.cost.usage import sweep_totals, usage_frame
from orchestrator.spec.cost import provenance

# A device whose budget FLOP/s per thread is 1e9 * (N / 1e5)^0.2, times known log residuals.
RESID = np.array([0.1, -0.1, 0.05, -0.05, 0.0, 0.08, -0.08])
N = np.array([2e4, 4e4, 8e4, 1.6e5, 3.2e5, 6.4e5, 1.28e6])


def _runs(watts_per_thread: float = 5.0, device: str = "cpu") -> pd.DataFrame:
    rate = 1e9 * (N / 1e5) ** 0.2 * np.exp(RESID)
    tokens = 20 * N
    wall = 6 * N * tokens / rate
    return pd.DataFrame({"n_params": N, "tokens": tokens, "wall_s": wall, "device": device, "cpus": 1.0,
                         "gpu_count": 0.0, "energy_j": watts_per_thread * wall, "energy_source": "estimated",
                         "eval_loss": 3.0 - 0.1 * np.log(N)})


def _settings(**over):
    return provenance({"settings": over, "set": list(over)})


def test_loglinear_is_least_squares_with_the_t_prediction_interval():
    y = 1e9 * (N / 1e5) ** 0.2 * np.exp(RESID)
    line = LogLinear.fit(N, y)
    b, a = np.polyfit(np.log(N), np.log(y), 1)
    assert line.b == pytest.approx(b) and line.a == pytest.approx(a) and line.df == len(N) - 2
    resid = np.log(y) - (a + b * np.log(N))
    s = math.sqrt((resid ** 2).sum() / (len(N) - 2))
    x0 = math.log(1e7)
    x = np.log(N)
    se = s * math.sqrt(1 + 1 / len(N) + (x0 - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    assert line.se(x0) == pytest.approx(se)
    assert line.draw(x0, 0.9) == pytest.approx(a + b * x0 + se * stats.t.ppf(0.9, len(N) - 2))


def test_projection_at_a_fixed_n_is_the_closed_form_interval():
    """N and D given, constant power: wall = 6ND / (K rate), rate's t interval, everything else
    proportional to wall."""
    runs = _runs()
    usage = usage_frame(runs, "runs.csv")
    settings = _settings(pue=1.5, carbon_g_per_kwh=400.0, price_per_cpu_hour=0.1)
    n0, d0, k = 5e6, 1e9, 4.0
    p = project(usage, Target(n0, d0), settings, devices=k)
    line = LogLinear.fit(N, 6 * N * runs["tokens"] / runs["wall_s"])
    x0 = math.log(n0)
    work = 6 * n0 * d0
    hours = lambda q: work / (k * math.exp(line.mean(x0) + line.se(x0) * stats.t.ppf(q, line.df))) / 3600  # noqa: E731
    assert p["wall_hours"]["estimate"] == pytest.approx(hours(0.5), rel=1e-9)
    assert p["wall_hours"]["80%"] == pytest.approx([hours(0.9), hours(0.1)], rel=2e-3)
    assert p["wall_hours"]["95%"] == pytest.approx([hours(0.975), hours(0.025)], rel=2e-3)
    assert p["cpu_core_hours"]["estimate"] == pytest.approx(k * hours(0.5))
    kwh = k * hours(0.5) * 5.0 * 1.5 / 1000  # 5 W per thread, PUE 1.5
    assert p["energy_kwh"]["estimate"] == pytest.approx(kwh)
    assert p["co2e_kg"]["estimate"] == pytest.approx(kwh * 0.4)
    assert p["cost"]["estimate"] == pytest.approx(k * hours(0.5) * 0.1)
    assert p["gpu_hours"]["estimate"] == 0 and p["kind"] == "cpu" and p["basis"] == "measured"
    assert any("extrapolated" in note for note in p["notes"])


def test_projection_intervals_widen_with_the_n_opt_interval():
    usage = usage_frame(_runs(), "runs.csv")
    rng = np.random.default_rng(1)
    widths = []
    for spread in (0.0, 0.3, 1.0):
        draws = np.exp(math.log(3e6) + spread * rng.standard_normal(2000)) if spread else None
        p = project(usage, Target(3e6, compute=1e18, n_draws=draws), _settings())
        lo, hi = p["wall_hours"]["95%"]
        widths.append(math.log(hi / lo))
        assert p["n"]["estimate"] == 3e6 and p["d"]["estimate"] == pytest.approx(1e18 / (6 * 3e6))
    assert widths[0] < widths[1] < widths[2]


def test_a_gpu_no_trial_ran_on_is_projected_from_the_peak_table_and_says_so():
    usage = usage_frame(_runs(), "runs.csv")
    p = project(usage, Target(1e9, 2e10), _settings(assumed_mfu=0.4), devices=8, device="H100")
    assert p["basis"] == "assumed" and p["kind"] == "gpu"
    assert p["wall_hours"]["estimate"] == pytest.approx(6 * 1e9 * 2e10 / (8 * 989e12 * 0.4) / 3600)
    assert p["gpu_hours"]["estimate"] == pytest.approx(8 * p["wall_hours"]["estimate"])
    assert p["energy_kwh"]["estimate"] == pytest.approx(p["gpu_hours"]["estimate"] * 700 / 1000)
    assert any("assumed MFU of 0.4" in n and "not a measurement" in n for n in p["notes"])
    lo, hi = p["wall_hours"]["95%"]
    assert lo < p["wall_hours"]["estimate"] < hi
    with pytest.raises(UserError, match="no trial ran on it.*H100"):
        project(usage, Target(1e9, 2e10), _settings(), device="Quantum-9000")


def test_sweep_totals_and_their_provenance():
    runs = pd.DataFrame({"n_params": [1e6, 1e6, 2e6], "tokens": [1e8, 1e8, 2e8], "wall_s": [3600.0, 1800.0, 7200.0],
                         "device": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3", "cpu"],
                         "gpu_count": [0.5, 2.0, 0.0], "cpus": [4.0, 8.0, 2.0],
                         "energy_j": [3.6e6, np.nan, 7.2e6], "energy_source": ["nvml", "unavailable", "estimated"]})
    settings = provenance({"settings": {"pue": 1.2, "price_per_gpu_hour": 3.0}, "set": ["pue", "price_per_gpu_hour"]},
                          {"carbon_g_per_kwh": (100.0, "--carbon")})
    t = sweep_totals(usage_frame(runs, "t.csv"), settings)
    assert t["gpu_hours"] == pytest.approx(0.5 + 1.0) and t["cpu_core_hours"] == pytest.approx(4.0)
    assert t["device_kwh_by_source"] == {"estimated": pytest.approx(2.0), "nvml": pytest.approx(1.0)}  # before PUE
    assert t["energy_kwh"] == pytest.approx(3.6) and t["runs_without_energy"] == 1
    assert t["co2e_kg"] == pytest.approx(0.36)
    assert t["cost"] == pytest.approx(1.5 * 3.0 + 4.0 * 0.04)
    s = t["settings"]
    assert s["pue"]["source"] == "spec" and s["carbon_g_per_kwh"]["source"] == "--carbon"
    assert s["price_per_cpu_hour"]["source"].startswith("default")


def test_gpu_hours_count_each_attempt_at_its_own_gpus():
    """A trial that ran 30 min on 8 GPUs, then resumed for 30 min on 4, held 6 GPU-hours (its
    row's gpu_seconds), not its wall hour at the last count (4)."""
    runs = pd.DataFrame({"n_params": [1e9], "tokens": [2e10], "wall_s": [3600.0], "device": ["NVIDIA H100 80GB HBM3"],
                         "gpu_count": [4.0], "gpu_seconds": [1800.0 * 8 + 1800.0 * 4], "cpus": [32.0],
                         "energy_j": [np.nan], "energy_source": ["unavailable"]})
    t = sweep_totals(usage_frame(runs, "t.csv"), _settings(price_per_gpu_hour=2.0))
    assert t["gpu_hours"] == pytest.approx(6.0) and t["cost"] == pytest.approx(12.0)
    assert sweep_totals(usage_frame(runs.drop(columns="gpu_seconds"), "t.csv"), _settings())["gpu_hours"] == 4.0


def _write(tmp_path, df, name="runs.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return str(path)


def test_cost_command_on_a_table_projects_a_held_out_run(tmp_path, capsys):
    runs = _runs()
    held = runs.iloc[-1]
    path = _write(tmp_path, runs.iloc[:-1])
    assert main(["cost", path, "--at-n", str(held["n_params"]), "--at-d", str(held["tokens"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    proj = out["projection"]
    for key in ("wall_hours", "gpu_hours", "energy_kwh", "co2e_kg", "cost"):
        assert set(proj[key]) == {"estimate", "80%", "95%"}
        lo95, hi95 = proj[key]["95%"]
        lo80, hi80 = proj[key]["80%"]
        assert lo95 <= lo80 <= proj[key]["estimate"] <= hi80 <= hi95
    assert abs(proj["wall_hours"]["estimate"] * 3600 / held["wall_s"] - 1) < 0.25
    assert out["sweep"]["runs"] == len(runs) - 1 and out["sweep"]["settings"]["pue"]["source"].startswith("default")
    assert main(["cost", path, "--at-n", "1e7", "--compute", "1e16", "--cpus", "2", "--pue", "1.3"]) == 0
    text = capsys.readouterr().out
    assert "Projection: N = 10M" in text and "on 2 x cpu" in text and "PUE 1.3 (--pue)" in text


def test_cost_command_fits_n_opt_from_the_runs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for c in (1e15, 3e15, 1e16):
        for n in np.geomspace(3e6, 3e8, 6) * (c / 1e15) ** 0.5:
            d = c / (6 * n)
            loss = 1.7 + 400 / n ** 0.34 + 410 / d ** 0.28 + rng.normal(0, 0.003)
            rows.append({"n_params": n, "tokens": d, "eval_loss": loss, "wall_s": 6 * n * d / 1e12, "device": "cpu"})
    path = _write(tmp_path, pd.DataFrame(rows))
    assert main(["cost", path, "--compute", "1e18", "--bootstrap", "100", "--json"]) == 0
    proj = json.loads(capsys.readouterr().out)["projection"]
    assert "N_opt at C = 1e+18" in proj["target"]
    lo, hi = proj["n"]["95%"]
    assert lo < proj["n"]["estimate"] < hi  # N_opt's interval, carried
    assert proj["wall_hours"]["estimate"] == pytest.approx(1e18 / 1e12 / 3600, rel=0.05)  # 1e12 6ND-FLOP/s


@pytest.mark.parametrize("argv, message", [
    (["--wall-col", "seconds", "--at-n", "1e6", "--at-d", "1e8"], "--wall-col 'seconds': no such column"),
    (["--at-d", "1e8"], "--at-d: give the run's parameter count with --at-n"),
    (["--at-n", "1e6"], "--at-n: give its tokens with --at-d, or its compute with --compute"),
    (["--at-n", "1e6", "--at-d", "1e8", "--gpus", "2"], "--gpus: the runs on cpu used CPUs"),
    (["--at-n", "1e6", "--at-d", "1e8", "--pue", "0.5"], "--pue: "),
    (["--at-n", "1e6", "--at-d", "1e8", "--device", "TPU-v9"], "--device 'TPU-v9': no trial ran on it"),
])
def test_cost_bad_input_is_one_line(tmp_path, capsys, argv, message):
    path = _write(tmp_path, _runs())
    assert main(["cost", path, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cost_without_a_projection_still_prints_the_sweeps_totals(tmp_path, capsys):
    """Too few runs to fit N_opt (and no target asked for): the totals, and why no projection."""
    path = _write(tmp_path, _runs().iloc[:3])
    assert main(["cost", path]) == 0
    text = capsys.readouterr().out
    assert "Projection: not made (fit: Approach 3 needs at least 5 completed runs" in text
    assert main(["cost", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["projection"] is None and out["unavailable"] and out["sweep"]["runs"] == 3
    assert main(["cost", path, "--compute", "1e18"]) == 2  # one the user asked for: its error is the answer
    assert "Traceback" not in capsys.readouterr().err


def test_throughput_from_runs_at_one_size_is_not_extrapolated_in_n(tmp_path, capsys):
    """Runs all at N = 1e7 fit no slope in N: projecting N = 1e10 from them is refused in one
    line (near their N it is made); two runs' wide t tails warn nothing."""
    runs = _runs().assign(n_params=1e7)
    path = _write(tmp_path, runs)
    assert main(["cost", path, "--at-n", "1e10", "--at-d", "2e11"]) == 2
    err = capsys.readouterr().err.strip()
    assert "are at N = 1e+07" in err and "at least 3 runs over 2 sizes" in err and "\n" not in err
    assert main(["cost", path, "--at-n", "1.2e7", "--at-d", "2e11"]) == 0
    two = _write(tmp_path, _runs().iloc[[0, -1]], "two.csv")
    assert main(["cost", two, "--at-n", str(N[-1]), "--at-d", "2e11"]) == 0
    assert "Warning" not in capsys.readouterr().err


def test_odd_rows_are_left_out_and_unrecorded_devices_said(tmp_path, capsys):
    runs = _runs().drop(columns=["device", "cpus", "gpu_count"])
    runs.loc[0, "wall_s"] = float("inf")
    runs.loc[1, "wall_s"] = 1e-300  # a rate that overflows
    runs.loc[2, "energy_j"] = -5.0  # a broken meter: not counted
    path = _write(tmp_path, runs)
    assert main(["cost", path, "--at-n", "1e7", "--at-d", "1e9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # valid JSON: no NaN or Infinity in it
    assert out["projection"]["throughput_runs"] == len(runs) - 2
    assert any("record no device" in n for n in out["projection"]["notes"])
    assert main(["cost", path, "--at-n", "1e7", "--at-d", "1e9", "--gpus", "8", "--json"]) == 0
    proj = json.loads(capsys.readouterr().out)["projection"]
    assert proj["kind"] == "gpu" and proj["gpu_hours"]["estimate"] == pytest.approx(8 * proj["wall_hours"]["estimate"])


def test_a_table_names_gpus_by_the_device_table_or_vendor():
    runs = _runs()
    runs["device"] = ["NVIDIA A100-SXM4-80GB", "H100", "Tesla T4", "Intel Xeon Platinum", "cpu", "7", "AMD EPYC"]
    usage = usage_frame(runs.drop(columns=["gpu_count"]), "t.csv")
    assert usage["gpu"].tolist() == [True, True, True, False, False, False, False]


def test_a_table_without_wall_times_is_refused(tmp_path, capsys):
    path = _write(tmp_path, _runs().drop(columns=["wall_s"]))
    assert main(["cost", path, "--at-n", "1e6", "--at-d", "1e8"]) == 2
    assert "no column 'wall_s'" in capsys.readouterr().err


def test_spec_cost_section_is_validated(tmp_path):
    from conftest import tiny_spec_dict
    from orchestrator.spec import parse_spec

    spec = parse_spec(tiny_spec_dict(str(tmp_path), cost={"pue": 1.4, "carbon_g_per_kwh": 50}))
    assert spec.cost.pue == 1.4 and spec.cost.model_fields_set == {"pue", "carbon_g_per_kwh"}
    with pytest.raises(UserError, match="cost.pue"):
        parse_spec(tiny_spec_dict(str(tmp_path), cost={"pue": 0.9}))
    with pytest.raises(UserError, match="cost.*price"):
        parse_spec(tiny_spec_dict(str(tmp_path), cost={"price": 3}))


def test_wall_time_intervals_are_calibrated_on_simulated_devices():
    """Worlds whose per-device rate is a power law in N with log-normal noise (the model's
    assumption), 6-15 trials each, projected to a run 3-300x larger: the 80 % and 95 % intervals
    hold the true wall time about that often."""
    rng = np.random.default_rng(7)
    hits = {"80%": 0, "95%": 0}
    worlds = 400
    for _ in range(worlds):
        k = int(rng.integers(6, 16))
        a, b, sigma = rng.uniform(20, 28), rng.uniform(-0.2, 0.5), rng.uniform(0.03, 0.3)
        n = np.exp(rng.uniform(math.log(1e4), math.log(1e6), k))
        rate = np.exp(a + b * np.log(n) + sigma * rng.standard_normal(k))
        tokens = 20 * n
        runs = pd.DataFrame({"n_params": n, "tokens": tokens, "wall_s": 6 * n * tokens / rate})
        n0 = 1e6 * rng.uniform(3, 300)
        true_wall = 6 * n0 * 20 * n0 / np.exp(a + b * math.log(n0) + sigma * rng.standard_normal()) / 3600
        p = project(usage_frame(runs, "sim"), Target(n0, 20 * n0), _settings(), draws=4000,
                    seed=int(rng.integers(1 << 30)))
        for level in hits:
            lo, hi = p["wall_hours"][level]
            hits[level] += lo <= true_wall <= hi
    # binomial sd at 400 worlds: 2.0 points at 80 %, 1.1 at 95 %; these bounds are ~2.5 sd
    assert 0.75 <= hits["80%"] / worlds <= 0.85
    assert 0.92 <= hits["95%"] / worlds <= 0.98
