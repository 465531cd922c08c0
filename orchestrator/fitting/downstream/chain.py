"""Both steps for one task, their joint bootstrap, and predictive draws at any (N, D).

A prediction of a model's accuracy at (N, D) is uncertain for four reasons, and a draw of the
predictive distribution takes each in turn, so that the nonlinear sigmoid carries the
task-loss uncertainty into accuracy as it is (a loss interval that straddles the steep part of
the curve gives a skewed accuracy interval; one on the plateau a narrow one):

1. the two fits: a bootstrap over whole *runs* (the checkpoints of one run share its seed,
   data order and schedule, so they are not independent evidence), the same run counts
   refitting step 1 (orchestrator.fitting.downstream.step1) and step 2
   (orchestrator.fitting.downstream.sigmoid): resample b gives a law and a sigmoid;
2. the target run's own deviation from the law: one run's noise and the smooth residual field
   (orchestrator.fitting.forms.predict.extra_sd), a log-normal factor on resample b's task loss;
3. extrapolation: the law and the sigmoid are fitted on a ladder and used 10x beyond it, where
   a form that is only approximately right drifts, and where the bootstrap of a 5-parameter law
   on a few sizes may as well be too wide as too narrow. So the spread of the draws is
   calibrated, not assumed: the whole pipeline is refitted without the ladder's largest size,
   and again without its largest ratio D/N, and predicts the held-out runs' final task loss and
   accuracy (:func:`holdouts`, in the spirit of orchestrator.fitting.diagnostics.holdout_check).
   kappa^2 = sum(e^2) / sum(sd^2) over the held-out runs (errors e, the refit's predictive sds)
   scales each draw's deviation from the estimate, first of the log task loss (kappa1), then
   of the accuracy (kappa2, measured with kappa1 applied). A misspecified law or sigmoid shows
   as kappa > 1; on simulated worlds where both forms are exactly true the bootstrap of the
   task-loss law was too wide (kappa1 0.5-0.75 on six worlds), which kappa < 1 corrects
   (bounded below by KAPPA_BOUNDS: held-out runs 0.3 decades out are a short lever on 1.5
   decades, and an unbounded kappa1 of 0.58 let 2 of 4 targets of one world fall outside
   their 95 % intervals). Estimates of one task are noisy (6-8 held-out runs), so
   each is pooled halfway with all the tasks' (orchestrator.fitting.downstream.fit);
4. the target's own evaluation noise: binomial item noise p (1 - p) / n_items where the number
   of items is known, plus whatever scatter of the ladder's checkpoints around the sigmoid
   exceeds their binomial noise (checkpoint-to-checkpoint variance, which Bhagia et al. found
   predicts which tasks extrapolate badly); where the items are unknown, that scatter as a
   whole (it contains the item noise).

Intervals are percentiles of the draws, widened where needed to contain the point estimate
(the full-data law and sigmoid chained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import FitError, InsufficientData
from orchestrator.fitting import LEVELS
from orchestrator.fitting.downstream.sigmoid import Sigmoid, fit_sigmoid, refine
from orchestrator.fitting.downstream.step1 import Step1, fit_step1

__all__ = ["TaskData", "TaskFit", "task_data", "fit_task", "draws", "interval", "holdouts", "holdout_errors",
           "distance", "SKIP_SHARE", "HOLDOUT_RESAMPLES", "KAPPA_BOUNDS"]

SKIP_SHARE = 0.1  # each run's earliest checkpoints left out of step 2 (Bhagia et al.'s --skip_perc 0.1)
HOLDOUT_RESAMPLES = 100  # bootstrap resamples of each held-out refit (its spread at the held-out runs)
KAPPA_BOUNDS = (0.7, 10.0)  # the calibration narrows the draws by 30 % at most (module docstring, 3)


@dataclass
class TaskData:
    """One task's evaluations: per run (in ``runs`` order) its final N, D, task loss and
    accuracy; the step-2 points (task loss x, accuracy y, run index); chance and items."""

    task: str
    runs: list[str]
    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    acc: np.ndarray
    x: np.ndarray
    y: np.ndarray
    run_of: np.ndarray
    chance: float | None
    n_items: float | None

    def subset(self, keep: np.ndarray) -> "TaskData":
        """The task restricted to the runs where ``keep`` (a mask over runs) holds."""
        idx = np.flatnonzero(keep)
        remap = np.full(len(self.runs), -1)
        remap[idx] = np.arange(len(idx))
        pts = np.isin(self.run_of, idx)
        return TaskData(self.task, [self.runs[i] for i in idx], self.n[idx], self.d[idx], self.loss[idx],
                        self.acc[idx], self.x[pts], self.y[pts], remap[self.run_of[pts]], self.chance, self.n_items)


def task_data(frame, task: str, skip: float = SKIP_SHARE) -> TaskData:
    """TaskData of ``task`` from a standardised frame (orchestrator.fitting.downstream.table)."""
    sub = frame[frame["task"] == task].sort_values(["run", "step"], kind="stable")
    runs, n, d, loss, acc, xs, ys, of = [], [], [], [], [], [], [], []
    for run, g in sub.groupby("run", sort=False):
        g = g.drop_duplicates("step", keep="last")
        last = g.iloc[-1]
        i = len(runs)
        runs.append(str(run))
        n.append(float(last["n"]))
        d.append(float(last["d"]))
        loss.append(float(last["task_loss"]))
        acc.append(float(last["acc"]))
        first = int(math.floor(skip * len(g))) if len(g) > 2 else 0
        xs.append(g["task_loss"].to_numpy(float)[first:])
        ys.append(g["acc"].to_numpy(float)[first:])
        of.append(np.full(len(g) - first, i))
    chance = sub["chance"].dropna()
    items = sub["n_items"].dropna()
    return TaskData(task, runs, np.array(n), np.array(d), np.array(loss), np.array(acc), np.concatenate(xs),
                    np.concatenate(ys), np.concatenate(of), float(chance.median()) if len(chance) else None,
                    float(items.median()) if len(items) and items.median() > 0 else None)


@dataclass
class TaskFit:
    """Both fitted steps of one task with their bootstrap draws and noise terms."""

    data: TaskData
    step1: Step1
    sigmoid: Sigmoid
    sig_draws: np.ndarray = field(repr=False)  # (k, p) step-2 refits, the same resamples as step1.draws
    excess_sd: float = 0.0  # checkpoint scatter about the sigmoid beyond binomial item noise
    ladder: tuple[float, float] = (0.0, 0.0)  # log10 of the largest fitted N and D
    kappa1: float = 1.0  # calibration of the log task loss draws' spread (module docstring, 3)
    kappa2: float = 1.0  # ... of the accuracy draws'
    holdout: dict | None = None  # the held-out check: errors and sds per held-out run
    notes: list[str] = field(default_factory=list)
    extras: dict = field(default_factory=dict)  # emergence and baselines (orchestrator.fitting.downstream.extras)

    @property
    def task(self) -> str:
        return self.data.task

    def obs_var(self, p: np.ndarray) -> np.ndarray:
        """Variance of one evaluation's accuracy about its expected value p (module docstring, 4)."""
        if self.data.n_items:
            return np.clip(p, 0, 1) * (1 - np.clip(p, 0, 1)) / self.data.n_items + self.excess_sd**2
        return np.full(np.shape(p), self.sigmoid.residual_sd**2)


