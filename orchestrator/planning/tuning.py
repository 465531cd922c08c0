"""Per-point hyperparameter searches: the recipe re-tuned at every scale.

A frontier measured with one learning rate is that recipe's frontier, not the model family's:
the optimal learning rate follows a power law in N and D and the optimal batch one in D (Li et
al. 2025, "Predictable Scale: Part I, Step Law"), and tuning them per scale moves the fitted
exponents (Porian et al. 2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language
Models"). A spec that writes ``train.lr: tune`` (or ``batch_tokens: tune``) gets, at each
design point, a :class:`PointSearch`:

1. ``tune.initial`` trials log-spaced ``tune.factor`` apart around the centre (the spec's
   number or rule at the point; once enough points are tuned, the rule fitted to them: a
   shared prior, so later searches start near their optimum);
2. while the best is at an end of what was tried, one more trial beyond that end (the search
   extends until the optimum is bracketed); a diverged trial (NaN loss: a learning rate too
   high) is data that bounds the search, never its best;
3. once bracketed, one trial at the vertex (unless ``tune.refine: false``) of the parabola in ln(value) of ln(loss)
   through the best three, when it is more than a quarter step from the best (Chinchilla's
   IsoFLOP parabolas, in the hyperparameter);
4. with two hyperparameters, one axis at a time (lr at the centre batch, then the batch at
   the best lr, then lr again if the batch moved): the basin is tilted (a larger batch wants
   a larger learning rate), so one pass per axis would miss the joint optimum;
all within ``tune.max_trials_per_point`` and ``tune.lr_range``/``batch_range``.

The point's loss is the parabola's minimum through the best three of its last axis
(``tune.objective: parabola``, averaging three trials' noise; ``best`` takes the best trial).
Every trial keeps its own row; trials of one point share ``point_id``
(:meth:`TrialFactory.point_payload`), so ``status`` and the fit group them.

:class:`TuningPlanner` wraps any planner (static or adaptive): the inner planner proposes
design points as if untuned; each becomes a search; when a search ends, the inner planner is
told the point with its optimal loss and the FLOPs the search spent. Ladder mode
(``tune.up_to_flops``) tunes only points up to that compute and runs the others once at the
rule fitted to the tuned ones, recorded as ``recipe = "ladder: ..."`` in their rows.

Searches are deterministic given their centre and their results, so a resumed sweep proposes
the same trials again and the driver answers the finished ones from the store. What is not
deterministic given results is decided once and recorded (orchestrator.planning.search_log): a
search's centre, which a learning planner takes from the rule fitted to the searches finished
so far, and a ladder point's values, from the rule fitted to the tuned points. A resumed planner
rebuilds the searches that finished before it from those records and the stored rows, so its
rules, its later centres and its summary are those of an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.errors import FitError, UserError
from orchestrator.fitting.hparams.laws import MIN_POINTS, fit_power_law
from orchestrator.fitting.hparams.optima import parabola
from orchestrator.planning.protocol import Planner
from orchestrator.planning.search_log import PointRecord, SearchLog
from orchestrator.planning.trials import Hparams, TrialFactory
from orchestrator.spec import SweepSpec, TuneSpec
from workers.config import PowerRule, TrialConfig, TrialResult
from workers.flops import train_flops
from workers.store import ResultStore, TrialStatus

__all__ = ["SearchResult", "PointSearch", "TuningPlanner", "fit_rule"]

log = logging.getLogger(__name__)

AXES = ("lr", "batch_tokens")
REFINE_FROM = 0.25  # a vertex this many steps (of tune.factor) from the best earns one more trial


def fit_rule(points: list["SearchResult"], axis: str, n_kind: str) -> PowerRule | None:
    """The power rule fitted by least squares in logs to the bracketed points' optima
    (orchestrator.fitting.hparams.laws.fit_power_law, without intervals), or None where the points
    cannot carry one."""
    pts = [p for p in points if p.bracketed and getattr(p, axis) is not None]
    try:
        law = fit_power_law([p.n_rule for p in pts], [p.d for p in pts], [getattr(p, axis) for p in pts],
                            "lr" if axis == "lr" else "batch", n_boot=0, n_kind=n_kind)
    except FitError:
        return None
    return _rule(law)


@dataclass
class SearchResult:
    """The outcome of one point's search."""

    point_id: str
    n: int
    n_rule: float  # N as the recipe's rules count it (non-embedding for a GPT by default)
    d: float
    lr: float
    batch_tokens: int | None  # the searched batch's optimum; None when the batch was not searched
    loss: float  # nan when no trial of the point finished with a finite loss
    bracketed: bool  # every searched axis had its best between two tried values
    trials: int
    flops: float  # spent by the point's trials
    budget: float = 0.0  # the point's compute label (0 for a grid point)


