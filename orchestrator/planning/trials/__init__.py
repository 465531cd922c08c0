"""From a validated spec to concrete trials with content-hashed ids.

A trial id is the first 16 hex digits of SHA-256 over the canonical JSON of the fields that
change its result: trainer version, exact model shape (or N for a simulated world), tokens,
seed, the training settings that affect optimisation, and the data's content fingerprint and
split (or the world's definition; for a lab's trainer, its import path or command, version
and settings, and the size's settings and N). Which settings those are is declared on the settings
themselves (:func:`workers.config.identity`); :meth:`TrialFactory.payload` assembles the
rest. Sweep name, budget label, resources and results path do not enter it, so re-running a
spec (or a second spec that happens to contain the same point) never trains a finished point
again (after Marin's output paths, named by a hash of their versioned config).

:class:`TrialFactory` is the one place a point (target N, tokens) becomes a trial; static
sweeps (:func:`plan_trials`) and the adaptive planner both use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass

from orchestrator.errors import UserError
from orchestrator.spec import GridSweep, IsoFlopSweep, SweepSpec, Variant
from orchestrator.planning.trials.sizes import Size, size_mapping
from workers.gpt.arch import ShapeRule, shape_identity
from workers.gpt.data import DataError, load_corpus
from workers.evals.suite import check_suite
from workers.evals.tasks import TaskError
from workers.flops import tokens_for_budget
from workers.config import BASELINE, BATCH_DEFAULT, LR_DEFAULT, PowerRule, TrialConfig, Tune, identity
from workers.schedule import cooldown_start

__all__ = ["TRAINER_VERSION", "content_id", "Hparams", "TrialFactory", "plan_trials", "shared_ladder", "trial_name",
           "variant_id"]

log = logging.getLogger(__name__)

# Bump when a change to workers/ changes what a trial computes; old results then stop matching.
TRAINER_VERSION = "gpt-1"
SIMULATOR_VERSION = "sim-1"


def content_id(payload: dict) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def variant_id(variant: Variant) -> str:
    """A variant's identity: the hash of the settings it changes (Variant.key), never its name, so
    a renamed variant keeps it. Its rows record it (orchestrator.results.label_variants) and its
    adaptive planner's journal is named by it (orchestrator.planning.variants.journal_name)."""
    return content_id(variant.key)


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def trial_name(n_params: int, tokens: int, budget: float, seed: int, lr: float | None = None) -> str:
    """Readable name shown in the Ray dashboard, e.g. 'N=24.7k D=6.76M C=1e+12 s0' (with
    ' lr=3e-03' for a trial of a per-point search)."""
    c = f" C={budget:.2g}" if budget > 0 else ""
    hp = f" lr={lr:.2g}" if lr is not None else ""
    return f"N={_si(n_params)} D={_si(tokens)}{c} s{seed}{hp}"


def _rule_n(rule: PowerRule, n: int, nonembed: int | None) -> float:
    """N as ``rule`` counts it: the size's non-embedding parameters where it says so and they are
    known (a simulated trial has only its total, ``n``)."""
    return nonembed if nonembed and rule.n == "nonembed" else n


@dataclass(frozen=True)
class Hparams:
    """A trial's learning rate and batch (tokens), and where they came from (TrialConfig.recipe)."""

    lr: float
    batch_tokens: int
    recipe: str = "fixed"


@dataclass(frozen=True)
class _Point:
    """A design point as planned, before its hyperparameters: what a trial with other hyperparameters is remade from."""

    n_target: float
    d_target: float
    budget: float
    seed: int
    where: str


