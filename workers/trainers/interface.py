"""The trainer contract: what a trainer is given (:class:`Trial`), what it reports through
(:class:`Context`), and what it returns (:class:`Outcome`).

Every trainer goes through it: a lab's Python function named in the spec by import path
(``trainer: {function: mylab.scaling:train}``), a lab's command (workers.trainers.command, which
implements the same contract with files and environment variables), and the built-in GPT and
simulator, so the contract is exercised by every test that trains anything. The public names
are re-exported by the ``scalesweep`` package, which is what users import.

A Python trainer is ``train(trial: Trial, ctx: Context) -> Outcome | dict``. It trains
``trial.tokens`` tokens of the model ``trial.model`` describes (the size's settings), reporting
progress rows with :meth:`Context.report`, saving its state with :meth:`Context.save_checkpoint`
and, when called again for the same trial after preemption, resuming from
:meth:`Context.load_checkpoint`. It returns the outcome: the exact N it trained and the final
held-out loss (NaN or None: diverged). An exception it raises becomes a FAILED row carrying the
traceback (workers.run.run_trial).

The context keeps the reported rows inside every checkpoint it saves, and restores them with it:
a trainer resumed from a checkpoint reports only the steps after it, and the trial's step rows are
those of an uninterrupted run (Ray Tune's checkpoints carry no metrics; here they must, because
the steps table is queried per trial). Wall time and FLOPs spent are counted from where the
trial's own computation began (a branch that starts from a stem written by another trial counts
its cooldown only).
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import os
import struct
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from workers.flops import train_flops
from workers.store import ResultStore, checkpoint_path, stem_checkpoint_path

__all__ = ["Context", "EVAL_COLUMNS", "Outcome", "STEP_COLUMNS", "Trial", "TrialError", "TrainerLoadError", "outcome_of",
           "read_checkpoint", "resolve_workdir", "write_checkpoint"]

# Columns every progress row has (None where not measured); a trainer may add numeric ones.
STEP_COLUMNS = ("step", "tokens", "train_loss", "eval_loss", "lr")
_RESERVED = {"trial_id", "flops", "wall_s", "energy_j"}  # filled in by the context
# A task evaluation's row (Context.report_task): the metrics of workers.evals.scoring.
EVAL_COLUMNS = ("step", "tokens", "task", "task_bpb", "acc", "acc_norm", "n_items", "chance")


class TrialError(ValueError):
    """What a trainer handed back breaks the contract (a progress row without ``step``, an outcome
    without N): a FAILED row whose error says which field."""


class TrainerLoadError(ValueError):
    """A trainer that cannot be imported or called as ``fn(trial, ctx)``; the message names it."""


def resolve_workdir(workdir: str, relative: str = "") -> str:
    """The spec's directory on this node: ``workdir`` where it exists here, else ``relative`` (the
    same directory relative to the driver's working directory) under this process's working
    directory, which on a submitted job's nodes is the job's working_dir."""
    if workdir and os.path.isdir(workdir) or not relative:
        return os.path.abspath(workdir) if workdir else os.getcwd()
    return os.path.abspath(relative)


@dataclass(frozen=True)
class Trial:
    """One trial, as a trainer sees it. The same fields, as JSON, are a command trainer's
    ``$SCALESWEEP_TRIAL`` file (:meth:`to_json`); docs/trainers.md documents each."""

    trial_id: str  # content hash of everything that changes the result: the trial's name everywhere
    seed: int  # the replicate: initialise and order data from it
    n_params: int  # the size's exact N (the planner's D = C / 6N used it)
    tokens: int  # D: train on exactly this many tokens (a branch too: its whole run's)
    lr: float  # peak learning rate
    batch_tokens: int  # tokens per optimiser step
    steps: int  # optimiser steps: tokens // batch_tokens
    model: dict  # the size's settings (a ladder rung's, a size hook's, the GPT rule's shape)
    size: str = ""  # the ladder rung's name ("" for a hook or the GPT rule)
    # The learning-rate schedule: kind "cosine" (warmup, then cosine to min_lr_ratio over exactly
    # ``steps``) or "wsd" (warmup, constant, then a cooldown over the last ``cooldown.fraction``).
    schedule: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # the spec's whole train: section, lr and batch as numbers
    settings: dict = field(default_factory=dict)  # the spec's trainer.settings, as written
    data: dict | None = None  # the spec's data: section (the built-in GPT's; None if the spec has none)
    # wsd reuse (orchestrator.running.reuse): a "stem" trial trains the stable phase and saves its
    # state at each step in ``stops`` (save_stem); a "point" with start_step > 0 is a branch: it
    # starts from its stem's state after start_step steps (load_stem) and trains the cooldown only.
    role: str = "point"
    stem_id: str = ""
    start_step: int = 0
    stops: tuple[int, ...] = ()
    # Task evaluations (the spec's evals: section, workers.evals): the tasks' names, and the
    # section's settings with absolute paths (None: no tasks). Context.evaluate_tasks scores them.
    eval_tasks: tuple[str, ...] = ()
    evals: dict | None = None
    budget: float = 0.0  # the compute budget C the point belongs to (0: a grid point)
    name: str = ""  # readable, e.g. "N=24.7k D=6.76M C=1e+12 s0"
    sweep: str = ""
    variant: str = "baseline"
    threads: int = 1  # CPU threads the trial was given (each rank's, on several)
    device: str = "cpu"  # "cpu", or "cuda" when the spec asked for GPUs
    # Ranks the trial runs on (> 1: every rank calls the trainer, torch.distributed initialised by
    # Ray Train; rank 0's context records, the others' write nothing) and the strategy, ddp or fsdp.
    workers: int = 1
    strategy: str = "ddp"
    cache_dir: str = ""  # where the built-in data is materialised ("" = ~/.cache/scalesweep)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


@dataclass
class Outcome:
    """What a trainer returns. ``eval_loss`` None or NaN means diverged (a result about the point,
    not a crash). ``n_params`` is the N actually trained (default: the trial's); ``tokens`` those
    actually trained (default: the trial's, or the last reported row's)."""

    eval_loss: float | None
    n_params: int | None = None
    n_params_nonembed: int | None = None  # N without embeddings, where the trainer knows it
    n_params_total: int | None = None  # every parameter (e.g. all experts of a mixture)
    train_loss: float | None = None
    tokens: int | None = None

    @property
    def diverged(self) -> bool:
        return self.eval_loss is None or not math.isfinite(self.eval_loss)


_OUTCOME_FIELDS = {f.name for f in fields(Outcome)}


def outcome_of(value: Any, where: str = "the trainer's return value") -> Outcome:
    """An :class:`Outcome` from what a trainer returned (an Outcome, or a mapping with its fields:
    a command trainer's result.json). Raises TrialError naming the field that is wrong."""
    if isinstance(value, Outcome):
        data = asdict(value)
    elif isinstance(value, dict):
        unknown = sorted(set(value) - _OUTCOME_FIELDS)
        if unknown:
            raise TrialError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(_OUTCOME_FIELDS))})")
        if "eval_loss" not in value:
            raise TrialError(f"{where}: no eval_loss (expected the final held-out loss, or null for a diverged run)")
        data = dict(value)
    else:
        raise TrialError(f"{where}: expected an Outcome or a mapping with eval_loss and n_params "
                         f"(got {type(value).__name__})")
    for name in ("n_params", "n_params_nonembed", "n_params_total", "tokens"):
        v = data.get(name)  # numpy's and torch's numbers too (numbers.Real)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not v > 0 or v != int(v)):
            raise TrialError(f"{where}: {name}={v!r} (expected a positive whole number)")
        if v is not None:
            data[name] = int(v)
    for name in ("eval_loss", "train_loss"):
        v = data.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise TrialError(f"{where}: {name}={v!r} (expected a number, or null)")
        if v is not None:
            data[name] = float(v)
    return Outcome(**{k: data.get(k) for k in _OUTCOME_FIELDS})


