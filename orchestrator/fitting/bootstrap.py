"""Bootstrap intervals for every fitted quantity: resample the trials, refit, take percentiles.

Besiroglu et al. (2024, section 3) showed why Approach 3 needs intervals: Hoffmann et al.'s
reported exponents are implausibly precise for 400-odd runs, and the bootstrap over runs gives
a = 0.513 +- 0.020 on the same data. A resample is a vector of counts over the runs
(multinomial, as many draws as runs), so every refit is a *weighted* fit of the same points and
all resamples share one set of arrays:

* Approach 3: every resample starts from the full-data optimum and is refined by the batched
  Levenberg-Marquardt of ``orchestrator.fitting.law.refine``, a thousand problems per array operation.
  A warm start can stay in the full data's basin when a resample's optimum has moved to another,
  so a cheap variable-projection check follows: for a coarse grid of exponents, the weighted
  least-squares (E, A, B) of every resample comes from one matrix product of the counts with
  precomputed per-run features; where one of a resample's three best distinct grid basins lies
  away from its refit (and is not much worse), it is refined from there too and the lower Huber
  objective wins. Rows the batched refit leaves unconverged are polished one by one with L-BFGS.
  On the Chinchilla points it agreed with a full global refit in each of 70 resamples checked;
  on small noisy synthetic sweeps about 1 resample in 40 stops in a neighbouring local minimum
  (objective within 0.2 %), as L-BFGS from the same warm start does.
* Approach 2: each budget's parabolas are weighted least squares, again one matrix product.
* Approach 1: the envelope depends only on which runs a resample contains; a short loop.

Intervals are percentile intervals (80 % and 95 %). Quantities a resample cannot determine
(Approach 2 with fewer than two budgets left) are NaN in that resample and left out.

Memory is bounded whatever the size: resamples are drawn and refitted in blocks of about
BLOCK_ELEMENTS resample-runs (the generator's stream is the same as one draw of all of them).
From NEWTON_MIN_RUNS runs on, each resample's Approach 3 estimate is one Newton step from the
full-data optimum with the Huber loss's exact curvature (``fit.one_step``) instead of an exact
refit: at that size it matches the refits (sd of a within 2.5 % at 10,000 runs, 1 % at
100,000) for a 30th of the time, and resamples do not jump between basins as exact refits can.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from orchestrator.fitting.isoflop import MIN_SIZES
from orchestrator.fitting.law import HUBER_DELTA, Approach3Fit, lbfgs, one_step, optimal_allocation, refine, step_terms
from orchestrator.fitting import LEVELS
from workers.flops import train_flops

__all__ = ["Interval", "Bootstrap", "bootstrap", "resample_counts", "newton_applies", "refit_chinchilla", "LEVELS"]

CHECK_GRID = np.linspace(0.05, 2.5, 16)  # exponents for the variable-projection check
BASIN = 0.15  # exponents closer than this are one basin (as in fit._varpro_candidates)
SSE_RATIO = 2.0  # a basin this much worse on the surrogate is not worth a refit
# A refit has converged when a step gains less than this relatively: a's bootstrap quantiles
# then agree with a 1e-12 refit to ~1e-8 (200 resamples of 10,000 runs: 1.9 s against 3.5 s).
BOOT_RTOL = 1e-10
CHUNK_ELEMENTS = 400_000  # resamples x runs per block of bootstrap refits (orchestrator.fitting.bootstrap._refine_in_chunks)
BLOCK_ELEMENTS = 10_000_000  # resamples x runs drawn at once: 80 MB of counts (1,000 resamples of 10,000 runs)
NEWTON_MIN_RUNS = 5_000  # from here on, one exact-curvature Newton step per resample (module docstring)
NEWTON_MIN_INSIDE = 250  # ... provided this many runs lie within the Huber delta (the curvature's support)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile intervals {level: (lo, hi)}."""

    estimate: float
    bounds: dict[float, tuple[float, float]]
    n_draws: int

    def contains(self, x: float, level: float = 0.80) -> bool:
        lo, hi = self.bounds[level]
        return lo <= x <= hi

    def width(self, level: float = 0.80) -> float:
        lo, hi = self.bounds[level]
        return hi - lo

    def to_json(self) -> dict:
        out = {"estimate": self.estimate, "n_draws": self.n_draws}
        out.update({f"{round(100 * lv)}%": list(b) for lv, b in self.bounds.items()})
        return out


