"""Variants of a sweep compared with its baseline by compute multiplier: the comparison and its
output (``compare``), frontiers, multipliers and crossovers over parameter draws (``frontiers``),
and the separate and shared-exponent models of a pair with the choice between them (``models``)."""

from orchestrator.fitting.variants.compare import (Crossover, Model, ModelChoice, VariantComparison, VariantResult,
                                                   compare_variants, fit_variants)

__all__ = ["Crossover", "Model", "ModelChoice", "VariantComparison", "VariantResult", "compare_variants", "fit_variants"]
