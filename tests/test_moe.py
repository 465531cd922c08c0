"""Mixture-of-experts feed-forward (model: {ffn: moe}): exact counts, routing, balance, trials.

N is the active parameter count (workers.gpt.arch), so every budget and ``flops`` column stays
6 N D; one expert of top 1 is the dense MLP exactly; the load-balancing loss balances the
routing; dense trials keep their ids.
"""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_spec_dict
from orchestrator.errors import UserError
from orchestrator.planning.trials.sizes import Size
from orchestrator.planning.trials import TrialFactory, content_id, plan_trials
from orchestrator.spec import parse_spec
from workers.run import run_trial
from workers.gpt.arch import GPTShape, ShapeRule, shape_for_params, shape_identity
from workers.gpt.model import GPT, MoE
from workers.store import TrialStatus

MOE_SHAPES = [GPTShape(1, 8, 1, 256, 32, 2, 1), GPTShape(2, 32, 4, 256, 64, 4, 2), GPTShape(3, 48, 6, 1000, 16, 8, 2),
              GPTShape(2, 16, 2, 256, 32, 1, 1)]


def active_numel(model: GPT) -> int:
    """Parameters a token's forward pass uses if it goes to experts 0..top_k-1 of every block."""
    def active(name: str) -> bool:
        parts = name.split(".")
        return not ("experts" in parts and int(parts[parts.index("experts") + 1]) >= model.shape.top_k)

    return sum(p.numel() for n, p in model.named_parameters() if active(n))


# -- shapes and counts ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", MOE_SHAPES, ids=str)
def test_closed_form_counts_match_numel(shape):
    model = GPT(shape)
    emb = model.wte.weight.numel() + model.wpe.weight.numel()
    assert shape.n_params_total == model.num_params()
    assert shape.n_params == active_numel(model)
    assert shape.n_params_nonembed == shape.n_params - emb
    assert (shape.n_params < shape.n_params_total) == (shape.experts > shape.top_k)


def test_dense_counts_and_identity_unchanged():
    shape, d = GPTShape(2, 48, 6, 256, 128), 48
    expected = 2 * (12 * d * d + 2 * d) + d + (256 + 128) * d
    assert shape.n_params == shape.n_params_total == GPT(shape).num_params() == expected
    assert shape_identity(shape) == {"n_layer": 2, "d_model": 48, "n_head": 6, "vocab_size": 256, "seq_len": 128}
    assert shape_identity(GPTShape(2, 48, 6, 256, 128, 8, 2))["experts"] == 8


@pytest.mark.parametrize("experts,top_k", [(0, 1), (4, 0), (4, 5)])
def test_shape_rejects_inconsistent_experts(experts, top_k):
    with pytest.raises(ValueError, match="top_k"):
        GPTShape(2, 32, 4, 256, 32, experts, top_k)


@pytest.mark.parametrize("target", [1e5, 3e6, 1e7, 1e8])
@pytest.mark.parametrize("experts,top_k", [(8, 2), (4, 1), (64, 8)])
def test_shape_for_params_hits_the_active_target(target, experts, top_k):
    rule = ShapeRule(head_dim=8, aspect_ratio=32, experts=experts, top_k=top_k)
    s = shape_for_params(target, 256, 128, rule)
    assert (s.experts, s.top_k) == (experts, top_k) and s.d_model == 8 * s.n_head
    # Widths come in steps of head_dim, coarse for small models (as for dense ones, test_arch.py).
    assert abs(math.log(s.n_params / target)) < (0.04 if target >= 3e6 else 0.2)
    assert s.n_params_total > s.n_params


def test_dense_rule_still_makes_the_dense_shapes():
    for target in (1e4, 1e5, 1e6, 1e7):
        assert shape_for_params(target, 256, 128, ShapeRule(experts=0, top_k=0)) == shape_for_params(target, 256, 128)


# -- the layer --------------------------------------------------------------------------------------

