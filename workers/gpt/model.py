"""A small GPT in the style of nanoGPT (Karpathy, model.py), sized by :mod:`workers.gpt.arch`.

Design choices, each with its reason:
- tied token embedding and LM head (Press & Wolf 2017), so total N = the closed form in
  :func:`workers.gpt.arch.param_count`, checked by tests against ``numel``;
- bias-free linears and LayerNorms (as nanoGPT's ``bias=False``): slightly better and faster;
- attention through ``F.scaled_dot_product_attention(is_causal=True)``, which dispatches to
  flash / memory-efficient kernels on GPUs and a fused kernel on CPUs;
- GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer)
  (Radford et al. 2019, section 2.3).

μP (``mup_base_width`` > 0; Yang et al. 2022, "Tensor Programs V", Table 3, AdamW column, as the
``mup`` package implements GPT-2 with a tied readout, ``MuSharedReadout``): with width multiplier
m = d_model / base_width, the optimal learning rate stops moving with width, so it can be tuned on
a narrow model and reused on a wide one. Three things change here, all of them the identity at
m = 1 except the attention scale:
- hidden matrices (attention qkv and projection, MLP fc and projection) start at std 0.02/sqrt(m),
  i.e. variance proportional to 1/fan_in (the residual projections keep their 1/sqrt(2 n_layer));
  their AdamW learning rate is lr/m, which :func:`workers.gpt.train._optimizer` applies from
  :meth:`GPT.hidden_matrix_names` and :attr:`GPT.width_mult`;
- the readout's input is multiplied by 1/m (the output multiplier), because the tied head's
  rows keep the embedding's O(1) coordinates and an O(1)-coordinate update, so without it the
  logits' change after one Adam step grows like the width;
- attention logits are q.k / head_dim instead of q.k / sqrt(head_dim) (the paper's attention
  rule; the mup README: "use 1/d instead of 1/sqrt(d)"): once training aligns q with k, q.k
  grows like head_dim. Here widths grow by adding heads of a fixed head_dim, so this is one
  constant factor at every width; it matters for transfer only where head_dim grows.
Vector-like parameters (token and position embeddings, LayerNorm gains) keep their init and
learning rate. With ``mup_base_width`` = 0 (standard parametrisation) nothing here runs: the
model, its initial weights and its losses are bit for bit those of the model before μP.

Mixture of experts (``shape.experts`` > 0; :class:`MoE`): each block's MLP becomes ``experts``
MLPs of the same shape and init and a router; each token goes through its ``top_k`` experts
and sums their outputs by gate weight. ``forward`` still returns the cross-entropy alone; the
load-balancing loss of the last forward pass is :attr:`GPT.aux_loss`, which the trainer adds
with its coefficient. A dense shape builds exactly the modules it always did.

:func:`build_model` builds the model of a shape's family: this GPT, or the LLaMA-style
:class:`workers.gpt.llama.Llama`, which has the same interface.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from workers.gpt.arch import GPTShape
from workers.gpt.llama import Llama

__all__ = ["GPT", "build_model"]


class CausalSelfAttention(nn.Module):
    def __init__(self, shape: GPTShape, scale: float | None = None):
        super().__init__()
        self.n_head = shape.n_head
        self.scale = scale  # None: SDPA's default 1/sqrt(head_dim)
        self.c_attn = nn.Linear(shape.d_model, 3 * shape.d_model, bias=False)
        self.c_proj = nn.Linear(shape.d_model, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        # ``mask`` (B, 1, T, T), True where attending is allowed: task scoring's packed items
        # (workers.evals.scoring); training is plain causal.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.c_fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.c_proj = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class MoE(nn.Module):
    """A dropless mixture of ``experts`` 4x MLPs, ``top_k`` per token.

    Routing: softmax over a bias-free linear router's logits, then each token's ``top_k``
    most probable experts. Gate weights: with top_k >= 2 the chosen probabilities renormalised
    to sum to 1 (GShard, Lepikhin et al. 2020, Algorithm 1, top-2; Mixtral, Jiang et al. 2024);
    with top_k = 1 the probability itself, as Switch does (Fedus et al. 2021, section 2.1), since
    a single renormalised weight is always 1 and the router would get no gradient from the
    language-model loss. Either way a lone expert's weight is exactly 1.0 (softmax over one
    logit), so experts = top_k = 1 is the dense MLP.

    Dropless: no capacity factor, every assignment is computed (as MegaBlocks, Gale et al. 2022),
    so no token is skipped and the loss does not depend on how the batch is packed. Assignments
    are sorted by expert once; each expert runs on its contiguous slice, and the weighted outputs
    are added back per token with ``index_add_``. One device sync per layer (the slice sizes).

    Load balance (Switch, eq. 4): aux = experts * sum_i f_i P_i, f_i the fraction of the
    top_k assignments that went to expert i and P_i the mean router probability of expert i.
    It is 1.0 at perfect balance and gets its gradient through P (f is a count). The last
    forward pass's value and load f are kept in ``aux`` and ``load``.
    """

    def __init__(self, shape: GPTShape):
        super().__init__()
        self.top_k = shape.top_k
        self.router = nn.Linear(shape.d_model, shape.experts, bias=False)
        self.experts = nn.ModuleList(MLP(shape.d_model) for _ in range(shape.experts))
        self.aux = torch.zeros(())
        self.load = torch.zeros(shape.experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        flat = x.reshape(-1, c)
        n_experts, k = len(self.experts), self.top_k
        probs = self.router(flat).float().softmax(dim=-1)  # fp32 under autocast too
        weight, chosen = probs.topk(k, dim=-1)  # (tokens, k)
        if k > 1:
            weight = weight / weight.sum(dim=-1, keepdim=True)
        counts = torch.bincount(chosen.flatten(), minlength=n_experts)
        self.load = counts.float() / chosen.numel()
        self.aux = n_experts * (self.load * probs.mean(dim=0)).sum()
        # The assignments in expert order: token of each, its gate weight, and each expert's slice.
        order = chosen.flatten().argsort(stable=True)
        token, gate = order // k, weight.flatten()[order]
        sizes = counts.tolist()
        out = torch.zeros_like(flat)
        for expert, tok, g in zip(self.experts, token.split(sizes), gate.split(sizes)):
            if tok.numel():
                out.index_add_(0, tok, (expert(flat[tok]) * g[:, None]).to(out.dtype))
        return out.view(b, t, c)


class Block(nn.Module):
    def __init__(self, shape: GPTShape, attn_scale: float | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(shape.d_model, bias=False)
        self.attn = CausalSelfAttention(shape, attn_scale)
        self.ln_2 = nn.LayerNorm(shape.d_model, bias=False)
        self.mlp = MoE(shape) if shape.experts else MLP(shape.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer. ``forward(idx, targets)`` returns (logits, mean CE loss).

    ``mup_base_width`` > 0 parametrises it in μP relative to that width (module docstring).
    """

    def __init__(self, shape: GPTShape, mup_base_width: int = 0):
        super().__init__()
        if mup_base_width < 0:
            raise ValueError(f"mup_base_width={mup_base_width}: expected 0 (standard) or a positive base width")
        self.shape = shape
        self.mup_base_width = mup_base_width
        # m = d_model / base_width; 1.0 in the standard parametrisation, where it changes nothing.
        self.width_mult = shape.d_model / mup_base_width if mup_base_width else 1.0
        head_dim = shape.d_model // shape.n_head
        attn_scale = 1.0 / head_dim if mup_base_width else None
        self.wte = nn.Embedding(shape.vocab_size, shape.d_model)
        self.wpe = nn.Embedding(shape.seq_len, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape, attn_scale) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.d_model, bias=False)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        # Mean over blocks of the MoE load-balancing loss of the last forward pass (MoE.aux);
        # a constant 0 for a dense model. Not a parameter or buffer: the state_dict is unchanged.
        self.aux_loss = torch.zeros(())
        # The same draws in the same order whatever the parametrisation; μP only rescales those of
        # the hidden matrices (0.02 / sqrt(1.0) is exactly 0.02, so standard init is unchanged).
        hidden_std = 0.02 / math.sqrt(self.width_mult)
        hidden = set(self.hidden_matrix_names())
        for name, module in self._leaf_modules_in_apply_order():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = hidden_std if f"{name}.weight" in hidden else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=hidden_std / math.sqrt(2 * shape.n_layer))

    def _leaf_modules_in_apply_order(self):
        # nn.Module.apply visits children before parents, named_modules parents first; the leaves
        # (the only modules initialised) come in the same order either way, so the random draws
        # are those of nanoGPT's self.apply(_init_weights). The tied lm_head is drawn last and
        # so sets the shared embedding, as it always has.
        return ((n, m) for n, m in self.named_modules() if not list(m.children()))

    def hidden_matrix_names(self) -> list[str]:
        """Parameters that are μP's hidden matrices: both dimensions grow with the width.

        Expert matrices are hidden matrices like the dense MLP's. The MoE router (experts x
        d_model) falls in here too although only its fan-in grows. μP proper would make it a
        readout: the same lr/m under Adam (Yang et al. 2022, Table 3), but init std proportional
        to 1/m instead of 1/sqrt(m). Left as a hidden matrix, its initial logits have the same
        spread at every width (std 0.02 sqrt(base_width) on unit-variance inputs) instead of
        shrinking like 1/sqrt(m), so routing starts equally random at every width."""
        return [n for n, p in self.named_parameters() if n.startswith("blocks.") and p.dim() >= 2]

    def expert_load(self) -> torch.Tensor:
        """(n_layer, experts): the fraction of the last forward pass's token assignments that
        went to each expert of each block (each row sums to 1); empty for a dense model."""
        return torch.stack([b.mlp.load for b in self.blocks]) if self.shape.experts else torch.zeros(0, 0)

    def num_params(self) -> int:
        """Total trainable parameters, the tied head counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None):
        """``pos`` (B, T) and ``mask`` (B, 1, T, T): positions and allowed attention of packed rows
        (workers.evals.scoring); None: 0..T-1, causal."""
        t = idx.shape[1]
        if pos is None:
            pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x, mask)
        if self.shape.experts:
            self.aux_loss = torch.stack([b.mlp.aux for b in self.blocks]).mean()
        x = self.ln_f(x)
        if self.width_mult != 1.0:  # μP output multiplier 1/m (MuSharedReadout divides its input)
            x = x / self.width_mult
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss


def build_model(shape: GPTShape, mup_base_width: int = 0) -> GPT | Llama:
    """The model of ``shape.family``: a :class:`GPT`, or a :class:`workers.gpt.llama.Llama`
    (which has the GPT's interface, so the trainer needs to know nothing else)."""
    if shape.family == "llama":
        return Llama(shape, mup_base_width=mup_base_width)
    return GPT(shape, mup_base_width=mup_base_width)