# A checkpoint as stored: MAGIC, the header's length, the header (JSON: the context's own state,
# rows included) and the trainer's bytes, untouched.
_MAGIC = b"scalesweep-ckpt-1\n"


def write_checkpoint(header: dict, data: bytes) -> bytes:
    """The stored form of a checkpoint: the context's header (JSON) and the trainer's bytes."""
    head = json.dumps(header).encode()
    return _MAGIC + struct.pack("<Q", len(head)) + head + data


def read_checkpoint(blob: bytes) -> tuple[dict, bytes]:
    """(the context's header, the trainer's bytes) of a stored checkpoint; ValueError if it is not one."""
    if not blob.startswith(_MAGIC):
        raise ValueError("not a scalesweep checkpoint")
    start = len(_MAGIC) + 8
    (n,) = struct.unpack("<Q", blob[len(_MAGIC):start])
    return json.loads(blob[start:start + n]), blob[start + n:]


class Context:
    """How a trainer reports and checkpoints. The contract: ``trial``, :meth:`report`,
    :meth:`save_checkpoint` / :meth:`load_checkpoint`, the stem methods (:meth:`save_stem`,
    :meth:`load_stem`, :meth:`stem_steps`, :meth:`delete_stem`) and :meth:`forget` (drop a restored
    state the trainer could not use). The rest (rows, accounting, cleanup) is run_trial's.

    Built by workers.run.run_trial over the sweep's result store, for every trial.
    """

    def __init__(self, trial: Trial, store: ResultStore, log=None, meter=None, stream=None):
        self.trial = trial
        self._store = store
        self._log = log
        self._meter = meter  # workers.run.meter.TrialMeter: this attempt's energy so far (None: not measured)
        self._stream = stream  # workers.run.stream.ProgressStream: rows to live trackers (None: none named)
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0  # wall seconds of earlier attempts (restored with a checkpoint)
        self.energy_before = 0.0  # joules of earlier attempts (restored with a checkpoint)
        self.gpu_before = 0.0  # GPU-seconds of earlier attempts, each at its own GPU count (likewise)
        self._started_tokens = 0  # tokens before this row's own computation (a branch's stem part)
        self.rows: list[dict] = []
        self.evals: list[dict] = []  # task evaluations (report_task), kept in checkpoints like rows
        self.task_s = 0.0  # wall seconds spent in evaluate_tasks by this attempt (bench/bench_evals.py)
        self.extra_columns: set[str] = set()
        self._checkpoints = False  # whether the trainer saved or looked for its checkpoint (discard)

    # --- reporting -------------------------------------------------------------------------------
    def report(self, step: int, tokens: int, *, train_loss: float | None = None, eval_loss: float | None = None,
               lr: float | None = None, **extra: float) -> None:
        """One progress row: after ``step`` optimiser steps and ``tokens`` tokens, the mean training
        loss since the last row, the held-out loss where one was measured, the learning rate, and any
        numeric columns of the trainer's own (e.g. ``grad_norm=0.7``). ``energy_j`` (joules so far)
        is measured by the context; a trainer that measures its own may pass it."""
        step, tokens = _count("step", step), _count("tokens", tokens)
        while self.rows and self.rows[-1]["step"] >= step:  # reported again (after a resume): the later row counts
            self.rows.pop()
        # energy_j: the context's measure so far (workers.run.meter), unless the trainer measures its own
        energy = _number("energy_j", extra.pop("energy_j")) if "energy_j" in extra else self.energy_j()
        row = {"trial_id": self.trial.trial_id, "step": step, "tokens": tokens,
               "flops": train_flops(self.trial.n_params, tokens), "train_loss": _number("train_loss", train_loss),
               "eval_loss": _number("eval_loss", eval_loss), "lr": _number("lr", lr), "wall_s": self.wall_s(),
               "energy_j": energy}
        for name, v in extra.items():
            if name in _RESERVED or not name.isidentifier():
                raise TrialError(f"progress row: column {name!r} is reserved or not a name (expected a new name)")
            row[name] = _number(name, v)
            self.extra_columns.add(name)
        self.rows.append(row)
        if self._stream is not None:
            self._stream.add("step", row)

    def wall_s(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._t0

    def energy_j(self) -> float | None:
        """Joules the trial has used so far, earlier attempts included (None: not measured)."""
        now = self._meter.energy_j() if self._meter is not None else None
        return None if now is None else self.energy_before + now

    def gpu_seconds(self) -> float:
        """GPU-seconds the trial has held so far, earlier attempts included, each at its own count
        (a trial resumed on other ranks or GPUs)."""
        rate = self._meter.gpu_rate if self._meter is not None else 0.0
        return self.gpu_before + rate * (time.perf_counter() - self._t0)

    # --- task evaluations (workers.evals) -------------------------------------------------------
    def tasks_due(self, final: bool) -> bool:
        """Whether the trial's tasks are to be scored at this evaluation (evals.every: "eval", at
        each; "end", at the ``final`` one only)."""
        ev = self.trial.evals
        return bool(self.trial.eval_tasks) and ev is not None and (final or ev.get("every", "eval") == "eval")

    def evaluate_tasks(self, step: int, tokens: int, logits_fn, *, max_len: int, device="cpu",
                       packed_fn=None) -> list[dict]:
        """Score the trial's tasks with the model ``logits_fn`` (token ids (batch, time) -> logits
        (batch, time, vocab); ``max_len`` its context) after ``step`` steps and ``tokens`` tokens,
        record one row per task and return them. Put the model in eval mode first; this runs under
        torch.no_grad. A trial without tasks records nothing. A model that takes positions (batch,
        time) and an attention mask (batch, 1, time, time) may give ``packed_fn(ids, pos, mask)``
        too: each item's context is then computed once for all its choices (workers.evals.scoring)."""
        if not self.trial.eval_tasks:
            return []
        from workers.evals.suite import suite_for

        t0 = time.perf_counter()
        rows = suite_for(self.trial).evaluate(logits_fn, max_len, device, packed_fn)
        self.task_s += time.perf_counter() - t0
        for r in rows:
            self.report_task(step, tokens, **r)
        return rows

    def report_task(self, step: int, tokens: int, task: str, *, task_bpb: float | None, acc: float | None,
                    acc_norm: float | None = None, n_items: int | None = None, chance: float | None = None) -> None:
        """One task's evaluation after ``step`` steps (a trainer that scores tasks its own way; a
        command's evals.jsonl lines come here). The same (step, task) reported again replaces it."""
        step, tokens = _count("step", step), _count("tokens", tokens)
        if not isinstance(task, str) or not task:
            raise TrialError(f"task evaluation: task={task!r} (expected the task's name)")
        if n_items is not None:
            n_items = _count("n_items", n_items)
        self.evals = [r for r in self.evals if (r["step"], r["task"]) != (step, task)]
        self.evals.append({"trial_id": self.trial.trial_id, "step": step, "tokens": tokens, "task": task,
                           "task_bpb": _number("task_bpb", task_bpb), "acc": _number("acc", acc),
                           "acc_norm": _number("acc_norm", acc_norm), "n_items": n_items,
                           "chance": _number("chance", chance)})
        if self._stream is not None:
            self._stream.add("eval", self.evals[-1])

    # --- the trial's own checkpoint (preemption, retries) -------------------------------------
    def save_checkpoint(self, data: bytes, tokens: int | None = None) -> None:
        """Save the trainer's state after ``tokens`` tokens (default: the last row's); a retried
        trial gets it back from :meth:`load_checkpoint`, with the rows reported so far."""
        self._checkpoints = True
        self._store.write_bytes(checkpoint_path(self.trial.trial_id),
                                write_checkpoint(self._header(tokens, self.trial.trial_id), bytes(data)))
        if self._stream is not None:  # the curves hold every checkpointed row, should the trial die now
            self._stream.flush()

    def load_checkpoint(self) -> bytes | None:
        """The state saved by an earlier attempt of this trial (None: start from step 0)."""
        self._checkpoints = True
        return self._restore(checkpoint_path(self.trial.trial_id), self.trial.trial_id)

    # --- wsd stems (run reuse) ------------------------------------------------------------------
    def save_stem(self, step: int, data: bytes) -> None:
        """Save the stem's state after ``step`` steps (a stem trial, at each of ``trial.stops``; a
        branch that found no stem state and trained the stem part itself, at its start_step)."""
        tokens = step * self.trial.tokens // max(1, self.trial.steps)
        self._store.write_bytes(stem_checkpoint_path(self.trial.stem_id, step),
                                write_checkpoint(self._header(tokens, self.trial.stem_id), bytes(data)))

    def load_stem(self, step: int) -> bytes | None:
        """The stem's state after ``step`` steps, if saved (its rows up to there come with it)."""
        return self._restore(stem_checkpoint_path(self.trial.stem_id, step), self.trial.stem_id, step)

    def stem_steps(self) -> list[int]:
        """Steps at which this trial's stem has a saved state, ascending."""
        return self._store.stem_steps(self.trial.stem_id) if self.trial.stem_id else []

    def delete_stem(self, step: int) -> None:
        self._store.delete(stem_checkpoint_path(self.trial.stem_id, step))

    def _header(self, tokens: int | None, owner: str) -> dict:
        if tokens is None:
            tokens = self.rows[-1]["tokens"] if self.rows else 0
        return {"owner": owner, "writer": self.trial.trial_id, "elapsed_s": self.wall_s(), "tokens": int(tokens),
                "started_tokens": self._started_tokens, "rows": self.rows, "evals": self.evals,
                "energy_j": self.energy_j() or 0.0,
                "gpu_s": self.gpu_seconds()}

    def _restore(self, path: str, owner: str, step: int | None = None) -> bytes | None:
        blob = self._store.read_bytes(path)
        if blob is None:
            return None
        try:
            header, data = read_checkpoint(blob)
            if header.get("owner") != owner:
                raise ValueError(f"written for {header.get('owner')!r}, expected {owner!r}")
            rows = [dict(r, trial_id=self.trial.trial_id) for r in header["rows"]]
            evals = [dict(r, trial_id=self.trial.trial_id) for r in header.get("evals", [])]
            if step is not None:
                rows = [r for r in rows if r["step"] <= step]
                evals = [r for r in evals if r["step"] <= step]
            own = header.get("writer") == self.trial.trial_id  # this trial's earlier attempt, or another's stem
            elapsed, started = (float(header["elapsed_s"]), int(header["started_tokens"])) if own \
                else (0.0, int(header.get("tokens", 0)))
            energy = float(header.get("energy_j") or 0.0) if own else 0.0
            rate = self._meter.gpu_rate if self._meter is not None else 0.0
            gpu_s = (float(header["gpu_s"]) if "gpu_s" in header else elapsed * rate) if own else 0.0
        except (ValueError, KeyError, TypeError, struct.error) as e:
            if self._log:
                self._log.warning("trial %s: ignoring unusable checkpoint %s/%s (%s)", self.trial.trial_id,
                                  self._store.uri, path, e)
            return None
        self.rows, self.evals = rows, evals
        self.extra_columns = {k for r in rows for k in r} - set(STEP_COLUMNS) - _RESERVED
        # Its own earlier attempt: its time and FLOPs so far carry on. Another trial's stem state:
        # this row's own computation begins where it was saved.
        self._elapsed_before, self._started_tokens, self.energy_before = elapsed, started, energy
        self.gpu_before = gpu_s
        return data

    def discard(self, workspace: bool = False) -> None:
        """Delete what this trial kept for a retry, once its rows are committed as finished: its
        checkpoint (only if the trainer checkpoints: a trainer that never does, such as the
        simulator, costs no store calls here) and a command's ``workspace``."""
        tid = self.trial.trial_id
        if self._checkpoints:
            self._store.delete(checkpoint_path(tid))
        if workspace:
            self._store.delete_dir(f"checkpoints/{tid}.run")
            self._store.delete(f"checkpoints/{tid}.run.tar")

    def forget(self) -> None:
        """Drop what a restore brought back (a trainer that could not use the state starts over)."""
        self.rows, self.evals, self.extra_columns = [], [], set()
        self._elapsed_before, self._started_tokens, self.energy_before = 0.0, 0, 0.0

    # --- accounting -------------------------------------------------------------------------------
    def begin_at(self, tokens: int) -> None:
        """This row's own computation begins after ``tokens`` tokens (a branch started from a stem
        state another trial saved): its FLOPs spent count from there."""
        self._started_tokens = int(tokens)

    @property
    def started_tokens(self) -> int:
        """Tokens before this row's own computation began (a branch's stem part; 0 otherwise)."""
        return self._started_tokens

    def flops_spent(self, n_params: int, tokens: int) -> float:
        """What this row itself computed: its tokens from where its own computation began."""
        return train_flops(n_params, max(0, tokens - self._started_tokens))


def _count(name: str, v) -> int:
    """A step or token count: any integer type (numpy's and torch's too), not a bool, >= 0."""
    try:
        n = operator.index(v)
    except TypeError:
        n = -1
    if isinstance(v, bool) or n < 0:
        raise TrialError(f"progress row: {name}={v!r} (expected a whole number >= 0)")
    return n


def _number(name: str, v) -> float | None:
    """A loss, learning rate or column of the trainer's own: a real number of any type (numpy's and
    torch's scalars too), or None; never a bool or a string."""
    if v is None:
        return None
    if isinstance(v, (bool, str, bytes)):
        raise TrialError(f"progress row: {name}={v!r} (expected a number or None)")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TrialError(f"progress row: {name}={v!r} (expected a number or None)") from None


