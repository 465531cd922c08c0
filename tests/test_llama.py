"""The llama family (model: {family: llama}): exact counts, shapes near their targets, rotary
positions that see offsets only, a causal forward pass, spec refusals, GPT ids untouched, and a
tiny trial that learns through the GPT trainer unchanged."""

import math

import numpy as np
import pytest
import torch

from conftest import autograd_saved_bytes, tiny_spec_dict
from orchestrator.errors import UserError
from orchestrator.planning.estimate import trial_memory
from orchestrator.planning.trials import TrialFactory, plan_trials
from orchestrator.spec import parse_spec
from workers.run import run_trial
from workers.gpt.arch import GPTShape, ShapeRule, ffn_hidden, shape_for_params, shape_identity
from workers.gpt.llama import Llama, apply_rope, rope_angles
from workers.gpt.model import GPT, build_model
from workers.store import TrialStatus

LLAMA_SHAPES = [GPTShape(1, 8, 1, 256, 32, family="llama"), GPTShape(2, 48, 6, 256, 128, family="llama"),
                GPTShape(3, 64, 4, 1000, 64, family="llama"), GPTShape(2, 20, 5, 37, 16, family="llama")]


# -- shapes and counts ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", LLAMA_SHAPES, ids=str)
def test_closed_form_counts_match_numel(shape):
    model = Llama(shape)
    d, h, v = shape.d_model, ffn_hidden(shape.d_model), shape.vocab_size
    assert model.num_params() == shape.n_params == shape.n_params_total
    assert shape.n_params == shape.n_layer * (4 * d * d + 3 * d * h + 2 * d) + d + 2 * v * d
    # Kaplan's N leaves out the input embedding and the untied head
    emb = model.tok_emb.weight.numel() + model.lm_head.weight.numel()
    assert shape.n_params_nonembed == model.num_params() - emb
    assert model.lm_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()  # untied


def test_ffn_hidden_is_8d_over_3_rounded_up_to_8():
    for d in range(1, 2049):
        h = ffn_hidden(d)
        assert h % 8 == 0 and 8 * d / 3 <= h < 8 * d / 3 + 8
    assert ffn_hidden(768) == 2048


@pytest.mark.parametrize("target", np.logspace(3, 7, 17))
def test_shape_for_params_lands_near_the_target(target):
    rule = ShapeRule(head_dim=4, aspect_ratio=32, family="llama")
    s = shape_for_params(target, 64, 32, rule)
    assert s.family == "llama" and s.d_model == s.n_head * rule.head_dim
    # below 1e4 a single layer's width steps (one head adds ~2 V head_dim) are coarser than the target
    assert abs(math.log(s.n_params / target)) < (0.1 if target >= 1e4 else 0.35)
    if target <= 1e5:
        assert build_model(s).num_params() == s.n_params


def test_gpt_shapes_and_ids_unchanged():
    gpt = GPTShape(2, 48, 6, 256, 128)
    assert shape_identity(gpt) == {"n_layer": 2, "d_model": 48, "n_head": 6, "vocab_size": 256, "seq_len": 128}
    assert shape_identity(GPTShape(2, 48, 6, 256, 128, family="llama"))["family"] == "llama"
    assert shape_for_params(3e4, 256, 128) == shape_for_params(3e4, 256, 128, ShapeRule(family="gpt"))
    assert type(build_model(gpt)) is GPT and type(build_model(LLAMA_SHAPES[0])) is Llama


def test_shape_and_model_refusals():
    with pytest.raises(ValueError, match="family='bert'"):
        GPTShape(1, 8, 1, 256, 32, family="bert")
    with pytest.raises(ValueError, match="only for family 'gpt'"):
        GPTShape(1, 8, 1, 256, 32, 2, 1, family="llama")
    with pytest.raises(ValueError, match="mup_base_width=8"):
        Llama(LLAMA_SHAPES[0], mup_base_width=8)
    with pytest.raises(ValueError, match="even head size"):
        Llama(GPTShape(1, 9, 3, 256, 32, family="llama"))


# -- the model ------------------------------------------------------------------------------------

