"""From a validated spec to concrete trials with content-hashed ids.

A trial id is the first 16 hex digits of SHA-256 over the canonical JSON of the fields that
change its result: trainer version, exact model shape, tokens, seed, the training settings
that affect optimisation, and the data's content fingerprint and split. Sweep name, budget
label, resources and results path do not enter it, so re-running a spec (or a second spec
that happens to contain the same point) never trains a finished point again (STYLE.md rule 4,
after Marin's hashed output paths).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict

from orchestrator.errors import UserError
from orchestrator.spec import GridSweep, SweepSpec
from workers.arch import GPTShape, ShapeRule, shape_for_params
from workers.data import Corpus, DataConfig
from workers.flops import tokens_for_budget
from workers.train import TrainConfig, TrialConfig

__all__ = ["TRAINER_VERSION", "trial_id", "data_config", "train_config", "plan_trials", "trial_name"]

log = logging.getLogger(__name__)

# Bump when a change to workers/ changes what a trial computes; old results then stop matching.
TRAINER_VERSION = "gpt-1"

# TrainConfig fields that only change how often metrics are recorded, not the result.
_NOT_HASHED = {"n_evals", "log_every"}


def data_config(spec: SweepSpec, cache_dir: str = "") -> DataConfig:
    d = spec.data
    return DataConfig(
        builtin=d.builtin,
        text=d.text,
        tokens=d.tokens,
        dtype=d.dtype,
        vocab_size=d.vocab_size,
        block_tokens=d.block_tokens,
        eval_every=max(2, round(1 / d.eval_fraction)),
        cache_dir=cache_dir,
    )


def train_config(spec: SweepSpec) -> TrainConfig:
    t = spec.train
    return TrainConfig(
        lr=t.lr,
        min_lr_ratio=t.min_lr_ratio,
        warmup_fraction=t.warmup_fraction,
        batch_tokens=t.batch_tokens,
        weight_decay=t.weight_decay,
        beta1=t.betas[0],
        beta2=t.betas[1],
        grad_clip=t.grad_clip,
        eval_tokens=spec.data.eval_tokens,
        n_evals=t.n_evals,
        log_every=t.log_every,
    )


def trial_id(shape: GPTShape, tokens: int, seed: int, train: TrainConfig, data_fingerprint: str, data: DataConfig) -> str:
    train_fields = {k: v for k, v in asdict(train).items() if k not in _NOT_HASHED}
    payload = {
        "version": TRAINER_VERSION,
        "shape": asdict(shape),
        "tokens": int(tokens),
        "seed": int(seed),
        "train": train_fields,
        "data": {"fingerprint": data_fingerprint, "block_tokens": data.block_tokens, "eval_every": data.eval_every},
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _si(x: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def trial_name(n_params: int, tokens: int, budget: float, seed: int) -> str:
    """Readable name shown in the Ray dashboard, e.g. 'N=24.7k D=6.76M C=1e+12 s0'."""
    c = f" C={budget:.2g}" if budget > 0 else ""
    return f"N={_si(n_params)} D={_si(tokens)}{c} s{seed}"


def plan_trials(spec: SweepSpec, corpus: Corpus, data: DataConfig, results: str,
                threads: int = 1, device: str = "auto") -> list[TrialConfig]:
    """Every trial the spec asks for, in submission order (largest compute first, so the
    longest trials start early and the tail of the sweep is short), duplicates removed."""
    rule = ShapeRule(head_dim=spec.model.head_dim, aspect_ratio=spec.model.aspect_ratio,
                     max_layers=spec.model.max_layers)
    train = train_config(spec)
    bt = spec.train.batch_tokens
    points: list[tuple[GPTShape, int, float, int]] = []  # shape, tokens, budget, seed
    sw = spec.sweep
    if isinstance(sw, GridSweep):
        for size in sw.model_sizes:
            shape = shape_for_params(size, corpus.vocab_size, spec.model.seq_len, rule)
            for d in sw.tokens:
                points.extend((shape, _round_tokens(d, bt, spec, f"sweep.tokens ({d:g})"), 0.0, s) for s in sw.seeds)
    else:
        for budget in sw.budgets:
            for size in sw.sizes_for(budget):
                shape = shape_for_params(size, corpus.vocab_size, spec.model.seq_len, rule)
                d = tokens_for_budget(budget, shape.n_params)
                tokens = _round_tokens(d, bt, spec, f"sweep.budgets ({budget:g} FLOPs for model size {size:g})")
                points.extend((shape, tokens, budget, s) for s in sw.seeds)

    trials: dict[str, TrialConfig] = {}
    for shape, tokens, budget, seed in points:
        tid = trial_id(shape, tokens, seed, train, corpus.fingerprint, data)
        if tid in trials:
            log.warning("%s appears twice in the sweep (sizes map to the same shape); running it once",
                        trial_name(shape.n_params, tokens, budget, seed))
            continue
        trials[tid] = TrialConfig(
            trial_id=tid, name=trial_name(shape.n_params, tokens, budget, seed), sweep=spec.name,
            shape=shape, tokens=tokens, seed=seed, budget=budget, train=train, data=data,
            results=results, threads=threads, device=device,
        )
    return sorted(trials.values(), key=lambda t: -t.shape.n_params * t.tokens)


def _round_tokens(d: float, batch_tokens: int, spec: SweepSpec, where: str) -> int:
    steps = round(d / batch_tokens)
    if steps < spec.train.min_steps:
        raise UserError(
            f"{where}: gives {steps} optimiser steps of {batch_tokens} tokens "
            f"(expected at least train.min_steps={spec.train.min_steps}; raise the budget or lower the size)"
        )
    return steps * batch_tokens
