"""One trial: build the GPT for a shape, train it on exactly ``tokens`` tokens, evaluate, record.

:func:`train` raises on errors in the trial; :func:`workers.entry.run_trial` records them as
FAILED rows. A NaN or infinite loss stops training and is returned as a DIVERGED row.

The loop follows nanoGPT's train.py: AdamW with decoupled weight decay on matrices only,
gradient clipping at 1.0, linear warmup then cosine decay to ``min_lr_ratio`` of the peak
over exactly the trial's steps (Hoffmann et al. 2022, section 3: the cosine cycle length
must match the number of training tokens, or the loss is overestimated). Metrics stay off
the hot path: the loss is summed on the device and read back only every ``log_every`` steps.
A mixture-of-experts model minimises its cross-entropy plus ``moe_aux_loss`` times its
load-balancing loss (:class:`workers.gpt.model.MoE`); the losses recorded are the cross-entropy.

Preemption: every ``checkpoint_every_s`` wall seconds, at the next log boundary (where the
step rows and the loss accumulator agree), the model, optimiser, step rows and last losses
go to ``<sweep>/checkpoints/<trial_id>.pt`` in the result store. A retried trial (Ray
re-running a killed task, or a re-run sweep) restores that state and continues with the next
step; batches depend only on (seed, step) (:mod:`workers.gpt.data`), so it ends with exactly the
loss of an uninterrupted run. :func:`workers.entry.run_trial` deletes the checkpoint once the
trial's rows are committed. Checkpoints are read with ``weights_only=True``: tensors and
plain containers only, never arbitrary pickled objects from storage.
"""

from __future__ import annotations

import io
import logging
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from workers.gpt.data import Corpus, load_corpus
from workers.flops import train_flops
from workers.gpt.model import GPT
from workers.store import ResultStore, TrialStatus, checkpoint_path, stem_checkpoint_path
from workers.config import Role, TrialConfig, trial_row
from workers.schedule import lr_at

__all__ = ["train", "lr_at", "evaluate", "CHECKPOINT_VERSION"]

log = logging.getLogger(__name__)

# Bump when the checkpoint layout changes; a checkpoint of another version is ignored. (The
# param groups' lr_mult, added for μP, needs no bump: a group saved without it is at 1.0.)
CHECKPOINT_VERSION = 1

