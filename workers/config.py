"""What a trial is, independent of how it is run: its settings, the result, the trial row.

The data contract between the driver and the trainers, and the one definition of every trial
setting: the spec's ``train:``, ``data:`` and ``world:`` sections are these models
(:mod:`orchestrator.spec` validates YAML into them), and the workers read the same objects, so
a setting has one name, one default and one rule. Kept free of torch and of the orchestrator
so the driver, planners and simulated workers import it cheaply; every trainer builds its row
with :func:`trial_row`, and :func:`workers.run.run_trial` hands each trial to its trainer
(workers.trainers.loading.trainer_for).

Which settings enter the trial id is declared next to each field: :data:`NOT_IN_ID` for those
that do not change a trial's result, :class:`HashedAs` for those hashed under other names;
:func:`identity` reads the marks (orchestrator.planning.trials hashes what it returns).
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from workers.flops import train_flops
from workers.gpt.arch import GPTShape
from workers.evals.config import EvalsConfig
from workers.simulated.expr import compile_expression
from workers.store import TrialStatus

__all__ = ["BASELINE", "WSD_FIELDS", "TrainerSpec", "CooldownConfig", "DataConfig", "HashedAs", "HparamLandscape", "LawConfig", "NOT_IN_ID", "NoiseConfig", "PositiveFloat",
           "PowerRule", "Role", "TrainConfig", "TrialConfig", "TrialResult", "Tune", "WorldConfig", "identity", "trial_row"]

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
BASELINE = "baseline"  # the variant of a spec without overrides (orchestrator.spec.Variant)


class _NotInId:
    def __repr__(self) -> str:
        return "NOT_IN_ID"


# Marks a setting that does not change a trial's result (how often it is logged, checkpointed,
# compiled), or whose effect another part of the id already carries: it stays out of the id.
NOT_IN_ID = _NotInId()


@dataclass(frozen=True)
class HashedAs:
    """Marks a setting that enters the trial id as ``entries(value)`` (name -> value) instead of
    under its own name."""

    entries: Callable[[Any], dict]


def identity(settings: BaseModel) -> dict:
    """The settings of ``settings`` that change a trial's result, as they enter its id: fields
    marked NOT_IN_ID left out, those marked HashedAs renamed, nested models by their identity."""
    out: dict = {}
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if any(m is NOT_IN_ID for m in info.metadata):
            continue
        hashed = next((m for m in info.metadata if isinstance(m, HashedAs)), None)
        if hashed is not None:
            out.update(hashed.entries(value))
        else:
            out[name] = identity(value) if isinstance(value, BaseModel) else value
    return out


class _Settings(BaseModel):
    # Frozen: hashable, so configs key the workers' caches (load_corpus, the simulated worlds).
    model_config = ConfigDict(extra="forbid", frozen=True)


class PowerRule(_Settings):
    """A hyperparameter as a power law of the trial's size: value = coef * N^n_exp * D^d_exp.

    The form of Li et al. 2025 ("Predictable Scale: Part I, Step Law"), who fit
    lr* = 1.79 N^-0.713 D^0.307 and B* = 0.58 D^0.571 tokens over 3,700 runs with N counted
    without embeddings; ``n`` says which count this rule's N is (a simulated trial has one
    count only, its total).
    """

    coef: PositiveFloat
    n_exp: float = Field(0.0, ge=-10, le=10, allow_inf_nan=False)
    d_exp: float = Field(0.0, ge=-10, le=10, allow_inf_nan=False)
    n: Literal["nonembed", "total"] = "nonembed"

    def at(self, n: float, d: float) -> float:
        return self.coef * float(n) ** self.n_exp * float(d) ** self.d_exp

    def describe(self, unit: str = "") -> str:
        n = "N" if self.n == "total" else "N_nonembed"
        return f"{self.coef:.4g}{unit} * {n}^{self.n_exp:+.3f} * D^{self.d_exp:+.3f}"


class Tune(_Settings):
    """Search this hyperparameter per design point (orchestrator.planning.tuning), log-spaced
    around ``tune``: a number, a rule, or (written as the bare word ``tune``) the default."""

    tune: PositiveFloat | PowerRule | None = None


def _tune_word(v):
    # ``lr: tune`` is the short form of ``lr: {tune: null}``.
    return {"tune": None} if v == "tune" else v


# A hyperparameter of the recipe: a number, a power rule in N and D, or a search per point.
# The driver hands workers numbers only: TrialFactory resolves rules and searches per trial.
LrSetting = Annotated[PositiveFloat | PowerRule | Tune, BeforeValidator(_tune_word)]
BatchSetting = Annotated[Annotated[int, Field(ge=1)] | PowerRule | Tune, BeforeValidator(_tune_word)]
LR_DEFAULT, BATCH_DEFAULT = 6e-3, 1024


class CooldownConfig(_Settings):
    """The ``train.cooldown:`` of a warmup-stable-decay schedule: the last ``fraction`` of a
    trial's steps decay the learning rate to ``min_lr_ratio`` of its peak, in ``shape``
    (workers.schedule). Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond
    Fixed Training Durations") find about 20 % in the (1 - sqrt) shape matches or beats cosine."""

    fraction: float = Field(0.2, gt=0, lt=1, allow_inf_nan=False)
    shape: Literal["1-sqrt", "linear"] = "1-sqrt"