def test_one_expert_of_top_one_is_the_dense_model():
    dense_shape = GPTShape(2, 32, 4, 256, 32)
    torch.manual_seed(0)
    dense = GPT(dense_shape)
    moe = GPT(replace(dense_shape, experts=1, top_k=1))
    state = {k.replace(".mlp.", ".mlp.experts.0."): v for k, v in dense.state_dict().items()}
    missing, unexpected = moe.load_state_dict(state, strict=False)
    assert all(k.endswith("mlp.router.weight") for k in missing) and not unexpected
    x = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(1))
    y = torch.roll(x, -1, dims=1)
    (logits_d, loss_d), (logits_m, loss_m) = dense(x, y), moe(x, y)
    torch.testing.assert_close(logits_m, logits_d, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss_m, loss_d, rtol=0, atol=1e-6)
    loss_d.backward()
    loss_m.backward()
    grad_d = dict(dense.named_parameters())["blocks.1.mlp.c_fc.weight"].grad
    torch.testing.assert_close(dict(moe.named_parameters())["blocks.1.mlp.experts.0.c_fc.weight"].grad, grad_d,
                               rtol=0, atol=1e-6)
    assert moe.aux_loss.item() == 1.0  # one expert is perfectly balanced


def test_moe_output_is_the_gated_sum_of_each_tokens_top_k_experts():
    torch.manual_seed(0)
    layer = MoE(GPTShape(1, 16, 2, 256, 8, 4, 2))
    x = torch.randn(3, 8, 16)
    out = layer(x)
    flat = x.reshape(-1, 16)
    probs = (flat @ layer.router.weight.T).softmax(-1)
    ref = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        w, idx = probs[n].topk(2)
        for weight, e in zip(w / w.sum(), idx.tolist()):
            ref[n] += weight * layer.experts[e](flat[n:n + 1])[0]
    torch.testing.assert_close(out.reshape(-1, 16), ref, rtol=1e-5, atol=1e-6)
    assert layer.load.sum().item() == pytest.approx(1.0)


def test_aux_loss_is_one_at_balance_and_grows_with_collapse():
    layer = MoE(GPTShape(1, 2, 1, 256, 8, 2, 1))
    with torch.no_grad():
        layer.router.weight.copy_(5 * torch.eye(2))
    balanced = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(4, 1).view(1, 8, 2)
    layer(balanced)
    assert layer.load.tolist() == [0.5, 0.5] and layer.aux.item() == pytest.approx(1.0)
    layer(torch.tensor([1.0, 0.0]).repeat(8, 1).view(1, 8, 2))  # every token to expert 0
    p = torch.tensor([5.0, 0.0]).softmax(0)[0].item()
    assert layer.load.tolist() == [1.0, 0.0] and layer.aux.item() == pytest.approx(2 * p)


