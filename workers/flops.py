"""FLOPs arithmetic: the one place the project counts compute.

Every budget, every ``flops`` column and every frontier in scalesweep goes through
:func:`train_flops`. It is the Chinchilla/Kaplan approximation C = 6 N D: a forward pass
costs 2 FLOPs per parameter per token and the backward pass twice that (Kaplan et al. 2020,
"Scaling Laws for Neural Language Models", section 2.1; Hoffmann et al. 2022, appendix F).
For a mixture of experts N is the *active* parameter count (:attr:`workers.gpt.arch.GPTShape.n_params`:
the router and ``top_k`` experts per layer), the parameters each token is multiplied by; its
other experts hold memory, not compute.

Attention's own matmuls (QK^T and AV) are not proportional to N. They add
12 * n_layer * seq_len * d_model FLOPs per token for forward plus backward (Kaplan, Table 1:
2 * n_layer * n_ctx * d_attn forward, times 3). The budget accounting leaves them out, as
Chinchilla's IsoFLOP analysis does, so the fitted law is comparable with published ones;
:func:`model_flops_per_token` adds them where true hardware work matters (MFU, PaLM appendix B).
"""

from __future__ import annotations

import numpy as np

__all__ = ["train_flops", "tokens_for_budget", "model_flops_per_token"]


def _values(x):
    """A scalar as a Python float; a numpy array or pandas Series kept as it is (elementwise
    arithmetic, the Series keeps its index); anything else (a list) as a float array."""
    if np.ndim(x) == 0:
        return float(x)
    return x if isinstance(x, np.ndarray) or hasattr(x, "to_numpy") else np.asarray(x, float)


def train_flops(n_params, tokens):
    """Training compute C = 6 * N * D in FLOPs (N parameters, D tokens).

    Scalars give a float; arrays (or a pandas Series) give the elementwise array."""
    return 6.0 * _values(n_params) * _values(tokens)


def tokens_for_budget(budget_flops, n_params):
    """Tokens D such that train_flops(n_params, D) == budget_flops (before rounding); scalars
    or arrays, as :func:`train_flops`."""
    return _values(budget_flops) / (6.0 * _values(n_params))


def model_flops_per_token(n_params: float, n_layer: int, d_model: int, seq_len: int) -> float:
    """Hardware FLOPs per trained token (forward and backward): 6 N plus the attention term
    12 * n_layer * seq_len * d_model (module docstring), as PaLM (appendix B) and torchtitan count
    them. ``n_params`` is the parameters a token is multiplied by in a matmul (for the built-in
    models workers.gpt.arch.matmul_param_count: no position table, norm gains or input lookup);
    n_layer = 0 leaves the attention term out (a model whose shape is unknown).

    Used for throughput and model FLOPs utilisation (workers.run.meter); budgets use :func:`train_flops`.
    """
    return 6.0 * float(n_params) + 12.0 * n_layer * seq_len * d_model