@dataclass
class _Tried:
    lr: float
    batch_tokens: int
    loss: float | None = None  # None while running; nan: diverged or failed


@dataclass
class PointSearch:
    """One design point's search (module docstring). ``propose`` gives trials to run now,
    ``observe`` takes each one's result; ``done`` once the search has nothing more to try."""

    base: TrialConfig  # the point as the inner planner proposed it
    centre: Hparams
    axes: tuple[str, ...]
    cfg: TuneSpec
    factory: TrialFactory
    tried: dict[str, _Tried] = field(default_factory=dict)  # trial id -> what it tried
    blocked: set[tuple[float, int]] = field(default_factory=set)  # (lr, batch) values that cannot run
    phase: int = 0  # index into the axis cycle
    refined: set[int] = field(default_factory=set)  # phases that spent their one refinement trial
    unbracketed: set[str] = field(default_factory=set)
    flops: float = 0.0
    done: bool = False
    n_kind: str = "nonembed"  # the N of the recipe's rules (PowerRule.n)

    def __post_init__(self):
        self.current = {"lr": self.centre.lr, "batch_tokens": self.centre.batch_tokens}
        self._cycle = list(self.axes) + (["lr"] if len(self.axes) == 2 else [])

    # -- protocol -----------------------------------------------------------------------------
    def propose(self) -> list[TrialConfig]:
        if self.done or any(t.loss is None for t in self.tried.values()):
            return []
        while self.phase < len(self._cycle):
            values = self._next_values(self._cycle[self.phase])
            if values is None:  # this axis is settled: the next one starts at the best so far
                self._settle(self._cycle[self.phase])
                self.phase += 1
                continue
            trials = [t for t in (self._trial(v) for v in values) if t is not None]
            if trials:
                return trials
        self.done = True
        return []

    def observe(self, trial: TrialConfig, result: TrialResult | None) -> None:
        t = self.tried[trial.trial_id]
        ok = result is not None and result.status is TrialStatus.COMPLETED and math.isfinite(result.eval_loss)
        t.loss = float(result.eval_loss) if ok else math.nan
        self.flops += train_flops(trial.n_params, trial.tokens)

    def optimum(self) -> SearchResult:
        finite = [t for t in self.tried.values() if t.loss is not None and math.isfinite(t.loss)]
        b = self.base
        n_rule = self.factory.n_rule(b, PowerRule(coef=1.0, n=self.n_kind))
        if not finite:
            return SearchResult(b.point_id, b.n_params, n_rule, self.factory.d_target(b), self.current["lr"], None,
                                math.nan, False, len(self.tried), self.flops, b.budget)
        best = min(finite, key=lambda t: t.loss)
        lr, lr_loss = self._vertex("lr", best) if "lr" in self.axes else (best.lr, best.loss)
        batch, batch_loss = self._vertex("batch_tokens", best) if "batch_tokens" in self.axes else (None, best.loss)
        if self.cfg.objective == "best":
            loss = best.loss
        else:  # the minimum of the last axis searched, whose line runs through the best trial
            loss = lr_loss if self._cycle[-1] == "lr" else batch_loss
        return SearchResult(b.point_id, b.n_params, n_rule, self.factory.d_target(b), lr,
                            int(round(batch)) if batch is not None else None, loss,
                            not self.unbracketed, len(self.tried), self.flops, b.budget)

    # -- internals ----------------------------------------------------------------------------
    def _line(self, axis: str, fixed: dict) -> list[_Tried]:
        """Tried values along ``axis`` with the other hyperparameter at ``fixed``'s value."""
        other = [a for a in AXES if a != axis][0]
        return sorted((t for t in self.tried.values() if _same(getattr(t, other), fixed[other])),
                      key=lambda t: getattr(t, axis))

    def _next_values(self, axis: str) -> list[float] | None:
        """Values of ``axis`` to try next at the current other value, or None when settled."""
        f, line = self.cfg.factor, self._line(axis, self.current)
        centre = self.current[axis]
        if not line:
            m = self.cfg.initial
            return [centre * f ** (k - (m - 1) // 2) for k in range(m)]
        if len(self.tried) >= self.cfg.max_trials_per_point:
            self._unbracketed_unless_interior(axis, line)
            return None
        finite = [t for t in line if math.isfinite(t.loss)]
        if not finite:  # everything diverged (or failed): step below the lowest
            return self._beyond(axis, getattr(line[0], axis) / f)
        best = min(finite, key=lambda t: t.loss)
        i = line.index(best)
        if i == len(line) - 1:
            return self._beyond(axis, getattr(best, axis) * f)
        if i == 0:
            return self._beyond(axis, getattr(best, axis) / f)
        lo, hi = line[i - 1], line[i + 1]
        if not math.isfinite(hi.loss) or not math.isfinite(lo.loss):
            # Bounded by a diverged neighbour: halve the gap on that side once, then settle.
            edge = hi if not math.isfinite(hi.loss) else lo
            mid = math.sqrt(getattr(best, axis) * getattr(edge, axis))
            if abs(math.log(getattr(edge, axis) / getattr(best, axis))) > 0.6 * math.log(f):
                return [mid] if self._can_try(axis, mid) else None
            return None
        v = _vertex_of([lo, best, hi], axis)
        if v is None or self.cfg.objective != "parabola" or not self.cfg.refine:
            return None
        target = math.exp(v[0])
        nearest = min(abs(math.log(getattr(t, axis) / target)) for t in line)
        if self.phase not in self.refined and nearest > REFINE_FROM * math.log(f) and self._can_try(axis, target):
            self.refined.add(self.phase)
            return [target]
        return None

    def _beyond(self, axis: str, value: float) -> list[float] | None:
        if self._can_try(axis, value):
            return [value]
        self.unbracketed.add(axis)  # the best sits at a bound of the range (or of the steps)
        return None

    def _unbracketed_unless_interior(self, axis: str, line: list[_Tried]) -> None:
        finite = [t for t in line if math.isfinite(t.loss)]
        if not finite or min(finite, key=lambda t: t.loss) in (line[0], line[-1]):
            self.unbracketed.add(axis)

    def _can_try(self, axis: str, value: float) -> bool:
        lo, hi = self.cfg.lr_range if axis == "lr" else self.cfg.batch_range
        if not lo <= value <= hi or len(self.tried) >= self.cfg.max_trials_per_point:
            return False
        hp = dict(self.current, **{axis: value})
        if axis == "batch_tokens":
            hp[axis] = self.factory.round_batch(value)
        return not any(_same(t.lr, hp["lr"]) and t.batch_tokens == hp["batch_tokens"] for t in self.tried.values()) \
            and (hp["lr"], hp["batch_tokens"]) not in self.blocked

    def _trial(self, value_or_none) -> TrialConfig | None:
        axis = self._cycle[self.phase]
        hp = dict(self.current, **{axis: value_or_none})
        hp["batch_tokens"] = self.factory.round_batch(hp["batch_tokens"])
        try:
            trial = self.factory.with_hparams(self.base, Hparams(hp["lr"], hp["batch_tokens"], "tune"))
        except UserError:  # too few optimiser steps at this batch: a bound of the search
            self.blocked.add((hp["lr"], hp["batch_tokens"]))
            return None
        if trial.trial_id in self.tried:
            return None
        self.tried[trial.trial_id] = _Tried(trial.train.lr, trial.train.batch_tokens)
        return trial

    def _settle(self, axis: str) -> None:
        finite = [t for t in self._line(axis, self.current) if math.isfinite(t.loss)]
        if finite:
            best = min(finite, key=lambda t: t.loss)
            self.current = {"lr": best.lr, "batch_tokens": best.batch_tokens}
        # The closing lr pass is needed only when the batch moved away from the centre.
        if self.phase == 1 and len(self._cycle) == 3 and self.current["batch_tokens"] == self.centre.batch_tokens:
            self._cycle = self._cycle[:2]

    def _vertex(self, axis: str, best: _Tried) -> tuple[float, float]:
        """The axis's optimum and loss at the best trial's line: the parabola's vertex through
        the best and its two neighbours when they are finite, else the best trial."""
        line = [t for t in self._line(axis, {"lr": best.lr, "batch_tokens": best.batch_tokens})
                if math.isfinite(t.loss)]
        i = line.index(best)
        if 0 < i < len(line) - 1:
            three = line[i - 1:i + 2]
            v = _vertex_of(three, axis)
            if v is not None:
                return math.exp(v[0]), math.exp(v[1])
        return float(getattr(best, axis)), best.loss


def _vertex_of(three: list[_Tried], axis: str) -> tuple[float, float] | None:
    """(ln value, ln loss) at the vertex of the parabola in ln value of ln loss through three
    tried values, clamped to them (orchestrator.fitting.hparams.optima.parabola)."""
    x = np.log([getattr(t, axis) for t in three])
    return parabola(x, np.log([t.loss for t in three]), x.min(), x.max())


def _rule(law) -> PowerRule | None:
    """A fitted law as a recipe rule, or None where its values are outside a rule's bounds."""
    try:
        return law.rule()
    except ValueError:  # pydantic's ValidationError: a coefficient or exponent out of range
        return None


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b))


