"""One trial: build the GPT for a shape, train it on exactly ``tokens`` tokens, evaluate, record.

:func:`train` is a trainer like any lab's (the contract of :mod:`workers.trainers.interface`):
it gets the trial and a context, and returns an Outcome. It raises on errors in the trial;
:func:`workers.run.run_trial` records them as FAILED rows. A NaN or infinite loss stops
training and is returned as diverged.

The loop follows nanoGPT's train.py: AdamW with decoupled weight decay on matrices only,
gradient clipping at 1.0, linear warmup then cosine decay to ``min_lr_ratio`` of the peak
over exactly the trial's steps (Hoffmann et al. 2022, section 3: the cosine cycle length
must match the number of training tokens, or the loss is overestimated). Metrics stay off
the hot path: the loss is summed on the device and read back only every ``log_every`` steps.
A mixture-of-experts model minimises its cross-entropy plus ``moe_aux_loss`` times its
load-balancing loss (:class:`workers.gpt.model.MoE`); the losses recorded are the cross-entropy.

Preemption: every ``checkpoint_every_s`` wall seconds, at the next log boundary (where the
step rows and the loss accumulator agree), the model, optimiser and last losses go to the
trial's checkpoint through the context (workers.trainers.interface), which keeps the step rows
and wall time beside them, in ``<sweep>/checkpoints/<trial_id>.pt``. A retried trial (Ray
re-running a killed task, or a re-run sweep) restores that state and continues with the next
step; batches depend only on (seed, step) (:mod:`workers.gpt.data`), so it ends with exactly the
loss of an uninterrupted run. :func:`workers.run.run_trial` deletes the checkpoint once the
trial's rows are committed. Checkpoints are read with ``weights_only=True``: tensors and
plain containers only, never arbitrary pickled objects from storage.
"""

from __future__ import annotations

import io
import logging
import contextlib
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import torch

from workers.config import DataConfig, Role, TrainConfig
from workers.gpt.arch import GPTShape
from workers.gpt.data import Corpus, load_corpus
from workers.gpt.model import GPT, build_model
from workers.gpt.parallel import Group, agree, full_state, group, load_full_state, local_slice, wrap
from workers.schedule import lr_at
from workers.trainers.interface import Context, Outcome, Trial

__all__ = ["train", "lr_at", "evaluate", "model_settings", "shape_of", "CHECKPOINT_VERSION"]

log = logging.getLogger(__name__)

# Bump when the checkpoint layout changes; a checkpoint of another version is ignored. (The
# param groups' lr_mult, added for μP, needs no bump: a group saved without it is at 1.0.)
# 2: the rows, wall time and writer moved to the context's envelope (workers.trainers.interface).
CHECKPOINT_VERSION = 2

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


def _build(run: "_Run") -> tuple[GPT, torch.optim.AdamW]:
    """The model (every rank initialises the same weights from the seed), the module its steps
    call (a DDP wrapper, or the model sharded in place by FSDP: workers.gpt.parallel), and AdamW."""
    torch.manual_seed(run.trial.seed)  # the only randomness: initial weights (no dropout)
    model = build_model(run.shape, mup_base_width=run.mup_base_width).to(run.device)
    run.wrapped = wrap(model, run.group, run.device)
    return model, _optimizer(model, run.tc, run.device)