def _train_router(coef: float, steps: int = 100, seed: int = 0) -> tuple[torch.Tensor, float]:
    """A 2-layer MoE (4 experts, top 2) trained on repetitive bytes (a multiplication table) with
    ``coef`` times the aux loss; its expert loads and aux loss over the last 20 steps."""
    text = "".join(f"{i} x {j} = {i * j}\n" for i in range(1, 60) for j in range(1, 30)).encode()
    data = torch.tensor(list(text))
    torch.manual_seed(seed)
    model = GPT(GPTShape(2, 32, 4, 256, 32, experts=4, top_k=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    loads, auxes = [], []
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 33, (16,), generator=g)
        window = torch.stack([data[s:s + 33] for s in starts.tolist()])
        _, loss = model(window[:, :-1], window[:, 1:])
        opt.zero_grad()
        (loss + coef * model.aux_loss).backward()
        opt.step()
        loads.append(model.expert_load())
        auxes.append(model.aux_loss.item())
    return torch.stack(loads[-20:]).mean(0), float(np.mean(auxes[-20:]))


def test_aux_loss_balances_the_routing():
    E = 4
    load, aux = _train_router(0.1)
    free_load, free_aux = _train_router(0.0)
    assert load.shape == (2, E) and torch.allclose(load.sum(1), torch.ones(2))
    assert ((load > 0.5 / E) & (load < 2 / E)).all(), load
    assert free_load.max() > load.max() + 0.1  # without it two experts take nearly everything
    assert aux < 1.05 < free_aux


# -- spec, trials, trainer --------------------------------------------------------------------------

@pytest.mark.parametrize("model,message", [
    ({"experts": 4}, "model.experts: only for ffn: moe"),
    ({"top_k": 1}, "model.top_k: only for ffn: moe"),
    ({"aux_loss": 0.1}, "model.aux_loss: only for ffn: moe"),
    ({"ffn": "moe", "experts": 2, "top_k": 3}, r"model.top_k=3 > model.experts=2 \(expected top_k <= experts\)"),
    ({"ffn": "moe", "experts": 512}, "model.experts: Input should be less than or equal to 256"),
    ({"ffn": "moe", "top_k": 0}, "model.top_k: Input should be greater than or equal to 1"),
    ({"ffn": "moe", "aux_loss": -0.1}, "model.aux_loss: Input should be greater than or equal to 0"),
])
def test_spec_refuses_bad_moe_settings(tmp_path, model, message):
    with pytest.raises(UserError, match=message):
        parse_spec(tiny_spec_dict(str(tmp_path), model=model))


def test_spec_moe_defaults(tmp_path):
    m = parse_spec(tiny_spec_dict(str(tmp_path), model={"ffn": "moe"})).model
    assert (m.experts, m.top_k, m.aux_loss) == (8, 2, 0.01)


def test_dense_trial_ids_unchanged_and_moe_ids_differ(tmp_path):
    dense = parse_spec(tiny_spec_dict(str(tmp_path)))
    factory = TrialFactory(dense, vocab_size=256)  # no data opened: ids depend on the spec alone
    trials = plan_trials(dense, factory)
    # computed before mixtures of experts existed
    assert sorted(t.trial_id for t in trials) == ['0c9a9920193513af', '1a7451b0fc21c098', '2f2f0c8ee3d1c7c6',
                                                  '56a900b5ca9d9a4d', '70223d076a4afac0', '9bb299cfdff57e7b']
    t = trials[0]
    payload = factory.payload(Size(t.n_params, shape=t.shape), t.tokens, t.seed, t.train)
    assert content_id(payload) == t.trial_id
    assert not {"experts", "top_k"} & set(payload["shape"]) and "moe_aux_loss" not in payload
    assert t.moe_aux_loss == 0.0

    def ids(**model):
        spec = parse_spec(tiny_spec_dict(str(tmp_path), model={"ffn": "moe", **model}))
        return {t.trial_id for t in plan_trials(spec, TrialFactory(spec, vocab_size=256))}

    moe = ids(experts=4, top_k=2)
    assert moe and not moe & {t.trial_id for t in trials}
    assert not moe & ids(experts=4, top_k=2, aux_loss=0.1) and not moe & ids(experts=8, top_k=2)
    assert ids(experts=4, top_k=2) == moe  # and stable


def test_moe_trial_end_to_end(tmp_path, cache_dir):
    spec = parse_spec(tiny_spec_dict(str(tmp_path / "res"), model={"ffn": "moe", "experts": 4, "top_k": 2}))
    trial = TrialFactory(spec, cache_dir).make(4e3, 256 * 24, 0.0, 0, "test")
    assert trial.shape.experts == 4 and trial.moe_aux_loss == 0.01
    r = run_trial(trial)
    assert r.status is TrialStatus.COMPLETED, r.error
    row = r.row
    assert row["n_params"] == trial.shape.n_params < row["n_params_total"] == trial.shape.n_params_total
    assert row["flops"] == 6 * row["n_params"] * row["tokens"] and row["tokens"] == 256 * 24
    assert math.isfinite(row["eval_loss"]) and row["eval_loss"] < math.log(256)
    # the aux loss enters what is trained (not what is recorded: both rows record the CE)
    without = run_trial(replace(trial, trial_id="no-aux", moe_aux_loss=0.0))
    assert without.status is TrialStatus.COMPLETED and without.row["train_loss"] != row["train_loss"]