class TuningPlanner:
    """A planner of design points (``inner``) whose points are each searched (module docstring).

    The inner planner's contract holds for it unchanged: every point it proposes is told once,
    with the point's optimal loss (a COMPLETED result; DIVERGED when every trial diverged;
    None when none finished) and ``row["search_flops"]``, the FLOPs its trials spent.
    """

    def __init__(self, inner: Planner, factory: TrialFactory, spec: SweepSpec, store: ResultStore | None = None,
                 finished: dict[str, dict] | None = None):
        """``store`` keeps the search records (none: nothing is kept); ``finished`` is the stored
        rows of finished trials by trial id, from which searches finished earlier are rebuilt."""
        self.inner, self.factory, self.cfg = inner, factory, spec.tune
        self.axes = spec.tuned
        self.eager = inner.eager  # a static design starts every search at once
        self.optima: dict[str, SearchResult] = {}  # point id -> its search's outcome
        self._rules: dict[str, PowerRule] = {}  # fitted to the searches finished so far (``rules``)
        self._rules_stale = False
        self._ready: list[TrialConfig] = []
        self._searches: dict[str, PointSearch] = {}  # point id -> search in progress
        self._owner: dict[str, str] = {}  # trial id -> point id of its search
        self._direct: dict[str, TrialConfig] = {}  # trial id of a ladder trial -> the inner planner's point
        self._waiting: list[TrialConfig] = []  # ladder points waiting for the rule
        self._laddered: set[str] = set()  # point ids run once at the rule
        self._runs: dict[str, list[dict]] = {}  # point id -> its search's finished trials, for the rules
        if hasattr(inner, "expected_cost"):  # the adaptive planner's budget then counts the searches
            inner.expected_cost = self._expected_cost
        self._n_kind = "total" if spec.trainer == "simulated" else next(
            (r.n for r in (getattr(spec.train, k) for k in AXES) for r in (getattr(r, "tune", r),)
             if isinstance(r, PowerRule)), "nonembed")
        self.log = SearchLog(store)
        self._restore(finished or {})

    @property
    def stopped(self) -> str:
        return self.inner.stopped

    def expected(self) -> tuple[int, float]:
        n, flops = self.inner.expected()  # about `initial` trials a point; at least that many
        return n * self.cfg.initial, flops * self.cfg.initial

    def finished(self) -> bool:
        return self.inner.finished() and not (self._searches or self._waiting or self._ready)

    def ask(self, n: int) -> list[TrialConfig]:
        while len(self._ready) < n and not self.inner.finished():
            batch = self.inner.ask(n - len(self._ready))
            if not batch:
                break
            for point in batch:
                self._start(point)
        self._release_waiting()
        out, self._ready = self._ready[:n], self._ready[n:]
        return out

    def tell(self, trial: TrialConfig, result: TrialResult | None) -> None:
        point = self._direct.pop(trial.trial_id, None)
        if point is not None:  # a ladder trial stands for its point
            flops = {"search_flops": train_flops(trial.n_params, trial.tokens)}
            self.inner.tell(point, None if result is None else
                            TrialResult(point.trial_id, result.status, result.eval_loss, result.wall_s, result.error,
                                        flops))
            return
        search = self._searches[self._owner.pop(trial.trial_id)]
        search.observe(trial, result)
        self._propose(search)

    def summary(self) -> str:
        """What the searches found, for the end of ``scalesweep run``: which values were used and why."""
        names = " and ".join("learning rate" if a == "lr" else "batch" for a in self.axes)
        centre = {a: getattr(self.factory.train, a).tune for a in self.axes}
        around = ", ".join(f"{a} {'default' if v is None else v.describe() if isinstance(v, PowerRule) else f'{v:g}'}"
                           for a, v in centre.items())
        opts = list(self.optima.values())
        lines = [f"{names.capitalize()} searched per point (factor {self.cfg.factor:g} around {around}): "
                 f"{len(opts)} points in {sum(o.trials for o in opts)} trials, "
                 f"{sum(o.bracketed for o in opts)} bracketed"]
        by_budget: dict[float, list[SearchResult]] = {}
        for o in opts:
            by_budget.setdefault(o.budget, []).append(o)
        for budget, group in sorted(by_budget.items()):
            group.sort(key=lambda o: o.n)
            what = ", ".join(f"N={o.n:.3g}: {o.lr:.2g}" + (f" / {o.batch_tokens}" if o.batch_tokens else "")
                             + ("" if o.bracketed else " (not bracketed)") for o in group)
            lines.append(f"  {'C=%.3g' % budget if budget else 'grid'}: lr*{' / B*' if 'batch_tokens' in self.axes else ''} "
                         f"{what}")
        if self._laddered:
            lines.append(f"  {len(self._laddered)} points above tune.up_to_flops={self.cfg.up_to_flops:g} ran once at the "
                         f"rule fitted to the searched ones: " + "; ".join(
                             f"{'lr' if a == 'lr' else 'batch'} = {r.describe()}" for a, r in self.rules.items()))
        return "\n".join(lines)

    # -- internals ----------------------------------------------------------------------------
    def _expected_cost(self, flops: float) -> float:
        """A pending point's FLOPs as its search will spend them: times the trials per point seen
        so far (tune.initial before any), once for a ladder point."""
        if self.cfg.up_to_flops is not None and flops > self.cfg.up_to_flops:
            return flops
        searched = [o for o in self.optima.values() if o.trials > 1]
        per_point = sum(o.trials for o in searched) / len(searched) if searched else self.cfg.initial
        return flops * per_point

    def _start(self, point: TrialConfig, ladder: bool = True) -> None:
        if ladder and self.cfg.up_to_flops is not None and \
                train_flops(point.n_params, point.tokens) > self.cfg.up_to_flops:
            self._waiting.append(point)
            return
        rec = self.log.get(point.point_id)
        if rec is None or rec.kind != "search":  # decided now, once (module docstring)
            centre = {"lr": point.train.lr, "batch_tokens": point.train.batch_tokens}
            # A shared prior: start near the fitted optimum. Only for a planner that learns:
            # an eager one starts every search at once, before any rule exists.
            for axis, rule in ({} if self.eager else self.rules).items():
                centre[axis] = rule.at(self.factory.n_rule(point, rule), self.factory.d_target(point))
            rec = self._record(point, "search", centre["lr"], self.factory.round_batch(centre["batch_tokens"]), "tune")
        search = self._search(point, rec)
        self._searches[point.point_id] = search
        self._propose(search)

    def _search(self, point: TrialConfig, rec: PointRecord) -> PointSearch:
        return PointSearch(point, Hparams(rec.lr, rec.batch_tokens, "tune"), self.axes, self.cfg, self.factory,
                           n_kind=self._n_kind)

    def _record(self, point: TrialConfig, kind: str, lr: float, batch: int, recipe: str) -> PointRecord:
        p = self.factory.planned(point)
        rec = PointRecord(point.point_id, kind, p.n_target, p.d_target, p.budget, p.seed, p.where, lr, batch, recipe)
        self.log.record(rec)
        return rec

    def _restore(self, finished: dict[str, dict]) -> None:
        """Rebuild the searches of this planner's points that finished in an earlier run, from
        their records and the stored rows (the searches replay as the driver would answer them),
        and count the ladder points already run: a resumed sweep then fits its rules, centres
        new searches and sums up as an uninterrupted run would."""
        for rec in self.log.records():
            try:
                point = self.factory.make(rec.n_target, rec.d_target, rec.budget, rec.seed, rec.where)
            except UserError:
                continue
            if point.point_id != rec.point_id:  # another variant's point, or a spec since changed
                continue
            if rec.kind == "ladder":
                ran = self.factory.with_hparams(point, Hparams(rec.lr, rec.batch_tokens, rec.recipe))
                if ran.trial_id in finished:
                    self._laddered.add(rec.point_id)
                continue
            search = self._search(point, rec)
            while trials := search.propose():
                if any(t.trial_id not in finished for t in trials):
                    break  # still in progress: resumed when its point is proposed again
                for t in trials:
                    search.observe(t, TrialResult.from_row(finished[t.trial_id]))
            if search.done:
                self._keep(search)

    def _propose(self, search: PointSearch) -> None:
        trials = search.propose()
        for t in trials:
            self._owner[t.trial_id] = search.base.point_id
        self._ready += trials
        if search.done:
            self._finish(search)

    def _keep(self, search: PointSearch) -> SearchResult:
        """Keep a finished search's optimum and trials for the rules (once per point: a re-run
        replays searches that a resumed planner already rebuilt)."""
        opt = search.optimum()
        point = search.base.point_id
        self.optima[point] = opt
        self._runs[point] = sorted(({"point": point, "n": opt.n_rule, "d": opt.d, "lr": t.lr, "batch": t.batch_tokens,
                                     "loss": t.loss, "status": TrialStatus.COMPLETED.value}
                                    for t in search.tried.values()), key=lambda r: (r["lr"], r["batch"]))
        self._rules_stale = True  # refitted when next needed, not on the driver loop at every point
        return opt

    def _finish(self, search: PointSearch) -> None:
        del self._searches[search.base.point_id]
        opt = self._keep(search)
        if not opt.bracketed:
            log.warning("point %s: the %s search did not bracket its optimum within tune.max_trials_per_point=%d "
                        "and the tune ranges (best of %d trials kept)", search.base.name, "/".join(search.unbracketed),
                        self.cfg.max_trials_per_point, opt.trials)
        base = search.base
        if math.isfinite(opt.loss):
            result = TrialResult(base.trial_id, TrialStatus.COMPLETED, opt.loss, 0.0, "", {"search_flops": opt.flops})
        elif any(t.loss is not None for t in search.tried.values()):
            result = TrialResult(base.trial_id, TrialStatus.DIVERGED, math.nan, 0.0, "every trial diverged",
                                 {"search_flops": opt.flops})
        else:
            result = None
        self.inner.tell(base, result)

    @property
    def rules(self) -> dict[str, PowerRule]:
        """The rules that centre later searches and run the ladder: the landscape fitted jointly
        to every finished trial (orchestrator.fitting.hparams.landscape: each point weighted by
        how sharply its trials pin it down), or, with too few points for it, a regression over
        the points' optima (:func:`fit_rule`). Refitted only when a search has finished since."""
        from orchestrator.fitting.hparams.landscape import fit_landscape

        if not self._rules_stale:
            return self._rules
        self._rules_stale = False
        # In point id order: floating-point sums depend on the order of their terms, and the
        # order searches finish in differs between a live run and a replay.
        runs = pd.DataFrame([r for k in sorted(self._runs) for r in self._runs[k]])
        runs = runs[np.isfinite(runs["loss"])]
        joint = fit_landscape(runs, tuple("lr" if a == "lr" else "batch" for a in self.axes), self._n_kind,
                              n_draws=0) if len(runs) else None
        for axis in self.axes:
            law = joint and joint["lr" if axis == "lr" else "batch"]
            rule = _rule(law) if law else None
            rule = rule or fit_rule([self.optima[k] for k in sorted(self.optima)], axis, self._n_kind)
            if rule is not None:
                self._rules[axis] = rule
        return self._rules

    def _release_waiting(self) -> None:
        """Ladder points run once every tuned point has finished: at the fitted rule, or
        searched themselves when too few tuned points bracketed an optimum for a rule."""
        if not self._waiting or self._searches:
            return
        waiting, self._waiting = self._waiting, []
        recorded = {p.point_id: self.log.get(p.point_id) for p in waiting}
        rules = self.rules
        no_rule = len(rules) < len(self.axes)
        if no_rule and None in recorded.values():
            log.warning("ladder: fewer than %d tuned points bracketed an optimum below tune.up_to_flops=%g; "
                        "searching the larger points too", MIN_POINTS, self.cfg.up_to_flops)
        tuned = sum(o.bracketed for o in self.optima.values())
        for point in waiting:
            rec = recorded[point.point_id]
            if rec is None:  # decided now, once (module docstring)
                if no_rule:
                    self._start(point, ladder=False)
                    continue
                hp = {"lr": point.train.lr, "batch_tokens": point.train.batch_tokens}
                parts = []
                for axis, rule in rules.items():
                    hp[axis] = rule.at(self.factory.n_rule(point, rule), self.factory.d_target(point))
                    parts.append(f"{'lr' if axis == 'lr' else 'batch'} = {rule.describe()}")
                recipe = f"ladder: {', '.join(parts)} fitted to {tuned} tuned points"
                rec = self._record(point, "ladder", hp["lr"], self.factory.round_batch(hp["batch_tokens"]), recipe)
            if rec.kind == "search":  # searched when it started: too few tuned points for a rule then
                self._start(point, ladder=False)
                continue
            trial = self.factory.with_hparams(point, Hparams(rec.lr, rec.batch_tokens, rec.recipe))
            self._direct[trial.trial_id] = point
            self._ready.append(trial)
            self._laddered.add(point.point_id)