# The train settings that only a wsd schedule reads: refused with cosine, and not inherited by a
# variant that switches a wsd baseline to cosine (orchestrator.spec._merge).
WSD_FIELDS = ("cooldown", "reuse", "keep_stems")


class TrainConfig(_Settings):
    """The ``train:`` section: the optimiser, its schedule, and how a trial is recorded.

    ``lr`` and ``batch_tokens`` may be rules or searches in a spec; a trial's own TrainConfig
    (TrialConfig.train) always holds numbers, resolved by orchestrator.planning.trials.
    """

    optimizer: Annotated[Literal["adamw"], NOT_IN_ID] = "adamw"  # one choice: nothing to tell apart
    lr: LrSetting = LR_DEFAULT
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    batch_tokens: BatchSetting = BATCH_DEFAULT
    weight_decay: float = Field(0.1, ge=0)
    # Hashed as beta1 and beta2: the payload's form is that of the ids finished trials are stored
    # under, and any other form would train them again.
    betas: Annotated[tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]],
                     HashedAs(lambda b: {"beta1": b[0], "beta2": b[1]})] = (0.9, 0.95)
    grad_clip: PositiveFloat = 1.0
    n_evals: Annotated[int, NOT_IN_ID] = Field(4, ge=0, le=1000)  # evaluations during training, plus the final one
    log_every: Annotated[int, NOT_IN_ID] = Field(10, ge=1)
    # Planning only: a trial with fewer optimiser steps is refused (orchestrator.planning.trials).
    min_steps: Annotated[int, NOT_IN_ID] = Field(20, ge=1)
    # Wall seconds between checkpoints of a running trial (0 disables), taken at the next
    # log_every boundary; a trial retried after preemption resumes from its last one and ends
    # exactly where an uninterrupted one does. Wall time rather than steps because what
    # preemption costs is wall time.
    checkpoint_every_s: Annotated[float, NOT_IN_ID] = Field(600.0, ge=0, allow_inf_nan=False)
    # torch.compile the model for training (worth it on GPUs for trials of minutes or more; the
    # first steps pay the compilation). Changes results only at float rounding.
    compile: Annotated[bool, NOT_IN_ID] = False
    # The learning-rate schedule (workers.schedule): cosine over exactly each trial's steps, or
    # warmup-stable-decay, whose constant phase does not depend on D, so that one stable run of a
    # shape (its stem) serves every D through short cooldown branches (orchestrator.running.reuse).
    # Hashed only when not cosine, and the cooldown only with wsd: cosine trials keep their ids.
    schedule: Annotated[Literal["cosine", "wsd"], HashedAs(lambda s: {} if s == "cosine" else {"schedule": s})] = "cosine"
    cooldown: Annotated[CooldownConfig | None,
                        HashedAs(lambda c: {} if c is None else {"cooldown": c.model_dump(mode="json")})] = None
    # wsd: branch every D of a stem off its checkpoints (true, the default) or train each trial
    # from step 0. A branch computes exactly what the whole run does, so this stays out of the id.
    reuse: Annotated[bool | None, NOT_IN_ID] = None
    # wsd with reuse: keep each stem's last checkpoint after the sweep, so that a later run adds
    # a longer D to a shape for the price of its extension and cooldown (storage: one model and
    # optimiser state per stem).
    keep_stems: Annotated[bool, NOT_IN_ID] = False

    @model_validator(mode="before")
    @classmethod
    def _wsd_defaults(cls, data):
        if isinstance(data, dict) and data.get("schedule") == "wsd" and data.get("cooldown") is None:
            data = {**data, "cooldown": {}}
        return data

    @model_validator(mode="after")
    def _schedule(self):
        if self.schedule == "cosine":
            for name in WSD_FIELDS:
                if getattr(self, name):
                    raise ValueError(f"{name} applies to schedule: wsd (expected schedule: wsd, or no {name}: "
                                     "a cosine run decays over its own D, so nothing can branch off it)")
        return self

    @property
    def reuses(self) -> bool:
        """Whether trials that differ only in D share a stem (wsd, unless reuse: false)."""
        return self.schedule == "wsd" and self.reuse is not False


