"""Shapes and FLOPs: the closed-form parameter count is exact, the rule hits its targets."""

import math

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
    # the attention term is added only where hardware FLOPs are wanted
    assert model_flops_per_token(1e6, 12, 768, 1024) == 6e6 + 12 * 12 * 1024 * 768
