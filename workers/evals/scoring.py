"""Scoring multiple-choice tasks with a language model: summed log-probabilities, batched.

Each choice is a continuation of the item's context; its score is the summed log-probability
of its tokens given the context (lm-evaluation-harness's ``loglikelihood`` requests). Per task
this gives, over its items:

- ``acc``: the share of items whose gold choice has the highest summed log-probability;
- ``acc_norm``: the same with each sum divided by the choice's length in characters (the
  harness's acc_norm; OLMo's len_norm), which removes the bias towards short choices;
- ``task_bpb``: the gold continuations' negative log-likelihood in bits per UTF-8 byte, summed
  over items and divided by their bytes (Bhagia et al. 2024 use this "correct-choice bpb" as
  the task loss of their two-step prediction: it falls smoothly with scale while accuracy sits
  at chance);
- ``n_items`` and ``chance`` (the expected accuracy of a uniform guess).

The model is any function from token ids (batch, time) to logits (batch, time, vocab): the
built-in GPT's forward, or a lab's model through ``Context.evaluate_tasks``. Sequences longer
than the model's context lose tokens from the left of the context, never from the choice.
Sequences are sorted by length and padded per batch, so a batch of short items costs what
its longest item costs, not the model's full context; logits are reduced to the continuation
positions before the softmax, so a 50k-token vocabulary costs memory only where it is scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from workers.evals.tasks import Task, TaskError

__all__ = ["Encoded", "encode_task", "score", "byte_encoder", "METRICS"]

METRICS = ("task_bpb", "acc", "acc_norm", "n_items", "chance")
LN2 = math.log(2.0)


def byte_encoder(text: str) -> list[int]:
    """A byte-level model's token ids: the UTF-8 bytes."""
    return list(text.encode("utf-8"))


@dataclass(frozen=True)
class Encoded:
    """A task's (item, choice) sequences as token ids, ready to score with any model."""

    name: str
    seqs: tuple[np.ndarray, ...]  # context + continuation ids, one per (item, choice)
    n_cont: np.ndarray  # continuation tokens of each sequence
    item: np.ndarray  # the item each sequence belongs to
    is_gold: np.ndarray  # whether it is the item's gold choice
    chars: np.ndarray  # the choice's length in characters (acc_norm)
    gold_bytes: int  # UTF-8 bytes of the gold continuations (task_bpb)
    n_items: int
    chance: float


def encode_task(task: Task, encode: Callable[[str], Sequence[int]], max_len: int) -> Encoded:
    """The sequences of ``task`` under ``encode`` (text -> ids), each at most ``max_len`` tokens."""
    seqs, n_cont, item, gold, chars = [], [], [], [], []
    gold_bytes = 0
    for i, it in enumerate(task.items):
        ctx = list(encode(it.context))
        for j, choice in enumerate(it.choices):
            cont = list(encode(choice))
            if not cont or len(cont) >= max_len:
                raise TaskError(f"task {task.name}: item {i} choice {j} is {len(cont)} tokens "
                                f"(expected 1 to {max_len - 1}, the model's context less one)")
            keep = ctx[-(max_len - len(cont)):]
            if not keep:
                raise TaskError(f"task {task.name}: item {i} has an empty context after encoding")
            seqs.append(np.asarray(keep + cont, dtype=np.int64))
            n_cont.append(len(cont))
            item.append(i)
            gold.append(j == it.gold)
            chars.append(len(choice))
            if j == it.gold:
                gold_bytes += len(choice.encode("utf-8"))
    return Encoded(task.name, tuple(seqs), np.asarray(n_cont), np.asarray(item), np.asarray(gold, bool),
                   np.asarray(chars, float), gold_bytes, len(task.items), task.chance)


def _loglik(enc: Encoded, logits_fn, device, batch_tokens: int) -> np.ndarray:
    """Summed log-probability of each sequence's continuation."""
    lengths = np.asarray([len(s) for s in enc.seqs])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros(len(enc.seqs))
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * int(lengths[order[stop]]) <= batch_tokens:
            stop += 1
        idx = order[start:stop]
        width = int(lengths[idx].max())
        batch = np.zeros((len(idx), width), dtype=np.int64)
        for r, k in enumerate(idx):
            batch[r, : lengths[k]] = enc.seqs[k]
        x = torch.from_numpy(batch[:, :-1]).to(device)
        y = torch.from_numpy(batch[:, 1:]).to(device)
        # The continuation's tokens are targets at positions len - 1 - n_cont .. len - 2.
        pos = np.arange(width - 1)[None, :]
        end = lengths[idx][:, None] - 1
        mask = torch.from_numpy((pos >= end - enc.n_cont[idx][:, None]) & (pos < end)).to(device)
        logits = logits_fn(x)
        picked = logits[mask].float()  # (tokens scored, vocab)
        lp = torch.log_softmax(picked, dim=-1).gather(1, y[mask][:, None])[:, 0]
        rows = torch.nonzero(mask)[:, 0]
        sums = torch.zeros(len(idx), device=lp.device, dtype=torch.float64).index_add_(0, rows, lp.double())
        out[idx] = sums.cpu().numpy()
        start = stop
    return out


@torch.no_grad()
def score(enc: Encoded, logits_fn: Callable[[torch.Tensor], torch.Tensor], *, device="cpu",
          batch_tokens: int = 8192) -> dict:
    """The task's metrics (module docstring) for the model ``logits_fn``."""
    ll = _loglik(enc, logits_fn, torch.device(device), batch_tokens)
    n = enc.n_items
    best = np.full(n, -np.inf)
    best_norm = np.full(n, -np.inf)
    gold_ll = np.zeros(n)
    gold_norm = np.zeros(n)
    np.maximum.at(best, enc.item, ll)
    np.maximum.at(best_norm, enc.item, ll / enc.chars)
    gold_ll[enc.item[enc.is_gold]] = ll[enc.is_gold]
    gold_norm[enc.item[enc.is_gold]] = (ll / enc.chars)[enc.is_gold]
    # A tie with another choice counts as wrong: a model that scores every choice alike (an
    # untrained one) is at or below chance, never above it.
    ties = np.zeros(n)
    np.add.at(ties, enc.item, ll == best[enc.item])
    ties_norm = np.zeros(n)
    np.add.at(ties_norm, enc.item, (ll / enc.chars) == best_norm[enc.item])
    acc = float(np.mean((gold_ll == best) & (ties == 1)))
    acc_norm = float(np.mean((gold_norm == best_norm) & (ties_norm == 1)))
    bpb = float(-gold_ll.sum() / LN2 / max(enc.gold_bytes, 1))
    return {"task_bpb": bpb, "acc": acc, "acc_norm": acc_norm, "n_items": n, "chance": float(enc.chance)}
