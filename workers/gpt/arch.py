"""Model shapes: from a target parameter count to (n_layer, d_model, n_head), exactly.

Two architecture families (:attr:`GPTShape.family`), each with a closed-form count:
``"gpt"``, the GPT-2 style model of :mod:`workers.gpt.model` (below), and ``"llama"``, the
LLaMA style model of :mod:`workers.gpt.llama` (:func:`ffn_hidden` and the closing paragraph).

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

A ``"llama"`` shape (Touvron et al. 2023) has no biases and no position table (rotary
embeddings have no parameters), RMSNorm gains (d each: two per block and a final one), attention
q, k, v and output projections (4 d^2; as many key/value heads as query heads) and a SwiGLU MLP
of hidden size h = :func:`ffn_hidden` (gate, up and down: 3 d h), and an input embedding and LM
head that are *not* tied (V d each). So N = L (4 d^2 + 3 d h + 2 d) + d + 2 V d, and its
non-embedding N = L (4 d^2 + 3 d h + 2 d) + d leaves out both V d matrices: Kaplan et al. (2020,
section 1.1, Fig. 6) leave out the embedding matrix, which a GPT's head shares, because the laws
are cleaner without it; an untied head is that matrix's other use, so leaving out both keeps a
llama's non-embedding N the blocks and final norm, as a GPT's is. Mixtures of experts are
GPT-only for now.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["FAMILIES", "GPTShape", "ShapeRule", "ffn_hidden", "param_count", "nonembed_param_count",
           "matmul_param_count", "total_param_count", "shape_for_params", "shape_identity"]

FAMILIES = ("gpt", "llama")


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    seq_len: int
    experts: int = 0  # 0: a dense MLP per block; else that many expert MLPs and a router
    top_k: int = 0  # experts per token (0 for a dense shape)
    family: str = "gpt"  # one of FAMILIES: which model workers.gpt.model.build_model builds

    def __post_init__(self):
        if self.experts == 0 and self.top_k != 0 or self.experts and not 1 <= self.top_k <= self.experts:
            raise ValueError(f"experts={self.experts}, top_k={self.top_k}: expected 0, 0 (dense) "
                             "or 1 <= top_k <= experts")
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r}: expected one of {', '.join(FAMILIES)}")
        if self.family == "llama" and self.experts:
            raise ValueError(f"experts={self.experts}: mixtures of experts are only for family 'gpt'")

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
    family: str = "gpt"  # GPTShape.family of every shape the rule makes


def ffn_hidden(d_model: int) -> int:
    """The SwiGLU hidden size of a ``"llama"`` block: 8 d / 3 rounded up to a multiple of 8.

    Three matrices of d x h cost what GPT's two of d x 4d do when h = 8 d / 3 (Shazeer 2020,
    "GLU Variants Improve Transformer", section 2); LLaMA rounds it up to a multiple of 256
    (its ``multiple_of``), which at the widths swept here would be most of the MLP, so this
    rounds to 8, the granularity GPU matrix units want. ceil(8 d / 3 / 8) = ceil(d / 3)."""
    return 8 * -(-d_model // 3)


def _layer_coefficients(shape_or_rule: GPTShape | ShapeRule, mlps: str) -> tuple[int, int]:
    """(a, b) with one block's parameters = a d^2 + b d: attention 4 d^2, 8 d^2 per 4x MLP,
    d per router output, two LayerNorms 2 d. ``mlps``: "active" (top_k of the experts) or
    "total" (all of them); a dense block has one MLP and no router."""
    experts, top_k = shape_or_rule.experts, shape_or_rule.top_k
    n_mlp = 1 if not experts else top_k if mlps == "active" else experts
    return 4 + 8 * n_mlp, 2 + experts


def _nonembed(shape: GPTShape, mlps: str) -> int:
    d = shape.d_model
    if shape.family == "llama":  # two RMSNorms, q, k, v, o, and SwiGLU's gate, up and down
        block = 2 * d + 4 * d * d + 3 * d * ffn_hidden(d)
    else:
        a, b = _layer_coefficients(shape, mlps)
        block = a * d * d + b * d
    return shape.n_layer * block + d  # + final norm


def _embeddings(shape: GPTShape) -> int:
    """GPT: the tied token embedding and the learned positions; llama: the token embedding and
    the untied LM head (rotary positions have no parameters)."""
    if shape.family == "llama":
        return 2 * shape.vocab_size * shape.d_model
    return (shape.vocab_size + shape.seq_len) * shape.d_model


def nonembed_param_count(shape: GPTShape) -> int:
    """Active parameters outside the token and position embeddings (Kaplan's N); for a dense
    shape, per block: ln_1 (d) + qkv (3d^2) + attn proj (d^2) + ln_2 (d) + fc (4d^2) + proj (4d^2).
    A llama shape leaves out its token embedding and its LM head (module docstring)."""
    return _nonembed(shape, "active")


def param_count(shape: GPTShape) -> int:
    """Active parameters (Chinchilla's N; every parameter of a dense shape): a GPT's embeddings
    counted once, the LM head is tied; a llama's embedding and head both."""
    return _nonembed(shape, "active") + _embeddings(shape)


def matmul_param_count(shape: GPTShape) -> int:
    """Active parameters a token is multiplied by in a matmul: every Linear weight of the blocks
    (top_k experts and the router, for a mixture) and the LM head (V d), but not the norms' gains or
    the position table, which cost no matmul, nor the input embedding, a lookup (a llama's
    untied head is its second V d). Its 6x is the dense part of workers.flops.model_flops_per_token,
    which torch's FlopCounterMode reproduces exactly (tests/test_flops_count.py); for the tiniest
    GPTs the position table alone is 15 % of N, so 6 N would overstate the hardware's work."""
    d = shape.d_model
    if shape.family == "llama":
        block = 4 * d * d + 3 * d * ffn_hidden(d)
    else:
        a, b = _layer_coefficients(shape, "active")
        block = a * d * d + shape.experts * d  # the router's d x experts; no LayerNorm gains
    return shape.n_layer * block + shape.vocab_size * d


def total_param_count(shape: GPTShape) -> int:
    """Every parameter, all experts included (= :func:`param_count` for a dense shape)."""
    return _nonembed(shape, "total") + _embeddings(shape)


def shape_identity(shape: GPTShape) -> dict:
    """The shape's fields as trial ids hash them: a dense shape without ``experts`` and
    ``top_k``, and a GPT without ``family``, so their ids are those computed before mixtures of
    experts and other families existed."""
    fields = asdict(shape)
    if not shape.experts:
        del fields["experts"], fields["top_k"]
    if shape.family == "gpt":
        del fields["family"]
    return fields


def shape_for_params(target: float, vocab_size: int, seq_len: int, rule: ShapeRule = ShapeRule()) -> GPTShape:
    """The shape whose (active) parameter count is nearest ``target`` under ``rule``.

    Candidates: every depth 1..max_layers with the two widths nearest the target for it;
    the cheapest under the cost in :class:`ShapeRule` wins.
    """
    if target <= 0:
        raise ValueError(f"target parameter count must be positive, got {target}")
    h = rule.head_dim
    # A llama block is 4 d^2 + 3 d ffn_hidden(d) + 2 d, about 12 d^2 + 2 d as a dense GPT's,
    # and its embeddings are 2 V d; the guess only has to be near, every candidate's count is exact.
    a_layer, b_layer = _layer_coefficients(rule, "active") if rule.family == "gpt" else (12, 2)
    b_embed = vocab_size + seq_len if rule.family == "gpt" else 2 * vocab_size
    candidates: list[GPTShape] = []
    for n_layer in range(1, rule.max_layers + 1):
        # Solve a L d^2 + (b L + 1 + E) d = target for d (dense GPT: a = 12, b = 2, E = V + T),
        # then try the two nearest widths.
        a, b = float(a_layer * n_layer), b_layer * n_layer + 1.0 + b_embed
        d_real = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)
        lo = max(1, math.floor(d_real / h))
        for k in (lo, lo + 1):
            candidates.append(GPTShape(n_layer, k * h, k, vocab_size, seq_len, rule.experts, rule.top_k, rule.family))

    def cost(s: GPTShape) -> float:
        aspect = (s.d_model / s.n_layer) / rule.aspect_ratio
        return abs(math.log(s.n_params / target)) + rule.aspect_weight * abs(math.log(aspect))

    return min(candidates, key=cost)