def test_rope_scores_depend_on_the_offset_only():
    """RoFormer eq. 16: <R_m q, R_n k> = <q, R_(n-m) k>, so the score of the same q and k is a
    function of n - m; and each rotation keeps the vector's norm."""
    torch.manual_seed(0)
    seq, hd = 24, 16
    cos, sin = rope_angles(seq, hd)
    q, k = torch.randn(hd, dtype=torch.float64), torch.randn(hd, dtype=torch.float64)
    qs, ks = (apply_rope(z.expand(seq, hd), cos.double(), sin.double()) for z in (q, k))
    scores = qs @ ks.T
    for offset in range(-seq + 1, seq):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=0, atol=1e-6)
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(seq), rtol=0, atol=1e-6)
    assert scores[0, 0] == pytest.approx(float(q @ k))  # position 0 is unrotated


def test_forward_is_causal_and_deterministic():
    shape = LLAMA_SHAPES[1]
    torch.manual_seed(3)
    model = Llama(shape)
    torch.manual_seed(3)
    again = Llama(shape)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # the rotary tables are derived, not saved: checkpoints hold parameters only
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}
    idx = torch.randint(0, shape.vocab_size, (2, 40))
    changed = idx.clone()
    changed[:, 25] = (changed[:, 25] + 1) % shape.vocab_size
    with torch.no_grad():
        a, loss = model(idx, idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :25], b[:, :25], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 25:], b[:, 25:])
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(math.log(shape.vocab_size), rel=0.05)
    assert model.aux_loss.item() == 0.0 and model.expert_load().shape == (0, 0) and model.width_mult == 1.0


@pytest.mark.parametrize("shape", LLAMA_SHAPES[1:3], ids=str)
def test_activation_estimate_matches_what_autograd_saves(shape):
    """As tests/test_estimate.py does for the GPT: every tensor autograd keeps, once per storage."""
    model = Llama(shape)
    saved = autograd_saved_bytes(model, torch.randint(0, shape.vocab_size, (8, shape.seq_len)))
    est = trial_memory(shape, 8 * shape.seq_len)
    one_logits = 8 * shape.seq_len * shape.vocab_size * 4  # the loss saves its log-softmax, once
    assert one_logits in saved and est.logits == 4 * one_logits
    assert est.state == 16 * model.num_params()
    assert est.activations == pytest.approx(sum(saved) - one_logits, rel=0.02)


# -- spec and trials ------------------------------------------------------------------------------

@pytest.mark.parametrize("model,message", [
    ({"family": "llama", "ffn": "moe"}, "model.ffn: moe is only for family: gpt"),
    ({"family": "llama", "parametrization": "mup", "base_width": 16}, "model.parametrization: mup is only for family: gpt"),
    ({"family": "llama", "head_dim": 5}, "model.head_dim=5: family: llama needs an even head_dim"),
])
def test_spec_refuses_llama_with_gpt_only_settings(tmp_path, model, message):
    with pytest.raises(UserError, match=message) as err:
        parse_spec(tiny_spec_dict(str(tmp_path), model=model))
    assert "\n" not in str(err.value)


def test_llama_trials_have_llama_shapes_and_their_own_ids(tmp_path):
    def trials(**model):
        spec = parse_spec(tiny_spec_dict(str(tmp_path), model=model))
        return plan_trials(spec, TrialFactory(spec, vocab_size=256))

    gpt, llama = trials(), trials(family="llama")
    assert all(t.shape.family == "llama" for t in llama) and all(t.shape.family == "gpt" for t in gpt)
    assert not {t.trial_id for t in gpt} & {t.trial_id for t in llama}
    assert gpt == trials(family="gpt")  # written out, the default changes nothing


def test_tiny_llama_trial_learns_through_the_gpt_trainer(tmp_path, cache_dir):
    spec = parse_spec(tiny_spec_dict(str(tmp_path / "res"), model={"family": "llama"}))
    trial = TrialFactory(spec, cache_dir).make(1.2e4, 256 * 40, 0.0, 0, "test")
    assert trial.shape.family == "llama"
    r = run_trial(trial)  # workers.gpt.train, built by workers.gpt.model.build_model
    assert r.status is TrialStatus.COMPLETED, r.error
    assert r.row["n_params"] == trial.shape.n_params and r.row["flops"] == 6 * trial.shape.n_params * 256 * 40
    # from ln 256 = 5.55 at initialisation (test_forward_is_causal_and_deterministic)
    assert r.row["train_loss"] < math.log(256) - 0.5 and r.row["eval_loss"] < 5.0
