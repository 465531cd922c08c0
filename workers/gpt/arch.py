"""Model shapes: from a target parameter count to (n_layer, d_model, n_head), exactly.

The GPT in :mod:`workers.gpt.model` has tied input/output embeddings, learned positions,
bias-free LayerNorms and linears, and a 4x MLP, so its parameter count is a closed form
(:func:`param_count`). Planning can therefore compute the exact N of every trial, and the
tokens D = C / 6N of an IsoFLOP point, without building a model.

The width/depth *opinion* lives in :class:`ShapeRule`: a head size and a target aspect
ratio d_model / n_layer. Kaplan et al. (2020, Fig. 5) found loss insensitive to aspect ratio
over a wide range, so the rule only has to be consistent across sizes; among shapes whose
count is close to the target it picks the one nearest the aspect ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["GPTShape", "ShapeRule", "param_count", "nonembed_param_count", "shape_for_params"]


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int

    @property
    def n_params(self) -> int:
        return param_count(self)

    @property
    def n_params_nonembed(self) -> int:
        return nonembed_param_count(self)


@dataclass(frozen=True)
class ShapeRule:
    """Recipe for turning a parameter count into a shape (the one place this opinion lives)."""

    head_dim: int = 8
    aspect_ratio: float = 32.0  # d_model / n_layer
    max_layers: int = 64
    # Cost of a candidate = |log(N / target)| + aspect_weight * |log(aspect / aspect_ratio)|:
    # hitting the count matters most, the aspect ratio breaks near-ties. Widths are multiples
    # of head_dim so n_head is an integer.
    aspect_weight: float = 0.25


def nonembed_param_count(shape: GPTShape) -> int:
    """Parameters outside the token and position embeddings (Kaplan's N)."""
    d = shape.d_model
    # per block: ln_1 (d) + qkv (3d^2) + attn proj (d^2) + ln_2 (d) + fc (4d^2) + proj (4d^2)
    per_layer = 12 * d * d + 2 * d
    return shape.n_layer * per_layer + d  # + final LayerNorm


def param_count(shape: GPTShape) -> int:
    """Total parameters (Chinchilla's N): embeddings counted once, the LM head is tied."""
    return nonembed_param_count(shape) + (shape.vocab_size + shape.seq_len) * shape.d_model


def shape_for_params(target: float, vocab_size: int, seq_len: int, rule: ShapeRule = ShapeRule()) -> GPTShape:
    """The shape whose total parameter count is nearest ``target`` under ``rule``.

    Candidates: every depth 1..max_layers with the two widths nearest the target for it;
    the cheapest under the cost in :class:`ShapeRule` wins.
    """
    if target <= 0:
        raise ValueError(f"target parameter count must be positive, got {target}")
    h = rule.head_dim
    candidates: list[GPTShape] = []
    for n_layer in range(1, rule.max_layers + 1):
        # Solve 12 L d^2 + (2L + 1 + V + T) d = target for d, then try the two nearest widths.
        a, b = 12.0 * n_layer, 2.0 * n_layer + 1 + vocab_size + seq_len
        d_real = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)
        lo = max(1, math.floor(d_real / h))
        for k in (lo, lo + 1):
            candidates.append(GPTShape(n_layer, k * h, k, vocab_size, seq_len))

    def cost(s: GPTShape) -> float:
        aspect = (s.d_model / s.n_layer) / rule.aspect_ratio
        return abs(math.log(s.n_params / target)) + rule.aspect_weight * abs(math.log(aspect))

    return min(candidates, key=cost)
