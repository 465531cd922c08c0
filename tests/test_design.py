"""Design models (orchestrator.planning.design): one contract for the exact GLS model and the
inducing-point one, and agreement of the two where both apply."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from orchestrator.planning.design import DesignModel, SparseDesignModel

THETA = np.array([math.log(482.01), math.log(2085.43), math.log(1.8172), 0.3478, 0.3658])
KW = dict(compute=1e20, sigma=0.004, s_r=0.008, ell=0.5, weights=(1 / 0.1**2, 1 / 0.01**2))


def points(n, seed=0):
    rng = np.random.default_rng(seed)
    lc, lr = rng.uniform(15, 18, n), rng.uniform(0, 3, n)
    ln = 0.5 * (lc - math.log10(6) - lr)
    return np.stack([ln, ln + lr], axis=1)


@pytest.fixture(params=[DesignModel, SparseDesignModel])
def model(request):
    return request.param(THETA, points(120), **KW)


def test_gains_are_the_weighted_variance_drop_of_adding_the_point(model):
    w = np.asarray(KW["weights"])
    for point in points(5, seed=1):
        before = model.target_sd() ** 2
        gain = model.gains(point[None, :])[0]
        model.add(point)
        after = model.target_sd() ** 2
        assert gain >= 0 and (after <= before + 1e-15).all()
        assert ((before - after) * w).sum() == pytest.approx(gain, rel=1e-6)


def test_a_point_next_to_many_others_adds_less_than_one_towards_the_target(model):
    crowded = np.array([[7.0, 8.5]])  # inside the sampled region, log10 C ~ 16.3
    model_points = np.repeat(crowded, 20, axis=0)
    for p in model_points:
        model.add(p)
    towards_target = np.array([[9.0, 10.8]])  # log10 C ~ 20.6, where no trial is
    assert model.gains(crowded)[0] < model.gains(towards_target)[0]


def test_sparse_model_agrees_with_the_exact_one():
    x, cand = points(200), points(1500, seed=2)
    exact, sparse = DesignModel(THETA, x, **KW), SparseDesignModel(THETA, x, **KW)
    np.testing.assert_allclose(sparse.target_sd(), exact.target_sd(), rtol=0.02)
    ge, gs = exact.gains(cand), sparse.gains(cand)
    assert spearmanr(ge, gs).statistic > 0.99
    assert gs[np.argmax(ge)] >= 0.98 * gs.max()  # the exact model's pick is (nearly) the sparse one's


def test_sparse_model_state_does_not_grow_with_points():
    small, large = SparseDesignModel(THETA, points(50), **KW), SparseDesignModel(THETA, points(5000), **KW)
    assert large.cov.shape[0] <= small.cov.shape[0] + 50  # the inducing grid spans the region, not the data
    assert (large.target_sd() < small.target_sd()).all()