class TrialFactory:
    """Makes trials for one spec: opens its data (or world) once, then hashes points into trials.

    Raises UserError if the data cannot be used, before anything is written. ``vocab_size``
    plans without opening the data, for an estimate where it cannot be read (data that only the
    cluster's nodes have, orchestrator.planning.estimate.check_submission): such trials' ids lack the
    data's fingerprint, so they are not the ones the sweep will run.
    """

    def __init__(self, spec: SweepSpec, cache_dir: str = "", vocab_size: int | None = None,
                 variant: Variant | None = None):
        self.variant = variant or Variant(BASELINE, spec, {})
        spec = self.variant.spec
        self.spec = spec
        self.train, self.data, self.world = spec.train, spec.data, spec.world
        self.cache_dir = cache_dir
        self.results = spec.sweep_dir
        self.resources = spec.resources
        self.usage = {"peak_flops": spec.resources.peak_flops, "watts": spec.resources.watts}
        if spec.tracking.active:  # live curves: trials stream their rows to the driver's hub
            from orchestrator.spec.tracking import hub_name

            self.usage |= {"stream": hub_name(spec.name, spec.sweep_dir), "stream_every_s": spec.tracking.every_s}
        self.runner = spec.trainer if spec.external else None
        if spec.trainer == "simulated":
            self.vocab = 0
            self.fingerprint = content_id({"world": identity(self.world)})
        elif self.runner is not None:
            self.vocab, self.fingerprint = 0, "external"
            _check_trainer(self.runner, spec.model.ladder)
        else:
            if vocab_size is not None:
                self.vocab, self.fingerprint = vocab_size, "not-opened"
            else:
                try:
                    corpus = load_corpus(self.data, cache_dir)
                except DataError as e:
                    raise UserError(str(e)) from None
                self.vocab, self.fingerprint = corpus.vocab_size, corpus.fingerprint
        rel = os.path.relpath(self.runner.workdir) if self.runner is not None and self.runner.workdir else ""
        self.workdir_rel = "" if rel.startswith("..") else rel  # for nodes where the absolute path is not
        m = spec.model
        moe = m.ffn == "moe"
        self.rule = ShapeRule(head_dim=m.head_dim, aspect_ratio=m.aspect_ratio, max_layers=m.max_layers,
                              experts=m.experts if moe else 0, top_k=m.top_k if moe else 0, family=m.family)
        self.moe_aux_loss = m.aux_loss if moe else 0.0
        self.sizes = size_mapping(spec, self.vocab, self.rule)
        if spec.adaptive is not None and self.runner is not None:  # a hook's answers checked before anything runs
            for n in spec.adaptive.n_range:
                self.sizes(n)
        self._settings_id = self._settings_payload()  # the same for every trial of the spec
        self.mup_base_width = m.base_width if m.parametrization == "mup" else 0
        self.landscape = self.world is not None and self.world.hparams is not None
        self.evals = spec.evals
        if self.evals is not None and vocab_size is None:  # tasks read or made once, here: one line if they cannot be
            try:
                check_suite(self.evals, self.data, cache_dir)
            except TaskError as e:
                raise UserError(str(e)) from None
        self._points: dict[str, _Point] = {}

    def placement(self, n_params: float) -> dict:
        """Where a trial of ``n_params`` runs: its ranks, and the CPUs (Ray's request, and the
        threads it trains with) and GPUs of each (resources, or the resources.by_size rule its N
        reaches). Not in the trial id."""
        r = self.resources.for_size(n_params)
        return {"cpus": float(r["cpus"]), "threads": max(1, int(r["cpus"])), "device": "cuda" if r["gpus"] > 0 else "cpu",
                "gpus": float(r["gpus"]), "workers": r["workers"], "strategy": r["strategy"]}

    def _settings_payload(self) -> dict:
        """The part of every trial id that the spec's settings fix (version, train, data or world;
        a lab's trainer: its identity, the import path or command, its version and settings)."""
        if self.runner is not None:
            r = self.runner
            data = {} if self.data is None else {"data": self.data.model_dump(mode="json")}
            return ({"trainer": {"kind": r.kind, "target": r.target, "version": r.version, "settings": r.settings},
                     "train": identity(self.train)} | data | self._variant_payload())
        if self.world is not None:
            return {"version": SIMULATOR_VERSION, "world": self.fingerprint} | self._variant_payload()
        data = identity(self.data) | {"fingerprint": self.fingerprint}
        # eval_tokens is a data: setting hashed with the training settings: that is where the
        # ids of finished trials have it, and moving it would train them again. lr and batch
        # may be rules here; every trial's own numbers replace them (payload).
        train = identity(self.train) | {"eval_tokens": data.pop("eval_tokens")}
        return {"version": TRAINER_VERSION, "train": train, "data": data} | self._variant_payload()

    def _variant_payload(self) -> dict:
        """A variant's trials hash the settings it changes (never its name, so renaming it trains
        nothing again); the baseline's ids are those of a spec without variants."""
        return {"variant": self.variant.key} if self.variant.key else {}

    def round_tokens(self, d: float, where: str, bt: int) -> int:
        if self.spec.trainer == "simulated":  # no optimiser steps in a simulated world
            if d < 1:
                raise UserError(f"{where}: gives {d:.3g} tokens (expected at least 1)")
            return int(round(d))
        steps = round(d / bt)
        if steps < self.spec.train.min_steps:
            raise UserError(
                f"{where}: gives {steps} optimiser steps of {bt} tokens "
                f"(expected at least train.min_steps={self.spec.train.min_steps}; raise the budget or lower the size)"
            )
        return steps * bt

    def size_for(self, n_target: float) -> Size:
        """The model size for a target parameter count (orchestrator.planning.trials.sizes)."""
        return self.sizes(n_target)

    def make(self, n_target: float, tokens: float | None, budget: float, seed: int, where: str,
             hparams: Hparams | None = None) -> TrialConfig:
        """A trial at ``n_target`` parameters and ``tokens`` (or C / 6N tokens of ``budget``), with
        ``hparams`` or (default) the spec's recipe at that point: its numbers, its rules, or the
        centre of its searches (:meth:`recipe_at`)."""
        size = self.size_for(n_target)
        n, shape = size.n_params, size.shape
        d = tokens if tokens is not None else tokens_for_budget(budget, n)
        hp = hparams or self.recipe_at(size, d)
        rounded = self.round_tokens(d, where, hp.batch_tokens)
        point = _Point(n_target, d, budget, seed, where)
        point_id = content_id(self.point_payload(size, d, seed))
        self._points.setdefault(point_id, point)
        train = self.train.model_copy(update={"lr": hp.lr, "batch_tokens": hp.batch_tokens})
        searched = hparams is not None and hp.recipe == "tune"  # a trial of a point's search
        payload = self.payload(size, rounded, seed, train)
        stem_id, start = "", 0
        if train.schedule == "wsd":
            stem_id, trial_id = self._wsd_ids(payload)
            if train.reuses:
                start = cooldown_start(rounded // (1 if self.spec.trainer == "simulated" else hp.batch_tokens), train)
        else:
            trial_id = content_id(payload)
        return TrialConfig(
            trial_id=trial_id,
            name=trial_name(n, rounded, budget, seed, hp.lr if searched else None),
            sweep=self.spec.name, shape=shape, tokens=rounded, seed=seed, budget=budget, train=train,
            data=self.data, results=self.results, world=self.world, **self.placement(n),
            cache_dir=self.cache_dir, size_n=n, trainer=self.spec.trainer_kind, point_id=point_id,
            recipe=hp.recipe, mup_base_width=self.mup_base_width, stem_id=stem_id, start_step=start,
            moe_aux_loss=self.moe_aux_loss if shape is not None else 0.0,
            variant=self.variant.name, variant_id=variant_id(self.variant), runner=self.runner,
            model=size.settings if self.runner is not None else None, size_name=size.name,
            size_nonembed=size.n_params_nonembed or 0, workdir=self.runner.workdir if self.runner is not None else "", workdir_rel=self.workdir_rel,
            evals=self.evals, **self.usage,
        )

    @staticmethod
    def _wsd_ids(payload: dict) -> tuple[str, str]:
        """(stem id, trial id) of a wsd trial: the stem hashes everything but D and what only the
        cooldown reads (its shape and length, min_lr_ratio), so every D of a shape and recipe
        shares it; the trial hashes its stem, its D and its cooldown. A branch and the same
        trial trained whole compute the same thing, so they share the id."""
        cooldown = {"cooldown": payload.get("cooldown"), "min_lr_ratio": payload.get("min_lr_ratio")}
        stem = {k: v for k, v in payload.items() if k not in ("tokens", "cooldown", "min_lr_ratio")}
        if "train" in payload:
            train = payload["train"]
            cooldown = {"cooldown": train["cooldown"], "min_lr_ratio": train["min_lr_ratio"]}
            stem["train"] = {k: v for k, v in train.items() if k not in ("cooldown", "min_lr_ratio")}
        stem_id = content_id(stem | {"role": "stem"})
        return stem_id, content_id({"stem": stem_id, "tokens": payload["tokens"], **cooldown})

    def with_hparams(self, trial: TrialConfig, hparams: Hparams) -> TrialConfig:
        """The trial of the same design point as ``trial`` with other hyperparameters. Raises
        UserError when they leave the point too few optimiser steps (train.min_steps)."""
        p = self._points[trial.point_id]
        return self.make(p.n_target, p.d_target, p.budget, p.seed, p.where, hparams)

    def recipe_at(self, size: Size, d: float) -> Hparams:
        """The spec's learning rate and batch at (N, D): a number as it is, a rule evaluated,
        a search at its centre (the number, the rule, or the default it is written around)."""
        lr, lr_how = self._resolve(self.train.lr, size, d, LR_DEFAULT)
        bt, bt_how = self._resolve(self.train.batch_tokens, size, d, BATCH_DEFAULT)
        how = {lr_how, bt_how}
        recipe = "tune" if "tune" in how else "rule" if "rule" in how else "fixed"
        return Hparams(lr, self.round_batch(bt), recipe)

    def _resolve(self, setting, size: Size, d: float, default: float) -> tuple[float, str]:
        how = "fixed"
        if isinstance(setting, Tune):
            setting, how = (default if setting.tune is None else setting.tune), "tune"
        if isinstance(setting, PowerRule):
            return setting.at(_rule_n(setting, size.n_params, size.n_params_nonembed), d), "rule" if how == "fixed" else how
        return float(setting), how

    def round_batch(self, batch: float) -> int:
        """A batch in whole sequences (GPT; at least one), or whole tokens (simulated, a lab's trainer)."""
        if self.spec.trainer != "gpt":
            return max(1, int(round(batch)))
        seq = self.spec.model.seq_len
        return max(1, int(round(batch / seq))) * seq

    def n_rule(self, trial: TrialConfig, rule: PowerRule) -> float:
        """The N a rule is evaluated at for ``trial`` (its non-embedding count where the rule says so)."""
        nonembed = trial.shape.n_params_nonembed if trial.shape is not None else trial.size_nonembed
        return _rule_n(rule, trial.n_params, nonembed)

    def planned(self, trial: TrialConfig) -> _Point:
        """The design point ``trial`` was made for, as planned: ``make(p.n_target, p.d_target,
        p.budget, p.seed, p.where)`` makes its point again."""
        return self._points[trial.point_id]

    def d_target(self, trial: TrialConfig) -> float:
        """The tokens planned for ``trial``'s point, before rounding to whole batches."""
        return self._points[trial.point_id].d_target

    def payload(self, size: Size, tokens: int, seed: int, train=None) -> dict:
        """What the trial id of a trial of ``size`` at (tokens, seed) with ``train`` (default: the
        spec's, with numbers) hashes."""
        settings = self._settings_id
        shape = size.shape
        if train is not None and self.world is None:
            settings = settings | {"train": settings["train"] | {"lr": train.lr, "batch_tokens": train.batch_tokens}}
        point = {"shape": shape_identity(shape)} if shape is not None else {"n_params": size.n_params}
        if self.runner is not None:  # a lab's model: its settings, as its size mapping gave them
            point |= {"model": size.settings}
        if self.landscape and train is not None:  # the world's loss depends on them only then
            point |= {"lr": train.lr, "batch_tokens": train.batch_tokens}
        if self.mup_base_width:  # standard-parametrisation ids stay as they were
            point |= {"mup_base_width": self.mup_base_width}
        if shape is not None and shape.experts:  # so do dense ones (shape_identity)
            point |= {"moe_aux_loss": self.moe_aux_loss}
        if self.world is not None and self.train.schedule == "wsd":  # the simulated schedule effect
            point |= {"schedule": "wsd", "cooldown": self.train.cooldown.model_dump(mode="json"),
                      "min_lr_ratio": self.train.min_lr_ratio}
        return settings | point | {"tokens": int(tokens), "seed": int(seed)}

    def point_payload(self, size: Size, d: float, seed: int) -> dict:
        """What a design point's id hashes: the trial's payload without lr and batch, with the
        tokens as planned (a batch search rounds them to each batch's whole steps)."""
        payload = self.payload(size, int(round(d)), seed)
        if "train" in payload:
            payload["train"] = {k: v for k, v in payload["train"].items() if k not in ("lr", "batch_tokens")}
        return payload | {"point": 1}


def _check_trainer(runner, ladder) -> None:
    """A lab's trainer must load before anything runs: UserError naming the field otherwise."""
    from workers.trainers.interface import TrainerLoadError
    from workers.trainers.loading import import_function

    try:
        if runner.kind == "function":
            import_function(runner.function, runner.workdir)
        else:
            from workers.trainers.command import check_command

            check_command(runner, runner.workdir, [r.settings for r in ladder] if ladder is not None else None)
    except TrainerLoadError as e:
        text = str(e)
        raise UserError(text if text.startswith("trainer.") else f"trainer.{runner.kind}: {text}") from None


def shared_ladder(sizes: dict[float, list[float]]) -> dict[float, list[float]]:
    """Each budget's model sizes snapped to one ladder of sizes shared by all budgets, so that a
    wsd stem serves every budget its shape appears in (orchestrator.running.reuse).

    A spec that already repeats sizes across budgets has drawn its ladder: a size moves only to
    another budget's size within sqrt(s) of it, s being the closest spacing of two sizes in any
    one budget, the largest budget's (its points are the dearest) first. A spec whose budgets
    share no size (sizes around each budget's optimum, as shared/BENCHMARK.md's grid) is snapped
    to the geometric ladder of ratio s through the largest budget's smallest size: the fewest
    stems for its range. Either way no two sizes of a budget land on one rung (the second keeps
    its size), and no size moves by more than sqrt(s): an IsoFLOP parabola needs sizes around
    the optimum, not these exact ones."""
    ratios = [b / a for v in sizes.values() for a, b in zip(sorted(v), sorted(v)[1:]) if a > 0 and b > a]
    step = math.log(min(ratios, default=4.0))
    seen = [x for v in sizes.values() for x in set(v)]
    lattice = len(seen) == len(set(seen))  # no size in two budgets
    top = max(sizes)
    anchor = min(sizes[top])
    rungs: list[float] = []
    out = {}
    for budget in sorted(sizes, reverse=True):
        used, snapped = set(), []
        for size in sizes[budget]:
            if lattice:
                near = anchor * math.exp(step * round(math.log(size / anchor) / step))
            else:
                near = min(rungs, key=lambda r: abs(math.log(r / size)), default=size)
            if near in used or abs(math.log(near / size)) >= 0.5 * step + 1e-12:
                near = size
            if near not in rungs:
                rungs.append(near)
            used.add(near)
            snapped.append(near)
        out[budget] = snapped
    return out


def plan_trials(spec: SweepSpec, factory: TrialFactory) -> list[TrialConfig]:
    """Every trial of a static (grid or IsoFLOP) sweep, in submission order (largest compute
    first, so the longest trials start early and the tail of the sweep is short), duplicates
    removed."""
    sw = spec.sweep
    trials: dict[str, TrialConfig] = {}

    def add(t: TrialConfig) -> None:
        if t.trial_id in trials:
            where = "" if t.variant == BASELINE else f" of variant {t.variant}"
            log.warning("%s%s appears twice in the sweep (sizes map to the same shape); running it once", t.name, where)
        trials.setdefault(t.trial_id, t)

    if isinstance(sw, GridSweep):
        for size in sw.model_sizes:
            for d in sw.tokens:
                for s in sw.seeds:
                    add(factory.make(size, d, 0.0, s, f"sweep.tokens ({d:g})"))
    elif isinstance(sw, IsoFlopSweep):
        sizes = {b: sw.sizes_for(b) for b in sw.budgets}
        if spec.train.reuses:  # shapes shared across budgets, so each stem serves several
            sizes = shared_ladder(sizes)
        for budget in sw.budgets:
            for size in sizes[budget]:
                for s in sw.seeds:
                    add(factory.make(size, None, budget, s, f"sweep.budgets ({budget:g} FLOPs for model size {size:g})"))
    return sorted(trials.values(), key=lambda t: -t.n_params * t.tokens)