def _eval_every(eval_fraction: float) -> int:
    return max(2, round(1 / eval_fraction))


class DataConfig(_Settings):
    """The ``data:`` section: one source (workers.gpt.data), its split and its evaluation.

    The source's fields stay out of the trial id: the corpus's content fingerprint stands for
    them, and the vocabulary enters through the model shape.
    """

    builtin: Annotated[Literal["python-stdlib"] | None, NOT_IN_ID] = None
    text: Annotated[str | None, NOT_IN_ID] = None  # file, directory or glob
    tokens: Annotated[str | None, NOT_IN_ID] = None  # .npy or .bin
    dtype: Annotated[Literal["uint8", "uint16", "uint32", "int32", "int64"], NOT_IN_ID] = "uint16"  # of .bin files
    vocab_size: Annotated[int | None, NOT_IN_ID] = Field(None, ge=2)  # of token files; bytes always have 256
    # Hashed as the split it makes: fractions that hold out the same blocks are the same trial.
    eval_fraction: Annotated[float, HashedAs(lambda f: {"eval_every": _eval_every(f)})] = Field(0.02, gt=0, le=0.5)
    eval_tokens: int = Field(65536, ge=64)  # held-out tokens per evaluation; hashed with the train settings
    block_tokens: int = Field(8192, ge=64)

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("builtin", "text", "tokens") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of builtin, text, tokens (got {', '.join(given) or 'none'})")
        return self

    @property
    def eval_every(self) -> int:
        """One block in this many is held out for evaluation (1 in 50 for 2 %)."""
        return _eval_every(self.eval_fraction)

    def describe(self) -> str:
        return self.builtin or self.text or self.tokens or "?"


class LawConfig(_Settings):
    """Chinchilla form L = E + A / N^alpha + B / D^beta."""

    E: PositiveFloat
    A: PositiveFloat
    B: PositiveFloat
    alpha: PositiveFloat
    beta: PositiveFloat

    @classmethod
    def of(cls, params: Sequence[float]) -> "LawConfig":
        """The law with (E, A, B, alpha, beta) = ``params``."""
        names = tuple(cls.model_fields)
        if len(params) != len(names):
            raise ValueError(f"law={tuple(params)!r}: expected five numbers {names}")
        return cls(**dict(zip(names, params)))

    @property
    def params(self) -> tuple[float, float, float, float, float]:
        return self.E, self.A, self.B, self.alpha, self.beta


