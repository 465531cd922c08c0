"""A small LLaMA-style decoder (Touvron et al. 2023, "LLaMA: Open and Efficient Foundation
Language Models", section 2.2), sized by :mod:`workers.gpt.arch` (``family: "llama"``).

It differs from the GPT of :mod:`workers.gpt.model` in the three places LLaMA does, and in one
more, each with its reason:
- pre-normalisation with RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer
  Normalization"): rescaling without re-centring, a gain and no bias, is as good as LayerNorm
  and cheaper;
- a SwiGLU MLP, down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer",
  eq. 6), of hidden size :func:`workers.gpt.arch.ffn_hidden` (about 8 d / 3, so that its three
  matrices cost what GPT's two 4x matrices do);
- rotary position embeddings (Su et al. 2021, "RoFormer", section 3.4) on queries and keys
  instead of a learned position table: rotating q at position m and k at position n by angles
  proportional to m and n makes their dot product depend on m - n only, and adds no parameters.
  Pairs are (i, i + head_dim / 2), the "rotate half" layout of GPT-NeoX and Hugging Face's
  LLaMA; Meta's interleaved pairs (2i, 2i + 1) are the same model up to a fixed permutation of
  each head's q and k coordinates. The angles are a non-persistent buffer, so the state_dict
  holds parameters only, as a GPT's does;
- an LM head *not* tied to the input embedding, as in LLaMA, so N counts both (arch.py).
As in the GPT: no biases, attention through ``F.scaled_dot_product_attention(is_causal=True)``,
the loss in fp32, GPT-2 initialisation (N(0, 0.02), the residual projections o_proj and down
scaled by 1/sqrt(2 n_layer), Radford et al. 2019, section 2.3), and no dropout, so the initial
weights depend on ``torch.manual_seed`` only.

:class:`Llama` has :class:`workers.gpt.model.GPT`'s interface, so the trainer runs it unchanged:
``forward(idx, targets) -> (logits, loss)``, ``aux_loss`` (always 0: no mixture of experts),
``expert_load()``, ``num_params()``, ``hidden_matrix_names()``, ``width_mult`` and
``mup_base_width``. μP and mixtures of experts are not implemented for this family: the spec
refuses them, and so does the constructor.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from workers.gpt.arch import GPTShape, ffn_hidden

__all__ = ["Llama", "rope_angles", "apply_rope"]

ROPE_BASE = 10_000.0  # theta of RoFormer eq. 15, as LLaMA uses it
NORM_EPS = 1e-5  # LLaMA's RMSNorm epsilon


def rope_angles(seq_len: int, head_dim: int, base: float = ROPE_BASE) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (seq_len, head_dim): position m's angle m * base^(-2i / head_dim) for pair
    i, written for both coordinates of the pair (i and i + head_dim / 2)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    # Computed in float64 and stored in fp32: at long contexts m * freq is large, and fp32
    # angles would lose the low bits that tell neighbouring positions apart.
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` (..., T, head_dim) with each pair (i, i + head_dim / 2) at position m rotated by its
    angle: x * cos + rotate_half(x) * sin, rotate_half(a, b) = (-b, a)."""
    a, b = x.chunk(2, dim=-1)
    # In x's dtype: under bf16 autocast q and k stay bf16, as SDPA wants them with v.
    return x * cos.to(x.dtype) + torch.cat((-b, a), dim=-1) * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.n_head = shape.n_head
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model, bias=False)
        self.o_proj = nn.Linear(shape.d_model, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim); positions enter through q and k only.
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.o_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        hidden = ffn_hidden(d_model)
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.attn_norm = nn.RMSNorm(shape.d_model, eps=NORM_EPS)
        self.attn = Attention(shape)
        self.mlp_norm = nn.RMSNorm(shape.d_model, eps=NORM_EPS)
        self.mlp = SwiGLU(shape.d_model)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Decoder-only LLaMA-style transformer. ``forward(idx, targets)`` returns (logits, mean CE loss).

    ``mup_base_width`` must be 0: μP is implemented for the GPT family only.
    """

    def __init__(self, shape: GPTShape, mup_base_width: int = 0):
        super().__init__()
        if shape.family != "llama":
            raise ValueError(f"shape.family={shape.family!r}: Llama builds family 'llama' shapes "
                             "(workers.gpt.model.build_model picks the model of a family)")
        if mup_base_width:
            raise ValueError(f"mup_base_width={mup_base_width}: μP is only implemented for family 'gpt' "
                             "(expected 0, the standard parametrisation)")
        head_dim = shape.d_model // shape.n_head
        if head_dim % 2 or head_dim * shape.n_head != shape.d_model:
            raise ValueError(f"d_model={shape.d_model}, n_head={shape.n_head}: expected an even head size "
                             "d_model / n_head (rotary embeddings rotate pairs of coordinates)")
        self.shape = shape
        self.mup_base_width = 0
        self.width_mult = 1.0
        self.tok_emb = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.norm = nn.RMSNorm(shape.d_model, eps=NORM_EPS)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)  # untied, as LLaMA
        cos, sin = rope_angles(shape.seq_len, head_dim)
        # Not persistent: derived from the shape, so checkpoints hold parameters only and a
        # model moved with .to(device) takes them along.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # No mixture of experts, so no load-balancing loss; the trainer reads it all the same.
        self.aux_loss = torch.zeros(())
        # GPT-2 init, drawn in module order: every linear and embedding N(0, 0.02), then the
        # projections into the residual stream N(0, 0.02 / sqrt(2 n_layer)) so that the
        # stream's variance does not grow with depth. RMSNorm gains stay at 1.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * shape.n_layer))

    def hidden_matrix_names(self) -> list[str]:
        """Parameters whose both dimensions grow with the width (μP's hidden matrices), as
        :meth:`workers.gpt.model.GPT.hidden_matrix_names`; unused while μP is GPT-only."""
        return [n for n, p in self.named_parameters() if n.startswith("blocks.") and p.dim() >= 2]

    def expert_load(self) -> torch.Tensor:
        """Empty (0, 0): a Llama has no experts."""
        return torch.zeros(0, 0)

    def num_params(self) -> int:
        """Total trainable parameters, the untied head included."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, pos: torch.Tensor | None = None,
                mask: torch.Tensor | None = None):
        """``pos`` (B, T) and ``mask`` (B, 1, T, T): positions and allowed attention of packed rows
        (workers.evals.scoring); None: 0..T-1, causal."""
        t = idx.shape[1]
        if pos is None:
            if t > self.shape.seq_len:
                raise ValueError(f"sequence of {t} tokens: the rotary angles cover seq_len={self.shape.seq_len}")
            cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        else:  # (B, 1, T, head_dim): each row's own positions, broadcast over heads
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]
        x = self.tok_emb(idx)
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        logits = self.lm_head(self.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss
