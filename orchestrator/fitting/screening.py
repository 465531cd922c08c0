"""Which runs a fit may use, why the others are left out, and whether the rest can fix a law.

A run is left out for one named reason (EXCLUSION_REASONS), counted and listed, never dropped
silently: a failed or diverged trial, a loss that is not a finite positive number, an N, D
or C that is missing, infinite, zero or negative. What remains must determine the law
L = E + A/N^alpha + B/D^beta: five parameters need five distinct (N, D) points, and the
three along each axis (E, A, alpha along N; E, B, beta along D) need three distinct values
of N and of D, spread over more than rounding (``law_data_problem``). A table that fails is
a one-line InsufficientData naming the count it has and the count it needs, not a fit whose
intervals have zero width.
"""

from __future__ import annotations

import enum

import numpy as np
import pandas as pd

from workers.store import TrialStatus

__all__ = ["Exclusion", "EXCLUSION_REASONS", "usable", "excluded_text", "law_data_problem", "distinct_count", "distinct_points",
           "N_PARAMS", "MIN_LEVELS", "MIN_SPREAD", "form_data_problem"]

N_PARAMS = 5  # E, A, B, alpha, beta
MIN_LEVELS = 3  # distinct N (and D): E + A/N^alpha has three parameters along N
MIN_SPREAD = 1.5  # N and D must each span at least this factor: closer values are one size, rounded

class Exclusion(str, enum.Enum):
    """Why a run is left out of a fit; the value is what the JSON and the text print."""

    FAILED = "failed"
    DIVERGED = "diverged"
    NON_FINITE_LOSS = "non_finite_loss"
    NON_POSITIVE_LOSS = "non_positive_loss"
    MISSING_SIZE = "missing_size"
    NON_FINITE_SIZE = "non_finite_size"
    NON_POSITIVE_SIZE = "non_positive_size"
    DROPPED_HIGHEST = "dropped_highest"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Exclusion.FAILED: "the trial raised an error",
    Exclusion.DIVERGED: "the training loss became NaN or infinite",
    Exclusion.NON_FINITE_LOSS: "finished without a finite final loss (missing, NaN or infinite)",
    Exclusion.NON_POSITIVE_LOSS: "a final loss of zero or below (a cross-entropy loss is positive)",
    Exclusion.MISSING_SIZE: "N, D or C missing or not a number",
    Exclusion.NON_FINITE_SIZE: "N, D or C infinite",
    Exclusion.NON_POSITIVE_SIZE: "N, D or C zero or negative",
    Exclusion.DROPPED_HIGHEST: "the highest losses, left out on request (--drop-highest)",
}
EXCLUSION_REASONS = {e.value: e.description for e in Exclusion}  # value -> description, in print order


def usable(trials: pd.DataFrame, drop_highest: int = 0, need_d: bool = True,
           extra: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, int], list[dict]]:
    """Completed trials with finite, positive N, D, C and loss; the count of each kind left out
    (keys of EXCLUSION_REASONS) and one record per excluded run. ``need_d`` False: a law of N
    alone (D and C may be missing); ``extra``: more size columns the law needs (unique tokens)."""
    status = trials["status"].astype(str)
    keep = (status == TrialStatus.COMPLETED.value).to_numpy()
    loss = pd.to_numeric(trials["eval_loss"], errors="coerce").astype(float).to_numpy()
    cols = (["n_params", "tokens"] + (["flops"] if "flops" in trials else []) if need_d else ["n_params"]) + list(extra)
    sizes = np.stack([pd.to_numeric(trials[c], errors="coerce").astype(float).to_numpy() for c in cols], axis=1)
    reason = np.full(len(trials), "", dtype=object)
    # Later lines win: a failed trial is "failed" whatever its loss; a run with a bad loss and a
    # bad size is named for its loss.
    reason[keep & np.isnan(sizes).any(axis=1)] = Exclusion.MISSING_SIZE.value
    reason[keep & np.isinf(sizes).any(axis=1)] = Exclusion.NON_FINITE_SIZE.value
    reason[keep & (sizes <= 0).any(axis=1)] = Exclusion.NON_POSITIVE_SIZE.value
    reason[keep & (loss <= 0)] = Exclusion.NON_POSITIVE_LOSS.value
    reason[keep & ~np.isfinite(loss)] = Exclusion.NON_FINITE_LOSS.value
    reason[(status == TrialStatus.FAILED.value).to_numpy()] = Exclusion.FAILED.value
    reason[(status == TrialStatus.DIVERGED.value).to_numpy()] = Exclusion.DIVERGED.value
    reason[~keep & (reason == "")] = Exclusion.FAILED.value  # any other state (lost, pending) did not finish
    ok = reason == ""
    if drop_highest > 0:
        # Besiroglu et al. (2024, section 2) drop Chinchilla's 5 highest-loss runs, outliers of
        # the digitisation; the option reproduces that and says so.
        idx = np.flatnonzero(ok)
        worst = idx[np.argsort(-loss[idx], kind="stable")[:drop_highest]]
        reason[worst] = Exclusion.DROPPED_HIGHEST.value
        ok = reason == ""
    excluded = {k: int((reason == k).sum()) for k in EXCLUSION_REASONS}
    bad = np.flatnonzero(~ok)
    names = trials["name"].astype(str).to_numpy() if "name" in trials else np.asarray(trials.index.astype(str))
    errors = trials["error"].to_numpy() if "error" in trials else np.full(len(trials), None)
    records = [{"name": str(names[i]), "reason": reason[i],
                "error": str(errors[i]).splitlines()[0] if isinstance(errors[i], str) and errors[i] else None}
               for i in bad]
    return trials[ok].copy(), excluded, records