class NoiseConfig(_Settings):
    """How a simulated world's observations scatter around its true law (the noise model is
    described in :mod:`workers.simulated.world`)."""

    tier: Literal["default", "hard", "none"] = "default"  # seed noise: a key of world.SEED_NOISE_TIERS
    residual_amplitude: float = Field(0.015, ge=0, le=1)  # nats, sd of the structured residual field
    residual_length_scale: PositiveFloat = 0.7  # decades in (log10 N, log10 D)
    outlier_prob: float = Field(0.02, ge=0, lt=1)
    outlier_low: float = Field(0.05, ge=0)  # nats
    outlier_high: float = Field(0.3, ge=0)  # nats

    @model_validator(mode="after")
    def _range(self):
        if self.outlier_low > self.outlier_high:
            raise ValueError(f"world.noise.outlier_low={self.outlier_low} > outlier_high={self.outlier_high} (expected low <= high)")
        return self


class HparamLandscape(_Settings):
    """The ``world.hparams:`` section: a learning-rate and batch-size landscape around true optima
    (the model is described in :mod:`workers.simulated.world`).

    The optima are power rules in the trial's N (its one count, the total) and D; the curvatures
    are per unit of ln^2, and their defaults are the quadratic fit near the optimum of a 1B-parameter,
    100B-token grid that the planner benchmark quotes (a 2x miss of either costs about 0.28 %).
    No default optima: a world states its truth.
    """

    lr: PowerRule  # lr*(N, D)
    batch: PowerRule  # B*(N, D) in tokens
    k_lr: float = Field(0.0058, ge=0, allow_inf_nan=False)
    k_b: float = Field(0.0057, ge=0, allow_inf_nan=False)
    k_x: float = Field(-0.0060, allow_inf_nan=False)  # < 0: a larger batch wants a larger learning rate
    # lr / lr* at which a trial starts to diverge (NaN), and from which it always does.
    diverge_from: float = Field(4.0, gt=1, allow_inf_nan=False)
    diverge_all: float = Field(8.0, gt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _landscape(self):
        for name in ("lr", "batch"):
            if getattr(self, name).n != "total":
                raise ValueError(f"world.hparams.{name}: a simulated trial has one parameter count, its total "
                                 "(expected n: total)")
        if not 4 * self.k_lr * self.k_b > self.k_x**2:
            raise ValueError(f"world.hparams: k_lr={self.k_lr}, k_b={self.k_b}, k_x={self.k_x} is not a basin "
                             "(expected 4 * k_lr * k_b > k_x^2)")
        if not self.diverge_from < self.diverge_all:
            raise ValueError(f"world.hparams: diverge_from={self.diverge_from} >= diverge_all={self.diverge_all} "
                             "(expected diverge_from < diverge_all)")
        return self


class WorldConfig(_Settings):
    """The ``world:`` section: a known law that a simulated trial samples instead of training,
    its noise and its seed (workers.simulated.world)."""

    # Hashed as the list [E, A, B, alpha, beta], the form finished trials' ids were computed in.
    law: Annotated[LawConfig | None, HashedAs(lambda law: {"law": None if law is None else list(law.params)})] = None
    expression: str | None = Field(None, max_length=500)  # a law in N and D, e.g. "1.69 + 400/N**0.31 + 400/D**0.31"
    noise: NoiseConfig = NoiseConfig()
    seed: int = Field(0, ge=0)
    # Per-trial sleep the simulated trainer emulates. The loss does not depend on it, so it is
    # hashed as 0 (the key stays: finished trials' ids were computed with it).
    duration_s: Annotated[float, HashedAs(lambda s: {"duration_s": 0})] = Field(0.0, ge=0, le=86400)
    # A learning-rate and batch-size landscape (None: the loss does not depend on them). Hashed
    # only when set: worlds without one keep the ids their finished trials were stored under.
    hparams: Annotated[HparamLandscape | None,
                       HashedAs(lambda h: {} if h is None else {"hparams": h.model_dump(mode="json")})] = None
    # Simulated task evaluations (workers.simulated.tasks): how many of the default tasks of graded
    # difficulty each trial reports, at ``task_checkpoints`` points of its run. Evaluation never
    # changes what a trial trains, so neither is in the id.
    tasks: Annotated[int, NOT_IN_ID] = Field(0, ge=0, le=4)
    task_checkpoints: Annotated[int, NOT_IN_ID] = Field(10, ge=1, le=1000)

    @field_validator("expression")
    @classmethod
    def _safe_expression(cls, v: str | None) -> str | None:
        if v is not None:
            compile_expression(v)  # parsed with ast, never eval
        return v

    @model_validator(mode="after")
    def _one_law(self):
        if (self.law is None) == (self.expression is None):
            raise ValueError("world: expected exactly one of law (E, A, B, alpha, beta) or expression")
        return self

    def task_truths(self) -> list:
        """The world's simulated tasks (workers.simulated.tasks.TaskTruth), fixed by its seed."""
        from workers.simulated.tasks import default_truths

        return default_truths(self.seed)[: self.tasks] if self.tasks else []

    @classmethod
    def chinchilla(cls, law: Sequence[float], **settings) -> "WorldConfig":
        """A world whose law is the Chinchilla form with (E, A, B, alpha, beta) = ``law``."""
        return cls(law=LawConfig.of(law), **settings)


# An import path "package.module:function" (Python identifiers, dotted module).
IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def _import_path(v: str | None) -> str | None:
    if v is not None and not IMPORT_PATH.match(v):
        raise ValueError(f"{v!r} is not an import path (expected package.module:function)")
    return v


def json_only(v: dict) -> dict:
    """Settings that travel as JSON (the trial file, trial ids): YAML's dates, sets and the like refused."""
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"expected numbers, strings, booleans, lists and mappings ({e})") from None
    return v


