"""The fit of a tuned sweep: the law through the per-point optima, and the hyperparameter laws.

A sweep that tunes the learning rate (and batch) per design point (orchestrator.planning.tuning)
runs several trials per point; they share ``point_id``. Fitting L(N, D) to every trial would
fit the law to the average of a search, not to the model family's best loss. ``analyse_trials``
therefore fits the law to one row per point (its optimal loss, orchestrator.fitting.hparams.optima),
fits lr*(N, D) and B*(N, D) to the points' optima (orchestrator.fitting.hparams.laws), and
recommends both at the target's N_opt and D_opt, with intervals that carry the law's uncertainty
about N_opt as well as the hyperparameter laws' own. A table without repeated point ids is
fitted by ``analyse`` unchanged, so an untuned sweep prints what it always did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.errors import FitError
from orchestrator.fitting.hparams.laws import NMap, PowerLawFit, fit_power_law
from orchestrator.fitting.hparams.optima import Method, PointOptimum, levels, point_optima, trials_runs
from orchestrator.fitting import Z80
from workers.flops import tokens_for_budget, train_flops
from workers.store import TrialStatus

__all__ = ["HparamFit", "fit_hparams", "is_tuned", "analyse_trials", "optima_table", "compute_optimal_draws"]

FINISHED = tuple(s.value for s in TrialStatus if s.is_finished())


@dataclass
class HparamFit:
    """Per-point optima, the hyperparameter laws, and a recommendation (``recommend_*``)."""

    points: list[PointOptimum]
    lr_law: PowerLawFit | None
    batch_law: PowerLawFit | None
    n_kind: str  # the laws' N: "nonembed" or "total"
    runs: pd.DataFrame = field(repr=False)  # the runs (optima.RUN_COLUMNS), for the plots
    notes: list[str] = field(default_factory=list)
    lr_fixed: str = ""  # how lr was set where it was not tuned ("" when tuned)
    batch_fixed: str = ""  # the same for the batch
    objective: str = "parabola"
    at: dict = field(default_factory=dict)  # where lr_opt and batch_opt are: n, d (and compute, n_total)
    lr_opt: dict | None = None
    batch_opt: dict | None = None

    def recommend_at(self, n: float, d: float, n_draws=None, d_draws=None, **where) -> None:
        """lr* and B* at (n, d) (N as the laws count it), with intervals; ``n_draws``/``d_draws``
        add the uncertainty of the point itself."""
        self.at = {"n": float(n), "d": float(d), **where}
        self.lr_opt = self.lr_law.at(n, d, n_draws, d_draws) if self.lr_law else None
        self.batch_opt = self.batch_law.at(n, d, n_draws, d_draws) if self.batch_law else None


def is_tuned(trials: pd.DataFrame) -> bool:
    """Whether some design point (``point_id``) has finished trials at two or more settings of
    lr and batch: a tuned sweep (a point's replicates at one setting are not a search)."""
    if "point_id" not in trials or not len(trials):
        return False
    finished = trials["status"].astype(str).isin(FINISHED) if "status" in trials else True
    t = trials[finished & trials["point_id"].notna()]
    if not len(t) or not t["point_id"].duplicated().any():
        return False
    cols = [c for c in ("lr", "batch_tokens") if c in t]
    return bool(cols) and bool((t.groupby("point_id")[cols].nunique(dropna=False).max(axis=1) > 1).any())


def _fixed_text(values: np.ndarray, unit: str, what: str) -> str:
    v = values[np.isfinite(values)]
    if not len(v):
        return f"{what}: not in the table"
    if levels(v, 1e-9) == 1:
        return f"not tuned: {v[0]:.4g}{unit} at every point"
    return f"not tuned: set per point ({v.min():.4g}{unit} to {v.max():.4g}{unit})"


def fit_hparams(points: list[PointOptimum], runs: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                n_kind: str = "nonembed", objective: str = "parabola", require: bool = False) -> HparamFit:
    """The laws of lr* (and of B* where points tried several batch sizes) over the bracketed
    points. ``require``: a law that cannot be fitted raises (``scalesweep hparams``) instead of
    becoming a note (the fit of a tuned sweep, whose L(N, D) stands without it)."""
    h = HparamFit(points, None, None, n_kind, runs, objective=objective)
    lr_tuned = any(levels(g.dropna(), 1e-9) > 1 for _, g in runs.groupby("point")["lr"]) if len(runs) else False
    batch_tuned = any(p.batch_opt is not None for p in points)
    if not lr_tuned:
        h.lr_fixed = _fixed_text(runs["lr"].to_numpy(float), "", "learning rate")
    if not batch_tuned:
        h.batch_fixed = _fixed_text(runs["batch"].to_numpy(float), " tokens", "batch size")
        if lr_tuned and not h.batch_fixed.endswith("table"):
            h.batch_fixed += " (lr* is the optimum at that batch)"
    for what, tuned, pick in (("lr", lr_tuned, lambda p: (p.lr_opt, p.lr_bracketed)),
                              ("batch", batch_tuned, lambda p: (p.batch_opt, p.batch_bracketed))):
        if not tuned:
            continue
        use = [p for p in points if pick(p)[1] and pick(p)[0] is not None and math.isfinite(pick(p)[0])]
        try:
            law = fit_power_law([p.n for p in use], [p.d for p in use], [pick(p)[0] for p in use], what,
                                n_boot=n_boot, seed=seed + (what == "batch"), n_kind=n_kind,
                                names=[p.name for p in use], groups=[p.method.value for p in use])
            law.points = tuple(p.point for p in use)
        except FitError as e:
            if require:
                raise FitError(f"{e} ({_bracket_text(points, what)})") from None
            h.notes.append(f"{e}: not fitted ({_bracket_text(points, what)})")
            continue
        setattr(h, f"{what}_law", law)
        h.notes.extend(law.notes)
    _joint(h, runs, tuple(a for a, tuned in (("lr", lr_tuned), ("batch", batch_tuned)) if tuned), n_kind, n_boot, seed)
    h.notes[:0] = _point_notes(points, h)
    return h


def _joint(h: HparamFit, runs: pd.DataFrame, axes: tuple[str, ...], n_kind: str, n_boot: int, seed: int) -> None:
    """Replace the laws by the landscape fitted jointly to every trial where the trials carry it
    (orchestrator.fitting.hparams.landscape): on simulated tuned grids its lr* and B* at the target
    were unbiased, against a bias of 0.2-0.5 in ln for the regression over the points' optima,
    whose noisy high-loss points weigh as much as the sharp ones (docs/benchmarks.md)."""
    from orchestrator.fitting.hparams.landscape import fit_landscape

    joint = fit_landscape(runs, axes, n_kind, n_draws=n_boot, seed=seed) if axes else None
    for what, law in (joint or {}).items():
        old = getattr(h, f"{what}_law")
        if old is not None:  # its notes describe the law being replaced
            h.notes = [n for n in h.notes if n not in old.notes]
        law.points = old.points if old is not None else ()
        setattr(h, f"{what}_law", law)
        h.notes.extend(law.notes)


def _searched(p: PointOptimum) -> bool:
    """Whether the point tried two or more settings: one that ran one (a ladder's point, run at
    the fitted rule) was not searched, so nothing about it is unbracketed."""
    return p.method is not Method.NONE and not (p.method is Method.TOO_FEW and not p.lr_edge and p.batch_opt is None)


def _bracket_text(points: list[PointOptimum], what: str) -> str:
    if what == "lr":
        edges = [p.lr_edge for p in points if not p.lr_bracketed and _searched(p)]
    else:
        edges = [p.batch_edge for p in points if p.batch_opt is not None and not p.batch_bracketed]
    parts = [f"{k} {words}" for k, words in ((edges.count("low"), "with the best at the low end"),
                                             (edges.count("high"), "at the high end"),
                                             (len(edges) - edges.count("low") - edges.count("high"),
                                              "with fewer than 3 values or the other axis unbracketed")) if k]
    return f"{len(edges)} of {len(points)} points not bracketed in {what}" + (f": {', '.join(parts)}" if parts else "")


def _point_notes(points: list[PointOptimum], h: HparamFit) -> list[str]:
    """What the points' searches leave open: unbracketed points (checked against the fitted
    law), points bounded by divergence, fallbacks from the surface, points with no result."""
    notes = []
    for what, law in (("lr", h.lr_law), ("batch", h.batch_law)):
        if what == "lr" and h.lr_fixed or what == "batch" and h.batch_fixed:
            continue
        out = [p for p in points if _searched(p)
               and not (p.lr_bracketed if what == "lr" else (p.batch_opt is None or p.batch_bracketed))]
        if not out:
            continue
        names = ", ".join(p.name for p in out[:3]) + (" ..." if len(out) > 3 else "")
        use = ("their trials near the best still enter the joint fit, one-sidedly" if law is not None
               and law.method == "joint" else f"left out of the {what} law")
        notes.append(f"{_bracket_text(points, what)}; {use} (extend their search): {names}")
        off = _inside_tried(out, law, what)
        if off:
            notes.append(f"the fitted {what} law puts the optimum inside the tried range of {off} of those points, "
                         f"whose best was at an edge: the law may be off there")
    single = sum(not _searched(p) and p.method is not Method.NONE for p in points)
    if single:
        notes.append(f"{_count(single, 'point')} ran one setting only (not searched: e.g. a ladder's points, run at "
                     "the fitted rule): in the scaling law with that trial's loss, not in the hyperparameter laws")
    bounded = sum(p.method is Method.DIVERGENCE for p in points)
    if bounded:
        notes.append(f"{_count(bounded, 'point')} had the best finished learning rate at the top, with a higher one "
                     "diverged: bracketed by the divergence, lr* taken at most at the highest finished lr")
    lines = [p for p in points if p.method is Method.LINES]
    if lines:
        notes.append(f"{_count(len(lines), 'point')} with several batch sizes read along the lines through the best "
                     f"trial, not from a quadratic surface (e.g. {lines[0].name}: {lines[0].why})")
    none = [p for p in points if p.method is Method.NONE]
    if none:
        notes.append(f"{_count(len(none), 'point')} without a finished trial with a finite loss (all diverged or "
                     "failed)")
    return notes


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _inside_tried(out: list[PointOptimum], law: PowerLawFit | None, what: str) -> int:
    if law is None:
        return 0
    bad = 0
    for p in out:
        lo, hi = p.lr_range if what == "lr" else p.batch_range
        pred = float(np.exp(law.log_at(p.n, p.d)))
        edge = p.lr_edge if what == "lr" else p.batch_edge
        bad += (edge == "high" and pred < hi / 1.2) or (edge == "low" and pred > lo * 1.2)
    return bad


def optima_table(points: list[PointOptimum]) -> pd.DataFrame:
    """One trials-shaped row per point (analyse's input): N total, D, the point's loss; a point
    without a finished trial is "diverged" when all of its trials diverged, else "failed"."""
    status = [TrialStatus.COMPLETED.value if math.isfinite(p.loss_opt)
              else TrialStatus.DIVERGED.value if p.n_diverged == p.n_trials else TrialStatus.FAILED.value
              for p in points]
    return pd.DataFrame({
        "name": [f"{p.name} (optimum of {p.n_trials})" for p in points], "status": status,
        "n_params": [p.n_total for p in points], "tokens": [p.d for p in points],
        "flops": [train_flops(p.n_total, p.d) for p in points], "budget": [p.budget for p in points],
        "eval_loss": [p.loss_opt for p in points], "error": None, "point_id": [p.point for p in points]})


def compute_optimal_draws(target: dict, interval, n_draws: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Draws of (N_opt, D_opt) at the target: a lognormal in N_opt matching its 80 % interval on
    each side (the law fit exposes intervals, widened by its residual field, not joint draws),
    and D_opt = C / 6 N_opt. None without an interval."""
    if interval is None or not interval.n_draws or n_draws <= 0:
        return None
    est = target["n_opt"]
    lo, hi = interval.bounds[0.80]
    if not (est > 0 and lo > 0 and hi > 0):
        return None
    rng = np.random.default_rng(seed + 7)
    z = rng.standard_normal(n_draws)
    sd = np.where(z < 0, math.log(est / lo), math.log(hi / est)) / Z80
    n = est * np.exp(z * sd)
    return n, tokens_for_budget(target["compute"], n)


def n_map(runs: pd.DataFrame) -> NMap:
    pairs = runs[["n_total", "n"]].dropna().drop_duplicates()
    return NMap(pairs["n_total"].to_numpy(float), pairs["n"].to_numpy(float))


def recommend_at_target(h: HparamFit, fit) -> None:
    """lr* and B* at the law fit's N_opt and D_opt (``fit``: a SweepFit), the laws' N mapped from
    the total count (NMap)."""
    t = fit.target
    if not (math.isfinite(t.get("n_opt", math.nan)) and t["n_opt"] > 0):
        h.notes.append("no compute-optimal point at the target: nothing to recommend there")
        return
    n_draws = max((len(law.draws) for law in (h.lr_law, h.batch_law) if law is not None), default=0)
    draws = compute_optimal_draws(t, fit.intervals.get("n_opt"), n_draws if n_draws > 1 else 0,
                                  fit.bootstrap.seed if fit.bootstrap else 0)
    m = n_map(h.runs)
    n_rule = float(m(t["n_opt"]))
    iv = fit.intervals.get("n_opt")
    h.recommend_at(n_rule, t["d_opt"], None if draws is None else m(draws[0]), None if draws is None else draws[1],
                   compute=t["compute"], n_total=t["n_opt"], n_mapped=not m.identity, n_opt_drawn=draws is not None,
                   n_opt_interval=None if iv is None or not iv.n_draws else {
                       f"{round(100 * lv)}%": list(b) for lv, b in iv.bounds.items()})


def analyse_trials(trials: pd.DataFrame, target_compute: float | None, *, objective: str = "parabola", **kw):
    """``analyse`` (orchestrator.fitting.analysis), or for a tuned sweep (``is_tuned``) the
    fit through its per-point optima with ``hparams`` set (module docstring)."""
    from orchestrator.fitting.analysis import _total_flops, analyse

    if not is_tuned(trials):
        return analyse(trials, target_compute, **kw)
    runs = trials_runs(trials)
    points = point_optima(runs, objective)
    fit = analyse(optima_table(points), target_compute, **kw)
    fit.n_runs, fit.flops_spent = len(trials), _total_flops(trials)
    nonembed = "n_params_nonembed" in trials and bool(pd.to_numeric(trials["n_params_nonembed"], errors="coerce").gt(0).any())
    h = fit_hparams(points, runs, n_boot=kw.get("n_boot", 1000), seed=kw.get("seed", 0),
                    n_kind="nonembed" if nonembed else "total", objective=objective)
    if h.lr_law is not None or h.batch_law is not None:
        recommend_at_target(h, fit)
    fit.hparams = h
    return fit
