"""Shapes and FLOPs: the closed-form parameter count is exact, the rule hits its targets."""

import math

import numpy as np
import pandas as pd
import pytest

from workers.gpt.arch import GPTShape, ShapeRule, nonembed_param_count, param_count, shape_for_params
from workers.flops import model_flops_per_token, tokens_for_budget, train_flops
from workers.gpt.model import GPT


@pytest.mark.parametrize("n_layer,d_model,n_head,vocab,seq", [(1, 8, 1, 256, 32), (2, 48, 6, 256, 128), (3, 64, 4, 1000, 64)])
def test_param_count_matches_torch(n_layer, d_model, n_head, vocab, seq):
    shape = GPTShape(n_layer, d_model, n_head, vocab, seq)
    model = GPT(shape)
    assert model.num_params() == param_count(shape)
    emb = model.wte.weight.numel() + model.wpe.weight.numel()
    assert model.num_params() - emb == nonembed_param_count(shape)


@pytest.mark.parametrize("target", [1e4, 3e4, 1e5, 1e6, 1e7, 1.24e8])
def test_shape_for_params_is_close_and_valid(target):
    rule = ShapeRule(head_dim=8, aspect_ratio=32)
    s = shape_for_params(target, 256, 128, rule)
    assert s.d_model == s.n_head * rule.head_dim
    assert abs(math.log(s.n_params / target)) < 0.3


def test_shape_rule_grows_with_target():
    sizes = [shape_for_params(t, 256, 128).n_params for t in (1e4, 3e4, 1e5, 3e5, 1e6, 3e6)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_shape_for_params_rejects_nonpositive():
    with pytest.raises(ValueError):
        shape_for_params(0, 256, 128)


def test_flops_is_6nd_and_inverts():
    assert train_flops(1e6, 2e7) == 6 * 1e6 * 2e7
    assert train_flops(1234, tokens_for_budget(5e12, 1234)) == pytest.approx(5e12)
    assert type(train_flops(3, 4)) is float and type(tokens_for_budget(10**20, 7)) is float
    # arrays (and pandas columns) elementwise, as the fit and the report use them
    n, d = np.array([1e6, 3e7]), np.array([2e7, 5e8])
    np.testing.assert_array_equal(train_flops(n, d), 6.0 * n * d)
    np.testing.assert_array_equal(tokens_for_budget(1e18, n), 1e18 / (6.0 * n))
    assert train_flops(pd.Series(n), pd.Series(d)).sum() == (6.0 * n * d).sum()
    # the attention term is added only where hardware FLOPs are wanted
    assert model_flops_per_token(1e6, 12, 768, 1024) == 6e6 + 12 * 12 * 1024 * 768
