"""A self-contained training script run by scalesweep's command trainer (no scalesweep import).

    trainer: {command: "python train.py --trial {trial_json}"}

The contract, as this script follows it:
- the trial is a JSON file (``--trial``, also ``$SCALESWEEP_TRIAL``): trial_id, seed, n_params,
  tokens, lr, batch_tokens, steps, model (the ladder rung's settings), schedule, ...;
- progress rows go to ``$SCALESWEEP_OUTPUT/metrics.jsonl``, one JSON object per line, appended;
- the final ``$SCALESWEEP_OUTPUT/result.json`` has n_params and eval_loss (null if diverged);
- state goes to ``$SCALESWEEP_CHECKPOINT_DIR``, which survives a retry: resume from it.

The model: a causal convolutional byte language model (``layers`` convolutions of ``channels``
channels, kernel 4, each seeing the last bytes only), trained on this interpreter's standard
library source with one block in 50 held out.
"""

import argparse
import json
import math
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEQ = 64
KERNEL = 4
BLOCK = 4096


class ConvLM(nn.Module):
    def __init__(self, channels: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(256, channels)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, KERNEL) for _ in range(layers))
        self.out = nn.Linear(channels, 256)

    def forward(self, x):
        h = self.embed(x).transpose(1, 2)  # (batch, channels, time)
        for conv in self.convs:
            h = h + F.gelu(conv(F.pad(h, (KERNEL - 1, 0))))  # left padding: causal
        return self.out(h.transpose(1, 2))


def load_bytes(limit=4 << 20):
    root = Path(sysconfig.get_paths()["stdlib"])
    data, total = [], 0
    for p in sorted(root.glob("*.py")):
        data.append(p.read_bytes())
        total += len(data[-1])
        if total >= limit:
            break
    raw = np.frombuffer(b"".join(data)[:limit], dtype=np.uint8)
    blocks = raw[: len(raw) // BLOCK * BLOCK].reshape(-1, BLOCK)
    held = np.arange(len(blocks)) % 50 == 49
    return blocks[~held].reshape(-1), blocks[held].reshape(-1)


def lr_at(trial, step):
    """Warmup, then cosine to min_lr_ratio over exactly the trial's steps (schedule kind cosine)."""
    s = trial["schedule"]
    warmup = max(1, int(s["warmup_fraction"] * trial["steps"]))
    if step < warmup:
        return trial["lr"] * (step + 1) / warmup
    progress = (step - warmup) / max(1, trial["steps"] - warmup)
    lo = trial["lr"] * s["min_lr_ratio"]
    return lo + 0.5 * (1 + math.cos(math.pi * progress)) * (trial["lr"] - lo)


def windows(data, seed, step, n_seq):
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(data) - SEQ - 1, size=n_seq)
    x = np.stack([data[i:i + SEQ + 1] for i in starts]).astype(np.int64)
    return torch.from_numpy(x[:, :-1]), torch.from_numpy(x[:, 1:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trial", default=os.environ.get("SCALESWEEP_TRIAL"))
    args = parser.parse_args()
    trial = json.loads(Path(args.trial).read_text())
    out, ckpt_dir = Path(os.environ["SCALESWEEP_OUTPUT"]), Path(os.environ["SCALESWEEP_CHECKPOINT_DIR"])
    torch.manual_seed(trial["seed"])
    torch.set_num_threads(max(1, trial["threads"]))
    model = ConvLM(trial["model"]["channels"], trial["model"]["layers"])
    opt = torch.optim.AdamW(model.parameters(), lr=trial["lr"], weight_decay=trial["train"]["weight_decay"])
    train_bytes, held = load_bytes()
    n_seq = max(1, trial["batch_tokens"] // SEQ)
    start, ckpt = 0, ckpt_dir / "state.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    every = max(1, trial["steps"] // 6)
    eval_loss, total, count = None, 0.0, 0
    with open(out / "metrics.jsonl", "a") as metrics:
        for step in range(start, trial["steps"]):
            lr = lr_at(trial, step)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = windows(train_bytes, trial["seed"], step, n_seq)
            loss = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total, count = total + loss.item(), count + 1
            done = step + 1
            if done % every and done != trial["steps"]:
                continue
            row = {"step": done, "tokens": done * n_seq * SEQ, "train_loss": total / count, "lr": lr}
            total, count = 0.0, 0
            diverged = not math.isfinite(row["train_loss"])
            if done == trial["steps"] and not diverged:
                with torch.no_grad():
                    x, y = windows(held, 0, 0, 64)
                    eval_loss = row["eval_loss"] = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1)).item()
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            if diverged:
                break
            if done < trial["steps"]:  # write then rename: a kill never leaves half a checkpoint
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": done}, ckpt_dir / "tmp.pt")
                os.replace(ckpt_dir / "tmp.pt", ckpt)
    n = sum(p.numel() for p in model.parameters())
    (out / "result.json").write_text(json.dumps({"n_params": n, "eval_loss": eval_loss}))


if __name__ == "__main__":
    main()
