"""Sweep specs: YAML in, one validated, typed :class:`SweepSpec` out.

This is the edge where user input is checked, once; code behind it trusts its types. YAML is read with
``yaml.safe_load`` (no object construction); every mapping forbids unknown keys; any problem
becomes a :class:`~orchestrator.errors.UserError` whose single line names the file, the field
path, the value and what was expected, listing the valid keys for a typo.

The ``train:``, ``data:`` and ``world:`` sections are the trial settings of
:mod:`workers.config`, defined there once and handed to the workers as validated here, as is a
lab's ``trainer:`` mapping (workers.config.TrainerSpec); ``model:`` (the built-in GPT's settings,
or a lab's ladder or size hook) is :mod:`orchestrator.spec.model`; this module defines the
sweep-level sections around them.

Numbers such as ``2e11`` are accepted although YAML 1.1 reads them as strings: pydantic
coerces them to floats, so specs can be written the way people write FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import UserError
from workers.evals.config import EvalsConfig
from orchestrator.spec.cost import CostSpec
from orchestrator.spec.resources import ModelSize, ResourceSpec
from orchestrator.spec.tracking import TrackingSpec
from orchestrator.spec.model import MOE_FIELDS, ModelSpec, Name, _Strict, check_model
from workers.config import (BASELINE, WSD_FIELDS, DataConfig, PositiveFloat, PowerRule, TrainConfig,
                            TrainerSpec, Tune, WorldConfig, identity)

__all__ = ["BASELINE", "SweepSpec", "Variant", "VariantSpec", "load_spec", "parse_spec"]

class IsoFlopSweep(_Strict):
    """Compute budgets, and model sizes per budget (one list for all, or a map per budget)."""

    kind: Literal["isoflop"]
    budgets: list[PositiveFloat] = Field(min_length=1)
    model_sizes: list[ModelSize] | dict[float, list[ModelSize]]
    seeds: list[Annotated[int, Field(ge=0)]] = [0]

    @model_validator(mode="after")
    def _sizes_cover_budgets(self):
        if isinstance(self.model_sizes, dict):
            missing = [b for b in self.budgets if b not in self.model_sizes]
            if missing:
                raise ValueError(f"model_sizes has no list for budget {missing[0]:g} (expected a key for every budget)")
        return self

    def sizes_for(self, budget: float) -> list[float]:
        return self.model_sizes[budget] if isinstance(self.model_sizes, dict) else list(self.model_sizes)


class GridSweep(_Strict):
    """An explicit N x D grid."""

    kind: Literal["grid"]
    model_sizes: list[ModelSize] = Field(min_length=1)
    tokens: list[PositiveFloat] = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0)]] = [0]


class FitSpec(_Strict):
    target_compute: PositiveFloat = 1e15
    # The law form fitted at the end of the sweep and by the adaptive planner: a built-in name
    # (orchestrator.fitting.forms.FORMS), "auto" (chosen by extrapolation at the end; the
    # planner uses Chinchilla's), or an expression in N and D with ``params`` NAME=INIT:LO:HI.
    form: str = "chinchilla"
    params: list[str] = []

    @model_validator(mode="after")
    def _form(self):
        if self.form == "auto":
            return self
        from orchestrator.fitting.forms import FormError, resolve_form

        try:
            form = resolve_form(self.form, self.params)
        except FormError as e:
            raise ValueError(str(e).replace("--form", "fit.form").replace("--param", "fit.params")) from None
        if "U" in form.inputs:
            raise ValueError(f"fit.form {self.form!r} needs unique tokens U per run, which a sweep does not record "
                             "(fit it to a table of runs with scalesweep fit --form ... --u-col)")
        return self

    def law_form(self, planner: bool = False):
        """The orchestrator.fitting.forms.LawForm this names ("auto" for the end-of-sweep fit;
        Chinchilla's for the planner, which needs one form while it runs)."""
        from orchestrator.fitting.forms import resolve_form

        if self.form == "auto":
            return resolve_form("chinchilla") if planner else "auto"
        return resolve_form(self.form, self.params)


class TuneSpec(_Strict):
    """How a hyperparameter written as ``tune`` is searched at each design point
    (orchestrator.planning.tuning)."""

    # Spacing of the search (a factor between neighbouring values) and its first trials: the
    # loss basin in ln lr is broad (a 2x miss costs ~0.3 % of the loss, shared/BENCHMARK.md's
    # landscape), so 3 values a factor 2 apart usually bracket the optimum.
    factor: float = Field(2.0, gt=1, le=100, allow_inf_nan=False)
    initial: int = Field(3, ge=3, le=15)
    max_trials_per_point: int = Field(8, ge=3, le=100)
    # Where the search may go: values outside are never tried. A search that reaches a bound
    # with the best still at it reports the point as not bracketed.
    lr_range: tuple[PositiveFloat, PositiveFloat] = (1e-6, 10.0)
    batch_range: tuple[PositiveFloat, PositiveFloat] = (1.0, 1e9)
    # Ladder: tune only points of at most this many FLOPs; the others use the rule fitted to the
    # tuned points (their rows say so). None tunes every point.
    up_to_flops: PositiveFloat | None = None
    # The point's loss: the parabola's minimum through the best three (in ln lr, of ln loss,
    # as Chinchilla's IsoFLOP parabolas), which averages three trials' noise, or the best trial.
    objective: Literal["parabola", "best"] = "parabola"
    # Once bracketed, one more trial at the parabola's vertex when it lies over a quarter step
    # from the best (a sharper optimum for one more trial; off: 3 trials a point when the
    # centre is right).
    refine: bool = True

    @model_validator(mode="after")
    def _can_bracket(self):
        if self.initial > self.max_trials_per_point:
            raise ValueError(f"tune.initial={self.initial} > tune.max_trials_per_point={self.max_trials_per_point} "
                             "(expected room for the first trials of a point)")
        for name, (lo, hi) in (("lr_range", self.lr_range), ("batch_range", self.batch_range)):
            if hi < lo * self.factor ** 2:
                raise ValueError(f"tune.{name} [{lo:g}, {hi:g}] cannot hold 3 values {self.factor:g}x apart "
                                 f"(expected max >= min * factor^2 = {lo * self.factor ** 2:g})")
        return self


class AdaptiveSpec(_Strict):
    """Region, target and stopping rule of the adaptive planner."""

    min_flops: PositiveFloat
    max_flops: PositiveFloat
    n_range: tuple[ModelSize, ModelSize]
    dn_range: tuple[PositiveFloat, PositiveFloat] = (1.0, 1000.0)
    flop_budget: PositiveFloat  # total training FLOPs the planner may spend
    # Stop when the 80 % interval of ln N_opt (= of ln D_opt) at fit.target_compute is this
    # narrow, and that of ln L* is loss_width narrow.
    target_width: float = Field(0.1, gt=0)
    loss_width: float = Field(0.01, gt=0)
    max_trials: int = Field(500, ge=1)
    initial_trials: int = Field(8, ge=5)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges(self):
        for name, (lo, hi) in (("min_flops/max_flops", (self.min_flops, self.max_flops)),
                               ("n_range", self.n_range), ("dn_range", self.dn_range)):
            if lo > hi:
                raise ValueError(f"adaptive.{name}: minimum {lo:g} > maximum {hi:g} (expected min <= max)")
        return self


# The sections a variant may override, and the trainer each belongs to (None: both).
_OWN = ("gpt", "function", "command")  # trainers that read model and data (the simulator reads world)
VARIANT_SECTIONS = {"model": _OWN, "train": None, "data": _OWN, "world": ("simulated",),
                    "trainer": ("function", "command")}


class VariantSpec(_Strict):
    """One entry of ``variants:``: a name and overrides of the baseline's sections, merged key by
    key into them (nested mappings too) and validated as the baseline is (:meth:`SweepSpec.variants_resolved`)."""

    name: Name
    model: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    world: dict[str, Any] | None = None
    trainer: dict[str, Any] | None = None  # a lab's trainer: its settings or version

    @field_validator("name")
    @classmethod
    def _not_baseline(cls, v: str) -> str:
        if v == BASELINE:
            raise ValueError(f"{BASELINE!r} names the spec without overrides (expected another name)")
        return v


@dataclass(frozen=True)
class Variant:
    """A resolved variant: its name, the whole spec it runs (the baseline's, overridden), and
    ``key``: the settings in which it differs from the baseline that change a trial's result
    (dotted paths), which its trial ids hash (orchestrator.planning.trials.TrialFactory)."""

    name: str
    spec: "SweepSpec"
    key: dict[str, Any]


class SweepSpec(_Strict):
    name: Name
    description: str = ""
    # gpt and simulated are built in; a mapping names a lab's own (workers.trainers).
    trainer: Literal["gpt", "simulated"] | TrainerSpec = "gpt"
    model: ModelSpec = ModelSpec()
    data: DataConfig | None = None  # required for trainer: gpt
    world: WorldConfig | None = None  # required for trainer: simulated
    planner: Literal["static", "adaptive"] = "static"
    sweep: Annotated[Union[IsoFlopSweep, GridSweep], Field(discriminator="kind")] | None = None
    adaptive: AdaptiveSpec | None = None
    train: TrainConfig = TrainConfig()
    resources: ResourceSpec = ResourceSpec()
    results: str = "results"
    # True: ``results`` is a directory mounted at the same path on every node (NFS, a Kubernetes
    # volume), so a submitted job or a multi-node cluster may write there (orchestrator.running.cluster).
    results_shared: bool = False
    fit: FitSpec = FitSpec()
    tune: TuneSpec = TuneSpec()
    # Named overrides of model, train, data (world for trainer: simulated) run on the same design
    # as the baseline, to decide whether a change holds up at scale (orchestrator.fitting.variants).
    variants: list[VariantSpec] = []
    # Task evaluations in every trial (workers.evals): never in trial ids.
    evals: EvalsConfig | None = None
    # Carbon intensity, PUE and prices for the sweep's and the target run's cost (orchestrator.results.cost).
    cost: CostSpec = CostSpec()
    # Live curves in TensorBoard and W&B while trials train (orchestrator.running.tracking).
    tracking: TrackingSpec = TrackingSpec()

    @property
    def external(self) -> bool:
        """A lab's trainer (a function or a command), not a built-in one."""
        return isinstance(self.trainer, TrainerSpec)

    @property
    def eval_task_names(self) -> list[str]:
        """The tasks every trial is evaluated on: the evals: section's, or a simulated world's."""
        if self.evals is not None:
            return [t.name for t in self.evals.tasks]
        return [t.name for t in self.world.task_truths()] if self.world is not None else []

    @property
    def trainer_kind(self) -> str:
        """gpt, simulated, function or command."""
        return self.trainer.kind if isinstance(self.trainer, TrainerSpec) else self.trainer

    @model_validator(mode="after")
    def _model(self):
        check_model(self.model, self.trainer_kind)
        return self

    @model_validator(mode="after")
    def _combinations(self):
        if self.external and self.world is not None:
            raise ValueError("world: only for trainer: simulated (set trainer: simulated, or remove world)")
        if self.trainer == "gpt" and self.data is None:
            raise ValueError("data: required for trainer: gpt (expected builtin, text or tokens)")
        if self.trainer == "gpt" and self.world is not None:
            raise ValueError("world: only for trainer: simulated (set trainer: simulated, or remove world)")
        if self.trainer == "simulated" and self.world is None:
            raise ValueError("world: required for trainer: simulated (expected law or expression)")
        if self.planner == "static" and self.sweep is None:
            raise ValueError("sweep: required for planner: static (expected kind isoflop or grid)")
        if self.planner == "adaptive" and self.adaptive is None:
            raise ValueError("adaptive: required for planner: adaptive (expected min_flops, max_flops, n_range, flop_budget)")
        if self.planner == "static" and self.adaptive is not None:
            raise ValueError("adaptive: only for planner: adaptive (set planner: adaptive, or remove adaptive)")
        return self

    @model_validator(mode="after")
    def _evals(self):
        if self.evals is not None and self.trainer == "simulated":
            raise ValueError("evals: a simulated trial has no model to score tasks with (its world's tasks: "
                             "world.tasks)")
        if self.evals is not None and self.data is not None and self.data.tokens is not None and not self.evals.tokenizer:
            raise ValueError("evals.tokenizer: data.tokens is a token corpus; scoring text tasks needs its "
                             "tokenizer (expected evals.tokenizer: path/to/tokenizer.json)")
        return self

    @model_validator(mode="after")
    def _multi_rank(self):
        """What trains on several ranks (workers.run.distributed), checked before anything runs."""
        r = self.resources
        if not r.multi_rank:
            return self
        if self.trainer_kind == "command":
            raise ValueError("resources.workers: a command trainer starts its own processes (torchrun, srun); it "
                             "runs on one Ray task (expected workers: 1, and the command's own launcher)")
        if self.train.reuses:
            raise ValueError("resources.workers: wsd stems and branches run on one rank for now (expected workers: 1, "
                             "or train.cooldown.reuse: false)")
        if self.trainer == "gpt" and self.model.ffn == "moe":
            raise ValueError("resources.workers: a mixture of experts trains on one rank for now (an expert no token "
                             "of a rank's slice reaches has no gradient there; expected workers: 1)")
        bt = self.train.batch_tokens
        sizes = [r.workers] + [b.workers or r.workers for b in r.by_size]
        if self.trainer == "gpt" and not isinstance(bt, int):
            raise ValueError("train.batch_tokens: a rule or a search gives batches that several ranks may not split "
                             "evenly (expected a fixed number of tokens with resources.workers > 1)")
        if self.trainer == "gpt" and isinstance(bt, int):
            bad = next((k for k in sizes if (bt // self.model.seq_len) % k), None)
            if bad is not None:
                raise ValueError(f"train.batch_tokens={bt} is {bt // self.model.seq_len} sequences of model.seq_len, "
                                 f"which {bad} ranks cannot split evenly (expected a multiple of {bad} x seq_len)")
        return self

    @model_validator(mode="after")
    def _batch_fits(self):
        bt = self.train.batch_tokens
        if self.trainer == "gpt" and isinstance(bt, int) and bt % self.model.seq_len:
            raise ValueError(f"train.batch_tokens={bt} is not a multiple of model.seq_len={self.model.seq_len}")
        return self

    @model_validator(mode="after")
    def _recipe(self):
        tuned = [k for k in ("lr", "batch_tokens") if isinstance(getattr(self.train, k), Tune)]
        rules = [getattr(self.train, k) for k in ("lr", "batch_tokens")]
        rules += [r.tune for r in rules if isinstance(r, Tune)]
        if self.trainer == "simulated" and any(isinstance(r, PowerRule) and r.n == "nonembed" for r in rules):
            raise ValueError("train: a simulated trial has one parameter count: write n: total in its rules")
        if self.external and any(isinstance(r, PowerRule) and r.n == "nonembed" for r in rules):
            ladder = self.model.ladder or []
            missing = next((i for i, r in enumerate(ladder) if r.n_params_nonembed is None), None)
            if not ladder or missing is not None:
                where = f"model.ladder[{missing}] has no n_params_nonembed" if ladder else "a size hook gives one count"
                raise ValueError(f"train: a rule with n: nonembed needs every size's non-embedding N ({where}; "
                                 "expected n: total, or n_params_nonembed on every rung)")
        if self.trainer == "simulated" and (tuned or any(isinstance(r, PowerRule) for r in rules)) \
                and (self.world is None or self.world.hparams is None):
            raise ValueError("train: learning-rate or batch rules change nothing in a world without world.hparams "
                             "(expected a world with a hyperparameter landscape, or fixed numbers)")
        if len(tuned) == 2 and 2 * self.tune.initial - 1 > self.tune.max_trials_per_point:
            raise ValueError(f"tune.max_trials_per_point={self.tune.max_trials_per_point} cannot bracket both lr and "
                             f"batch_tokens (expected at least 2 * tune.initial - 1 = {2 * self.tune.initial - 1})")
        if self.tune.up_to_flops is not None and not tuned:
            raise ValueError("tune.up_to_flops: nothing is tuned (expected train.lr or train.batch_tokens: tune)")
        return self

    @model_validator(mode="after")
    def _variants_valid(self):
        self.variants_resolved()
        return self

    def variants_resolved(self) -> list[Variant]:
        """The baseline and every variant, each as the whole spec it runs; raises ValueError
        with one line naming the variant and the field (duplicate names or settings, unknown
        fields, overrides that change nothing a trial id hashes)."""
        if not self.variants:
            return [Variant(name=BASELINE, spec=self, key={})]
        base = self.model_dump(mode="python", exclude={"variants"})
        out = [Variant(name=BASELINE, spec=self.model_copy(update={"variants": []}), key={})]
        seen_names: dict[str, int] = {}
        for i, v in enumerate(self.variants):
            where = f"variants[{i}] ({v.name})"
            if v.name in seen_names:
                raise ValueError(f"variants[{i}].name: {v.name!r} is also variants[{seen_names[v.name]}]'s "
                                 "(expected unique names)")
            seen_names[v.name] = i
            data = dict(base)
            for section, trainers in VARIANT_SECTIONS.items():
                override = getattr(v, section)
                if override is None:
                    continue
                if trainers is not None and self.trainer_kind not in trainers:
                    raise ValueError(f"{where}: {section}: does not apply to trainer: {self.trainer_kind}")
                data[section] = _merge(section, base.get(section) or {}, override)
            _wsd_only(i, v.train or {}, data["train"])
            try:
                spec = SweepSpec.model_validate(data)
            except ValidationError as err:
                raise ValueError(_one_line(err, where, data)) from None
            key, changed = _variant_key(self, spec)
            if not key:
                what = f"changes only {', '.join(changed)}, which no trial's result depends on" if changed \
                    else "changes nothing"
                raise ValueError(f"{where}: {what} (its trials would be the baseline's; expected an override "
                                 "of a setting that changes what a trial computes)")
            twin = next((o for o in out[1:] if o.key == key), None)
            if twin is not None:
                raise ValueError(f"{where}: the same settings as variant {twin.name!r} "
                                 f"({', '.join(key)}; expected each variant to differ)")
            out.append(Variant(name=v.name, spec=spec, key=key))
        return out

    @property
    def tuned(self) -> tuple[str, ...]:
        """The hyperparameters searched per point: ("lr",), ("lr", "batch_tokens"), ... or ()."""
        return tuple(k for k in ("lr", "batch_tokens") if isinstance(getattr(self.train, k), Tune))

    @property
    def sweep_dir(self) -> str:
        return f"{self.results.rstrip('/')}/{self.name}"


def _merge(section: str, base: dict, override: dict) -> dict:
    """``override`` merged into ``base`` key by key, nested mappings too. Naming one source of
    ``data`` (or one law of ``world``) replaces the baseline's, whichever key it used."""
    exclusive = {"data": ("builtin", "text", "tokens"), "world": ("law", "expression"),
                 "trainer": ("function", "command")}.get(section, ())
    out = dict(base)
    if section == "model" and override.get("ffn") == "dense":  # a dense variant of an MoE baseline
        for k in MOE_FIELDS:
            out.pop(k, None)
    if section == "train" and override.get("schedule") == "cosine":  # a cosine variant of a wsd baseline
        for k in WSD_FIELDS:
            out.pop(k, None)
    if any(k in override for k in exclusive):
        for k in exclusive:
            if k not in override:
                out[k] = None
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge("", out[k], v)
        else:
            out[k] = v
    return out


def _wsd_only(i: int, override: dict, train: dict) -> None:
    """A variant that sets a wsd-only setting itself while its schedule is cosine is refused,
    naming the variant's own field (the baseline's are dropped by :func:`_merge`): TrainConfig's
    own check would name only ``train`` inside the variant."""
    if train.get("schedule") != "cosine":
        return
    for k in WSD_FIELDS:
        if override.get(k) not in (None, False):
            raise ValueError(f"variants[{i}].train.{k}: applies to schedule: wsd (the variant's schedule is cosine; "
                             f"expected schedule: wsd, or no {k})")


def _flat(prefix: str, d) -> dict:
    if isinstance(d, dict):
        return {k: v for key, sub in d.items() for k, v in _flat(f"{prefix}.{key}", sub).items()}
    return {prefix: d}


def _variant_key(base: SweepSpec, spec: SweepSpec) -> tuple[dict, list[str]]:
    """(the settings a variant's trials differ by, as dotted paths: what its ids hash; every
    setting it changes). The model's settings all shape a trial; of train, data and world those
    that :func:`workers.config.identity` hashes, and the data's source (its fingerprint enters
    every id, but a variant on other data must differ from the baseline even if a file is empty)."""
    def settings(s: SweepSpec, hashed: bool) -> dict:
        model = s.model.model_dump(mode="json")
        if model.get("ffn") == "dense":  # the MoE settings shape nothing in a dense model
            for k in MOE_FIELDS:
                model.pop(k, None)
        out = {"model": model}
        if isinstance(s.trainer, TrainerSpec):  # what a lab's trainer's ids hash of it
            out["trainer"] = {"target": s.trainer.target, "version": s.trainer.version, "settings": s.trainer.settings}
        for name in ("train", "data", "world"):
            section = getattr(s, name)
            if section is not None:
                out[name] = identity(section) if hashed else section.model_dump(mode="json")
        if hashed and s.data is not None:
            out["data"]["source"] = s.data.describe()
        return _flat("", out)

    def diff(hashed: bool) -> dict:
        a, b = settings(base, hashed), settings(spec, hashed)
        return {k.lstrip("."): _jsonable(b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    return diff(True), list(diff(False))


def _jsonable(v):
    return v.model_dump(mode="json") if isinstance(v, BaseModel) else list(v) if isinstance(v, tuple) else v


# pydantic's names of the branches of a recipe setting (a number, a PowerRule, a Tune)
_RECIPE_BRANCHES = ("constrained-float", "constrained-int", "PowerRule", "Tune")


def _loc(loc: tuple) -> str:
    # drop union tags: the sweep kinds, and pydantic's names of a union's branches (list[...])
    drop = ("isoflop", "grid", "LawConfig", "TrainerSpec") + _RECIPE_BRANCHES
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int) and parts:  # a list's index: variants[0]
            parts[-1] += f"[{p}]"
        elif p not in drop and "[" not in str(p):
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def _recipe_branch(e: dict, data: object) -> int:
    """How many of the recipe-setting unions on the error's path it takes a branch other than
    the one the value was written as (a mapping with ``tune``: Tune; another mapping: PowerRule;
    anything else: a number): the error to report has 0."""
    value, misses = data, 0
    for part in e["loc"]:
        if part in _RECIPE_BRANCHES:
            meant = ("Tune" if "tune" in value else "PowerRule") if isinstance(value, dict) else "number"
            misses += not (part == meant or (meant == "number" and part.startswith("constrained")))
            continue
        value = value.get(part) if isinstance(value, dict) else None
    return misses


def _valid_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] | None = SweepSpec
    for part in loc[:-1]:
        if part in ("isoflop", "grid"):
            model = IsoFlopSweep if part == "isoflop" else GridSweep
            continue
        if part in ("PowerRule", "Tune", "TrainerSpec"):
            model = {"PowerRule": PowerRule, "Tune": Tune, "TrainerSpec": TrainerSpec}[part]
            continue
        if isinstance(part, int):  # an index into a list of models (variants)
            continue
        if model is None:
            return []
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field else None
    return sorted(model.model_fields) if model else []


def _model_in(ann) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``DataConfig | None``."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    args = get_args(ann)
    if len(args) == 1:  # list[Model]
        return _model_in(args[0])
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 else None


def _one_line(err: ValidationError, source: str, data: object = None) -> str:
    errors = sorted(err.errors(), key=lambda x: _recipe_branch(x, data))
    # A mapping where a word could be (trainer: {function: ...}): the mapping's branch says what is wrong.
    errors = [x for x in errors if not (x["type"] == "literal_error" and isinstance(x["input"], dict))] or errors
    # A value that fails one branch of a union by type (a map where a list could be) is
    # reported by the branch its type matches, whose error says what is wrong in it.
    e = next((x for x in errors if x["type"] not in ("list_type", "dict_type")), errors[0])
    where = _loc(e["loc"])
    if e["loc"] and e["loc"][-1] in _RECIPE_BRANCHES and isinstance(e["input"], str):
        return (f"{source}: {where}: expected a number, a power rule {{coef, n_exp, d_exp}}, tune, or "
                f"{{tune: number or rule}} (got {e['input']!r})")
    if e["type"] == "extra_forbidden":
        keys = _valid_keys(e["loc"])
        return f"{source}: {where}: unknown key (valid keys: {', '.join(keys)})"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "missing":
        return f"{source}: {where}: required field is missing"
    if e["type"] == "model_type":  # pydantic names the Python class; a user wrote a YAML section
        return f"{source}: {where}: expected a mapping of settings (got {e['input']!r})"
    if isinstance(e["input"], (dict, list)) and e["type"] in ("value_error", "union_tag_invalid"):
        # Cross-field checks: the message names the fields; echoing the whole mapping is noise.
        return f"{source}: {msg}" if not e["loc"] else f"{source}: {where}: {msg}"
    return f"{source}: {where}: {msg} (got {e['input']!r})"


def parse_spec(data: object, source: str = "spec") -> SweepSpec:
    """Validate an already-parsed mapping; raises UserError with one line."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a YAML mapping at the top level (got {type(data).__name__})")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as err:
        raise UserError(_one_line(err, source, data)) from None


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; raises UserError with one line on any problem."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: spec file not found (expected a YAML file, e.g. specs/quickstart.yaml)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: {where}: invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected UTF-8 YAML)") from None
    spec = parse_spec(data, str(path))
    if isinstance(spec.trainer, TrainerSpec):
        # A lab's trainer runs in (and imports from) the spec's directory unless the spec says
        # otherwise (a relative trainer.workdir is relative to the spec's directory).
        base = p.resolve().parent
        where = (base / spec.trainer.workdir).resolve() if spec.trainer.workdir else base
        spec = spec.model_copy(update={"trainer": spec.trainer.model_copy(update={"workdir": where.as_posix()})})
    if spec.evals is not None:  # task files and the tokenizer: relative to the spec's directory
        spec = spec.model_copy(update={"evals": spec.evals.with_paths(p.resolve().parent.as_posix())})
    return spec

