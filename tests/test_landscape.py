"""The joint fit of the hyperparameter landscape (orchestrator.fitting.hparams.landscape)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.fitting.hparams.landscape import fit_landscape

LR = (1.79, -0.713, 0.307)
B = (0.58, 0.0, 0.571)
K = (0.0058, 0.0057, -0.006)


def landscape_runs(points, rng=None, sigma=0.0, spike=0.0, batch_values=(0.5, 1.0, 2.0)) -> pd.DataFrame:
    """Trials at lr and batch a factor 2 around off-centre guesses, losses from the landscape."""
    rows = []
    for i, (n, d) in enumerate(points):
        lr_s = LR[0] * n ** LR[1] * d ** LR[2]
        b_s = B[0] * n ** B[1] * d ** B[2]
        level = 2.0 + 400 / n ** 0.34 + 400 / d ** 0.28
        for f_lr in (0.35, 0.7, 1.4, 2.8):
            for f_b in batch_values:
                lr, b = lr_s * f_lr * 1.1, b_s * f_b * 0.9
                u, v = math.log(lr / lr_s), math.log(b / b_s)
                y = level * math.exp(K[0] * u * u + K[1] * v * v + K[2] * u * v)
                if rng is not None:
                    y += rng.normal(0, sigma) + (spike if rng.random() < 0.02 else 0.0)
                rows.append({"point": f"p{i}", "n": n, "d": d, "lr": lr, "batch": b, "loss": y, "status": "completed"})
    return pd.DataFrame(rows)


GRID = [(n, d) for n in (1e7, 3e7, 1e8, 3e8) for d in (2e8, 2e9, 2e10)]


def test_noise_free_landscape_is_recovered_exactly():
    laws = fit_landscape(landscape_runs(GRID), ("lr", "batch"), "total", n_draws=200)
    lr, b = laws["lr"], laws["batch"]
    assert (lr.coef, lr.n_exp, lr.d_exp) == pytest.approx(LR, rel=1e-3, abs=1e-3)
    assert (b.coef, b.n_exp, b.d_exp) == pytest.approx(B, rel=1e-3, abs=1e-3)
    assert "k_lr 0.0058" in lr.notes[-1]


def test_noisy_landscape_covers_the_truth_and_spikes_do_not_pull_it():
    rng = np.random.default_rng(3)
    runs = landscape_runs(GRID, rng, sigma=0.002, spike=0.2)
    laws = fit_landscape(runs, ("lr", "batch"), "total", n_draws=2000, seed=1)
    n, d = 1e9, 2e10  # beyond the points: a recommendation for a larger run
    for what, (c, a, b) in (("lr", LR), ("batch", B)):
        rec = laws[what].at(n, d)
        truth = c * n ** a * d ** b
        lo, hi = rec["95%"]
        assert lo <= truth <= hi
        assert abs(math.log(rec["estimate"] / truth)) < math.log(1.25)


def test_one_batch_per_point_fits_lr_alone_and_a_flat_variable_gets_no_exponent():
    same_d = [(n, 2e9) for n in (1e7, 3e7, 1e8, 3e8, 1e9, 3e9)]
    runs = landscape_runs(same_d, batch_values=(1.0,))
    laws = fit_landscape(runs, ("lr",), "total", n_draws=100)
    assert set(laws) == {"lr"}
    law = laws["lr"]
    assert law.free == ("n",) and law.d_exp == 0.0
    assert law.n_exp == pytest.approx(LR[1], abs=1e-3)
    assert any("d_exp fixed at 0" in note for note in law.notes)


def test_too_few_points_or_a_flat_basin_give_no_joint_fit():
    assert fit_landscape(landscape_runs(GRID[:3]), ("lr", "batch"), "total") is None
    flat = landscape_runs(GRID)
    flat["loss"] = 3.0  # no curvature: nothing pins an optimum
    assert fit_landscape(flat, ("lr", "batch"), "total") is None
