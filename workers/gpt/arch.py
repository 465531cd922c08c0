"""Model shapes: from a target parameter count to (n_layer, d_model, n_head), exactly.

The GPT in :mod:`workers.gpt.model` has tied input/output embeddings, learned positions,
bias-free LayerNorms and linears, and a 4x MLP, so its parameter count is a closed form
(:func:`param_count`). Planning can therefore compute the exact N of every trial, and the
tokens D = C / 6N of an IsoFLOP point, without building a model.

A mixture-of-experts shape (``experts`` > 0) replaces each block's MLP by ``experts`` copies
of it and a bias-free router Linear(d_model, experts); every token runs through ``top_k`` of
them. Its N (:attr:`GPTShape.n_params`, :func:`param_count`) is the *active* count: embeddings,
attention, LayerNorms, routers and ``top_k`` experts per layer, the parameters one token's
forward pass multiplies by, so C = 6 N D stays the training FLOPs (a routed model computes per
token what a dense model of its active size does: Fedus et al. 2021, "Switch Transformers",
section 2). What memory must hold is :attr:`GPTShape.n_params_total`.

The width/depth *opinion* lives in :class:`ShapeRule`: a head size and a target aspect
ratio d_model / n_layer. Kaplan et al. (2020, Fig. 5) found loss insensitive to aspect ratio
over a wide range, so the rule only has to be consistent across sizes; among shapes whose
count is close to the target it picks the one nearest the aspect ratio.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["GPTShape", "ShapeRule", "param_count", "nonembed_param_count", "total_param_count", "shape_for_params",
           "shape_identity"]


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int
    experts: int = 0  # 0: a dense MLP per block; else that many expert MLPs and a router
    top_k: int = 0  # experts per token (0 for a dense shape)

    def __post_init__(self):
        if self.experts == 0 and self.top_k != 0 or self.experts and not 1 <= self.top_k <= self.experts:
            raise ValueError(f"experts={self.experts}, top_k={self.top_k}: expected 0, 0 (dense) "
                             "or 1 <= top_k <= experts")

    @property
    def n_params(self) -> int:
        """Active parameters: the N of C = 6 N D (all of them for a dense shape)."""
        return param_count(self)

    @property
    def n_params_nonembed(self) -> int:
        """Active parameters outside the embeddings."""
        return nonembed_param_count(self)

    @property
    def n_params_total(self) -> int:
        """Every parameter, each expert counted: what the model's weights and optimiser hold."""
        return total_param_count(self)


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
    # Mixture of experts for every shape the rule makes (GPTShape.experts, top_k); 0, 0: dense.
    experts: int = 0
    top_k: int = 0


def _layer_coefficients(shape_or_rule: GPTShape | ShapeRule, mlps: str) -> tuple[int, int]:
    """(a, b) with one block's parameters = a d^2 + b d: attention 4 d^2, 8 d^2 per 4x MLP,
    d per router output, two LayerNorms 2 d. ``mlps``: "active" (top_k of the experts) or
    "total" (all of them); a dense block has one MLP and no router."""
    experts, top_k = shape_or_rule.experts, shape_or_rule.top_k
    n_mlp = 1 if not experts else top_k if mlps == "active" else experts
    return 4 + 8 * n_mlp, 2 + experts


def _nonembed(shape: GPTShape, mlps: str) -> int:
    a, b = _layer_coefficients(shape, mlps)
    d = shape.d_model
    return shape.n_layer * (a * d * d + b * d) + d  # + final LayerNorm


def nonembed_param_count(shape: GPTShape) -> int:
    """Active parameters outside the token and position embeddings (Kaplan's N); for a dense
    shape, per block: ln_1 (d) + qkv (3d^2) + attn proj (d^2) + ln_2 (d) + fc (4d^2) + proj (4d^2)."""
    return _nonembed(shape, "active")


def param_count(shape: GPTShape) -> int:
    """Active parameters (Chinchilla's N; every parameter of a dense shape): embeddings counted
    once, the LM head is tied."""
    return _nonembed(shape, "active") + (shape.vocab_size + shape.seq_len) * shape.d_model


def total_param_count(shape: GPTShape) -> int:
    """Every parameter, all experts included (= :func:`param_count` for a dense shape)."""
    return _nonembed(shape, "total") + (shape.vocab_size + shape.seq_len) * shape.d_model


def shape_identity(shape: GPTShape) -> dict:
    """The shape's fields as trial ids hash them: a dense shape without ``experts`` and
    ``top_k``, so its ids are those computed before mixtures of experts existed."""
    fields = asdict(shape)
    if not shape.experts:
        del fields["experts"], fields["top_k"]
    return fields


def shape_for_params(target: float, vocab_size: int, seq_len: int, rule: ShapeRule = ShapeRule()) -> GPTShape:
    """The shape whose (active) parameter count is nearest ``target`` under ``rule``.

    Candidates: every depth 1..max_layers with the two widths nearest the target for it;
    the cheapest under the cost in :class:`ShapeRule` wins.
    """
    if target <= 0:
        raise ValueError(f"target parameter count must be positive, got {target}")
    h = rule.head_dim
    a_layer, b_layer = _layer_coefficients(rule, "active")
    candidates: list[GPTShape] = []
    for n_layer in range(1, rule.max_layers + 1):
        # Solve a L d^2 + (b L + 1 + V + T) d = target for d (dense: a = 12, b = 2), then try
        # the two nearest widths.
        a, b = float(a_layer * n_layer), b_layer * n_layer + 1.0 + vocab_size + seq_len
        d_real = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)
        lo = max(1, math.floor(d_real / h))
        for k in (lo, lo + 1):
            candidates.append(GPTShape(n_layer, k * h, k, vocab_size, seq_len, rule.experts, rule.top_k))

    def cost(s: GPTShape) -> float:
        aspect = (s.d_model / s.n_layer) / rule.aspect_ratio
        return abs(math.log(s.n_params / target)) + rule.aspect_weight * abs(math.log(aspect))

    return min(candidates, key=cost)
