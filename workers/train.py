"""One trial: build the GPT for a shape, train it on exactly ``tokens`` tokens, evaluate, record.

:func:`run_trial` is what a Ray task calls. It never raises for a problem of the trial itself:
an exception in training is recorded as a FAILED row with its traceback, a NaN or infinite
loss as a DIVERGED row, and both are returned like a completed one. Only the worker process
dying (OOM kill, lost node) escapes, and the driver retries that.

The loop follows nanoGPT's train.py: AdamW with decoupled weight decay on matrices only,
gradient clipping at 1.0, linear warmup then cosine decay to ``min_lr_ratio`` of the peak
over exactly the trial's steps (Hoffmann et al. 2022, section 3: the cosine cycle length
must match the number of training tokens, or the loss is overestimated). Metrics stay off
the hot path: the loss is summed on the device and read back only every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from typing import TYPE_CHECKING

from workers.arch import GPTShape
from workers.data import DataConfig, load_corpus
from workers.flops import train_flops
from workers.model import GPT
from workers.store import ResultStore, TrialStatus

if TYPE_CHECKING:
    from workers.world import WorldConfig

__all__ = ["TrainConfig", "TrialConfig", "TrialResult", "run_trial", "lr_at", "trial_row"]


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 6e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    batch_tokens: int = 1024
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_tokens: int = 65536
    n_evals: int = 4  # evaluations during training, plus the final one
    log_every: int = 10


@dataclass(frozen=True)
class TrialConfig:
    """Everything a worker needs; the fields that change the result go into the trial id."""

    trial_id: str
    name: str
    sweep: str
    shape: GPTShape | None  # None for simulated trials, which have a parameter count only
    tokens: int
    seed: int
    budget: float
    train: TrainConfig
    data: DataConfig | None
    results: str
    threads: int = 1
    device: str = "auto"
    world: "WorldConfig | None" = None  # set for trainer: simulated (workers.world)
    sim_n_params: int = 0

    @property
    def n_params(self) -> int:
        """Total parameters N: exact for a GPT shape, as planned for a simulated trial."""
        return self.shape.n_params if self.shape is not None else self.sim_n_params

    @property
    def steps(self) -> int:
        return self.tokens // self.train.batch_tokens


@dataclass
class TrialResult:
    trial_id: str
    status: TrialStatus
    eval_loss: float
    wall_s: float
    error: str = ""
    row: dict = field(default_factory=dict)


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
    warmup = max(1, int(cfg.warmup_fraction * total_steps))
    if step < warmup:  # 1) linear warmup
        return cfg.lr * (step + 1) / warmup
    # 2) cosine from lr to min_lr over the remaining steps, ending exactly at the last step
    progress = (step - warmup) / max(1, total_steps - 1 - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + coeff * (cfg.lr - min_lr)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # Decay matrices only; norms and nothing else (nanoGPT configure_optimizers).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")


@torch.no_grad()
def evaluate(model: GPT, corpus, cfg: TrainConfig, batch_size: int, seq_len: int, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in corpus.eval_batches(cfg.eval_tokens, batch_size, seq_len):
        _, loss = model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        total += loss.item() * x.size
        count += x.size
    model.train()
    return total / count


def train(cfg: TrialConfig) -> tuple[dict, list[dict]]:
    """Train and evaluate; returns (trial row, step rows). Raises on errors in the trial."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, int(cfg.threads)))
    device = _device(cfg.device)
    corpus = load_corpus(cfg.data)
    shape, tc = cfg.shape, cfg.train
    if shape.vocab_size != corpus.vocab_size:
        raise ValueError(f"shape vocab_size {shape.vocab_size} != corpus vocab_size {corpus.vocab_size}")
    seq_len = shape.seq_len
    batch_size = tc.batch_tokens // seq_len
    n_steps = cfg.steps
    torch.manual_seed(cfg.seed)
    model = GPT(shape).to(device)
    n_params = model.num_params()
    opt = _optimizer(model, tc, device)
    eval_at = {round(n_steps * (i + 1) / (tc.n_evals + 1)) - 1 for i in range(tc.n_evals)} | {n_steps - 1}

    steps: list[dict] = []
    loss_sum = torch.zeros((), device=device)
    window = 0
    status, train_loss, eval_loss = TrialStatus.COMPLETED, float("nan"), float("nan")
    for step in range(n_steps):
        lr = lr_at(step, n_steps, tc)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = corpus.batch(cfg.seed, step, batch_size, seq_len)
        _, loss = model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        loss_sum += loss.detach()
        window += 1
        last = step == n_steps - 1
        if window == tc.log_every or step in eval_at or last:
            train_loss = loss_sum.item() / window  # the only host sync in the loop
            loss_sum.zero_()
            window = 0
            row = {
                "trial_id": cfg.trial_id,
                "step": step + 1,
                "tokens": (step + 1) * tc.batch_tokens,
                "flops": train_flops(n_params, (step + 1) * tc.batch_tokens),
                "train_loss": train_loss,
                "eval_loss": None,
                "lr": lr,
                "wall_s": time.perf_counter() - t0,
            }
            if not math.isfinite(train_loss):
                status = TrialStatus.DIVERGED
                steps.append(row)
                break
            if step in eval_at:
                eval_loss = evaluate(model, corpus, tc, batch_size, seq_len, device)
                row["eval_loss"] = eval_loss
                if not math.isfinite(eval_loss):
                    status = TrialStatus.DIVERGED
                    steps.append(row)
                    break
            steps.append(row)
    trained = steps[-1]["tokens"] if steps else 0
    row = trial_row(cfg, n_params, status, eval_loss if status is TrialStatus.COMPLETED else float("nan"),
                     train_loss, time.perf_counter() - t0, "", trained)
    return row, steps