class TrainerSpec(_Settings):
    """The spec's ``trainer:`` mapping: a lab's own trainer (workers.trainers), a Python function
    named by import path or a command, with the version and settings that enter trial ids.

    The built-in trainers are written as the bare words ``gpt`` and ``simulated``."""

    function: Annotated[str | None, BeforeValidator(_import_path)] = None  # "mylab.scaling:train"
    # A command line (a string, split like a shell's, or an argv list) with {placeholders} for the
    # trial's fields (workers.trainers.command.PLACEHOLDERS).
    command: str | tuple[str, ...] | None = None
    # Bump to retrain every trial: the trainer's code changed what it computes.
    version: str = Field("1", max_length=100)
    # Passed to the trainer as trial.settings (a dataset path, a tokenizer, ...); hashed into ids.
    settings: Annotated[dict[str, Any], AfterValidator(json_only)] = {}
    # Where the command runs and a function's module is imported from (relative: to the spec's
    # directory). Default: the spec file's directory (orchestrator.spec.load_spec fills it in).
    workdir: str = Field("", max_length=4096)

    @model_validator(mode="after")
    def _one_way(self):
        if (self.function is None) == (self.command is None):
            raise ValueError("trainer: expected exactly one of function (an import path) or command")
        if self.command is not None and not (self.command if isinstance(self.command, str) else "".join(self.command)).strip():
            raise ValueError("trainer.command: empty (expected a command line, e.g. python train.py {trial_json})")
        return self

    @property
    def kind(self) -> str:
        return "function" if self.function is not None else "command"

    @property
    def target(self) -> str:
        """The trainer's identity in trial ids: its import path or its command as written."""
        return self.function if self.function is not None else (
            self.command if isinstance(self.command, str) else json.dumps(list(self.command)))

    def __hash__(self) -> int:  # settings is a dict: hash what identifies the trainer
        return hash((self.function, self.command, self.version, json.dumps(self.settings, sort_keys=True, default=str)))


