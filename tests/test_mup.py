"""μP in the GPT worker (workers.gpt.model, workers.gpt.train._optimizer).

Standard parametrisation (mup_base_width=0) must be the model trials were trained with before μP
existed, bit for bit; μP at its base width differs from it only in the attention scale; the
optimiser gives hidden matrices lr/m; and the property μP exists for, that an Adam step changes
the logits by the same amount at every width, holds where standard parametrisation breaks it.
"""

import io
import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import workers.gpt.train
from workers.config import DataConfig, TrainConfig, TrialConfig
from workers.run import run_trial
from workers.trainers.interface import read_checkpoint
from workers.gpt.arch import GPTShape
from workers.gpt.model import GPT, Block
from workers.gpt.train import _optimizer
from workers.store import ResultStore, TrialStatus, checkpoint_path

CPU = torch.device("cpu")


def shape_of(d_model: int, n_layer: int = 2, seq_len: int = 32) -> GPTShape:
    return GPTShape(n_layer=n_layer, d_model=d_model, n_head=d_model // 8, vocab_size=256, seq_len=seq_len)


def batch(seed: int, shape: GPTShape, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, shape.vocab_size, (n, shape.seq_len), generator=g)
    return x, torch.roll(x, -1, dims=1)


def pre_mup_gpt(shape: GPTShape, seed: int) -> GPT:
    """The model as built before μP: its modules in the same order (their constructors draw from
    the generator too), then nanoGPT's apply(_init_weights) and the residual projections."""
    torch.manual_seed(seed)
    model = GPT.__new__(GPT)
    nn.Module.__init__(model)
    model.shape, model.mup_base_width, model.width_mult = shape, 0, 1.0
    model.wte = nn.Embedding(shape.vocab_size, shape.d_model)
    model.wpe = nn.Embedding(shape.seq_len, shape.d_model)
    model.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
    model.ln_f = nn.LayerNorm(shape.d_model, bias=False)
    model.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
    model.lm_head.weight = model.wte.weight

    def init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    model.apply(init)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))
    return model


def pre_mup_forward(model: GPT, x: torch.Tensor, y: torch.Tensor):
    """The forward pass as written before μP, from the model's own modules."""
    b, t = x.shape
    h = model.wte(x) + model.wpe(torch.arange(t))
    for block in model.blocks:
        a, c = block.attn, h.shape[-1]
        q, k, v = a.c_attn(block.ln_1(h)).split(c, dim=2)
        q, k, v = (z.view(b, t, a.n_head, c // a.n_head).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + a.c_proj(att.transpose(1, 2).contiguous().view(b, t, c))
        h = h + block.mlp(block.ln_2(h))
    logits = model.lm_head(model.ln_f(h))
    return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.reshape(-1))


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("seed", [0, 7])
def test_standard_parametrisation_is_the_pre_mup_model_bit_for_bit(seed):
    shape = shape_of(32, n_layer=3)
    torch.manual_seed(seed)
    model = GPT(shape, mup_base_width=0)
    reference = pre_mup_gpt(shape, seed)
    assert state_equal(model, reference)
    x, y = batch(seed, shape)
    _, loss = model(x, y)
    _, ref_loss = pre_mup_forward(reference, x, y)
    assert loss.item() == ref_loss.item()
    # The optimiser: nanoGPT's two groups (matrices decayed, vectors not), multipliers 1.0.
    opt = _optimizer(model, TrainConfig(), CPU)
    assert [(len(g["params"]), g["weight_decay"], g["lr_mult"]) for g in opt.param_groups] == [
        (sum(p.dim() >= 2 for p in model.parameters()), 0.1, 1.0),
        (sum(p.dim() < 2 for p in model.parameters()), 0.0, 1.0)]


def test_mup_at_its_base_width_differs_only_by_the_attention_scale():
    shape = shape_of(64)
    torch.manual_seed(3)
    standard = GPT(shape)
    torch.manual_seed(3)
    mup = GPT(shape, mup_base_width=64)
    assert state_equal(standard, mup)  # m = 1: the same initial weights
    assert all(b.attn.scale == 1 / 8 for b in mup.blocks) and all(b.attn.scale is None for b in standard.blocks)
    x, y = batch(0, shape)
    assert not torch.equal(standard(x)[0], mup(x)[0])
    for block in mup.blocks:  # back to SDPA's default 1/sqrt(head_dim): nothing else is left
        block.attn.scale = None
    assert torch.equal(standard(x, y)[1], mup(x, y)[1]) and torch.equal(standard(x)[0], mup(x)[0])
    opt = _optimizer(mup, TrainConfig(), CPU)
    assert {g["lr_mult"] for g in opt.param_groups} == {1.0}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert all(decay[id(p)] == (0.1 if p.dim() >= 2 else 0.0) for p in mup.parameters())


def test_optimizer_gives_hidden_matrices_lr_over_m_and_vectors_lr():
    model = GPT(shape_of(128), mup_base_width=32)  # m = 4
    opt = _optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1), CPU)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    assert len(group_of) == len(list(model.parameters()))  # every parameter once, the tied head once
    hidden = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    for name, p in model.named_parameters():
        g = group_of[id(p)]
        if name.startswith("blocks.") and name.endswith(hidden):
            assert (g["lr_mult"], g["lr"], g["weight_decay"]) == (0.25, 1e-2 / 4, pytest.approx(0.4)), name
        else:  # wte (= lm_head), wpe, LayerNorm gains
            assert (g["lr_mult"], g["lr"]) == (1.0, 1e-2), name
            assert g["weight_decay"] == (0.1 if p.dim() >= 2 else 0.0), name
    assert model.width_mult == 4.0
    # Hidden matrices start at std 0.02/sqrt(m) (residual projections also / sqrt(2 n_layer)).
    std = dict((n, p.std().item()) for n, p in model.named_parameters())
    assert std["blocks.0.mlp.c_fc.weight"] == pytest.approx(0.01, rel=0.05)
    assert std["blocks.0.mlp.c_proj.weight"] == pytest.approx(0.01 / 2, rel=0.05)
    assert std["wte.weight"] == pytest.approx(0.02, rel=0.05)