# Called with the number of steps done after each log boundary (and after its checkpoint).
# A no-op; tests replace it to interrupt a trial at a known step.
_after_log_boundary: Callable[[int], None] = lambda steps_done: None


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW whose param groups each carry ``lr_mult``: ``_step`` sets a group's lr to the
    schedule's lr times it. One group of matrices and one of vectors, both at 1.0, in the standard
    parametrisation; under μP the hidden matrices get their own group at 1/m."""
    # Decay matrices only; norms and nothing else (nanoGPT configure_optimizers).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    if not model.mup_base_width:
        groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
                  {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}]
    else:
        # μP for Adam (Yang et al. 2022, Table 3): hidden matrices learn at lr/m, so that their
        # O(lr)-per-coordinate update moves a fan-in-m sum by O(1). Their weight decay is
        # multiplied by m, as the mup package's MuAdamW does (decoupled_wd=False), so the decay
        # per step (lr * weight_decay) is the same at every width. Embeddings and gains keep lr.
        m, names = model.width_mult, set(model.hidden_matrix_names())
        hidden = [p for n, p in model.named_parameters() if n in names]
        other = [p for n, p in model.named_parameters() if n not in names and p.dim() >= 2]
        groups = [{"params": hidden, "weight_decay": cfg.weight_decay * m, "lr_mult": 1.0 / m},
                  {"params": other, "weight_decay": cfg.weight_decay, "lr_mult": 1.0},
                  {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0}]
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=device.type == "cuda")


def _build(cfg: TrialConfig, device: torch.device) -> tuple[GPT, torch.optim.AdamW]:
    torch.manual_seed(cfg.seed)  # the only randomness: initial weights (no dropout)
    model = GPT(cfg.shape, mup_base_width=cfg.mup_base_width).to(device)
    return model, _optimizer(model, cfg.train, device)


def _save_checkpoint(store: ResultStore, cfg: TrialConfig, steps_done: int, model: GPT,
                     opt: torch.optim.Optimizer, p: "_Progress", elapsed_s: float, stem: bool = False,
                     required: bool = False) -> None:
    """The trial's own checkpoint, or (``stem``) its stem's state after ``steps_done`` steps,
    which any trial of that stem may start from (its total is the stem's: None). A failed write
    is a warning, unless ``required``: a stem's stop is what its segment is run for."""
    path = stem_checkpoint_path(cfg.stem_id, steps_done) if stem else checkpoint_path(cfg.trial_id)
    state = {
        "version": CHECKPOINT_VERSION,
        "trial_id": cfg.stem_id if stem else cfg.trial_id,
        "total_steps": None if stem else cfg.steps,
        "step": steps_done,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "steps": p.steps,  # dicts of str/int/float/None: loadable with weights_only
        "train_loss": p.train_loss,
        "eval_loss": p.eval_loss,
        "elapsed_s": elapsed_s,
        "started_at": p.started_at,  # where this trial's own computation began (flops_spent)
        # Who wrote it: a segment resuming from its own preemption checkpoint keeps its time and
        # FLOPs so far; one starting from another's stop begins its own count there.
        "writer": cfg.trial_id,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        store.write_bytes(path, buf.getvalue())
    except OSError as e:  # the trial's result does not depend on it; only its preemption cover does
        if required:
            raise
        log.warning("trial %s: writing checkpoint %s/%s at step %d failed (%s); training on without it",
                    cfg.trial_id, store.uri, path, steps_done, e)


def _load_checkpoint(store: ResultStore, cfg: TrialConfig, device: torch.device, stem_step: int = 0,
                     fallback: str = "training from step 0") -> dict | None:
    """The trial's checkpoint (or its stem's at ``stem_step``) if usable, else None; a bad one is
    warned about, naming the file and what happens instead (``fallback``)."""
    path = stem_checkpoint_path(cfg.stem_id, stem_step) if stem_step else checkpoint_path(cfg.trial_id)
    expected = (CHECKPOINT_VERSION, cfg.stem_id, None) if stem_step else (CHECKPOINT_VERSION, cfg.trial_id, cfg.steps)
    last = stem_step if stem_step else cfg.steps - 1
    try:
        data = store.read_bytes(path)
        if data is None:
            return None
        # weights_only: tensors and primitive containers only, so a file in storage cannot
        # run code when loaded. map_location: a GPU checkpoint resumes on CPU and vice versa.
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        found = (state.get("version"), state.get("trial_id"), state.get("total_steps"))
        if found != expected:
            raise ValueError(f"(version, trial_id, total_steps) = {found}, expected {expected}")
        if not (isinstance(state["step"], int) and 0 < state["step"] <= last and isinstance(state["steps"], list)
                and (not stem_step or state["step"] == stem_step)):
            raise ValueError(f"step {state['step']!r} outside 1..{last}")
    except Exception as e:  # any unreadable checkpoint means: start over, never crash
        log.warning("trial %s: ignoring unusable checkpoint %s/%s (%s: %s); %s", cfg.trial_id, store.uri, path,
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "", fallback)
        return None
    return state


def _autocast(device: torch.device):
    """bf16 autocast on GPUs (matmuls in bf16, the loss in fp32: model.py casts logits); none on CPU,
    where bf16 matmuls are slower and results must stay bit-reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: GPT, corpus: Corpus, n_tokens: int, batch_size: int, seq_len: int, device: torch.device) -> float:
    """Mean loss over the first ``n_tokens`` held-out tokens (the same ones at every evaluation)."""
    model.eval()
    total, count = 0.0, 0
    for x, y in corpus.eval_batches(n_tokens, batch_size, seq_len):
        with _autocast(device):
            _, loss = model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        total += loss.item() * x.size
        count += x.size
    model.train()
    return total / count


@dataclass
class _Progress:
    """What a checkpoint restores: steps done, their rows, the last losses, the wall time so far."""

    step: int = 0
    steps: list[dict] = field(default_factory=list)
    train_loss: float = float("nan")
    eval_loss: float = float("nan")
    elapsed_s: float = 0.0
    started_at: int = 0  # the step this trial's own training began at: its flops_spent count from there


class _Run:
    """One GPT trial being trained: its data, model, optimiser and progress."""

    def __init__(self, cfg: TrialConfig, store: ResultStore, t0: float):
        self.cfg, self.store, self.tc, self.t0 = cfg, store, cfg.train, t0
        torch.set_num_threads(max(1, int(cfg.threads)))
        self.device = _device(cfg.device)
        self.corpus = load_corpus(cfg.data, cfg.cache_dir)
        if cfg.shape.vocab_size != self.corpus.vocab_size:
            raise ValueError(f"shape vocab_size {cfg.shape.vocab_size} != corpus vocab_size {self.corpus.vocab_size}")
        self.seq_len = cfg.shape.seq_len
        self.batch_size = self.tc.batch_tokens // self.seq_len
        self.model, self.opt = _build(cfg, self.device)
        # The N of 6 N D: every parameter of a dense model, a mixture of experts' active ones.
        self.n_params = cfg.shape.n_params
        # A mixture of experts trains on CE + moe_aux_loss * its load-balancing loss; the losses
        # it records (train_loss, eval_loss) are the CE alone, comparable with a dense model's.
        self.aux_coef = cfg.moe_aux_loss if cfg.shape.experts else 0.0
        n_evals, n_steps = self.tc.n_evals, cfg.steps
        self.stem = cfg.role is Role.STEM
        # A stem segment evaluates at its end only (its rows are not fitted); a point as before.
        self.eval_at = {n_steps - 1} if self.stem else (
            {round(n_steps * (i + 1) / (n_evals + 1)) - 1 for i in range(n_evals)} | {n_steps - 1})
        # Steps after which the stem's state is saved for others: a segment's stops, or the branch
        # point of a branch that found no stem checkpoint there and trains the stem part itself.
        self.stem_saves = set(cfg.stops) if self.stem else set()
        self.progress = self._resume()
        self.t0 -= self.progress.elapsed_s  # wall_s counts the time trained before an interruption

    def _restore(self, ckpt: dict | None, what: str) -> _Progress | None:
        if ckpt is None:
            return None
        try:
            self.model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
        except Exception as e:  # e.g. a shape mismatch: the half-restored model is rebuilt
            log.warning("trial %s: cannot restore %s (%s: %s)", self.cfg.trial_id, what, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
            self.model, self.opt = _build(self.cfg, self.device)
            return None
        steps = [r | {"trial_id": self.cfg.trial_id} for r in ckpt["steps"]]
        started = ckpt.get("started_at")  # a checkpoint saved before flops_spent has none
        return _Progress(ckpt["step"], steps, ckpt["train_loss"], ckpt["eval_loss"], ckpt["elapsed_s"],
                         started if isinstance(started, int) else 0)

    def _resume(self) -> _Progress:
        """The progress restored from the trial's own checkpoint; else, for a stem segment or a
        branch, from its stem's latest checkpoint at or before where it starts; else none."""
        cfg = self.cfg
        if not self.stem:
            p = self._restore(_load_checkpoint(self.store, cfg, self.device), "its checkpoint")
            if p is not None:
                log.info("resuming trial %s from step %d of %d", cfg.trial_id, p.step, cfg.steps)
                return p
        if not (self.stem or cfg.start_step):
            return _Progress()
        want = cfg.steps - 1 if self.stem else cfg.start_step
        for step in reversed([s for s in self.store.stem_steps(cfg.stem_id) if s <= want]):
            ckpt = _load_checkpoint(self.store, cfg, self.device, stem_step=step,
                                    fallback="trying the stem's previous checkpoint")
            p = self._restore(ckpt, f"stem checkpoint at step {step}")
            if p is not None:
                if ckpt.get("writer") != cfg.trial_id:  # another's stop: this row's time and FLOPs start here
                    p.elapsed_s, p.started_at = 0.0, p.step
                break
        else:
            p = _Progress()
        if not self.stem and p.step < cfg.start_step:
            # The branch point's checkpoint is missing or damaged (a warning named it): train the
            # stem part here, and save it there for the other trials that start at it.
            log.warning("trial %s: no usable stem checkpoint %s/%s; training the stem from step %d",
                        cfg.trial_id, self.store.uri, stem_checkpoint_path(cfg.stem_id, cfg.start_step), p.step)
            self.stem_saves = {cfg.start_step}
        return p

    def train(self) -> TrialStatus:
        """Run the remaining optimiser steps; DIVERGED at the first non-finite loss."""
        tc, n_steps, p = self.tc, self.cfg.steps, self.progress
        saved_at = time.perf_counter()
        # The compiled module shares the model's parameters; checkpoints and evaluation use the
        # plain one (its state_dict keys, and no recompilation for the evaluation batch shape).
        forward = torch.compile(self.model) if tc.compile else self.model
        loss_sum = torch.zeros((), device=self.device)
        window = 0  # checkpoints are taken at log boundaries, so a resumed window starts empty
        total = None if self.stem else n_steps  # a stem has no cooldown
        for step in range(p.step, n_steps):
            lr = lr_at(step, total, tc, self.n_params, self.cfg.step_tokens)
            loss_sum += self._step(forward, step, lr)
            window += 1
            last = step == n_steps - 1
            if window < tc.log_every and step not in self.eval_at and not last and step + 1 not in self.stem_saves:
                continue
            p.train_loss = loss_sum.item() / window  # the only host sync in the loop
            loss_sum.zero_()
            window = 0
            if self._log(step, lr):
                return TrialStatus.DIVERGED
            if step + 1 in self.stem_saves:  # a branch point: its trials start from here
                _save_checkpoint(self.store, self.cfg, step + 1, self.model, self.opt, p,
                                 time.perf_counter() - self.t0, stem=True, required=self.stem)
            # One clock read per log boundary; none after the last step (the rows follow at once).
            # A stem's preemption cover is a stem checkpoint too: any of its trials may use it.
            elif tc.checkpoint_every_s > 0 and not last and time.perf_counter() - saved_at >= tc.checkpoint_every_s:
                _save_checkpoint(self.store, self.cfg, step + 1, self.model, self.opt, p,
                                 time.perf_counter() - self.t0, stem=self.stem)
                saved_at = time.perf_counter()
            _after_log_boundary(step + 1)
        return TrialStatus.COMPLETED

    def _step(self, forward, step: int, lr: float) -> torch.Tensor:
        """One optimiser step at learning rate ``lr``; its loss, still on the device."""
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)  # 1.0 but for μP's hidden matrices (_optimizer)
        x, y = self.corpus.batch(self.cfg.seed, step, self.batch_size, self.seq_len)
        with _autocast(self.device):
            _, loss = forward(torch.from_numpy(x).to(self.device, non_blocking=True),
                              torch.from_numpy(y).to(self.device, non_blocking=True))
        self.opt.zero_grad(set_to_none=True)
        (loss + self.aux_coef * self.model.aux_loss if self.aux_coef else loss).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.opt.step()
        return loss.detach()

    def _log(self, step: int, lr: float) -> bool:
        """Record the step row at a log boundary, evaluating where one is due; True if diverged."""
        p, tokens = self.progress, (step + 1) * self.tc.batch_tokens
        row = {"trial_id": self.cfg.trial_id, "step": step + 1, "tokens": tokens,
               "flops": train_flops(self.n_params, tokens), "train_loss": p.train_loss, "eval_loss": None,
               "lr": lr, "wall_s": time.perf_counter() - self.t0}
        diverged = not math.isfinite(p.train_loss)
        if not diverged and step in self.eval_at:
            p.eval_loss = row["eval_loss"] = evaluate(self.model, self.corpus, self.cfg.data.eval_tokens,
                                                      self.batch_size, self.seq_len, self.device)
            diverged = not math.isfinite(p.eval_loss)
        p.steps.append(row)
        return diverged

    def row(self, status: TrialStatus) -> dict:
        """The trial row: the final evaluation's loss, or NaN for a diverged trial."""
        p = self.progress
        trained = p.steps[-1]["tokens"] if p.steps else 0
        eval_loss = p.eval_loss if status is TrialStatus.COMPLETED else float("nan")
        spent = train_flops(self.n_params, max(0, trained - p.started_at * self.cfg.step_tokens))
        return trial_row(self.cfg, self.n_params, status, eval_loss, p.train_loss, time.perf_counter() - self.t0,
                         "", trained, flops_spent=spent)

    def drop_preemption_stem_checkpoints(self) -> None:
        """A finished stem segment's own preemption checkpoints are superseded by its stops."""
        keep = set(self.cfg.stops)
        for step in self.store.stem_steps(self.cfg.stem_id):
            if self.progress.started_at < step < self.cfg.steps and step not in keep:
                self.store.delete(stem_checkpoint_path(self.cfg.stem_id, step))


def train(cfg: TrialConfig, store: ResultStore | None = None) -> tuple[dict, list[dict]]:
    """Train and evaluate; returns (trial row, step rows). Raises on errors in the trial.

    Resumes from, and writes, the trial's checkpoint in ``store`` (default: ``cfg.results``).
    """
    t0 = time.perf_counter()
    run = _Run(cfg, store if store is not None else ResultStore(cfg.results), t0)
    status = run.train()
    if run.stem and status is TrialStatus.COMPLETED:
        run.drop_preemption_stem_checkpoints()
    return run.row(status), run.progress.steps