def excluded_text(excluded: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')} ({EXCLUSION_REASONS[k]})" for k, v in excluded.items() if v) or "none"


def distinct_count(x) -> int:
    """Distinct values of a positive array, equal to 9 significant digits counting as one
    (C / 6N and a CSV's rounding make copies of one size differ in the last bits)."""
    return len(np.unique(np.round(np.log(np.asarray(x, float)), 9)))


def distinct_points(n, d) -> int:
    """Distinct (N, D) pairs, with :func:`distinct_count`'s tolerance (a sort, not np.unique's
    row comparison: a million runs in 0.3 s, not 2 s)."""
    if not len(n):
        return 0
    kn, kd = (np.round(np.log(np.asarray(x, float)), 9) for x in (n, d))
    order = np.lexsort((kd, kn))
    kn, kd = kn[order], kd[order]
    return 1 + int(((kn[1:] != kn[:-1]) | (kd[1:] != kd[:-1])).sum())


def form_data_problem(n_params: int, n, loss, d=None) -> str:
    """Why runs cannot determine a form of ``n_params`` parameters (a general form), or ""."""
    points = distinct_points(n, d) if d is not None else distinct_count(n)
    if points < n_params:
        return (f"the form has {n_params} parameters and needs at least {n_params} distinct "
                f"{'(N, D) points' if d is not None else 'N'}; the {len(n)} runs have {points}")
    if distinct_count(n) < MIN_LEVELS:
        return f"the law needs at least {MIN_LEVELS} distinct N; the runs have {distinct_count(n)}"
    if np.max(loss) <= np.min(loss) * (1 + 1e-9):
        return f"every run has the same loss ({loss[0]:.6g}): there is no fall with N or D to fit"
    return ""


def law_data_problem(n, d, loss) -> str:
    """Why runs with these finite, positive N, D and losses cannot determine the law, or ""."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    points = distinct_points(n, d)
    if points < N_PARAMS:
        return (f"the law has {N_PARAMS} parameters (E, A, B, alpha, beta) and needs at least {N_PARAMS} distinct "
                f"(N, D) points; the {len(n)} runs have {points}")
    for name, x, form in (("N", n, "E + A/N^alpha"), ("D", d, "E + B/D^beta")):
        levels = distinct_count(x)
        if levels < MIN_LEVELS:
            return (f"the law needs at least {MIN_LEVELS} distinct {name} ({form} has {MIN_LEVELS} parameters along "
                    f"{name}); the runs have {levels} ({name} = {', '.join(f'{v:.4g}' for v in np.unique(x)[:3])})")
        if x.max() < MIN_SPREAD * x.min():
            return (f"the law needs {name} spread over at least a factor of {MIN_SPREAD:g} to fit how loss falls "
                    f"with {name}; the runs' {name} only span {x.min():.4g} to {x.max():.4g}")
    if loss.max() <= loss.min() * (1 + 1e-9):
        return f"every run has the same loss ({loss[0]:.6g}): there is no fall with N or D to fit"
    return ""