def logit_change(d_model: int, base: int, seed: int, lr: float = 1e-2, steps: int = 3) -> float:
    """Mean |change| of the logits on a fixed batch after ``steps`` AdamW steps at ``lr``."""
    shape = shape_of(d_model)
    torch.manual_seed(seed)
    model = GPT(shape, mup_base_width=base)
    opt = _optimizer(model, TrainConfig(lr=lr), CPU)
    x, y = batch(100 + seed, shape)
    with torch.no_grad():
        before = model(x)[0]
    for _ in range(steps):
        opt.zero_grad()
        model(x, y)[1].backward()
        opt.step()
    with torch.no_grad():
        return (model(x)[0] - before).abs().mean().item()


def test_coordinate_check_logit_updates_stay_order_one_across_widths_under_mup_only():
    # Yang et al. 2022, Appendix D.1 ("coordinate check"). Over an 8x width range, SP's change
    # grew 4.6-10.9x over seeds 0-7 (Adam's O(lr) steps on d-long sums), μP's 0.67-0.94x: the
    # part that flows through the randomly initialised readout fades like 1/sqrt(m), the rest
    # is constant. The thresholds leave a wide margin on both.
    def ratio(base):  # geometric mean over seeds of change(256) / change(32)
        logs = [math.log(logit_change(256, base, s) / logit_change(32, base, s)) for s in range(3)]
        return math.exp(sum(logs) / len(logs))

    torch.set_num_threads(1)
    sp, mup = ratio(0), ratio(32)
    assert sp > 2.5, f"SP: logit change grew only {sp:.2f}x over 8x width"
    assert 1 / 3 < mup < 2, f"μP: logit change moved {mup:.2f}x over 8x width (expected O(1))"


# A trial with μP at m = 2, interrupted and resumed from its checkpoint (as tests/test_checkpoint).
STEPS, STOP_AT = 30, 15


def mup_trial(root, cache_dir, every_s, base=16):
    return TrialConfig(
        trial_id="mup", name="test", sweep="unit", shape=shape_of(32), tokens=256 * STEPS, seed=0, budget=0.0,
        train=TrainConfig(batch_tokens=256, n_evals=1, log_every=5, checkpoint_every_s=every_s),
        data=DataConfig(builtin="python-stdlib", eval_tokens=1024, block_tokens=1024),
        results=str(root), cache_dir=cache_dir, mup_base_width=base)


def test_mup_trial_resumes_from_its_checkpoint_exactly(tmp_path, cache_dir, monkeypatch):
    whole = run_trial(mup_trial(tmp_path / "whole", cache_dir, every_s=0))
    standard = run_trial(mup_trial(tmp_path / "sp", cache_dir, every_s=0, base=0))
    assert whole.status is TrialStatus.COMPLETED and standard.status is TrialStatus.COMPLETED
    assert whole.eval_loss != standard.eval_loss  # _build passes mup_base_width through

    cfg = mup_trial(tmp_path / "res", cache_dir, every_s=1e-9)

    def preempt(steps_done):
        if steps_done == STOP_AT:
            raise RuntimeError("preempted")

    monkeypatch.setattr(workers.gpt.train, "_after_log_boundary", preempt)
    assert run_trial(cfg).status is TrialStatus.FAILED
    monkeypatch.undo()
    _, data = read_checkpoint(ResultStore(cfg.results).read_bytes(checkpoint_path("mup")))
    saved = torch.load(io.BytesIO(data), weights_only=True)
    assert saved["step"] == STOP_AT
    assert [g["lr_mult"] for g in saved["optimizer"]["param_groups"]] == [0.5, 1.0, 1.0]

    resumed = run_trial(cfg)
    assert resumed.status is TrialStatus.COMPLETED
    assert resumed.eval_loss == whole.eval_loss and resumed.row["train_loss"] == whole.row["train_loss"]
    rows = [{k: v for k, v in r.items() if k not in ("wall_s", "energy_j")}
            for r in pq.read_table(f"{cfg.results}/steps/mup.parquet").to_pylist()]
    whole_rows = [{k: v for k, v in r.items() if k not in ("wall_s", "energy_j")}
                  for r in pq.read_table(f"{tmp_path}/whole/steps/mup.parquet").to_pylist()]
    assert rows == whole_rows