class Role(str, enum.Enum):
    """What a trials row is: a design point (fitted), or a segment of a stem (a wsd stable run
    that only serves its branches; orchestrator.running.reuse)."""

    POINT = "point"
    STEM = "stem"


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
    data: DataConfig | None  # set for trainer: gpt
    results: str
    threads: int = 1
    cpus: float = 1.0  # what the executor asks Ray for, per rank (resources.cpus; threads is its whole part)
    device: str = "auto"
    # What the trial holds and how its use is measured (workers.run.meter), none of it in the id:
    # the spec's resources.gpus (a fraction: packed with others), and its stated peak FLOP/s and
    # rated watts per device (None: the device table's, workers.run.devices).
    gpus: float = 0.0
    peak_flops: float | None = None
    watts: float | None = None
    # Ranks the trial trains on (> 1: data-parallel on Ray Train, workers.run.distributed), each
    # holding ``threads`` CPUs and ``gpus`` GPUs, and how (ddp or fsdp). How, not what: not in the id.
    workers: int = 1
    strategy: str = "ddp"
    # The driver's progress hub (orchestrator.running.tracking) this trial streams its rows to,
    # every stream_every_s seconds at most ("": no tracker named). Not in the id.
    stream: str = ""
    stream_every_s: float = 5.0
    world: WorldConfig | None = None  # set for trainer: simulated
    # Where byte corpora are materialised (workers.gpt.data; "" = ~/.cache/scalesweep): this
    # machine's choice, not a setting of the sweep, so neither in the spec nor in the id.
    cache_dir: str = ""
    # The size's exact N when there is no GPT shape (simulated, or a lab's trainer's ladder or hook).
    size_n: int = 0
    # "gpt" and "simulated" (built in), "function" or "command" (a lab's: ``runner`` says which).
    trainer: str = "gpt"
    runner: TrainerSpec | None = None
    # A lab's trainer: the size's settings (a ladder rung's or the size hook's), the rung's name
    # and its non-embedding N where the ladder states it (0: unknown).
    model: dict | None = None
    size_name: str = ""
    size_nonembed: int = 0
    # Where the spec file is: a command trainer runs there, and a function trainer's module is
    # imported from there too; and the same directory relative to the driver's working directory
    # (when inside it), for nodes where the absolute path does not exist (a submitted job's
    # working_dir is unpacked elsewhere on each node).
    workdir: str = ""
    workdir_rel: str = ""
    # The content hash of the trial without its hyperparameters (lr, batch): the trials of one
    # design point's search share it (orchestrator.planning.tuning); "" = the trial id.
    point_id: str = ""
    # Where the trial's lr and batch came from: "fixed", "rule", "tune", or "ladder" (the rule
    # fitted to the tuned points below tune.up_to_flops), with the rule written out.
    recipe: str = "fixed"
    # μP (Yang et al. 2022, Tensor Programs V) relative to this width; 0 = standard parametrisation.
    mup_base_width: int = 0
    # Coefficient of a mixture-of-experts model's load-balancing loss in its training loss
    # (workers.gpt.model.MoE; the spec's model.aux_loss); 0 for a dense model.
    moe_aux_loss: float = 0.0
    # Run reuse (wsd schedules, orchestrator.running.reuse). A point with a ``stem_id`` and
    # ``start_step`` > 0 is a branch: it starts from its stem's checkpoint at that step and trains
    # only its cooldown. A STEM row trains the stem's stable phase up to ``tokens`` and saves a
    # checkpoint at every step of ``stops`` (the branch points it serves; the last is its end).
    role: Role = Role.POINT
    stem_id: str = ""
    start_step: int = 0
    stops: tuple[int, ...] = ()
    # The spec's variant (orchestrator.spec.Variant) this trial belongs to: a label for the
    # trials table. What the variant changes is hashed through its settings, not its name.
    variant: str = BASELINE
    # The variant's identity: the hash of the settings it changes (orchestrator.planning.trials.
    # variant_id), in every row of the trial, so that readers name the row as the spec names that
    # identity now (orchestrator.results.label_variants): the name written in ``variant`` goes
    # stale when the variant is renamed, and a variant whose settings changed under the same name
    # is another one. "" for a trial made outside a spec's factories (written as null: unknown).
    variant_id: str = ""
    # The spec's evals: section (workers.evals), paths absolute: which tasks the trial is scored
    # on, and when. Never in the id: evaluation does not change what is trained.
    evals: EvalsConfig | None = None

    @property
    def n_params(self) -> int:
        """Parameters N (a mixture of experts' active ones): exact for a GPT shape, the size's as
        planned otherwise."""
        return self.shape.n_params if self.shape is not None else self.size_n

    @property
    def steps(self) -> int:
        """Optimiser steps; a simulated trial counts in tokens (its ``step_tokens`` is 1)."""
        return self.tokens // self.step_tokens

    @property
    def branch_tokens(self) -> int:
        """Tokens before a branch's cooldown: where it leaves its stem (0: trained from step 0)."""
        return self.start_step * self.step_tokens

    @property
    def step_tokens(self) -> int:
        """Tokens per step: the batch; 1 for a simulated trial, which has no steps."""
        return 1 if self.trainer == "simulated" else self.train.batch_tokens


