"""A lab's trainer for scalesweep's Python interface: a byte-level MLP language model.

The model reads the last ``CONTEXT`` bytes (each embedded in ``embed`` dimensions, concatenated)
through ``depth`` hidden layers of ``width`` units and predicts the next byte. It stands in for a
lab's real model: scalesweep only sees the two functions below.

- ``size(target_n) -> (settings, exact_n)``: the spec's ``model.size`` hook. The planner asks for
  a parameter count; this picks the width that comes closest and says exactly how many
  parameters that model has, so the planner's D = C / 6N is right.
- ``train(trial, ctx) -> Outcome``: the spec's ``trainer.function``. It trains ``trial.tokens``
  tokens at ``trial.lr`` on ``trial.batch_tokens`` tokens per step, following the trial's
  schedule (``lr_at``), reports a row every few steps, evaluates on held-out bytes, and
  checkpoints through the context so that a preempted trial resumes where it stopped.

Data: the Python standard library's source (this interpreter's), one block in 50 held out.
"""

from __future__ import annotations

import io
import math
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from scalesweep import Context, Outcome, Trial, lr_at

CONTEXT = 16  # bytes the model sees
EMBED = 16  # dimensions per byte
BLOCK = 4096  # bytes per data block; one in HELD_OUT is held out
HELD_OUT = 50
EVAL_TOKENS = 16384


def n_params(width: int, depth: int, embed: int = EMBED) -> int:
    """Exact parameter count: embedding, input layer, depth-1 hidden layers, output layer (biases included)."""
    first = CONTEXT * embed * width + width
    hidden = (depth - 1) * (width * width + width)
    return 256 * embed + first + hidden + width * 256 + 256


def size(target_n: float) -> tuple[dict, int]:
    """The model settings nearest ``target_n`` parameters (depth 2, the width that fits best)."""
    depth = 2
    best = min(range(8, 4097, 8), key=lambda w: abs(math.log(n_params(w, depth) / target_n)))
    return {"width": best, "depth": depth, "embed": EMBED}, n_params(best, depth)


class MLPLM(nn.Module):
    def __init__(self, width: int, depth: int, embed: int):
        super().__init__()
        self.embed = nn.Embedding(256, embed)
        layers = [nn.Linear(CONTEXT * embed, width)] + [nn.Linear(width, width) for _ in range(depth - 1)]
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(width, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).flatten(1)
        for layer in self.layers:
            h = F.gelu(layer(h))
        return self.out(h)


@lru_cache(maxsize=1)
def corpus(limit: int = 8 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(training bytes, held-out bytes) of the standard library's source, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= limit:
            break
    raw = np.frombuffer(b"".join(chunks)[:limit], dtype=np.uint8)
    blocks = raw[: len(raw) // BLOCK * BLOCK].reshape(-1, BLOCK)
    held = np.arange(len(blocks)) % HELD_OUT == HELD_OUT - 1
    return blocks[~held].reshape(-1), blocks[held].reshape(-1)


def batch(data: np.ndarray, seed: int, step: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (context, next byte) pairs drawn from (seed, step) alone: a resumed run sees the same batches."""
    rng = np.random.default_rng([seed, step])
    idx = rng.integers(CONTEXT, len(data), size=n)
    x = np.stack([data[i - CONTEXT:i] for i in idx])
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(data[idx].astype(np.int64))


@torch.no_grad()
def evaluate(model: MLPLM, held: np.ndarray) -> float:
    idx = np.arange(CONTEXT, CONTEXT + EVAL_TOKENS)
    x = torch.from_numpy(np.stack([held[i - CONTEXT:i] for i in idx]).astype(np.int64))
    return F.cross_entropy(model(x), torch.from_numpy(held[idx].astype(np.int64))).item()


def train(trial: Trial, ctx: Context) -> Outcome:
    torch.manual_seed(trial.seed)
    torch.set_num_threads(max(1, trial.threads))
    m = trial.model
    model = MLPLM(m["width"], m["depth"], m.get("embed", EMBED))
    exact = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=trial.lr, weight_decay=trial.train.get("weight_decay", 0.0))
    train_bytes, held = corpus()
    start, last_eval = 0, math.nan
    saved = ctx.load_checkpoint()
    if saved is not None:  # a retry after preemption: carry on where the last checkpoint was taken
        state = torch.load(io.BytesIO(saved), weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start, last_eval = state["step"], state["eval_loss"]
    log_every = max(1, trial.steps // 8)
    loss_sum, window = 0.0, 0
    for step in range(start, trial.steps):
        lr = lr_at(trial, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train_bytes, trial.seed, step, trial.batch_tokens)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_sum, window = loss_sum + loss.item(), window + 1
        done = step + 1
        if done % log_every and done != trial.steps:
            continue
        train_loss = loss_sum / window
        loss_sum, window = 0.0, 0
        if not math.isfinite(train_loss):
            ctx.report(done, done * trial.batch_tokens, train_loss=train_loss, lr=lr)
            return Outcome(eval_loss=None, n_params=exact)  # diverged: a result, not a crash
        last_eval = evaluate(model, held) if done == trial.steps or done % (4 * log_every) == 0 else None
        ctx.report(done, done * trial.batch_tokens, train_loss=train_loss, eval_loss=last_eval, lr=lr,
                   grad_scale=float(sum(p.grad.norm() ** 2 for p in model.parameters()) ** 0.5))
        if done < trial.steps:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done,
                        "eval_loss": last_eval if last_eval is not None else math.nan}, buf)
            ctx.save_checkpoint(buf.getvalue())
    return Outcome(eval_loss=last_eval, n_params=exact, train_loss=train_loss)
