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

A model that takes positions and an attention mask (the built-in GPT and Llama:
``packed_fn(ids, pos, mask)``) scores an item in one row: its context once, then every choice,
each choice attending to the context and to itself only, at the positions it would have after
the context. This is the computation of the item's separate sequences without repeating the
context for every choice (the usual prefix sharing of multiple-choice evaluation, as a KV cache
gives it): the built-in tasks' items cost a third of the tokens. The log-probabilities are those
of the separate sequences (tests/test_eval_tasks.py checks the two paths agree).
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
    contexts: tuple[np.ndarray, ...]  # each item's context ids (truncated as in seqs)
    n_cont: np.ndarray  # continuation tokens of each sequence
    item: np.ndarray  # the item each sequence belongs to
    is_gold: np.ndarray  # whether it is the item's gold choice
    chars: np.ndarray  # the choice's length in characters (acc_norm)
    gold_bytes: int  # UTF-8 bytes of the gold continuations (task_bpb)
    n_items: int
    chance: float


def encode_task(task: Task, encode: Callable[[str], Sequence[int]], max_len: int) -> Encoded:
    """The sequences of ``task`` under ``encode`` (text -> ids), each at most ``max_len`` tokens."""
    seqs, contexts, n_cont, item, gold, chars = [], [], [], [], [], []
    gold_bytes = 0
    for i, it in enumerate(task.items):
        ctx = list(encode(it.context))
        conts = [list(encode(choice)) for choice in it.choices]
        for j, cont in enumerate(conts):
            if not cont or len(cont) >= max_len:
                raise TaskError(f"task {task.name}: item {i} choice {j} is {len(cont)} tokens "
                                f"(expected 1 to {max_len - 1}, the model's context less one)")
        # One truncation per item (its longest choice must fit): every choice sees the same context.
        keep = ctx[-(max_len - max(map(len, conts))):]
        if not keep:
            raise TaskError(f"task {task.name}: item {i} has an empty context after encoding")
        contexts.append(np.asarray(keep, dtype=np.int64))
        for j, (choice, cont) in enumerate(zip(it.choices, conts)):
            seqs.append(np.asarray(keep + cont, dtype=np.int64))
            n_cont.append(len(cont))
            item.append(i)
            gold.append(j == it.gold)
            chars.append(len(choice))
            if j == it.gold:
                gold_bytes += len(choice.encode("utf-8"))
    return Encoded(task.name, tuple(seqs), tuple(contexts), np.asarray(n_cont), np.asarray(item), np.asarray(gold, bool),
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


def _packed_rows(enc: Encoded) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per item: (ids, positions, segment, sequence index of each choice token, the position whose
    logits predict it). Segment 0 is the context, j + 1 choice j."""
    rows, k = [], 0
    for i, ctx in enumerate(enc.contexts):
        c = len(ctx)
        ids, pos, seg, seq_of, pred = [ctx], [np.arange(c)], [np.zeros(c, np.int64)], [], []
        start = c
        while k < len(enc.seqs) and enc.item[k] == i:
            cont = enc.seqs[k][c:]
            n = len(cont)
            ids.append(cont)
            pos.append(np.arange(c, c + n))
            seg.append(np.full(n, len(seg)))
            seq_of.append(np.full(n, k))
            # Its first token is predicted by the context's last position, the others by the one before.
            pred.append(np.concatenate([[c - 1], np.arange(start, start + n - 1)]))
            start += n
            k += 1
        rows.append((np.concatenate(ids), np.concatenate(pos), np.concatenate(seg), np.concatenate(seq_of),
                     np.concatenate(pred)))
    return rows


def _loglik_packed(enc: Encoded, packed_fn, device, batch_tokens: int) -> np.ndarray:
    """As _loglik, one row per item (module docstring)."""
    rows = _packed_rows(enc)
    lengths = np.asarray([len(r[0]) for r in rows])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros(len(enc.seqs))
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop - start + 1) * int(lengths[order[stop]]) <= batch_tokens:
            stop += 1
        idx = order[start:stop]
        width = int(lengths[idx].max())
        ids = np.zeros((len(idx), width), np.int64)
        pos = np.zeros((len(idx), width), np.int64)
        seg = np.full((len(idx), width), -1, np.int64)  # -1: padding
        for r, k in enumerate(idx):
            n = lengths[k]
            ids[r, :n], pos[r, :n], seg[r, :n] = rows[k][0], rows[k][1], rows[k][2]
        q, kk = np.arange(width)[:, None], np.arange(width)[None, :]
        # Causal, and a choice sees the context (segment 0) and its own segment; padding sees itself.
        mask = (kk <= q) & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
        mask |= (q == kk) & (seg[:, :, None] < 0)
        logits = packed_fn(torch.from_numpy(ids).to(device), torch.from_numpy(pos).to(device),
                           torch.from_numpy(mask[:, None]).to(device))
        # Every choice token of the batch in one gather: (row, predicting position, target, sequence).
        r_idx = np.concatenate([np.full(len(rows[k][4]), r) for r, k in enumerate(idx)])
        p_idx = np.concatenate([rows[k][4] for k in idx])
        target = np.concatenate([rows[k][0][len(rows[k][0]) - len(rows[k][4]):] for k in idx])
        seq_of = np.concatenate([rows[k][3] for k in idx])
        picked = logits[torch.from_numpy(r_idx).to(device), torch.from_numpy(p_idx).to(device)].float()
        lp = torch.log_softmax(picked, dim=-1).gather(1, torch.from_numpy(target).to(device)[:, None])[:, 0]
        np.add.at(out, seq_of, lp.double().cpu().numpy())
        start = stop
    return out


@torch.no_grad()
def score(enc: Encoded, logits_fn: Callable[[torch.Tensor], torch.Tensor], *, device="cpu",
          batch_tokens: int = 8192, packed_fn=None) -> dict:
    """The task's metrics (module docstring) for the model ``logits_fn``, or ``packed_fn(ids, pos,
    mask)`` where the model takes positions and an attention mask (one row per item)."""
    if packed_fn is not None:
        ll = _loglik_packed(enc, packed_fn, torch.device(device), batch_tokens)
    else:
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