@dataclass
class TrialResult:
    trial_id: str
    status: TrialStatus
    eval_loss: float
    wall_s: float
    error: str = ""
    row: dict = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict) -> "TrialResult":
        """The result a stored trials row records (a finished trial answered from the store)."""
        return cls(row["trial_id"], TrialStatus(row["status"]), row["eval_loss"], row["wall_s"] or 0.0,
                   row["error"] or "", row)


def trial_row(cfg: TrialConfig, n_params: int, status: TrialStatus, eval_loss: float, train_loss: float,
         wall_s: float, error: str, tokens: int | None = None, flops_spent: float | None = None,
         nonembed: int | None = None, total: int | None = None) -> dict:
    """The trials row of ``cfg``. ``flops_spent`` is what this row itself computed (default: its
    tokens from ``start_step`` on: a branch's cooldown); ``flops`` is the point's 6 N D.
    ``nonembed`` and ``total`` are the trainer's counts (default: the shape's or the size's)."""
    tokens = cfg.tokens if tokens is None else tokens
    if flops_spent is None:
        flops_spent = train_flops(n_params, max(0, tokens - cfg.branch_tokens))
    shape = cfg.shape
    if nonembed is None:
        nonembed = shape.n_params_nonembed if shape else (cfg.size_nonembed or None)
    if total is None:
        total = shape.n_params_total if shape else n_params
    model = cfg.model or {}
    return {
        "sweep": cfg.sweep,
        "trial_id": cfg.trial_id,
        "status": status.value,
        "n_params": n_params,
        "n_params_nonembed": nonembed,
        "n_params_total": total,
        # A lab's model fills these where its size settings name them.
        "n_layer": shape.n_layer if shape else _whole(model.get("n_layer")),
        "d_model": shape.d_model if shape else _whole(model.get("d_model")),
        "n_head": shape.n_head if shape else _whole(model.get("n_head")),
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
        "finished_at": time.time(),
        "point_id": cfg.point_id or cfg.trial_id,
        "recipe": cfg.recipe,
        "role": cfg.role.value,
        "parent_id": cfg.stem_id if cfg.role is Role.STEM or cfg.start_step > 0 else "",
        "flops_spent": flops_spent,
        "variant": cfg.variant,
        "variant_id": cfg.variant_id or None,
        "step_columns": None,  # the trainer's own step columns (workers.run.run_trial fills it)
        "workers": cfg.workers,
        "strategy": cfg.strategy if cfg.workers > 1 else None,
    }


def _whole(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == int(v) else None
