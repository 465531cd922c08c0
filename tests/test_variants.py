"""Comparing variants with the baseline (orchestrator.fitting.variants): compute multipliers,
crossovers, the joint model, and the errors a user meets. Simulated tables, no Ray."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.errors import UserError
from orchestrator.fitting.forms.builtin import Chinchilla
from orchestrator.fitting.law import optimal_allocation
from orchestrator.fitting.variants.frontiers import frontier, log_crossover, multipliers
from orchestrator.fitting.variants.models import SharedExponents
from orchestrator.fitting.variants import Model, compare_variants

T0 = (1.8172, 482.01, 2085.43, 0.3478, 0.3658)  # E, A, B, alpha, beta (shared/BENCHMARK.md)
BUDGETS = np.geomspace(1e16, 1e19, 7)


def vec(law) -> np.ndarray:
    E, A, B, al, be = law
    return np.array([math.log(A), math.log(B), math.log(E), al, be])


def variant_law(law, k: float = 1.0, dE: float = 0.0):
    """N and D each worth 1/sqrt(k) as much: a constant compute multiplier k (with dE = 0)."""
    E, A, B, al, be = law
    m = k ** 0.5
    return (E + dE, A * m ** al, B * m ** be, al, be)


def table(law, name: str, noise: float = 0.0, seed: int = 0, budgets=BUDGETS, sizes: int = 7) -> pd.DataFrame:
    E, A, B, al, be = law
    rows = [(math.sqrt(c / 120) * x, c) for c in budgets for x in np.geomspace(0.25, 4, sizes)]
    n, c = (np.array(v) for v in zip(*rows))
    d = c / (6 * n)
    loss = (E + A / n**al + B / d**be) * np.exp(np.random.default_rng(seed).normal(0, noise, len(n)))
    return pd.DataFrame({"name": [f"{name}{i}" for i in range(len(n))], "status": "completed", "n_params": n,
                         "tokens": d, "flops": 6 * n * d, "budget": c, "eval_loss": loss, "variant": name})


def test_frontier_closed_form_matches_optimal_allocation():
    f = frontier(Chinchilla(), vec(T0), 1e20)
    for c in (1e17, 1e20, 1e23):
        expected = float(optimal_allocation(*T0, c)[2])
        assert math.exp(f.log_loss(np.array([c]))[0, 0]) == pytest.approx(expected, rel=1e-12)
    assert math.exp(f.log_x(f.log_loss(np.array([3e21])))[0, 0]) == pytest.approx(3e21, rel=1e-9)


def test_multipliers_of_true_laws():
    k = multipliers(Chinchilla(), vec(T0), vec(variant_law(T0, 0.7)), [1e17, 1e20, 1e23])
    assert np.allclose(k, 0.7, rtol=1e-9)
    # a variant whose E lies above the baseline's L*(1e20) never gets there
    never = multipliers(Chinchilla(), vec(T0), vec(variant_law(T0, dE=1.0)), [1e20])
    assert never[0, 0] == math.inf


def test_noiseless_pair_recovers_k():
    trials = pd.concat([table(T0, "baseline"), table(variant_law(T0, 0.7), "moe8")])
    vc = compare_variants(trials, 1e20, n_boot=0, extrapolation=False)
    r = vc.results["moe8"]
    assert r.multiplier.estimate == pytest.approx(0.7, rel=1e-3)
    assert r.trend.estimate == pytest.approx(0.0, abs=1e-3)
    assert r.crossover.at is None and not r.crossover.detected and vc.key == "C" and vc.target == 1e20
    # shared exponents fit exactly: the joint model is kept, and gives the same k
    assert r.model is Model.JOINT
    assert r.alternatives["separate"].estimate == pytest.approx(0.7, rel=1e-3)


def test_crossing_pair_finds_the_crossover():
    var = variant_law(T0, 0.5, dE=0.04)  # better with little compute, worse with a lot
    true = math.exp(log_crossover(frontier(Chinchilla(), vec(T0), 1e20), frontier(Chinchilla(), vec(var), 1e20),
                                  1e20)[0])
    assert 1e21 < true < 1e23
    trials = pd.concat([table(T0, "baseline"), table(var, "late")])
    vc = compare_variants(trials, 1e20, n_boot=0, extrapolation=False)
    r = vc.results["late"]
    assert r.crossover.at == pytest.approx(true, rel=0.03) and r.crossover.detected
    assert r.multiplier.estimate < 1 < r.at_upper.estimate or r.at_upper.estimate > r.multiplier.estimate
    assert r.trend.estimate > 0


def test_intervals_cover_a_noisy_example():
    trials = pd.concat([table(T0, "baseline", noise=0.005, seed=1), table(variant_law(T0, 0.7), "v", noise=0.005,
                                                                           seed=2)])
    vc = compare_variants(trials, 1e20, n_boot=100, seed=3, extrapolation=False)
    iv = vc.results["v"].multiplier
    lo, hi = iv.bounds[0.95]
    assert iv.n_draws == 100 and lo < 0.7 < hi and hi / lo > 1.05
    assert iv.bounds[0.8][0] >= lo and iv.bounds[0.8][1] <= hi
    curve = vc.multiplier_curve([1e19, 1e20, 1e21])
    assert set(curve) >= {"estimate", "lo80", "hi80", "lo95", "hi95"} and curve["estimate"].shape == (3,)
    assert curve["estimate"][1] == pytest.approx(iv.estimate)
    fr = vc.frontiers([1e19, 1e20])
    loss, flo, fhi = fr["baseline"]
    assert set(fr) == {"baseline", "v"} and (flo <= loss).all() and (loss <= fhi).all()


def test_never_reaching_variant_is_infinite_not_an_error():
    trials = pd.concat([table(T0, "baseline"), table(variant_law(T0, dE=1.0), "worse")])
    vc = compare_variants(trials, 1e20, n_boot=0, extrapolation=False)
    r = vc.results["worse"]
    assert r.multiplier.estimate == math.inf and not r.reaches
    assert any("never reaches" in line for line in vc.lines())
    out = json.loads(json.dumps(vc.to_json(), allow_nan=False))  # strict JSON: inf is null, with a flag
    assert out["comparison"]["worse"]["multiplier"]["estimate"] is None
    assert out["comparison"]["worse"]["reaches_baseline_loss"] is False


def test_json_structure_and_text():
    trials = pd.concat([table(T0, "baseline", noise=0.003, seed=4), table(variant_law(T0, 0.6), "moe8", noise=0.003,
                                                                           seed=5)])
    vc = compare_variants(trials, None, n_boot=30, extrapolation=False)
    assert vc.target == pytest.approx(10 * BUDGETS[-1], rel=1e-6)  # the baseline's own default target
    out = json.loads(json.dumps(vc.to_json(), allow_nan=False))
    assert set(out["variants"]) == {"baseline", "moe8"}
    assert {"law", "intervals", "target"} <= set(out["variants"]["moe8"])
    c = out["comparison"]["moe8"]
    assert {"estimate", "80%", "95%"} <= set(c["multiplier"]) and len(c["multiplier"]["80%"]) == 2
    assert {"compute", "80%", "p_cross"} <= set(c["crossover"])
    assert c["model"] in ("joint", "separate") and "d_ln_k_d_ln_C" in c["trend"]
    assert {"held_out_rms_nats", "exponent_p"} <= set(c["model_choice"])
    text = vc.lines()
    assert text[0].startswith("moe8 vs baseline: compute multiplier") and "80 %" in text[0] and "95 %" in text[0]


def test_n_only_table_compares_parameters():
    E, A, al = 1.8, 400.0, 0.34
    n = np.geomspace(1e6, 1e9, 12)
    rows = []
    for name, a in (("baseline", A), ("wide", A * 0.5 ** al)):  # reaches the baseline's L with half the N
        rows.append(pd.DataFrame({"name": [f"{name}{i}" for i in range(len(n))], "status": "completed",
                                  "n_params": n, "tokens": np.nan, "eval_loss": E + a / n**al, "variant": name}))
    vc = compare_variants(pd.concat(rows), None, n_boot=0, extrapolation=False)
    assert vc.key == "N" and vc.target == pytest.approx(1e10)
    assert vc.results["wide"].multiplier.estimate == pytest.approx(0.5, rel=1e-3)
    assert "parameter multiplier" in vc.lines()[0]


def test_user_errors():
    t = pd.concat([table(T0, "base"), table(variant_law(T0, 0.7), "v")])
    with pytest.raises(UserError, match=r"'baseline'.*'base', 'v'"):
        compare_variants(t, 1e20, n_boot=0)
    with pytest.raises(UserError, match="no column 'arch'"):
        compare_variants(t, 1e20, variant_col="arch", n_boot=0)
    with pytest.raises(UserError, match="no variant to compare"):
        compare_variants(table(T0, "baseline"), 1e20, n_boot=0)
    few = pd.concat([table(T0, "baseline"), table(variant_law(T0, 0.7), "tiny", budgets=[1e18], sizes=6)])
    with pytest.raises(UserError, match="'tiny'"):
        compare_variants(few, 1e20, n_boot=0)


def test_shared_exponents_form():
    form = SharedExponents(2)
    rng = np.random.default_rng(0)
    Z = np.array([[0.34, 0.36, 6.2, 7.6, 0.6, 6.0, 7.4, 0.65]])
    X = {"N": rng.uniform(1e7, 1e9, 6), "D": rng.uniform(1e9, 1e11, 6), "V": np.array([0, 1, 0, 1, 1, 0])}
    J = form.log_jacobian(Z, X)
    assert np.allclose(J, super(SharedExponents, form).log_jacobian(Z, X), atol=1e-5)
    v1 = form.law_vectors(Z, 1)[0]
    assert np.allclose(form.log_loss(Z, X)[0, X["V"] == 1], Chinchilla().log_loss(v1[None], {
        "N": X["N"][X["V"] == 1], "D": X["D"][X["V"] == 1]})[0])
