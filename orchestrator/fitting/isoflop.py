"""Approaches 1 and 2 of Hoffmann et al. (2022): compute-optimal sizes read off the runs.

Approach 2 (their section 3.2): per compute budget, a parabola of loss in log N through the
IsoFLOP points, and one in log D; the vertices are N_opt(C) and D_opt(C), and lines through
(log C, log N_opt) and (log C, log D_opt) give N_opt = G C^a and D_opt = H C^b.

Approach 1 (section 3.1) takes, at each compute, the run with the lowest loss: the lower
envelope of loss over compute. With final losses only (no training curves) the envelope is
read per budget (or per run, when there are no budgets): the best run of a budget is on the
envelope when no smaller budget reached a lower loss. Power laws through the envelope runs
give a second estimate of a and b, coarse (the grid of sizes quantises it) but assumption-free.

Budgets come from the sweep (IsoFLOP trials carry theirs). Published runs often give only C,
scattered around nominal budgets (the points extracted from Chinchilla's figures are, see
Besiroglu et al. 2024), so ``infer_budgets`` groups runs whose C lie within a few per cent,
but only where C really is clustered: runs at random (N, D) have C spread continuously, and
chaining neighbours within 3 % then makes either a few groups spanning decades (10,000 runs)
or dozens of chance groups of 5-10 runs (1,000 runs), none of them an IsoFLOP set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from orchestrator.errors import InsufficientData
from orchestrator.report.text import flops_str

__all__ = ["IsoFlopMinimum", "PowerLaw", "Approach1Fit", "Approach2Fit", "fit_approach1", "fit_approach2",
           "fit_isoflop_parabolas", "infer_budgets", "budget_inference", "budget_groups",
           "distinct_per_group", "lower_envelope", "parabola_vertex", "power_law", "MIN_SIZES"]

MIN_SIZES = 3  # a parabola has 3 coefficients


@dataclass(frozen=True)
class PowerLaw:
    """y = G x^exponent."""

    G: float
    exponent: float

    def __call__(self, x):
        return self.G * np.asarray(x, float) ** self.exponent


def power_law(x, y) -> PowerLaw:
    """Least squares in log-log space."""
    k, log_g = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return PowerLaw(float(math.exp(log_g)), float(k))


@dataclass(frozen=True)
class IsoFlopMinimum:
    budget: float
    n_opt: float
    d_opt: float
    loss: float
    at_edge: bool  # a vertex outside the swept sizes: the sizes do not bracket the optimum
    n_sizes: int


def parabola_vertex(x, y) -> tuple[float, float, bool]:
    """(x, y) of the minimum of the least-squares parabola, and whether it is at an edge.

    At the edge means the sizes do not bracket the optimum: the lowest loss is at the smallest
    or largest size, or the vertex lies outside the swept range (it is clipped to it), or the
    fit is concave (no minimum; the lowest point stands in).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    k2, k1, k0 = np.polyfit(x, y, 2)
    i = int(np.argmin(y))
    if k2 <= 0:
        return float(x[i]), float(y[i]), True
    xv = -k1 / (2 * k2)
    edge = not (x.min() < xv < x.max()) or x[i] in (x.min(), x.max())
    xv = float(np.clip(xv, x.min(), x.max()))
    return xv, float(k0 + k1 * xv + k2 * xv * xv), edge


