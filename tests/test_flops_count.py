"""The analytic FLOPs per token (workers.flops.model_flops_per_token over the matmul parameters of
workers.gpt.arch.matmul_param_count) against torch's own count, FlopCounterMode, of one training
step (forward and backward) of the built-in models.

FlopCounterMode counts matmuls and attention. On CPU the fused attention kernel is not among the
ops it counts, so attention runs through the math backend here (the same matmuls, QK^T and AV,
over the whole T x T square as the analytic term counts them: PaLM's convention)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from workers.flops import model_flops_per_token, train_flops
from workers.gpt.arch import GPTShape, matmul_param_count
from workers.gpt.model import build_model


def _counted_per_token(shape: GPTShape, batch: int = 2) -> float:
    torch.manual_seed(0)
    model = build_model(shape)
    x = torch.randint(0, shape.vocab_size, (batch, shape.seq_len))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    return counter.get_total_flops() / (batch * shape.seq_len)


@pytest.mark.parametrize("shape", [
    GPTShape(2, 64, 8, 256, 128),
    GPTShape(3, 96, 12, 256, 64),
    GPTShape(1, 32, 4, 256, 128),  # the position table is 13 % of N here: 6 N would be off
    GPTShape(2, 64, 8, 256, 128, family="llama"),
    GPTShape(2, 48, 6, 256, 96, family="llama"),
    GPTShape(2, 32, 4, 256, 64, experts=4, top_k=2),  # dropless: exactly top_k experts per token
], ids=["gpt-2x64", "gpt-3x96", "gpt-1x32", "llama-2x64", "llama-2x48", "moe-4top2"])
def test_analytic_flops_per_token_matches_flop_counter_within_1_percent(shape):
    analytic = model_flops_per_token(matmul_param_count(shape), shape.n_layer, shape.d_model, shape.seq_len)
    counted = _counted_per_token(shape)
    assert counted == pytest.approx(analytic, rel=0.01)


def test_attention_term_is_what_the_counter_adds_with_context_length():
    short, long = GPTShape(2, 64, 8, 256, 64), GPTShape(2, 64, 8, 256, 256)
    added = _counted_per_token(long) - _counted_per_token(short)
    assert added == pytest.approx(12 * 2 * 64 * (256 - 64), rel=0.01)


def test_budget_flops_stay_6nd_without_the_attention_term():
    shape = GPTShape(2, 64, 8, 256, 128)
    assert train_flops(shape.n_params, 1000) == 6 * shape.n_params * 1000
    assert model_flops_per_token(100, 0, 0, 0) == 600