def _state_bytes(run: "_Run", steps_done: int, stem: bool) -> bytes:
    """The training state after ``steps_done`` steps; the context adds the rows and wall time."""
    p = run.progress
    model, optimizer = full_state(run.model, run.opt, run.group)  # a single rank's format, on any number
    state = {
        "version": CHECKPOINT_VERSION,
        "total_steps": None if stem else run.trial.steps,  # a stem's state serves trials of any length
        "step": steps_done,
        "model": model,
        "optimizer": optimizer,
        "train_loss": p.train_loss,
        "eval_loss": p.eval_loss,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _save_checkpoint(run: "_Run", steps_done: int, stem: bool = False, required: bool = False) -> None:
    """The trial's own checkpoint, or (``stem``) its stem's state after ``steps_done`` steps,
    which any trial of that stem may start from. A failed write is a warning, unless
    ``required``: a stem's stop is what its segment is run for. On several ranks every rank
    calls it (FSDP gathers the state collectively) and rank 0 writes."""
    if run.group.rank > 0:
        if run.group.sharded:  # FSDP: take part in gathering the state on rank 0; nothing to write here
            full_state(run.model, run.opt, run.group)
        return  # DDP: rank 0 holds the same state
    data = _state_bytes(run, steps_done, stem)
    try:
        if stem:
            run.ctx.save_stem(steps_done, data)
        else:
            run.ctx.save_checkpoint(data)
    except OSError as e:  # the trial's result does not depend on it; only its preemption cover does
        if required:
            raise
        log.warning("trial %s: writing a checkpoint at step %d failed (%s); training on without it",
                    run.trial.trial_id, steps_done, e)


def _load_state(data: bytes | None, run: "_Run", stem_step: int = 0) -> dict | None:
    """The training state in ``data`` (the trial's checkpoint, or its stem's at ``stem_step``) if
    usable, else None, with a warning naming what is wrong."""
    if data is None:
        return None
    expected_total = None if stem_step else run.trial.steps
    last = stem_step if stem_step else run.trial.steps - 1
    try:
        # weights_only: tensors and primitive containers only, so a file in storage cannot
        # run code when loaded. map_location: a GPU checkpoint resumes on CPU and vice versa; a
        # sharded model's full state stays in host memory, each rank copying in only its shard
        # (on its GPU the full state would sit beside the shard the memory estimate counts).
        where = "cpu" if run.group.sharded else run.device
        state = torch.load(io.BytesIO(data), map_location=where, weights_only=True)
        found = (state.get("version"), state.get("total_steps"))
        if found != (CHECKPOINT_VERSION, expected_total):
            raise ValueError(f"(version, total_steps) = {found}, expected {(CHECKPOINT_VERSION, expected_total)}")
        if not (isinstance(state["step"], int) and 0 < state["step"] <= last
                and (not stem_step or state["step"] == stem_step)):
            raise ValueError(f"step {state['step']!r} outside 1..{last}")
    except Exception as e:  # any unreadable checkpoint means: start over, never crash
        log.warning("trial %s: ignoring unusable checkpoint (%s: %s)", run.trial.trial_id, type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "")
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
    """What a checkpoint restores besides the rows (which the context keeps): steps done, last losses."""

    step: int = 0
    train_loss: float = float("nan")
    eval_loss: float = float("nan")


def shape_of(trial: Trial) -> GPTShape:
    """The GPT shape a trial's model settings describe (:func:`model_settings` wrote them)."""
    names = {f.name for f in fields(GPTShape)}
    return GPTShape(**{k: v for k, v in trial.model.items() if k in names})


def model_settings(shape: GPTShape, mup_base_width: int, moe_aux_loss: float) -> dict:
    """The built-in model's settings as a trial carries them (Trial.model): its shape, and how it
    is parametrised and trained."""
    return asdict(shape) | {"mup_base_width": mup_base_width, "moe_aux_loss": moe_aux_loss}


class _Run:
    """One GPT trial being trained: its data, model, optimiser and progress."""

    def __init__(self, trial: Trial, ctx: Context):
        self.trial, self.ctx = trial, ctx
        self.tc = TrainConfig.model_validate(trial.train)
        self.shape = shape_of(trial)
        self.mup_base_width = int(trial.model.get("mup_base_width", 0))
        torch.set_num_threads(max(1, int(trial.threads)))
        self.device = _device(trial.device)
        if trial.data is None:
            raise ValueError("the built-in GPT needs the spec's data: section (expected builtin, text or tokens)")
        self.data = DataConfig.model_validate(trial.data)
        self.corpus = load_corpus(self.data, trial.cache_dir)
        if self.shape.vocab_size != self.corpus.vocab_size:
            raise ValueError(f"shape vocab_size {self.shape.vocab_size} != corpus vocab_size {self.corpus.vocab_size}")
        self.seq_len = self.shape.seq_len
        self.batch_size = self.tc.batch_tokens // self.seq_len
        self.group: Group = group(trial.strategy)
        if self.batch_size % self.group.world:
            raise ValueError(f"train.batch_tokens={self.tc.batch_tokens} is {self.batch_size} sequences, which "
                             f"{self.group.world} ranks cannot split evenly (expected a multiple of "
                             f"{self.group.world} x model.seq_len)")
        self.progress = _Progress()
        self.model, self.opt = _build(self)
        # The N of 6 N D: every parameter of a dense model, a mixture of experts' active ones.
        self.n_params = self.shape.n_params
        # A mixture of experts trains on CE + moe_aux_loss * its load-balancing loss; the losses
        # it records (train_loss, eval_loss) are the CE alone, comparable with a dense model's.
        self.aux_coef = float(trial.model.get("moe_aux_loss", 0.0)) if self.shape.experts else 0.0
        n_evals, n_steps = self.tc.n_evals, trial.steps
        self.stem = trial.role == Role.STEM.value
        # A stem segment evaluates at its end only (its rows are not fitted); a point as before.
        self.eval_at = {n_steps - 1} if self.stem else (
            {round(n_steps * (i + 1) / (n_evals + 1)) - 1 for i in range(n_evals)} | {n_steps - 1})
        # Steps after which the stem's state is saved for others: a segment's stops, or the branch
        # point of a branch that found no stem checkpoint there and trains the stem part itself.
        self.stem_saves = set(trial.stops) if self.stem else set()
        self.progress = self._resume()

    def _restore(self, state: dict | None, what: str) -> _Progress | None:
        if state is None:
            self.ctx.forget()
            return None
        try:
            load_full_state(self.model, self.opt, state["model"], state["optimizer"], self.group)
        except Exception as e:  # e.g. a shape mismatch: the half-restored model is rebuilt
            log.warning("trial %s: cannot restore %s (%s: %s)", self.trial.trial_id, what, type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "")
            self.model, self.opt = _build(self)
            self.ctx.forget()
            return None
        return _Progress(state["step"], state["train_loss"], state["eval_loss"])

    def _resume(self) -> _Progress:
        """The progress restored from the trial's own checkpoint; else, for a stem segment or a
        branch, from its stem's latest checkpoint at or before where it starts; else none."""
        trial, ctx = self.trial, self.ctx
        if not self.stem:
            p = self._restore(_load_state(ctx.load_checkpoint(), self), "its checkpoint")
            if p is not None:
                log.info("resuming trial %s from step %d of %d", trial.trial_id, p.step, trial.steps)
                return p
        if not (self.stem or trial.start_step):
            return _Progress()
        want = trial.steps - 1 if self.stem else trial.start_step
        for step in reversed([s for s in ctx.stem_steps() if s <= want]):
            p = self._restore(_load_state(ctx.load_stem(step), self, stem_step=step), f"stem checkpoint at step {step}")
            if p is not None:
                break
        else:
            p = _Progress()
        if not self.stem and p.step < trial.start_step:
            # The branch point's checkpoint is missing or damaged (a warning named it): train the
            # stem part here, and save it there for the other trials that start at it.
            log.warning("trial %s: no usable stem checkpoint at step %d of stem %s; training the stem from step %d",
                        trial.trial_id, trial.start_step, trial.stem_id, p.step)
            self.stem_saves = {trial.start_step}
        return p

    def train(self) -> bool:
        """Run the remaining optimiser steps; False at the first non-finite loss (diverged)."""
        tc, n_steps, p = self.tc, self.trial.steps, self.progress
        saved_at = time.perf_counter()
        # The compiled module shares the model's parameters; checkpoints and evaluation use the
        # plain one (its state_dict keys, and no recompilation for the evaluation batch shape).
        forward = torch.compile(self.wrapped) if tc.compile else self.wrapped
        loss_sum = torch.zeros((), device=self.device)
        window = 0  # checkpoints are taken at log boundaries, so a resumed window starts empty
        total = None if self.stem else n_steps  # a stem has no cooldown
        for step in range(p.step, n_steps):
            lr = lr_at(step, total, tc, self.n_params, tc.batch_tokens)
            loss_sum += self._step(forward, step, lr)
            window += 1
            last = step == n_steps - 1
            if window < tc.log_every and step not in self.eval_at and not last and step + 1 not in self.stem_saves:
                continue
            # One clock read per log boundary; none after the last step (the rows follow at once).
            due = tc.checkpoint_every_s > 0 and not last and time.perf_counter() - saved_at >= tc.checkpoint_every_s
            total_loss, due = agree(loss_sum, due, self.group)  # the only host sync in the loop
            p.train_loss = total_loss / window
            loss_sum.zero_()
            window = 0
            p.step = step + 1
            if self._log(step, lr):
                return False
            if step + 1 in self.stem_saves:  # a branch point: its trials start from here
                _save_checkpoint(self, step + 1, stem=True, required=self.stem)
            # A stem's preemption cover is a stem checkpoint too: any of its trials may use it.
            elif due:
                _save_checkpoint(self, step + 1, stem=self.stem)
                saved_at = time.perf_counter()
            _after_log_boundary(step + 1)
        return True

    def _step(self, forward, step: int, lr: float) -> torch.Tensor:
        """One optimiser step at learning rate ``lr``; its loss, still on the device."""
        for pg in self.opt.param_groups:
            pg["lr"] = lr * pg.get("lr_mult", 1.0)  # 1.0 but for μP's hidden matrices (_optimizer)
        x, y = local_slice(*self.corpus.batch(self.trial.seed, step, self.batch_size, self.seq_len), self.group)
        with _autocast(self.device):
            _, loss = forward(torch.from_numpy(x).to(self.device, non_blocking=True),
                              torch.from_numpy(y).to(self.device, non_blocking=True))
        self.opt.zero_grad(set_to_none=True)
        (loss + self.aux_coef * self.model.aux_loss if self.aux_coef else loss).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        self.opt.step()
        return loss.detach()

    def _log(self, step: int, lr: float) -> bool:
        """Report the step row at a log boundary, evaluating where one is due; True if diverged."""
        p = self.progress
        eval_loss = None
        diverged = not math.isfinite(p.train_loss)
        if not diverged and step in self.eval_at:
            p.eval_loss = eval_loss = evaluate(self.model, self.corpus, self.data.eval_tokens, self.batch_size,
                                               self.seq_len, self.device)
            diverged = not math.isfinite(p.eval_loss)
            if not diverged and self.ctx.tasks_due(final=step == self.trial.steps - 1):
                self._evaluate_tasks(step + 1)
        self.ctx.report(step + 1, (step + 1) * self.tc.batch_tokens, train_loss=p.train_loss, eval_loss=eval_loss,
                        lr=lr)
        return diverged

    def _evaluate_tasks(self, steps_done: int) -> None:
        """Score the trial's tasks (workers.evals) with the model as it is after ``steps_done`` steps."""
        def logits(x: torch.Tensor, pos: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
            with _autocast(self.device):
                return self.model(x, pos=pos, mask=mask)[0]

        self.model.eval()
        try:
            self.ctx.evaluate_tasks(steps_done, steps_done * self.tc.batch_tokens, logits, max_len=self.seq_len,
                                    device=self.device, packed_fn=logits)
        finally:
            self.model.train()

    def outcome(self, completed: bool) -> Outcome:
        """The final evaluation's loss (None: diverged), the exact counts and the tokens trained."""
        s = self.shape
        return Outcome(eval_loss=self.progress.eval_loss if completed else None, n_params=s.n_params,
                       n_params_nonembed=s.n_params_nonembed, n_params_total=s.n_params_total,
                       train_loss=self.progress.train_loss, tokens=self.progress.step * self.tc.batch_tokens)

    def drop_preemption_stem_checkpoints(self) -> None:
        """A finished stem segment's own preemption checkpoints are superseded by its stops."""
        keep, began = set(self.trial.stops), self.ctx.started_tokens // self.tc.batch_tokens
        for step in self.ctx.stem_steps():
            if began < step < self.trial.steps and step not in keep:
                self.ctx.delete_stem(step)


def train(trial: Trial, ctx: Context) -> Outcome:
    """The built-in trainer (workers.trainers.interface's contract): train and evaluate the GPT
    of ``trial.model`` on the spec's data, resuming from and writing checkpoints through ``ctx``.
    Raises on errors in the trial."""
    run = _Run(trial, ctx)
    completed = run.train()
    if run.stem and completed:
        run.drop_preemption_stem_checkpoints()
    return run.outcome(completed)
