"""The benchmark's visible worlds: the laws a planner is scored on in
docs/benchmarks.md. They belong to the benchmark, not to the simulator, so a planner or a
default in the shipped packages cannot be tuned to them."""

from __future__ import annotations

__all__ = ["STEP_LAW", "STEP_LAW_CURVATURES", "VISIBLE_LAWS", "hparams_spec", "law_spec"]

# (E, A, B, alpha, beta) of L = E + A/N^alpha + B/D^beta
VISIBLE_LAWS: dict[str, tuple[float, float, float, float, float]] = {
    "T0": (1.8172, 482.01, 2085.43, 0.3478, 0.3658),  # Epoch's refit of Chinchilla (Besiroglu et al. 2024)
    "T1": (1.6934, 406.4, 410.7, 0.33917, 0.28491),  # Chinchilla paper, unrounded
    "T2": (1.69, 400.0, 400.0, 0.31, 0.31),  # symmetric
}


def law_spec(law: tuple[float, float, float, float, float]) -> dict[str, float]:
    """A law as a spec's ``world.law`` mapping."""
    return dict(zip(("E", "A", "B", "alpha", "beta"), law))


# The visible hyperparameter landscape (docs/benchmarks.md, "Hyperparameter landscape"): the
# true optima are the Step Law of Li et al. 2025 ("Predictable Scale: Part I"), fitted on 3,700
# runs, lr* = 1.79 N^-0.713 D^0.307 and B* = 0.58 D^0.571 tokens; the curvatures (per ln^2) a
# quadratic fit near the optimum of a published 1B-parameter, 100B-token grid of 117 runs.
# Other worlds may use other exponents: a planner must not be tuned to these.
STEP_LAW: dict[str, dict[str, float]] = {
    "lr": {"coef": 1.79, "n_exp": -0.713, "d_exp": 0.307},
    "batch": {"coef": 0.58, "n_exp": 0.0, "d_exp": 0.571},
}
STEP_LAW_CURVATURES: dict[str, float] = {"k_lr": 0.0058, "k_b": 0.0057, "k_x": -0.0060}


def hparams_spec(optima: dict[str, dict[str, float]] = STEP_LAW,
                 curvatures: dict[str, float] = STEP_LAW_CURVATURES) -> dict:
    """A landscape as a spec's ``world.hparams`` mapping (N is a simulated trial's one count, its total)."""
    return {**{k: {**rule, "n": "total"} for k, rule in optima.items()}, **curvatures}
