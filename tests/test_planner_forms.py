"""The adaptive planner with the spec's law form (fit.form): the design models through a
LawForm, and a planner that fits and designs with Kaplan's form against a Kaplan-like world."""

import math
import os

import numpy as np
import pytest

from orchestrator.fitting.forms.builtin import Chinchilla, Kaplan
from orchestrator.planning.adaptive import AdaptivePlanner
from orchestrator.planning.design import DesignModel, SparseDesignModel
from orchestrator.planning.trials import TrialFactory
from orchestrator.spec import parse_spec
from workers.run import run_trial

THETA = np.array([math.log(482.01), math.log(2085.43), math.log(1.8172), 0.3478, 0.3658])
KW = dict(compute=1e20, sigma=0.004, s_r=0.008, ell=0.5, weights=(1 / 0.1**2, 1 / 0.01**2))
# Kaplan's form with Chinchilla-like limits (A/N^alpha ~ (Nc/N)^alpha_N, B/D^beta ~ (Dc/D)^alpha_D)
KAPLAN = {"E": 1.8, "Nc": 5e7, "Dc": 1.2e9, "alpha_N": 0.35, "alpha_D": 0.37}
KAPLAN_WORLD = "1.8 + ((5e7/N)**(0.35/0.37) + 1.2e9/D)**0.37"


def points(n, seed=0):
    rng = np.random.default_rng(seed)
    lc, lr = rng.uniform(15, 18, n), rng.uniform(0, 3, n)
    ln = 0.5 * (lc - math.log10(6) - lr)
    return np.stack([ln, ln + lr], axis=1)


@pytest.mark.parametrize("kind", [DesignModel, SparseDesignModel])
def test_chinchillas_form_gives_the_default_design_model(kind):
    x, cand = points(40), points(200, seed=1)
    plain, through = kind(THETA, x, **KW), kind(THETA, x, **KW, form=Chinchilla())
    np.testing.assert_allclose(through.target_sd(), plain.target_sd(), rtol=1e-6)
    np.testing.assert_allclose(through.gains(cand), plain.gains(cand), rtol=1e-6)
    plain.add(cand[0])
    through.add(cand[0])
    np.testing.assert_allclose(through.gains(cand), plain.gains(cand), rtol=1e-6)


def test_a_searched_optimum_gives_gains_that_are_the_variance_drop():
    """Kaplan's form: numerical Jacobian and 1-D optimum, a diagonal prior of its size."""
    form = Kaplan()
    model = DesignModel(form.from_values(KAPLAN), points(30), **KW, form=form)
    w = np.asarray(KW["weights"])
    assert model.G.shape == (2, 5) and np.isfinite(model.G).all()
    for point in points(3, seed=2):
        before = model.target_sd() ** 2
        gain = model.gains(point[None, :])[0]
        model.add(point)
        assert ((before - model.target_sd() ** 2) * w).sum() == pytest.approx(gain, rel=1e-6)


def kaplan_planner(root, form="kaplan", world=KAPLAN_WORLD, max_trials=18):
    spec = parse_spec({
        "name": "simk", "trainer": "simulated", "results": str(root),
        "fit": {"target_compute": 1e20, "form": form},
        "world": {"expression": world, "seed": 3, "noise": {"residual_amplitude": 0.005}},
        "planner": "adaptive",
        "adaptive": {"min_flops": 1e15, "max_flops": 1e18, "n_range": [1e6, 3e9], "dn_range": [1, 1000],
                     "flop_budget": 3e18, "max_trials": max_trials, "initial_trials": 6}})
    os.makedirs(spec.sweep_dir, exist_ok=True)
    return AdaptivePlanner(spec, TrialFactory(spec), os.path.join(spec.sweep_dir, "planner.journal"))


def test_auto_plans_with_chinchillas_form(tmp_path):
    planner = kaplan_planner(tmp_path, form="auto")
    assert planner.form.name == "chinchilla" and planner.chinchilla


def test_the_planner_fits_and_designs_with_the_specs_form(tmp_path):
    planner = kaplan_planner(tmp_path)
    assert planner.form.name == "kaplan" and not planner.chinchilla
    rounds = 0
    while not planner.finished() and rounds < 10:
        batch = planner.ask(3)
        if not batch:
            break
        for t in batch:
            planner.tell(t, run_trial(t))
        rounds += 1
    assert planner.stopped and len(planner.obs) > 6  # designed past the initial points
    assert planner.theta is not None and planner.theta.shape == (5,)
    values = planner.form.values(planner.theta)
    assert list(values) == ["E", "Nc", "Dc", "alpha_N", "alpha_D"]
    assert abs(values["alpha_N"] - KAPLAN["alpha_N"]) < 0.05 and abs(values["alpha_D"] - KAPLAN["alpha_D"]) < 0.05
    model = planner._model()
    assert isinstance(model, DesignModel) and model.form is planner.form
    assert np.isfinite(model.target_sd()).all()


def test_a_flat_fit_of_the_form_is_explored_not_taken_for_a_sharp_optimum(tmp_path):
    """A loss that depends on neither N nor D: the Kaplan fit drives its terms to nothing (a
    finite optimum of a flat law); the planner explores the whole region and stops on its cap,
    not on "intervals narrow enough" from a target variance of zero."""
    planner = kaplan_planner(tmp_path, world="3.0", max_trials=16)
    while not planner.finished():
        batch = planner.ask(3)
        if not batch:
            break
        for t in batch:
            planner.tell(t, run_trial(t))
    assert planner.theta is not None and planner._model() is None
    assert not planner.stopped.startswith("80 %")
    assert max(o[0] + o[1] + math.log10(6) for o in planner.obs) > 16.5  # past the initial 1.5 decades
