"""FLOPs arithmetic: the one place the project counts compute.

Every budget, every ``flops`` column and every frontier in scalesweep goes through
:func:`train_flops`. It is the Chinchilla/Kaplan approximation C = 6 N D: a forward pass
costs 2 FLOPs per parameter per token and the backward pass twice that (Kaplan et al. 2020,
"Scaling Laws for Neural Language Models", section 2.1; Hoffmann et al. 2022, appendix F).

Attention's own matmuls (QK^T and AV) are not proportional to N. They add
12 * n_layer * seq_len * d_model FLOPs per token for forward plus backward (Kaplan, Table 1:
2 * n_layer * n_ctx * d_attn forward, times 3). The budget accounting leaves them out, as
Chinchilla's IsoFLOP analysis does, so the fitted law is comparable with published ones;
:func:`model_flops_per_token` adds them where true hardware work matters (MFU, PaLM appendix B).
"""

from __future__ import annotations

__all__ = ["train_flops", "tokens_for_budget", "model_flops_per_token"]


def train_flops(n_params: float, tokens: float) -> float:
    """Training compute C = 6 * N * D in FLOPs (N parameters, D tokens)."""
    return 6.0 * float(n_params) * float(tokens)


def tokens_for_budget(budget_flops: float, n_params: float) -> float:
    """Tokens D such that train_flops(n_params, D) == budget_flops (before rounding)."""
    return float(budget_flops) / (6.0 * float(n_params))


def model_flops_per_token(n_params: float, n_layer: int, d_model: int, seq_len: int) -> float:
    """Hardware FLOPs per trained token: 6N plus the attention term (see module docstring).

    Used only to report model FLOPs utilisation; budgets use :func:`train_flops`.
    """
    return 6.0 * float(n_params) + 12.0 * n_layer * seq_len * d_model
