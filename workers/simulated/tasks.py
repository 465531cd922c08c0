"""Simulated downstream tasks: a true task loss and a true accuracy for any (N, D).

The two-step task-scaling picture of Bhagia et al. 2024 ("Establishing Task Scaling Laws via
Compute-Efficient Model Ladders", arXiv 2412.04403) and of the Llama 3 report (section 3.2.1)
is the truth here:

1. the task loss, the NLL of the correct answer in bits per byte, follows a Chinchilla law
   ``L(N, D) = E + A / N^alpha + B / D^beta`` (in bits per byte, not nats);
2. the accuracy is a sigmoid of the task loss that starts at the chance level and rises to a
   ceiling <= 1: ``acc(L) = chance + (ceiling - chance) / (1 + exp(k (L - L0)))``.

:func:`sample` draws what an evaluation of one checkpoint reports: the task loss with a small
log-normal noise (a model's own deviation, about 0.5 %), and the accuracy as a binomial
proportion over ``n_items`` questions at the true accuracy *of that noisy loss* (a model that
happens to have a lower task loss answers more questions right), plus ``acc_norm``, the
length-normalised accuracy, a little higher as it usually is. Pure numpy; the simulated
trainer (workers.simulated) and the downstream calibration bench (bench/bench_downstream.py)
share these truths.

The default tasks (:func:`default_truths`) are graded in difficulty like the multiple-choice
sets of the OLMo ladder: an easy 4-way task whose accuracy has emerged at 100M parameters, a
medium 4-way task emerging inside a 190M-1.3B ladder, a hard 4-way task still near chance
there (as MMLU in ranked classification), and a 2-way task (as PIQA). Their levels are of the
order of the published ladder's (task bits per byte 0.5-1.3 at 7B, accuracies 0.5-0.87).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["TaskTruth", "default_truths", "true_task_loss", "true_accuracy", "sample", "ladder", "LOSS_NOISE"]

LOSS_NOISE = 0.005  # relative sd of one evaluation's task loss around the law (a model's own deviation)


@dataclass(frozen=True)
class TaskTruth:
    """One task's truth: its task-loss law (bits per byte) and its accuracy sigmoid."""

    name: str
    chance: float  # the floor of the sigmoid: 1 / number of choices
    n_items: int  # questions in the evaluation set (binomial noise of the accuracy)
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    ceiling: float  # accuracy as the task loss goes to -infinity (<= 1)
    k: float  # steepness, per bit per byte
    L0: float  # task loss at the sigmoid's midpoint
    loss_noise: float = LOSS_NOISE


