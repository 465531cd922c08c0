"""The fitting engine: Approach 3 and its batched refits, Approaches 1 and 2, the bootstrap.

Synthetic runs come from a known law (Chinchilla-like parameters), so every test knows the
truth it should recover. Whole file: a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.fitting.law import (InsufficientData, LawParams, compute_optimal, fit_approach3, huber_objective,
                              huber_terms, lbfgs, predict_loss, refine)
from orchestrator.fitting.isoflop import (fit_approach1, fit_approach2, fit_isoflop_parabolas, infer_budgets,
                                  lower_envelope, parabola_vertex)
from orchestrator.fitting.bootstrap import _weighted_vertices, bootstrap, resample_counts
from bench.synthetic_sweeps import coverage, synthetic_isoflop

LAW = LawParams(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
BUDGETS = (1e18, 1e19, 1e20, 1e21)


def runs(noise=0.01, seed=0, sizes=7, budgets=BUDGETS):
    return synthetic_isoflop(LAW, budgets, sizes, noise, seed)


def test_gradient_matches_finite_differences_with_weights():
    n, d, loss, _ = runs()
    rng = np.random.default_rng(1)
    w = rng.integers(0, 3, len(n)).astype(float)
    v = LAW.as_vector() + np.array([0.1, -0.2, 0.05, 0.02, -0.03])
    args = (np.log(n), np.log(d), np.log(loss))
    f, g = huber_objective(v, *args, weights=w)
    for k in range(5):
        h = np.zeros(5)
        h[k] = 1e-6
        numeric = (huber_objective(v + h, *args, weights=w)[0] - huber_objective(v - h, *args, weights=w)[0]) / 2e-6
        assert numeric == pytest.approx(g[k], rel=1e-4, abs=1e-9)


def test_integer_weights_equal_duplicated_rows():
    n, d, loss, _ = runs(seed=3)
    w = np.arange(len(n)) % 3
    dup = np.repeat(np.arange(len(n)), w)
    weighted = fit_approach3(n, d, loss, weights=w.astype(float))
    duplicated = fit_approach3(n[dup], d[dup], loss[dup])
    assert weighted.objective == pytest.approx(duplicated.objective, rel=1e-8)
    assert weighted.params.alpha == pytest.approx(duplicated.params.alpha, abs=1e-5)


def test_global_fit_recovers_a_noiseless_law():
    n, d, loss, _ = runs(noise=0.0)
    p = fit_approach3(n, d, loss).params
    assert (p.alpha, p.beta) == pytest.approx((LAW.alpha, LAW.beta), abs=2e-3)
    assert p.E == pytest.approx(LAW.E, rel=5e-3)


@pytest.mark.parametrize("seed", [13, 15, 20])
def test_a_law_without_an_irreducible_loss_fits_with_e_at_its_floor(seed):
    # E -> 0 is the optimum here: unbounded, the fit walked log E past exp's underflow to
    # E = 0.0 for these seeds, and the planner's next log(E) raised.
    rng = np.random.default_rng(seed)
    n = 10 ** rng.uniform(6, 9, 30)
    d = n * 10 ** rng.uniform(0, 3, 30)
    loss = (400 / n**0.3 + 400 / d**0.3) * np.exp(rng.normal(0, 0.01, 30))
    p = fit_approach3(n, d, loss).params
    v = p.as_vector()
    assert np.isfinite(v).all() and 0 < p.E < 1e-3
    assert abs(p.alpha - 0.3) < 0.02 and abs(p.beta - 0.3) < 0.02
    assert np.isfinite(bootstrap(n, d, loss, fit_approach3(n, d, loss), 1e21, n_boot=50, seed=0).draws["E"]).all()


def test_too_few_runs_for_approach3_names_the_count():
    n, d, loss, _ = runs()
    with pytest.raises(InsufficientData, match="at least 5 runs.*have 4"):
        fit_approach3(n[:4], d[:4], loss[:4])


def test_batched_refine_reaches_the_lbfgs_optimum_of_each_resample():
    n, d, loss, _ = runs(seed=2)
    args = (np.log(n), np.log(d), np.log(loss))
    v = fit_approach3(n, d, loss).params.as_vector()
    counts = np.random.default_rng(0).multinomial(len(n), np.full(len(n), 1 / len(n)), size=8).astype(float)
    V, f, converged = refine(np.tile(v, (8, 1)), *args, counts)
    assert converged.all()
    for i in range(8):
        ref = lbfgs(V[i], *args, weights=counts[i])  # polishing from our answer finds nothing lower
        assert f[i] <= ref.fun * (1 + 1e-7)
        assert f[i] == pytest.approx(huber_terms(V[i:i + 1], *args, counts[i:i + 1], order=0)[0])


def test_compute_optimal_minimises_loss_on_the_isoflop_and_spends_the_budget():
    c = 1e21
    opt = compute_optimal(LAW, c)
    assert 6 * opt["n_opt"] * opt["d_opt"] == pytest.approx(c, rel=1e-9)
    for f in (0.9, 1.1):
        assert predict_loss(LAW, opt["n_opt"] * f, opt["d_opt"] / f) > opt["loss"]


def test_parabola_vertex_at_edge_when_sizes_miss_the_valley():
    x = np.log([1e6, 2e6, 4e6])
    assert parabola_vertex(x, (x - x.mean()) ** 2)[2] is False
    assert parabola_vertex(x, (x - x.max() - 1) ** 2)[2] is True  # optimum beyond the largest size
    assert parabola_vertex(x, -(x - x.mean()) ** 2)[2] is True  # concave: no minimum


def test_approach2_recovers_the_exponents_of_the_law():
    n, d, loss, budget = runs(noise=0.0, sizes=9)
    a2 = fit_approach2(budget, n, d, loss)
    # Parabolas in log N are only approximately right for this law: a few hundredths.
    assert a2.a == pytest.approx(LAW.a, abs=0.03)
    assert a2.b == pytest.approx(LAW.b, abs=0.03)
    assert not any(m.at_edge for m in a2.minima)


def test_approach2_says_which_budget_lacks_sizes():
    n, d, loss, budget = runs()
    keep = (budget != 1e18) | (np.arange(len(n)) % 7 < 2)  # budget 1e18 keeps 2 sizes
    minima, skipped = fit_isoflop_parabolas(budget[keep], n[keep], d[keep], loss[keep])
    assert skipped == {1e18: 2} and len(minima) == 3
    only = budget == 1e18
    two = only & (np.arange(len(n)) % 7 < 2)
    with pytest.raises(InsufficientData, match="Approach 2 needs at least 3 sizes in a budget; budget 1e18 has 2"):
        fit_approach2(budget[two], n[two], d[two], loss[two])
    with pytest.raises(InsufficientData, match="at least 2 budgets"):
        fit_approach2(budget[only], n[only], d[only], loss[only])


def test_lower_envelope_keeps_budgets_that_beat_all_smaller_ones():
    compute = np.array([1, 1, 2, 2, 4, 4.0])
    loss = np.array([3.0, 2.9, 2.5, 2.6, 2.7, 2.8])  # budget 4 is no better than budget 2
    assert lower_envelope(compute, loss).tolist() == [1, 2]
    with pytest.raises(InsufficientData, match="Approach 1 needs at least 3 budgets.*have 2"):
        fit_approach1(compute, np.ones(6), np.ones(6), loss)


def test_approach1_on_isoflop_runs_is_close_to_the_truth():
    n, d, loss, budget = runs(noise=0.0, sizes=15, budgets=np.geomspace(1e18, 1e22, 9))
    assert fit_approach1(budget, n, d, loss, budget).a == pytest.approx(LAW.a, abs=0.05)


def test_infer_budgets_groups_scattered_compute():
    rng = np.random.default_rng(0)
    c = np.concatenate([1e19 * np.exp(rng.normal(0, 0.005, 6)), 1e20 * np.exp(rng.normal(0, 0.005, 6)), [3e19]])
    b = infer_budgets(c)
    assert len(set(b[:6])) == 1 and len(set(b[6:12])) == 1 and b[0] != b[6]
    assert b[0] == pytest.approx(1e19, rel=0.01)
    assert b[12] == 0  # a lone run is no budget


def test_weighted_parabolas_match_duplicated_points():
    x = np.log([1e6, 2e6, 4e6, 8e6, 16e6])
    y = np.array([3.1, 2.9, 2.85, 2.88, 3.0])
    W = np.array([[1, 1, 1, 1, 1], [2, 0, 1, 3, 0], [0, 0, 5, 1, 0]], float)
    got = _weighted_vertices(x, y, W)
    assert got[0] == pytest.approx(parabola_vertex(x, y)[0])
    rep = np.repeat(np.arange(5), W[1].astype(int))
    assert got[1] == pytest.approx(parabola_vertex(x[rep], y[rep])[0])
    assert math.isnan(got[2])  # two sizes only


def test_bootstrap_is_reproducible_and_its_intervals_nest():
    n, d, loss, budget = runs(seed=5)
    fit = fit_approach3(n, d, loss)
    b1 = bootstrap(n, d, loss, fit, 1e23, n_boot=64, seed=7)
    b2 = bootstrap(n, d, loss, fit, 1e23, n_boot=64, seed=7)
    assert np.array_equal(b1.draws["a"], b2.draws["a"])
    for name, iv in b1.intervals().items():
        (lo80, hi80), (lo95, hi95) = iv.bounds[0.80], iv.bounds[0.95]
        assert lo95 <= lo80 <= hi80 <= hi95, name


def test_bootstrap_of_approach2_draws_exponents_near_the_estimate():
    n, d, loss, budget = runs(seed=4)
    a2 = fit_approach2(budget, n, d, loss)
    boot = bootstrap(n, d, loss, fit_approach3(n, d, loss), 1e23, n_boot=200, budget=budget,
                     approach2_budgets=[m.budget for m in a2.minima], estimates={"approach2.a": a2.a})
    iv = boot.interval("approach2.a")
    assert iv.n_draws > 150 and iv.contains(a2.a, 0.95)
    assert iv.width(0.95) < 0.2


def test_warm_started_refits_match_a_global_refit_of_each_resample():
    # On small noisy sweeps a resample's Huber objective can have a second local minimum next
    # to the warm start (about 1 resample in 40 here; none of 70 on the Chinchilla points), so
    # the test allows one near miss and bounds how near it must be.
    n, d, loss, _ = runs(seed=6, noise=0.02)
    boot = bootstrap(n, d, loss, fit_approach3(n, d, loss), 1e23, n_boot=12, seed=3)
    counts = resample_counts(len(n), 12, 3)
    args = (np.log(n), np.log(d), np.log(loss))
    same = 0
    for i in range(12):
        ref = fit_approach3(n, d, loss, weights=counts[i])
        v = np.log([boot.draws[k][i] for k in ("A", "B", "E")]).tolist() + [boot.draws["alpha"][i], boot.draws["beta"][i]]
        ours = huber_terms(np.array([v]), *args, counts[i:i + 1], order=0)[0]
        assert ours <= ref.objective * 1.01
        same += abs(boot.draws["alpha"][i] - ref.params.alpha) < 1e-3 and abs(boot.draws["beta"][i] - ref.params.beta) < 1e-3
    assert same >= 11


def test_80_percent_intervals_cover_the_truth_about_80_percent_of_the_time():
    # Fixed seeds: deterministic. bench/bench_fit.py measures the rate over many more.
    rates = coverage(LAW, seeds=range(20), n_boot=100)
    r80, r95 = rates[0.80], rates[0.95]
    assert 0.70 <= np.mean(list(r80.values())) <= 0.90, r80
    assert min(r80.values()) >= 0.5, r80  # no quantity's interval is systematically too narrow
    assert np.mean(list(r95.values())) > np.mean(list(r80.values())), r95


def test_discrepancy_sandwich_in_blocks_equals_the_dense_product():
    from orchestrator.fitting.discrepancy import Discrepancy

    rng = np.random.default_rng(0)
    disc = Discrepancy(s_r=0.02, ell=0.5, sigma=0.003, q=3.0, level=2.5)
    x, b, loss = rng.normal(size=(700, 2)), rng.normal(size=(5, 700)), rng.uniform(2, 6, 700)
    np.testing.assert_allclose(disc.sandwich(x, loss, b, block=128), b @ disc.covariance(x, loss) @ b.T, rtol=1e-10)


def test_vectorised_approach1_bootstrap_equals_one_fit_per_resample():
    from orchestrator.fitting.bootstrap import _refit_approach1

    n, d, loss, budget = synthetic_isoflop(LawParams(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37),
                                           (1e18, 1e19, 1e20, 1e21), 5, 0.02, seed=3)
    compute = 6 * n * d
    counts = resample_counts(len(n), 300, seed=1)
    fast = _refit_approach1(counts, compute, n, d, loss, budget)
    for i, row in enumerate(counts):
        sel = row > 0
        try:
            f1 = fit_approach1(compute[sel], n[sel], d[sel], loss[sel], budget[sel])
            expected = (f1.a, f1.b)
        except InsufficientData:
            expected = (np.nan, np.nan)
        np.testing.assert_allclose([fast["approach1.a"][i], fast["approach1.b"][i]], expected, rtol=1e-9)


def _field_runs(amplitude: float, seed: int, length_scale: float = 0.5):
    """IsoFLOP runs of a simulated world (orchestrator-independent): T0's law, seed noise, and a
    smooth residual field of ``amplitude`` nats over ``length_scale`` decades; no outliers."""
    from workers.config import NoiseConfig, WorldConfig
    from workers.simulated.world import World

    world = World(WorldConfig.chinchilla((1.8172, 482.01, 2085.43, 0.3478, 0.3658), seed=seed, noise=NoiseConfig(
        residual_amplitude=amplitude, residual_length_scale=length_scale, outlier_prob=0.0)))
    n, d, _, _ = synthetic_isoflop(LAW, [10 ** (17 + 0.5 * i) for i in range(7)], 9, 0.0, seed)
    loss = np.array([world.observe(a, b, key=i) for i, (a, b) in enumerate(zip(n, d))])
    return n, d, loss


@pytest.mark.parametrize("seed", [0, 1])
def test_reml_finds_a_planted_residual_field_and_widens_the_intervals_for_it(seed):
    from orchestrator.fitting.discrepancy import LOCAL_ELL, discrepancy_sd, estimate_discrepancies

    sds = {}
    for amplitude in (0.0, 0.02):
        n, d, loss = _field_runs(amplitude, seed)
        fit = fit_approach3(n, d, loss)
        theta, x = fit.params.as_vector(), np.stack([np.log10(n), np.log10(d)], axis=1)
        disc = estimate_discrepancies(theta, x, loss, fit.residuals, caps=(LOCAL_ELL,))[0]
        if amplitude:
            assert 0.007 <= disc.s_r <= 0.04, disc  # the planted 0.02 nats, within the spread of one field
        else:
            assert disc.s_r < 0.004, disc  # seed noise alone (0.002 nats) is no field
        sds[amplitude] = discrepancy_sd(theta, n, d, loss, disc, 1e22)
    assert sds[0.02]["n_opt"] > 2 * sds[0.0]["n_opt"] and sds[0.02]["loss_opt"] > 2 * sds[0.0]["loss_opt"]


def test_the_targets_residual_model_allows_a_longer_field_than_the_local_one():
    """One REML pass, two caps: a and b keep fields of at most LOCAL_ELL, the extrapolated
    targets take a longer one where REML prefers it, and then get wider intervals."""
    from orchestrator.fitting.discrepancy import LOCAL_ELL, discrepancy_sd, estimate_discrepancies

    found = {}
    for length_scale in (0.5, 1.0):
        n, d, loss = _field_runs(0.02, 0, length_scale)
        fit = fit_approach3(n, d, loss)
        theta, x = fit.params.as_vector(), np.stack([np.log10(n), np.log10(d)], axis=1)
        local, targets = estimate_discrepancies(theta, x, loss, fit.residuals)
        found[length_scale] = (local, targets, discrepancy_sd(theta, n, d, loss, local, 1e22),
                               discrepancy_sd(theta, n, d, loss, targets, 1e22))
    local, targets, _, _ = found[0.5]
    assert local == targets  # a short field: one model for everything
    local, targets, sd_local, sd_targets = found[1.0]
    assert local.ell <= LOCAL_ELL < targets.ell and targets.s_r > local.s_r
    assert sd_targets["n_opt"] > 1.2 * sd_local["n_opt"] and sd_targets["loss_opt"] > 1.2 * sd_local["loss_opt"]
