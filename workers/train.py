"""One trial: build the GPT for a shape, train it on exactly ``tokens`` tokens, evaluate, record.

:func:`train` raises on errors in the trial; :func:`workers.trial.run_trial` records them as
FAILED rows. A NaN or infinite loss stops training and is returned as a DIVERGED row.

The loop follows nanoGPT's train.py: AdamW with decoupled weight decay on matrices only,
gradient clipping at 1.0, linear warmup then cosine decay to ``min_lr_ratio`` of the peak
over exactly the trial's steps (Hoffmann et al. 2022, section 3: the cosine cycle length
must match the number of training tokens, or the loss is overestimated). Metrics stay off
the hot path: the loss is summed on the device and read back only every ``log_every`` steps.
"""

from __future__ import annotations

import math
import time

import torch

from workers.data import load_corpus
from workers.flops import train_flops
from workers.model import GPT
from workers.store import TrialStatus
from workers.trial import TrainConfig, TrialConfig, trial_row

__all__ = ["train", "lr_at", "evaluate"]


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