def true_task_loss(truth: TaskTruth, n, d):
    """The task loss (bits per byte) of a model of ``n`` parameters trained on ``d`` tokens."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    return truth.E + truth.A / n**truth.alpha + truth.B / d**truth.beta


def true_accuracy(truth: TaskTruth, task_loss):
    """The expected accuracy at a task loss: the sigmoid from chance to the ceiling."""
    x = np.clip(truth.k * (np.asarray(task_loss, float) - truth.L0), -700.0, 700.0)
    return truth.chance + (truth.ceiling - truth.chance) / (1.0 + np.exp(x))


def sample(truth: TaskTruth, n, d, rng: np.random.Generator):
    """(task_bpb, acc, acc_norm) of one evaluation at (n, d): arrays shaped like n and d."""
    mean = true_task_loss(truth, n, d)
    loss = mean * np.exp(truth.loss_noise * rng.standard_normal(np.shape(mean)))
    p = true_accuracy(truth, loss)
    acc = rng.binomial(truth.n_items, np.clip(p, 0.0, 1.0)) / truth.n_items
    # Length normalisation helps most where the model is between chance and its ceiling.
    p_norm = np.clip(p + 0.03 * (p - truth.chance) * (truth.ceiling - p) / max(truth.ceiling - truth.chance, 1e-9)
                     * 4.0, 0.0, 1.0)
    acc_norm = rng.binomial(truth.n_items, p_norm) / truth.n_items
    return loss, acc, acc_norm


# Base truths; default_truths jitters them per seed. The law's coefficients put the task loss
# at about 1.1-1.6 bits per byte for a 190M model on 4B tokens and 0.6-1.1 at 7B on 4T.
_BASE = (
    TaskTruth("easy", 0.25, 10_000, E=0.42, A=95.0, B=240.0, alpha=0.30, beta=0.31, ceiling=0.95, k=7.0, L0=1.05),
    TaskTruth("medium", 0.25, 2_000, E=0.50, A=130.0, B=300.0, alpha=0.31, beta=0.31, ceiling=0.90, k=6.5, L0=0.85),
    TaskTruth("hard", 0.25, 1_000, E=0.55, A=150.0, B=320.0, alpha=0.32, beta=0.32, ceiling=0.85, k=9.0, L0=0.72),
    TaskTruth("binary", 0.50, 1_800, E=0.60, A=110.0, B=260.0, alpha=0.30, beta=0.30, ceiling=0.92, k=5.0, L0=1.00),
)


def default_truths(seed: int) -> list[TaskTruth]:
    """Four tasks of graded difficulty (module docstring), jittered by ``seed``: exponents by
    +-0.03, coefficients by +-15 %, the sigmoid's midpoint by +-0.05 and steepness by +-20 %."""
    rng = np.random.default_rng(seed)
    out = []
    for t in _BASE:
        u = rng.uniform(-1.0, 1.0, 7)
        out.append(replace(t, alpha=t.alpha + 0.03 * u[0], beta=t.beta + 0.03 * u[1], A=t.A * math.exp(0.15 * u[2]),
                           B=t.B * math.exp(0.15 * u[3]), E=t.E * math.exp(0.05 * u[4]), L0=t.L0 + 0.05 * u[5],
                           k=t.k * math.exp(0.2 * u[6])))
    return out


def ladder(truths: list[TaskTruth], sizes, multipliers, n_checkpoints: int, rng: np.random.Generator, *,
           tokens_per_param: float = 20.0, run_sd: float = LOSS_NOISE, schedule: float = 0.02) -> dict:
    """A model ladder's evaluations: one run per (size, multiplier), D = multiplier x
    ``tokens_per_param`` x N, evaluated on every task at ``n_checkpoints`` evenly spaced
    checkpoints. Columns (numpy arrays): run, n_params, tokens (seen at the checkpoint), step,
    task, task_bpb, acc, acc_norm, chance, n_items.

    A checkpoint before the end of its learning-rate schedule sits above the law of its token
    count (the law holds for a finished run): by ``schedule`` x sin(pi/2 (1 - t/T)), relative.
    Each run also keeps one seed offset (sd ``run_sd``, relative) through all its checkpoints."""
    cols = {k: [] for k in ("run", "n_params", "tokens", "step", "task", "task_bpb", "acc", "acc_norm", "chance",
                            "n_items")}
    frac = np.arange(1, n_checkpoints + 1) / n_checkpoints
    for n in sizes:
        for m in multipliers:
            total = m * tokens_per_param * n
            d = total * frac
            name = f"{n / 1e6:.0f}M-{m:g}xC"
            offset = rng.standard_normal() * run_sd
            for t in truths:
                mean = true_task_loss(t, n, d) * (1 + schedule * np.sin(0.5 * np.pi * (1 - frac))) * math.exp(offset)
                loss = mean * np.exp(t.loss_noise * rng.standard_normal(len(d)))
                p = np.clip(true_accuracy(t, loss), 0.0, 1.0)
                acc = rng.binomial(t.n_items, p) / t.n_items
                cols["run"] += [name] * len(d)
                cols["n_params"] += [float(n)] * len(d)
                cols["tokens"] += d.tolist()
                cols["step"] += list(range(1, len(d) + 1))
                cols["task"] += [t.name] * len(d)
                cols["task_bpb"] += loss.tolist()
                cols["acc"] += acc.tolist()
                cols["acc_norm"] += np.clip(acc + 0.01, 0, 1).tolist()
                cols["chance"] += [t.chance] * len(d)
                cols["n_items"] += [t.n_items] * len(d)
    return {k: np.asarray(v) for k, v in cols.items()}