def fit_task(td: TaskData, counts: np.ndarray, seed: int = 0) -> TaskFit:
    """Fit both steps and refit them to every resample (rows of ``counts`` over td.runs)."""
    if len(td.runs) < 3:
        raise InsufficientData(f"needs at least 3 runs; has {len(td.runs)}")
    if float(np.ptp(td.y)) <= 0.0:
        raise InsufficientData(f"the accuracy is constant ({td.y[0]:g}): no sigmoid to fit")
    if np.unique(np.round(td.x, 12)).size < 4:
        raise InsufficientData("fewer than 4 distinct task losses: no sigmoid to fit")
    s1 = fit_step1(td.n, td.d, td.loss, seed=seed)
    s1.resample(counts)
    sig = fit_sigmoid(td.x, td.y, td.chance)
    W = counts[:, td.run_of]
    sig_draws = refine(np.tile(sig.theta, (len(counts), 1)), td.x, td.y, W, td.chance, sig.delta)[0] \
        if len(counts) else np.zeros((0, len(sig.theta)))
    excess = sig.residual_sd
    if td.n_items:
        p = sig(td.x)
        excess = math.sqrt(max(sig.residual_sd**2 - float(np.mean(p * (1 - p))) / td.n_items, 0.0))
    tf = TaskFit(td, s1, sig, sig_draws, excess, (float(np.log10(td.n.max())), float(np.log10(td.d.max()))))
    if s1.note:
        tf.notes.append(s1.note)
    if td.chance is None:
        tf.notes.append("no chance level: the sigmoid's floor is fitted")
    if not td.n_items:
        tf.notes.append("no item count: the target's evaluation noise is the checkpoints' scatter about the sigmoid")
    return tf


def distance(tf_or_ladder, n, d) -> np.ndarray:
    """Decades beyond the ladder: the Euclidean norm of how far log10 N and log10 D exceed the
    largest fitted N and D (0 inside)."""
    ln, ld = tf_or_ladder.ladder if isinstance(tf_or_ladder, TaskFit) else tf_or_ladder
    dn = np.maximum(np.log10(np.asarray(n, float)) - ln, 0.0)
    dd = np.maximum(np.log10(np.asarray(d, float)) - ld, 0.0)
    return np.hypot(dn, dd)


