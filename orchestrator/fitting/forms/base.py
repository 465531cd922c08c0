"""The law-form interface: named parameters with bounds, the loss and its log Jacobian at
batches of parameter vectors, the compute-optimal allocation, and the inputs a form needs.

A form names its parameters (with bounds, a starting value, and whether it is fitted in log
space), computes the loss at a batch of parameter vectors and runs, its log-space Jacobian
(analytic where cheap, else forward differences), the compute-optimal allocation at C (closed
form where it exists, else a 1-D minimisation of L(N, C/6N) over log N) and says which inputs
it needs: N always, D for every form but ``n-only``, U (unique tokens) for ``data-constrained``.
The fitter (orchestrator.fitting.forms.general), the bootstrap, the residual model, the
extrapolation check and the comparison of forms (orchestrator.fitting.forms.selection) all work
through this interface. Parameter vectors are "internal": log of the value for a log
parameter, else the value; :meth:`LawForm.values` turns one into named values.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np

from orchestrator.errors import FitError
from orchestrator.fitting.law import LOG_COEF_MIN
from workers.flops import tokens_for_budget

__all__ = ["Param", "LawForm", "FormError", "FD_STEP"]

FD_STEP = 1e-6  # forward-difference step, relative to max(1, |z|)
OPT_SPAN = 16.0  # the 1-D optimum search spans N = sqrt(C/6) * e^(+-OPT_SPAN)
OPT_GRID = 97  # coarse grid points over that span before the golden-section polish
OPT_ITERS = 40  # golden-section iterations: the bracket shrinks to 0.618^40 of a grid step


class FormError(FitError):
    """A law form that cannot be built or used: unknown name, bad expression, bad bounds."""


@dataclass(frozen=True)
class Param:
    """One parameter: its name, starting value and bounds in natural units, and whether it is
    fitted as its log (then the bounds must be positive); ``start`` is the range, in natural
    units, that the random part of the global search samples (default: the bounds, where finite)."""

    name: str
    init: float
    lo: float = -math.inf
    hi: float = math.inf
    log: bool = False
    start: tuple[float, float] | None = None

    def internal(self, x: float) -> float:
        return math.log(x) if self.log else float(x)

    def natural(self, z):
        return np.exp(z) if self.log else z

    @property
    def bounds(self) -> tuple[float, float]:
        if self.log:
            return (math.log(self.lo) if self.lo > 0 else LOG_COEF_MIN, math.log(self.hi) if math.isfinite(self.hi) else math.inf)
        return self.lo, self.hi

    @property
    def start_range(self) -> tuple[float, float]:
        lo, hi = self.start if self.start else (self.lo, self.hi)
        z0 = self.internal(self.init)
        zlo = self.internal(lo) if math.isfinite(lo) and (lo > 0 or not self.log) else z0 - 3.0
        zhi = self.internal(hi) if math.isfinite(hi) else z0 + 3.0
        return zlo, zhi


class LawForm(abc.ABC):
    """Base class: subclasses define ``name``, ``params``, ``inputs``, ``formula`` and ``log_loss``."""

    name: str = ""
    params: tuple[Param, ...] = ()
    inputs: frozenset = frozenset({"N", "D"})
    formula: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def lower(self) -> np.ndarray:
        return np.array([p.bounds[0] for p in self.params])

    @property
    def upper(self) -> np.ndarray:
        return np.array([p.bounds[1] for p in self.params])

    def init(self) -> np.ndarray:
        return np.array([p.internal(p.init) for p in self.params])

    def values(self, z) -> dict[str, float]:
        return {p.name: float(p.natural(float(v))) for p, v in zip(self.params, z)}

    def from_values(self, values: dict[str, float]) -> np.ndarray:
        return np.array([p.internal(values[p.name]) for p in self.params])

    def clip(self, Z: np.ndarray) -> np.ndarray:
        return np.clip(Z, self.lower, self.upper)

    # --- the law -----------------------------------------------------------------------------
    @abc.abstractmethod
    def log_loss(self, Z: np.ndarray, X: dict) -> np.ndarray:
        """log L at every run for every parameter row: Z (k, P), X's arrays (n,) or (k, n) -> (k, n).
        NaN where the law is undefined (a fitter treats that as an infinite objective)."""

    def loss(self, Z, X) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.exp(self.log_loss(np.atleast_2d(Z), X))

    def log_jacobian(self, Z: np.ndarray, X: dict, f0: np.ndarray | None = None) -> np.ndarray:
        """d log L / d z: (k, n, P), by forward differences (subclasses override where analytic)."""
        Z = np.atleast_2d(Z)
        f0 = self.log_loss(Z, X) if f0 is None else f0
        h = FD_STEP * np.maximum(1.0, np.abs(Z))
        cols = []
        for i in range(Z.shape[1]):
            Zi = Z.copy()
            Zi[:, i] += h[:, i]
            cols.append((self.log_loss(Zi, X) - f0) / h[:, i:i + 1])
        return np.stack(cols, axis=-1)

    def seeds(self, chinchilla: dict | None) -> list[np.ndarray]:
        """Starting points derived from a Chinchilla fit's values (E, A, B, alpha, beta), where the
        form nests or approximates it; [] by default."""
        return []

    # --- compute-optimal allocation ----------------------------------------------------------
    @property
    def has_optimum(self) -> bool:
        return "D" in self.inputs

    def optimum(self, Z: np.ndarray, compute: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N_opt, D_opt, L*) per parameter row at ``compute`` (C = 6ND): a grid over log N, then
        golden section between the best grid point's neighbours. U, where the form needs it, is
        taken as D (fresh data: no repetition). NaN where the optimum lies at the search's edge
        (the loss keeps falling as N or D grows: no compute-optimal allocation)."""
        Z = np.atleast_2d(Z)
        if not self.has_optimum:
            nan = np.full(len(Z), np.nan)
            return nan, nan, nan
        mid = 0.5 * math.log(tokens_for_budget(compute, 1.0))  # N = D there
        grid = np.linspace(mid - OPT_SPAN, mid + OPT_SPAN, OPT_GRID)

        def at(u):  # u: (k, m) log N -> loss (k, m)
            n = np.exp(u)
            d = tokens_for_budget(compute, n)
            with np.errstate(all="ignore"):
                out = self.log_loss(Z, {"N": n, "D": d, "U": d})
            return np.where(np.isfinite(out), out, np.inf)

        vals = at(np.broadcast_to(grid, (len(Z), OPT_GRID)))
        i = np.argmin(vals, axis=1)
        edge = (i == 0) | (i == OPT_GRID - 1)
        a = grid[np.clip(i - 1, 0, OPT_GRID - 1)][:, None]
        b = grid[np.clip(i + 1, 0, OPT_GRID - 1)][:, None]
        g = (math.sqrt(5) - 1) / 2
        x1, x2 = b - g * (b - a), a + g * (b - a)
        f1, f2 = at(x1), at(x2)
        for _ in range(OPT_ITERS):
            left = f1 < f2  # the minimum lies in [a, x2]: x1 becomes the new x2
            b, a = np.where(left, x2, b), np.where(left, a, x1)
            new = np.where(left, b - g * (b - a), a + g * (b - a))
            fn = at(new)
            x1, f1, x2, f2 = (np.where(left, new, x2), np.where(left, fn, f2),
                              np.where(left, x1, new), np.where(left, f1, fn))
        u = (0.5 * (a + b))[:, 0]
        n_opt = np.exp(u)
        loss = np.exp(at(u[:, None])[:, 0])
        bad = edge | ~np.isfinite(loss)
        n_opt = np.where(bad, np.nan, n_opt)
        return n_opt, tokens_for_budget(compute, n_opt), np.where(bad, np.nan, loss)

    def targets(self, z, compute: float) -> np.ndarray:
        """(a, b, ln N_opt, ln D_opt, ln L*) at ``compute``: a and b are the local exponents
        d ln N_opt / d ln C and d ln D_opt / d ln C there (constant for Chinchilla's form)."""
        Z = np.atleast_2d(z)
        r = 1.05
        n0, d0, l0 = self.optimum(Z, compute)
        n1, d1, _ = self.optimum(Z, compute * r)
        with np.errstate(all="ignore"):
            a = np.log(n1 / n0) / math.log(r)
            b = np.log(d1 / d0) / math.log(r)
            out = np.stack([a, b, np.log(n0), np.log(d0), np.log(l0)], axis=-1)
        return out[0] if np.ndim(z) == 1 else out

    def describe(self, z) -> str:
        """The formula with the fitted values."""
        return self.formula + "; " + ", ".join(f"{k} = {v:.4g}" for k, v in self.values(z).items())
