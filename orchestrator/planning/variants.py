"""A spec's variants as one sweep: a trial factory and a planner per variant, one driver.

Static sweeps run every design point for every variant, so the comparison
(orchestrator.fitting.variants) sets like against like. The adaptive planner plans each variant
on its own, with an equal share of ``adaptive.flop_budget`` and ``max_trials``: a shared
budget pooled across variants would let the variant whose law is pinned down first starve the
others, and an equal split keeps every variant's intervals comparable. Each variant keeps its
own Optuna journal, named by the hash of the settings it changes, so renaming a variant
resumes its study.
"""

from __future__ import annotations

import math

from orchestrator.planning.protocol import Planner
from orchestrator.planning.trials import TrialFactory, plan_trials, variant_id
from orchestrator.spec import SweepSpec, Variant
from workers.config import TrialConfig, TrialResult

__all__ = ["VariantPlanner", "adaptive_share", "journal_name", "plan_variants", "variant_factories"]


def variant_factories(spec: SweepSpec, cache_dir: str = "", vocab_size: int | None = None) -> dict[str, TrialFactory]:
    """One TrialFactory per variant, the baseline first (a spec without variants: just it)."""
    return {v.name: TrialFactory(spec, cache_dir, vocab_size, variant=v) for v in spec.variants_resolved()}


def plan_variants(factories: dict[str, TrialFactory]) -> list[TrialConfig]:
    """Every variant's static trials, largest compute first across variants (plan_trials'
    order), so that every variant's long trials start early and the sweep's tail stays short."""
    trials = [t for f in factories.values() for t in plan_trials(f.spec, f)]
    return sorted(trials, key=lambda t: -t.n_params * t.tokens)


def adaptive_share(variant: Variant, k: int) -> SweepSpec:
    """The variant's spec with its 1/k share of the adaptive planner's FLOPs and trials."""
    a = variant.spec.adaptive
    share = a.model_copy(update={"flop_budget": a.flop_budget / k, "max_trials": max(1, math.ceil(a.max_trials / k))})
    return variant.spec.model_copy(update={"adaptive": share})


def journal_name(variant: Variant, default: str) -> str:
    """The adaptive planner's journal file of ``variant``: the baseline keeps ``default``
    (the name a spec without variants uses), others are named by what they change."""
    if not variant.key:
        return default
    stem, dot, ext = default.rpartition(".")
    return f"{stem}-{variant_id(variant)}{dot}{ext}"


class VariantPlanner:
    """One planner per variant behind the planner protocol (orchestrator.planning.protocol):
    asks go round the variants that still propose, so each gets slots as the others do; a
    result goes back to the planner of the trial's variant."""

    def __init__(self, planners: dict[str, Planner]):
        self.planners = planners
        self.eager = all(p.eager for p in planners.values())
        self._turn = 0

    @property
    def stopped(self) -> str:
        return "; ".join(f"{name}: {p.stopped}" for name, p in self.planners.items() if p.stopped)

    def ask(self, n: int) -> list[TrialConfig]:
        names = list(self.planners)
        out: list[TrialConfig] = []
        idle = 0
        while len(out) < n and idle < len(names):
            planner = self.planners[names[self._turn % len(names)]]
            self._turn += 1
            got = planner.ask(1) if not planner.finished() else []
            out.extend(got)
            idle = 0 if got else idle + 1
        return out

    def tell(self, trial: TrialConfig, result: TrialResult | None) -> None:
        self.planners[trial.variant].tell(trial, result)

    def finished(self) -> bool:
        return all(p.finished() for p in self.planners.values())

    def expected(self) -> tuple[int, float]:
        parts = [p.expected() for p in self.planners.values()]
        return sum(n for n, _ in parts), sum(c for _, c in parts)

    def summary(self) -> str:
        """The tuned variants' summaries (TuningPlanner.summary), each under its name."""
        lines = [f"{name}: {p.summary()}" for name, p in self.planners.items() if hasattr(p, "summary") and p.summary()]
        return "\n".join(lines)