@dataclass
class Bootstrap:
    """Draws of every quantity over ``n_boot`` resamples of the runs (seeded, reproducible)."""

    n_boot: int
    seed: int
    estimates: dict[str, float]
    draws: dict[str, np.ndarray] = field(repr=False)
    basin_switches: int = 0  # resamples whose optimum the variable-projection check moved
    polished: int = 0  # resamples the batched refit left to L-BFGS
    refits: str = "exact"  # "exact" refits, or "newton": one Newton step each (module docstring)
    laws: np.ndarray | None = field(default=None, repr=False)  # (n_boot, P) the law form's internal vectors

    def interval(self, name: str) -> Interval:
        x = self.draws[name]
        x = x[np.isfinite(x)]
        if not len(x):
            return Interval(self.estimates[name], {lv: (math.nan, math.nan) for lv in LEVELS}, 0)
        bounds = {lv: tuple(float(q) for q in np.percentile(x, [50 * (1 - lv), 50 * (1 + lv)])) for lv in LEVELS}
        return Interval(self.estimates[name], bounds, len(x))

    def intervals(self) -> dict[str, Interval]:
        return {k: self.interval(k) for k in self.draws}


def _varpro_check(counts, n, d, loss, grid=CHECK_GRID, n_basins: int = 3):
    """Start vectors in the ``n_basins`` best distinct basins of each resample's weighted
    relative-error least squares over a grid of exponents: a list of (starts (k, 5), usable (k,)).
    A grid point with a negative coefficient is no candidate, nor one whose sum of squares
    exceeds SSE_RATIO times the resample's best."""
    m, g = len(n), len(grid)
    step = grid[1] - grid[0]
    u = 1.0 / loss
    xu = n[:, None] ** -grid[None, :] * u[:, None]  # (runs, grid): A's column, scaled by 1/L
    yu = d[:, None] ** -grid[None, :] * u[:, None]
    blocks = [u * u, xu * u[:, None], yu * u[:, None], xu * xu, yu * yu,
              (xu[:, :, None] * yu[:, None, :]).reshape(m, -1), u, xu, yu]
    feats = np.concatenate([b.reshape(m, -1) for b in blocks], axis=1)
    s = counts @ feats  # every weighted sum for every resample and grid point: one product
    cut = np.cumsum([0] + [b.reshape(m, -1).shape[1] for b in blocks])
    s1, sx, sy, sxx, syy, sxy, r1, rx, ry = (s[:, cut[i]:cut[i + 1]] for i in range(len(blocks)))
    k = len(counts)
    M = np.empty((k, g, g, 3, 3))
    M[..., 0, 0] = s1[:, :, None]
    M[..., 0, 1] = M[..., 1, 0] = sx[:, :, None]
    M[..., 0, 2] = M[..., 2, 0] = sy[:, None, :]
    M[..., 1, 1] = sxx[:, :, None]
    M[..., 2, 2] = syy[:, None, :]
    M[..., 1, 2] = M[..., 2, 1] = sxy.reshape(k, g, g)
    rhs = np.stack(np.broadcast_arrays(r1[:, :, None], rx[:, :, None], ry[:, None, :]), axis=-1)
    scale = np.sqrt(np.maximum(np.diagonal(M, axis1=-2, axis2=-1), 1e-300))  # equilibrate: columns differ by 1e6
    coef = np.linalg.solve(M / scale[..., :, None] / scale[..., None, :] + 1e-12 * np.eye(3),
                           (rhs / scale)[..., None])[..., 0] / scale
    sse = counts.sum(axis=1)[:, None, None] - (coef * rhs).sum(axis=-1)  # at the LS solution
    sse[(coef <= 0).any(axis=-1)] = np.inf
    sse = sse.reshape(k, -1)
    coef = coef.reshape(k, -1, 3)
    ga, gb = (x.ravel() for x in np.meshgrid(grid, grid, indexing="ij"))
    rows = np.arange(k)
    best_sse = sse.min(axis=1)
    out = []
    for _ in range(n_basins):
        i = sse.argmin(axis=1)
        ok = np.isfinite(sse[rows, i]) & (sse[rows, i] <= SSE_RATIO * best_sse)
        E, A, B = coef[rows, i].T
        tiny = 1e-8
        out.append((np.stack([np.log(np.maximum(A, tiny)), np.log(np.maximum(B, tiny)), np.log(np.maximum(E, tiny)),
                              ga[i], gb[i]], axis=1), ok))
        # The next candidate must lie in another basin: mask this one's neighbourhood.
        sse[(np.abs(ga[None, :] - ga[i][:, None]) < 2.5 * step) & (np.abs(gb[None, :] - gb[i][:, None]) < 2.5 * step)] = np.inf
    return out


