"""The benchmark's visible worlds: the laws a planner is scored on in
docs/benchmarks.md. They belong to the benchmark, not to the simulator, so a planner or a
default in the shipped packages cannot be tuned to them."""

from __future__ import annotations

__all__ = ["VISIBLE_LAWS", "law_spec"]

# (E, A, B, alpha, beta) of L = E + A/N^alpha + B/D^beta
VISIBLE_LAWS: dict[str, tuple[float, float, float, float, float]] = {
    "T0": (1.8172, 482.01, 2085.43, 0.3478, 0.3658),  # Epoch's refit of Chinchilla (Besiroglu et al. 2024)
    "T1": (1.6934, 406.4, 410.7, 0.33917, 0.28491),  # Chinchilla paper, unrounded
    "T2": (1.69, 400.0, 400.0, 0.31, 0.31),  # symmetric
}


def law_spec(law: tuple[float, float, float, float, float]) -> dict[str, float]:
    """A law as a spec's ``world.law`` mapping."""
    return dict(zip(("E", "A", "B", "alpha", "beta"), law))