def trial_row(cfg: TrialConfig, n_params: int, status: TrialStatus, eval_loss: float, train_loss: float,
         wall_s: float, error: str, tokens: int | None = None) -> dict:
    tokens = cfg.tokens if tokens is None else tokens
    return {
        "sweep": cfg.sweep,
        "trial_id": cfg.trial_id,
        "status": status.value,
        "n_params": n_params,
        "n_params_nonembed": cfg.shape.n_params_nonembed if cfg.shape else None,
        "n_layer": cfg.shape.n_layer if cfg.shape else None,
        "d_model": cfg.shape.d_model if cfg.shape else None,
        "n_head": cfg.shape.n_head if cfg.shape else None,
        "tokens": tokens,
        "flops": train_flops(n_params, tokens),
        "budget": cfg.budget,
        "eval_loss": eval_loss,
        "train_loss": train_loss,
        "seed": cfg.seed,
        "lr": cfg.train.lr,
        "batch_tokens": cfg.train.batch_tokens,
        "wall_s": wall_s,
        "error": error,
        "name": cfg.name,
    }


def run_trial(cfg: TrialConfig) -> TrialResult:
    """Train one trial and commit its rows to the result store; see the module docstring."""
    t0 = time.perf_counter()
    store = ResultStore(cfg.results)
    try:
        if cfg.world is not None:
            from workers.simulated import simulate  # no torch work for simulated worlds

            row, steps = simulate(cfg)
        else:
            row, steps = train(cfg)
    except Exception as e:  # recorded, not swallowed: the row carries the traceback
        tb = traceback.format_exc()
        row = trial_row(cfg, cfg.n_params, TrialStatus.FAILED, float("nan"), float("nan"),
                   time.perf_counter() - t0, f"{type(e).__name__}: {e}\n{tb}")
        steps = None
    store.write_trial(row, steps)
    return TrialResult(cfg.trial_id, TrialStatus(row["status"]), row["eval_loss"], row["wall_s"], row["error"], row)
