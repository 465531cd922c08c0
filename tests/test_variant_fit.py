"""`scalesweep fit` and `report` with variants: a published table through --variant-col, a sweep's
results directory, and bad input as one line with exit 2."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.synthetic_sweeps import synthetic_isoflop
from orchestrator.cli import main
from orchestrator.fitting.law import LawParams

T0 = LawParams(1.8172, 482.01, 2085.43, 0.3478, 0.3658)
BUDGETS = (1e17, 1e18, 1e19, 1e20)


def planted(k: float) -> LawParams:
    """T0 trained as if every parameter and token were worth 1/sqrt(k): a constant compute
    multiplier k (the variant at (N, D) is the baseline at (N, D) / sqrt(k))."""
    c = 1 / math.sqrt(k)
    return LawParams(T0.E, T0.A * c ** -T0.alpha, T0.B * c ** -T0.beta, T0.alpha, T0.beta)


def table(path, k: float = 0.5, with_d: bool = True) -> str:
    frames = []
    for name, law, seed in (("dense", T0, 0), ("moe", planted(k), 1)):
        n, d, loss, budget = synthetic_isoflop(law, BUDGETS, 7, 0.005, seed)
        frames.append(pd.DataFrame({"arch": name, "N": n, "D": d, "loss": loss, "budget": budget}))
    df = pd.concat(frames)
    if not with_d:
        df = df.drop(columns=["D", "budget"])
    df.to_csv(path, index=False)
    return str(path)


def fit_json(capsys, *argv) -> dict:
    assert main(["fit", *argv, "--json", "--bootstrap", "200"]) == 0
    return json.loads(capsys.readouterr().out)


def test_published_table_with_a_variant_column_gives_the_multiplier_with_intervals(tmp_path, capsys):
    path = table(tmp_path / "runs.csv", k=0.5)
    out = fit_json(capsys, path, "--n-col", "N", "--d-col", "D", "--loss-col", "loss", "--variant-col", "arch",
                   "--baseline", "dense", "--compute", "1e21")
    assert out["baseline"] == "dense" and set(out["variants"]) == {"dense", "moe"}
    k = out["comparison"]["moe"]["multiplier"]
    assert k["80%"][0] <= k["95%"][1] and k["95%"][0] <= k["80%"][0] <= k["estimate"] <= k["80%"][1]
    assert abs(math.log(k["estimate"] / 0.5)) < 0.15
    assert out["params"] == out["variants"]["dense"]["law"]["params"]  # the top-level fit is the baseline's
    assert "crossover" in out["comparison"]["moe"] and out["comparison"]["moe"]["model"] in ("joint", "separate")
    assert main(["fit", path, "--n-col", "N", "--d-col", "D", "--loss-col", "loss", "--variant-col", "arch",
                 "--baseline", "dense", "--bootstrap", "100"]) == 0
    text = capsys.readouterr().out
    assert "Baseline (dense):" in text and "moe vs dense: compute multiplier" in text


def test_table_without_tokens_compares_parameters(tmp_path, capsys):
    path = table(tmp_path / "runs.csv", with_d=False)
    out = fit_json(capsys, path, "--n-col", "N", "--loss-col", "loss", "--variant-col", "arch", "--baseline", "dense",
                   "--form", "n-only")
    assert out["form"] == "n-only" and np.isfinite(out["comparison"]["moe"]["multiplier"]["estimate"])


@pytest.mark.parametrize("extra,expected", [
    (["--variant-col", "archh", "--baseline", "dense"], "--variant-col 'archh': no such column"),
    (["--variant-col", "arch"], "'baseline'"),  # the default baseline is not among the values
    (["--variant-col", "arch", "--baseline", "gpt"], "'gpt'"),
])
def test_bad_variant_options_are_one_line_exit_2(tmp_path, capsys, extra, expected):
    path = table(tmp_path / "runs.csv")
    assert main(["fit", path, "--n-col", "N", "--d-col", "D", "--loss-col", "loss", "--bootstrap", "50", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and expected in err, err


def test_a_single_variant_named_by_the_option_is_refused(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.read_csv(table(tmp_path / "runs.csv")).query("arch == 'dense'").to_csv(path, index=False)
    assert main(["fit", str(path), "--n-col", "N", "--d-col", "D", "--loss-col", "loss", "--variant-col", "arch",
                 "--baseline", "dense", "--bootstrap", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "dense" in err, err


def _one_line(capsys, argv, expected: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("scalesweep: error: ") and err.count("\n") == 1 and not captured.out, err
    assert "Traceback" not in err and expected in err, err


COLS = ["--n-col", "N", "--d-col", "D", "--loss-col", "loss", "--bootstrap", "0"]


def test_baseline_on_runs_without_variants_is_refused(tmp_path, capsys):
    """--baseline on a table without a variant column was silently ignored."""
    path = tmp_path / "plain.csv"
    pd.read_csv(table(tmp_path / "runs.csv")).drop(columns="arch").to_csv(path, index=False)
    _one_line(capsys, ["fit", str(path), *COLS, "--baseline", "dense"],
              "--baseline 'dense': the runs have no variant column 'variant' (name the column of each run's variant "
              "with --variant-col)")
    assert main(["fit", str(path), *COLS]) == 0  # without --baseline: one fit of them all
    capsys.readouterr()


def test_baseline_not_among_the_variants_names_the_option(tmp_path, capsys):
    path = tmp_path / "one.csv"
    pd.read_csv(table(tmp_path / "runs.csv")).query("arch == 'dense'").to_csv(path, index=False)
    # one variant in the column: no comparison, but a baseline that is not there is still refused
    _one_line(capsys, ["fit", str(path), *COLS[:-2], "--variant-col", "arch", "--baseline", "moe"],
              "no run has variant == 'moe' (the baseline; name another with --baseline); values found: 'dense'")


@pytest.mark.parametrize("named", [True, False], ids=["--variant-col", "default column"])
def test_runs_without_a_variant_label_are_refused_naming_the_column_and_rows(tmp_path, capsys, named):
    """Empty cells of the variant column were fitted and compared as a variant called ""."""
    df = pd.read_csv(table(tmp_path / "runs.csv"))
    df.loc[[3, 9], "arch"] = None
    df.loc[11, "arch"] = "  "
    if not named:
        df = df.rename(columns={"arch": "variant"})
    path = tmp_path / "gaps.csv"
    df.to_csv(path, index=False)
    col = "arch" if named else "variant"
    _one_line(capsys, ["fit", str(path), *COLS, *(["--variant-col", "arch"] if named else []), "--baseline", "dense"],
              f"--variant-col {col!r} in {path}: 3 of {len(df)} rows have no variant label (rows 3, 9, 11)")


def test_a_default_variant_column_empty_in_every_row_is_no_variants(tmp_path, capsys):
    df = pd.read_csv(table(tmp_path / "runs.csv")).query("arch == 'dense'").assign(variant=None)
    path = tmp_path / "empty.csv"
    df.to_csv(path, index=False)
    assert main(["fit", str(path), *COLS]) == 0
    assert "Variants:" not in capsys.readouterr().out


def test_sweep_with_variants_fits_each_compares_and_reports(ray_cluster, tmp_path, capsys):
    """A simulated sweep whose variant has a planted law: run fits and compares it, and the report
    overlays the frontiers and plots the multiplier."""
    from orchestrator.spec import parse_spec
    from orchestrator.sweep import run_sweep
    from conftest import tiny_spec_dict

    law = planted(0.6)
    spec = tiny_spec_dict(str(tmp_path / "results"), trainer="simulated",
                          world={"law": {"E": T0.E, "A": T0.A, "B": T0.B, "alpha": T0.alpha, "beta": T0.beta}},
                          variants=[{"name": "better", "world": {"law": {"A": law.A, "B": law.B}, "seed": 1}}],
                          fit={"target_compute": 1e20})
    spec.pop("data")
    spec["sweep"] = {"kind": "isoflop", "budgets": [1e15, 1e16, 1e17, 1e18], "model_sizes": {
        1e15: [1e6, 2e6, 4e6], 1e16: [3e6, 6e6, 12e6], 1e17: [1e7, 2e7, 4e7], 1e18: [3e7, 6e7, 1.2e8]}}
    out = run_sweep(parse_spec(spec))
    assert out.trained == 24 and out.fit_error == ""
    assert out.variants is not None and out.fit is out.variants.fits["baseline"]
    k = out.variants.results["better"].multiplier
    assert 0 < k.estimate < 1 and k.bounds[0.95][0] < k.bounds[0.95][1]
    assert any(p.endswith("variant_multiplier.png") for p in out.report)
    assert any(p.endswith("variant_frontiers.png") for p in out.report)
    page = open(next(p for p in out.report if p.endswith("index.html"))).read()
    assert "better vs baseline: compute multiplier" in page
    results = f"{tmp_path}/results/tiny"
    assert main(["fit", results, "--json", "--bootstrap", "100"]) == 0
    assert set(json.loads(capsys.readouterr().out)["comparison"]) == {"better"}
    assert main(["status", results, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variants"] == {"baseline": {"completed": 12},
                                                               "better": {"completed": 12}}