def _refine_in_chunks(V0, log_n, log_d, log_l, counts, delta):
    """``refine`` over blocks of resamples of about CHUNK_ELEMENTS resample-points each: with
    10,000 runs, 1,000 resamples at once make every temporary 80 MB (memory-bound, 2 GB peak);
    blocks that fit in cache are faster and keep memory flat. Small sweeps are one block."""
    size = max(8, CHUNK_ELEMENTS // max(1, len(log_n)))
    starts = range(0, len(V0), size)

    def run(i):
        return refine(V0[i:i + size], log_n, log_d, log_l, counts[i:i + size], delta, rtol=BOOT_RTOL)

    if len(starts) == 1:
        parts = [run(0)]
    else:  # numpy releases the GIL in its array loops: blocks run on every core
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            parts = list(pool.map(run, starts))
    return tuple(np.concatenate(x) for x in zip(*parts))


def refit_chinchilla(counts, n, d, loss, v_full, delta: float = HUBER_DELTA) -> np.ndarray:
    """Chinchilla's law refitted to each row of ``counts`` from ``v_full``: (k, 5) vectors."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    return _refit_approach3(np.asarray(counts, float), n, d, loss, np.asarray(v_full, float), delta)[0]


def _refit_approach3(counts, n, d, loss, v_full, delta):
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    # Each refit starts from its one-step estimate, nearer its optimum than the full-data fit
    # is: with BOOT_RTOL, 1.9 s instead of 3.4 s for 200 resamples of 10,000 runs.
    start = one_step(v_full, log_n, log_d, log_l, counts, delta)
    V, f, conv = _refine_in_chunks(start, log_n, log_d, log_l, counts, delta)
    switches = 0
    for starts, ok in _varpro_check(counts, n, d, loss):
        other = ok & ((np.abs(starts[:, 3] - V[:, 3]) > BASIN) | (np.abs(starts[:, 4] - V[:, 4]) > BASIN))
        if not other.any():
            continue
        idx = np.flatnonzero(other)
        V2, f2, conv2 = _refine_in_chunks(starts[idx], log_n, log_d, log_l, counts[idx], delta)
        better = f2 < f[idx]
        j = idx[better]
        V[j], f[j], conv[j] = V2[better], f2[better], conv2[better]
        switches += int(better.sum())
    todo = np.flatnonzero(~conv)
    # scipy's L-BFGS-B calls BLAS on tiny matrices; BLAS threads only wait on each other there,
    # badly so when the cores are shared.
    with threadpool_limits(1, user_api="blas"):
        for i in todo:
            res = lbfgs(V[i], log_n, log_d, log_l, delta, counts[i])
            if res.fun <= f[i]:
                V[i], f[i] = res.x, res.fun
    return V, switches, len(todo)


def _weighted_vertices(x, y, W):
    """Vertices (k,) of weighted least-squares parabolas y ~ x, one per row of weights W (k, m),
    with parabola_vertex's conventions; NaN where fewer than MIN_SIZES distinct x are present."""
    shift = x.mean()  # centred: log N ~ 20 would make the x^2 column ill-conditioned
    xc = x - shift
    X = np.stack([xc * xc, xc, np.ones_like(xc)], axis=1)
    G = (W @ (X[:, :, None] * X[:, None, :]).reshape(len(x), 9)).reshape(-1, 3, 3)
    r = W @ (X * y[:, None])
    present = W > 0
    # Distinct sizes present per row: the weights summed per distinct x (runs sorted by x), O(k m).
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    distinct = (np.add.reduceat(W[:, order], first, axis=1) > 0).sum(axis=1)
    good = distinct >= MIN_SIZES
    G[~good] = np.eye(3)
    ridge = 1e-12 * np.trace(G, axis1=1, axis2=2)[:, None, None] * np.eye(3)  # near-equal sizes stay solvable
    k2, k1, _ = np.linalg.solve(G + ridge, r[:, :, None])[:, :, 0].T
    k1 = k1 - 2 * k2 * shift  # back to uncentred x: the vertex is -k1 / (2 k2)
    lo = np.where(present, x, np.inf).min(axis=1)
    hi = np.where(present, x, -np.inf).max(axis=1)
    at_min = x[np.where(present, y, np.inf).argmin(axis=1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = np.where(k2 > 0, np.clip(-k1 / (2 * k2), lo, hi), at_min)
    return np.where(good, xv, np.nan)


def _masked_slope(logc, logy):
    """Per row, (intercept, slope) of logy ~ logc over the finite entries; NaN with fewer than 2."""
    ok = np.isfinite(logy)
    k = ok.sum(axis=1)
    c = np.where(ok, logc[None, :], 0.0)
    mc = c.sum(axis=1) / np.maximum(k, 1)
    my = np.where(ok, logy, 0.0).sum(axis=1) / np.maximum(k, 1)
    dc = np.where(ok, logc[None, :] - mc[:, None], 0.0)
    dy = np.where(ok, logy - my[:, None], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (dc * dy).sum(axis=1) / (dc * dc).sum(axis=1)
    slope[k < 2] = np.nan
    return my - slope * mc, slope


def _refit_approach2(counts, budget, n, d, loss, budgets, target_compute):
    n_opt = np.full((len(counts), len(budgets)), np.nan)
    d_opt = np.full_like(n_opt, np.nan)
    for j, c in enumerate(budgets):
        sel = np.flatnonzero(budget == c)
        n_opt[:, j] = _weighted_vertices(np.log(n[sel]), loss[sel], counts[:, sel])
        d_opt[:, j] = _weighted_vertices(np.log(d[sel]), loss[sel], counts[:, sel])
    logc = np.log(np.asarray(budgets, float))
    g, a = _masked_slope(logc, n_opt)
    h, b = _masked_slope(logc, d_opt)
    return {"approach2.a": a, "approach2.b": b, "approach2.n_opt": np.exp(g + a * math.log(target_compute)),
            "approach2.d_opt": np.exp(h + b * math.log(target_compute))}


def _refit_approach1(counts, compute, n, d, loss, budget):
    """Approach 1's exponents for every resample at once (equal to ``fit_approach1`` per row).

    Per budget the best run of a resample is its lowest-loss run present (count > 0); a budget
    is on the envelope when that beats every smaller budget's best; the power laws are then
    log-log least squares over each row's envelope (NaN below 3 points, as InsufficientData).
    Runs are sorted once by (budget, loss), so the best run present of every budget is a
    reduction along the sorted runs: O(resamples x runs), a million runs without budgets
    (a budget per run) included."""
    key = np.where(budget > 0, budget, compute)
    order = np.lexsort((loss, key))  # by budget ascending, then by loss
    ks = key[order]
    first = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])  # each budget's lowest-loss run
    k = len(counts)
    present = counts[:, order] > 0
    pos = np.where(present, np.arange(len(order))[None, :], len(order))
    best_pos = np.minimum.reduceat(pos, first, axis=1)  # first present run of each budget
    has = best_pos < len(order)
    best_run = order[np.minimum(best_pos, len(order) - 1)]
    best_loss = np.where(has, loss[best_run], np.inf)
    prev_min = np.minimum.accumulate(np.hstack([np.full((k, 1), np.inf), best_loss[:, :-1]]), axis=1)
    on = np.isfinite(best_loss) & (best_loss < prev_min)
    x = np.log(compute[best_run])
    w = on.astype(float)
    sw = w.sum(axis=1)
    out = {}
    for name, y in (("approach1.a", np.log(n[best_run])), ("approach1.b", np.log(d[best_run]))):
        with np.errstate(invalid="ignore", divide="ignore"):
            mx, my = (w * x).sum(axis=1) / sw, (w * y).sum(axis=1) / sw
            slope = (w * (x - mx[:, None]) * (y - my[:, None])).sum(axis=1) / (w * (x - mx[:, None]) ** 2).sum(axis=1)
        out[name] = np.where(sw >= 3, slope, np.nan)
    return out


ENVELOPE_DOMINATORS = 40  # runs beaten by this many others are never on a resample's envelope (below)
_DOMINANCE_BLOCK = 256


def _envelope_candidates(key, loss, most: int = ENVELOPE_DOMINATORS) -> np.ndarray:
    """Indices of the runs that can be on some resample's lower envelope: those with fewer than
    ``most`` runs of a smaller or equal budget and a lower loss. Any one of those present keeps
    a run off the envelope, and off every other run's way (it beats all that the run beats),
    and a resample leaves out a given run with probability e^-1: all ``most`` of them with
    e^-40 ~ 4e-18. A million runs without budgets leave a few hundred candidates, so the
    Approach 1 bootstrap costs what it does for a small sweep. Computed in blocks of runs
    sorted by (budget, loss), against the ``most`` lowest losses of the blocks before."""
    order = np.lexsort((loss, key))
    sorted_loss = loss[order]
    lowest = np.empty(0)
    keep = []
    for s in range(0, len(order), _DOMINANCE_BLOCK):
        blk = sorted_loss[s:s + _DOMINANCE_BLOCK]
        within = np.tril(blk[None, :] < blk[:, None], -1).sum(axis=1)  # earlier in the order, lower loss
        keep.append(order[s:s + _DOMINANCE_BLOCK][within + np.searchsorted(lowest, blk) < most])
        lowest = np.sort(np.concatenate([lowest, blk]))[:most]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)


def resample_counts(n_runs: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_runs) multinomial counts: row i says how often each run is in resample i."""
    return np.concatenate(list(_count_blocks(n_runs, n_boot, seed, n_boot)) or [np.zeros((0, n_runs))])


def _count_blocks(n_runs: int, n_boot: int, seed: int, block: int):
    """The rows of ``resample_counts`` in blocks of ``block`` (the same generator stream)."""
    rng = np.random.default_rng(seed)
    p = np.full(n_runs, 1.0 / n_runs)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        if n_runs >= NEWTON_MIN_RUNS:
            # The same multinomial, as counts of n uniform draws: numpy's multinomial takes one
            # binomial per run, 76 ms per resample of a million runs against 44 ms.
            yield np.stack([np.bincount(rng.integers(0, n_runs, n_runs), minlength=n_runs) for _ in range(size)]
                           ).astype(float)
        else:
            yield rng.multinomial(n_runs, p, size=size).astype(float)


def _law_draws(V, target_compute):
    A, B, E, alpha, beta = np.exp(V[:, 0]), np.exp(V[:, 1]), np.exp(V[:, 2]), V[:, 3], V[:, 4]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n_opt, d_opt, l_opt = optimal_allocation(E, A, B, alpha, beta, target_compute)
        return {"E": E, "A": A, "B": B, "alpha": alpha, "beta": beta, "a": beta / (alpha + beta),
                "b": alpha / (alpha + beta), "n_opt": n_opt, "d_opt": d_opt, "loss_opt": l_opt}


def newton_applies(n, d, loss, fit3: Approach3Fit, delta: float = HUBER_DELTA) -> bool:
    """Whether ``bootstrap`` takes one Newton step per resample (module docstring)."""
    return len(n) >= NEWTON_MIN_RUNS and int((np.abs(fit3.residuals) <= delta).sum()) >= NEWTON_MIN_INSIDE


def bootstrap(n, d, loss, fit3: Approach3Fit | None, target_compute: float, *, n_boot: int = 1000, seed: int = 0,
              compute=None, budget=None, approach2_budgets=(), approach1: bool = False,
              estimates: dict | None = None, delta: float = HUBER_DELTA, law=None, X: dict | None = None) -> Bootstrap:
    """Resample the runs ``n_boot`` times and refit every form; see the module docstring.

    ``fit3`` is the full-data Approach 3 fit (its optimum is every refit's warm start);
    ``compute`` defaults to 6ND and ``budget`` (0: none) groups the runs for Approaches 1 and 2.
    Approach 2 is refitted over ``approach2_budgets`` (values of ``budget``), Approach 1 when
    ``approach1``. ``estimates`` supplies the full-data values of the non-Approach-3 draws.
    ``law``: a fitted form other than Chinchilla's (orchestrator.fitting.forms.general.FormFit, with
    its inputs ``X``), refitted by the general batched LM instead of Approach 3.
    """
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    general = law is not None and law.form.name != "chinchilla"
    budget = np.zeros_like(n) if budget is None else np.asarray(budget, float)
    compute = train_flops(n, d) if compute is None else np.asarray(compute, float)
    newton = not general and newton_applies(n, d, loss, fit3, delta)
    if not general:
        v_full = fit3.params.as_vector()
        logs = np.log(n), np.log(d), np.log(loss)
        terms = step_terms(v_full, *logs, delta, curvature="exact") if newton else None
    env = _envelope_candidates(np.where(budget > 0, budget, compute), loss) if approach1 else None
    parts, laws, switches, polished = [], [], 0, 0
    for counts in _count_blocks(len(n), n_boot, seed, max(1, BLOCK_ELEMENTS // len(n))):
        if general:
            from orchestrator.fitting.forms.general import refit_resamples

            V = refit_resamples(law, X, loss, counts, delta)
            draws = _form_draws(law.form, V, target_compute)
        else:
            if newton:
                V = one_step(v_full, *logs, counts, delta, curvature="exact", terms=terms)
            else:
                V, sw, pol = _refit_approach3(counts, n, d, loss, v_full, delta)
                switches, polished = switches + sw, polished + pol
            draws = _law_draws(V, target_compute)
        laws.append(V)
        if len(approach2_budgets) >= 2:
            draws.update(_refit_approach2(counts, budget, n, d, loss, list(approach2_budgets), target_compute))
        if approach1:
            draws.update(_refit_approach1(counts[:, env], compute[env], n[env], d[env], loss[env], budget[env]))
        parts.append(draws)
    draws = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    est = _form_estimates(law.form, law.z, target_compute) if general else _chinchilla_estimates(fit3, target_compute)
    est.update({k: v for k, v in (estimates or {}).items() if k in draws})
    draws = {k: v for k, v in draws.items() if k in est}
    return Bootstrap(n_boot, seed, est, draws, switches, polished, "newton" if newton else "exact",
                     np.concatenate(laws) if laws else None)


def _chinchilla_estimates(fit3: Approach3Fit, target_compute: float) -> dict:
    p = fit3.params
    full = dict(zip(("n_opt", "d_opt", "loss_opt"), optimal_allocation(p.E, p.A, p.B, p.alpha, p.beta, target_compute)))
    est = {"E": p.E, "A": p.A, "B": p.B, "alpha": p.alpha, "beta": p.beta, "a": p.a, "b": p.b}
    est.update({k: float(v) for k, v in full.items()})
    return est


_TARGETS = ("a", "b", "n_opt", "d_opt", "loss_opt")


def _form_draws(form, V: np.ndarray, target_compute: float) -> dict:
    """A general form's draws: its named parameters and the targets (form.targets) per resample."""
    out = {p.name: p.natural(V[:, i]) for i, p in enumerate(form.params)}
    if form.has_optimum:
        t = form.targets(V, target_compute)
        with np.errstate(all="ignore"):
            out.update(zip(_TARGETS, (t[:, 0], t[:, 1], np.exp(t[:, 2]), np.exp(t[:, 3]), np.exp(t[:, 4]))))
    return out


def _form_estimates(form, z: np.ndarray, target_compute: float) -> dict:
    est = form.values(z)
    if form.has_optimum:
        t = form.targets(z, target_compute)
        with np.errstate(all="ignore"):
            est.update(zip(_TARGETS, (float(t[0]), float(t[1]), *(float(np.exp(x)) for x in t[2:]))))
    return est