def draws(tf: TaskFit, n, d, rng: np.random.Generator, kappa1: float | None = None, kappa2: float | None = None):
    """(estimates (loss (m,), acc (m,)), draws (loss (k, m), acc (k, m))) at the points (n, d)."""
    kappa1 = tf.kappa1 if kappa1 is None else kappa1
    kappa2 = tf.kappa2 if kappa2 is None else kappa2
    X = {"N": np.asarray(n, float), "D": np.asarray(d, float)}
    est = tf.step1.predict(X)
    acc_est = tf.sigmoid(est)
    Z, T = tf.step1.draws, tf.sig_draws
    if Z is None or not len(Z):
        return (est, acc_est), (est[None, :], acc_est[None, :])
    log_base = np.log(tf.step1.predict(X, Z))
    sd1 = tf.step1.extra_sd(X, est)
    dev = log_base + sd1[None, :] * rng.standard_normal(log_base.shape) - np.log(est)[None, :]
    loss = est[None, :] * np.exp(kappa1 * dev)
    p = tf.sigmoid(loss, T)
    acc = p + np.sqrt(tf.obs_var(p)) * rng.standard_normal(p.shape)
    acc = np.clip(acc_est[None, :] + kappa2 * (acc - acc_est[None, :]), 0.0, 1.0)
    return (est, acc_est), (loss, acc)


def interval(est: float, sample: np.ndarray, scale: float = 1.0) -> dict:
    """{"estimate", "80%": [lo, hi], "95%": [lo, hi]} from draws, each containing the estimate
    ([None, None] without draws)."""
    x = sample[np.isfinite(sample)]
    out = {"estimate": float(est) * scale}
    for lv in LEVELS:
        if len(x) > 1:
            lo, hi = np.percentile(x, [50 * (1 - lv), 50 * (1 + lv)])
            out[f"{round(100 * lv)}%"] = [float(min(lo, est)) * scale, float(max(hi, est)) * scale]
        else:  # no resamples (--n-boot 0): no interval
            out[f"{round(100 * lv)}%"] = [None, None]
    return out


def _spread(sample: np.ndarray) -> np.ndarray:
    """Robust sd per column: half the 16-84 % range."""
    q = np.nanpercentile(sample, [15.87, 84.13], axis=0)
    return 0.5 * (q[1] - q[0])


def _held_out_groups(td: TaskData) -> list[tuple[str, np.ndarray]]:
    """Masks of the runs each check holds out: the largest size, and the largest ratio D/N
    (the longest-trained multiplier), each provided 5 runs at 3 sizes and 3 ratios remain."""
    ratio = td.d / td.n
    groups = []
    for what, key in (("N", td.n), ("D/N", ratio)):
        out = key >= key.max() * (1 - 1e-6)
        rest = ~out
        if rest.sum() >= 5 and np.unique(np.round(np.log(td.n[rest]), 6)).size >= 3 and \
                np.unique(np.round(np.log(td.d[rest]), 6)).size >= 3 and out.sum() < len(out):
            groups.append((what, out))
    return groups


def holdouts(tf: TaskFit, n_boot: int = HOLDOUT_RESAMPLES, seed: int = 0) -> list[tuple]:
    """The held-out refits (module docstring, 3): per check (what, refit TaskFit, indices of the
    held-out runs); [] when no refit is possible (too few sizes or ratios left)."""
    from orchestrator.fitting.bootstrap import resample_counts

    td = tf.data
    out = []
    for what, mask in _held_out_groups(td):
        sub = td.subset(~mask)
        try:
            h = fit_task(sub, resample_counts(len(sub.runs), n_boot, seed + 7919), seed)
        except (FitError, np.linalg.LinAlgError, ValueError):
            continue
        out.append((what, h, np.flatnonzero(mask)))
    return out


def holdout_errors(tf: TaskFit, checks: list[tuple], kappa1: float | None, seed: int = 0) -> dict:
    """Errors (predicted - observed) and predictive sds of the held-out runs: of the log task
    loss (kappa1 None) or of the accuracy, with the refits' loss draws scaled by kappa1."""
    td = tf.data
    rng = np.random.default_rng(seed + 104729)
    errors, sds, runs, dist = [], [], [], []
    for _, h, idx in checks:
        (l_est, a_est), (l_draw, a_draw) = draws(h, td.n[idx], td.d[idx], rng, kappa1 or 1.0, 1.0)
        if kappa1 is None:
            errors += (np.log(l_est) - np.log(td.loss[idx])).tolist()
            sds += _spread(np.log(l_draw)).tolist()
        else:
            errors += (a_est - td.acc[idx]).tolist()
            sds += _spread(a_draw).tolist()
        runs += [td.runs[i] for i in idx]
        dist += distance(h, td.n[idx], td.d[idx]).tolist()
    return {"errors": errors, "sds": sds, "runs": runs, "distance": dist}