def budget_groups(budget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(budgets, order, starts): the distinct positive budgets ascending, the indices of their
    runs grouped by budget, and where each budget's runs start in ``order``. One sort, so a
    table with a budget per run (a million of them) costs what one with ten does."""
    budget = np.asarray(budget, float)
    pos = np.flatnonzero(budget > 0)
    order = pos[np.argsort(budget[pos], kind="stable")]
    b = budget[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]]) if len(b) else np.zeros(0, int)
    return b[starts], order, starts


def distinct_per_group(values, order, starts) -> np.ndarray:
    """Distinct ``values`` among each group's runs (groups as ``budget_groups`` gives them)."""
    if not len(order):
        return np.zeros(0, int)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
    pairs = np.unique(np.stack([group, np.asarray(values, float)[order]], axis=1), axis=0)
    return np.bincount(pairs[:, 0].astype(int), minlength=len(starts))


def fit_isoflop_parabolas(budget, n, d, loss) -> tuple[list[IsoFlopMinimum], dict[float, int]]:
    """Vertices for every budget with at least MIN_SIZES sizes, and {budget: sizes} of the rest."""
    budget, n, d, loss = (np.asarray(x, float) for x in (budget, n, d, loss))
    budgets, order, starts = budget_groups(budget)
    sizes = distinct_per_group(n, order, starts)
    skipped = {float(c): int(k) for c, k in zip(budgets, sizes) if k < MIN_SIZES}
    out = []
    for j in np.flatnonzero(sizes >= MIN_SIZES):
        sel = order[starts[j]:starts[j + 1] if j + 1 < len(starts) else len(order)]
        xn, yn, edge_n = parabola_vertex(np.log(n[sel]), loss[sel])
        xd, _, edge_d = parabola_vertex(np.log(d[sel]), loss[sel])
        out.append(IsoFlopMinimum(float(budgets[j]), math.exp(xn), math.exp(xd), yn, edge_n or edge_d, len(sel)))
    return out, skipped


class _AllocationExponents:
    """a and b of a fit's laws N_opt = G C^a and D_opt = H C^b."""

    n_law: PowerLaw
    d_law: PowerLaw

    @property
    def a(self) -> float:
        return self.n_law.exponent

    @property
    def b(self) -> float:
        return self.d_law.exponent


@dataclass
class Approach2Fit(_AllocationExponents):
    minima: list[IsoFlopMinimum]
    n_law: PowerLaw  # N_opt = G C^a
    d_law: PowerLaw  # D_opt = H C^b
    skipped: dict[float, int] = field(default_factory=dict)  # budgets with too few sizes


def _budget_list(skipped: dict[float, int], most: int = 5) -> str:
    """The first ``most`` budgets with their sizes; a count of the rest (a table may give every
    run a budget of its own: a million of them is no message)."""
    items = sorted(skipped.items())
    text = ", ".join(f"budget {flops_str(c)} has {k}" for c, k in items[:most])
    return text + (f", and {len(items) - most} more budgets with fewer" if len(items) > most else "")


def fit_approach2(budget, n, d, loss) -> Approach2Fit:
    """Approach 2; InsufficientData unless two budgets have MIN_SIZES sizes each."""
    minima, skipped = fit_isoflop_parabolas(budget, n, d, loss)
    if not minima and not skipped:
        raise InsufficientData("Approach 2 needs IsoFLOP budgets (runs grouped by compute); the runs have none")
    if not minima:
        raise InsufficientData(f"Approach 2 needs at least {MIN_SIZES} sizes in a budget; {_budget_list(skipped)}")
    if len(minima) < 2:
        more = f" ({_budget_list(skipped)} sizes)" if skipped else ""
        raise InsufficientData(f"Approach 2 needs at least 2 budgets with {MIN_SIZES} or more sizes to fit "
                               f"N_opt = G C^a; only budget {flops_str(minima[0].budget)} has{more}")
    c = [m.budget for m in minima]
    return Approach2Fit(minima, power_law(c, [m.n_opt for m in minima]), power_law(c, [m.d_opt for m in minima]),
                        skipped)


@dataclass
class Approach1Fit(_AllocationExponents):
    envelope: np.ndarray  # indices of the runs on the lower envelope, by increasing compute
    n_law: PowerLaw
    d_law: PowerLaw


def lower_envelope(compute, loss, budget=None) -> np.ndarray:
    """Indices of the runs on the lower envelope of loss over compute (see module docstring)."""
    compute, loss = np.asarray(compute, float), np.asarray(loss, float)
    key = compute if budget is None else np.where(np.asarray(budget, float) > 0, budget, compute)
    best = {}
    for i in np.argsort(loss, kind="stable"):
        best.setdefault(float(key[i]), int(i))  # the lowest loss at each budget
    out, lowest = [], math.inf
    for k in sorted(best):
        i = best[k]
        if loss[i] < lowest:
            out.append(i)
            lowest = loss[i]
    return np.array(out, int)


def fit_approach1(compute, n, d, loss, budget=None, min_points: int = 3) -> Approach1Fit:
    """Approach 1; InsufficientData unless ``min_points`` runs lie on the envelope."""
    env = lower_envelope(compute, loss, budget)
    if len(env) < min_points:
        raise InsufficientData(f"Approach 1 needs at least {min_points} budgets on the lower envelope of loss "
                               f"over compute (budgets whose best run beats every smaller budget); have {len(env)}")
    c = np.asarray(compute, float)[env]
    return Approach1Fit(env, power_law(c, np.asarray(n, float)[env]), power_law(c, np.asarray(d, float)[env]))


# A chain of runs within INFER_GAP of each other is one nominal budget only if it spans at
# most MAX_SPAN (Chinchilla's groups span 4-17 %); a longer chain is a continuum of C.
INFER_GAP = 0.03
MAX_SPAN = 1.25
# The groups are IsoFLOP sets only when they hold at least GROUPED_SHARE of the runs and are
# at least CONTRAST times as dense in log C as the runs outside them. Chinchilla's extracted
# points: 11 groups, 58 % of the runs, contrast 10.8. Random (N, D) over 4 x 4 decades, 4 seeds
# each: 300 runs 13-22 % grouped (contrast 5.7-7.1), 1,000 runs 42-48 % (contrast 2.7-3.1),
# 3,000 and more under 10 % (contrast under 1).
GROUPED_SHARE = 0.5
CONTRAST = 5.0


def infer_budgets(compute, n=None, rel_gap: float = INFER_GAP, min_runs: int = 5) -> np.ndarray:
    """Nominal budgets for runs given only C (0: none); see :func:`budget_inference`."""
    return budget_inference(compute, n, rel_gap, min_runs)[0]


def budget_inference(compute, n=None, rel_gap: float = INFER_GAP, min_runs: int = 5) -> tuple[np.ndarray, str]:
    """Nominal budgets for runs given only C, and "" or why there are none.

    Runs whose sorted C differ by less than ``rel_gap`` are chained into one group; groups of
    at least ``min_runs`` runs spanning at most MAX_SPAN in C (and with MIN_SIZES distinct N,
    when ``n`` is given) get their geometric mean C (3 significant digits) as budget, the rest 0
    (no budget). All budgets are 0 unless the groups look designed (GROUPED_SHARE, CONTRAST)."""
    c = np.asarray(compute, float)
    out = np.zeros_like(c)
    if not len(c):
        return out, ""
    order = np.argsort(c)
    lc = np.log(c[order])
    starts = np.flatnonzero(np.r_[True, np.diff(lc) > math.log1p(rel_gap)])
    ends = np.r_[starts[1:], len(c)]
    span = lc[ends - 1] - lc[starts]
    ok = (ends - starts >= min_runs) & (span <= math.log(MAX_SPAN))
    if n is not None and ok.any():
        ok &= distinct_per_group(n, order, starts) >= MIN_SIZES
    if not ok.any():
        return out, (f"no IsoFLOP groups: no {min_runs} or more runs of {MIN_SIZES} or more sizes have C within "
                     f"{rel_gap:.0%} of one another")
    inside = int((ends - starts)[ok].sum())
    width = np.maximum(span[ok], math.log1p(rel_gap)).sum()
    outside_density = (len(c) - inside) / max(lc[-1] - lc[0] - width, 1e-12)
    contrast = inside / width / max(outside_density, 1e-12)
    if inside < GROUPED_SHARE * len(c) or contrast < CONTRAST:
        return out, (f"C is spread continuously, not clustered at IsoFLOP budgets: the {int(ok.sum())} groups of runs "
                     f"with C within {rel_gap:.0%} of each other hold {inside} of {len(c)} runs and are "
                     f"{contrast:.2g} times as dense in log C as the rest (IsoFLOP sets: at least "
                     f"{GROUPED_SHARE:.0%} of the runs, {CONTRAST:g} times)")
    for s, e in zip(starts[ok], ends[ok]):
        out[order[s:e]] = float(f"{math.exp(lc[s:e].mean()):.3g}")
    return out, ""
