"""The two models of a (baseline, variant) pair that orchestrator.fitting.variants.compare compares, and
the choice between them: the separate fits as they are, and the joint fit with shared
exponents (SharedExponents). Each model carries its estimate, its bootstrap draws plus draws
of the residual fields' effect (frontiers.with_field), and splits a row of parameters into
the two laws, so that every quantity of variant_math is computed the same way under either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable

import numpy as np
from scipy.linalg import block_diag
from scipy.stats import chi2

from orchestrator.errors import FitError
from orchestrator.fitting.bootstrap import resample_counts
from orchestrator.fitting.diagnostics import held_out_mask
from orchestrator.fitting.discrepancy import estimate_discrepancies
from orchestrator.fitting.forms.base import LawForm
from orchestrator.fitting.forms.builtin import Chinchilla
from orchestrator.fitting.forms.general import FormFit, fit_law, refit_resamples
from orchestrator.fitting.forms.predict import grid_x
from orchestrator.fitting.forms.selection import paired_excess
from orchestrator.fitting.variants.frontiers import Frontier, evaluate, frontier, with_field
from workers.flops import train_flops

__all__ = ["Model", "PairModel", "ModelChoice", "SharedExponents", "separate_model", "joint_model", "choose_model",
           "exponent_test", "EXPONENT_TEST_P"]

EXPONENT_TEST_P = 0.05  # a smaller p of the exponent-difference test rejects the joint model
JOINT_RANDOM_STARTS = 32  # Sobol starts of the joint fit's global search, beside the seeded ones
MIN_RUNS_REFIT = 10  # runs below the top budget for the held-out refits (2 per Chinchilla parameter)


class Model(str, Enum):
    JOINT = "joint"  # baseline and variant fitted together, shared alpha and beta
    SEPARATE = "separate"  # each fitted on its own


@dataclass
class PairModel:
    """One model of a (baseline, variant) pair: its parameter vector, bootstrap draws, the residual
    fields' covariance of it, and how a row of them splits into the two laws."""

    model: Model
    forms: tuple[LawForm, LawForm]
    theta: np.ndarray
    draws: np.ndarray | None  # bootstrap draws plus the fields' (``with_field``)
    cov: np.ndarray | None  # the fields' share of the covariance of theta
    split: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    x_t: float

    def frontiers(self, rows: np.ndarray) -> tuple[Frontier, Frontier]:
        zb, zv = self.split(rows)
        return frontier(self.forms[0], zb, self.x_t), frontier(self.forms[1], zv, self.x_t)

    def evaluate(self, fn: Callable[[Frontier, Frontier], np.ndarray]):
        """``evaluate`` of fn(baseline frontier, variant frontier) -> (k, q)."""
        return evaluate(lambda rows: fn(*self.frontiers(rows)), self.theta, self.draws)


def separate_model(base, var, x_t: float, seed: int = 0) -> PairModel:
    """The two fits as they are: draw i of the baseline's bootstrap with draw i of the variant's."""
    p = base.form.n_params
    draws = None
    if base.bootstrap is not None and var.bootstrap is not None:
        n = min(len(base.bootstrap.laws), len(var.bootstrap.laws))
        draws = np.hstack([base.bootstrap.laws[:n], var.bootstrap.laws[:n]])
    X, loss = _stack((base, var))
    jac = block_diag(*(f.form.log_jacobian(f.law.z[None, :], f.fit_inputs)[0] for f in (base, var)))
    resid = np.concatenate([f.law.residuals for f in (base, var)])
    cov = pair_field_cov(jac, X, loss, resid, (base, var))
    return PairModel(Model.SEPARATE, (base.form, var.form), np.concatenate([base.law.z, var.law.z]),
                     with_field(draws, cov, seed), cov, lambda R: (R[:, :p], R[:, p:]), x_t)


# --- the joint model --------------------------------------------------------------------------------


class SharedExponents(LawForm):
    """L = E_v + A_v/N^alpha + B_v/D^beta, v the run's variant (input V: 0, 1, ...): Chinchilla's
    form with the exponents shared. Internal vector (alpha, beta, then ln A_v, ln B_v, ln E_v
    for each v); ``law_vectors`` gives one variant's Chinchilla vector."""

    name = "chinchilla-shared-exponents"
    formula = "L = E_v + A_v/N^alpha + B_v/D^beta"
    inputs = frozenset({"N", "D", "V"})

    def __init__(self, n_variants: int, starts=()):
        a, b, e, al, be = Chinchilla.params
        self.params = (al, be) + tuple(replace(p, name=f"{p.name}_{v}") for v in range(n_variants) for p in (a, b, e))
        self.starts = [np.asarray(s, float) for s in starts]

    @property
    def has_optimum(self) -> bool:
        return False  # each variant's optimum is Chinchilla's, of law_vectors

    def seeds(self, chinchilla):
        return self.starts

    def _terms(self, Z, X):
        Z = np.atleast_2d(Z)
        col = 2 + 3 * np.asarray(X["V"], int)
        ln, ld = np.log(X["N"]), np.log(X["D"])
        return Z[:, col] - Z[:, :1] * ln, Z[:, col + 1] - Z[:, 1:2] * ld, Z[:, col + 2], col, ln, ld

    def log_loss(self, Z, X):
        t0, t1, t2, *_ = self._terms(Z, X)
        return np.logaddexp(np.logaddexp(t0, t1), t2)

    def log_jacobian(self, Z, X, f0=None):
        t0, t1, t2, col, ln, ld = self._terms(Z, X)
        f = np.logaddexp(np.logaddexp(t0, t1), t2)
        p0, p1, p2 = np.exp(t0 - f), np.exp(t1 - f), np.exp(t2 - f)
        J = np.zeros(t0.shape + (self.n_params,))
        idx = np.arange(t0.shape[1])
        J[:, :, 0], J[:, :, 1] = -p0 * ln, -p1 * ld
        J[:, idx, col], J[:, idx, col + 1], J[:, idx, col + 2] = p0, p1, p2
        return J

    def law_vectors(self, Z, v: int) -> np.ndarray:
        Z = np.atleast_2d(Z)
        return np.column_stack([Z[:, 2 + 3 * v:5 + 3 * v], Z[:, :2]])


def _shared_starts(X: dict, loss: np.ndarray, exponents, n_variants: int) -> list[np.ndarray]:
    """Joint starting vectors: for each (alpha, beta), every variant's E, A, B by least squares in
    relative error (variable projection, as law.fit_approach3 seeds its search)."""
    out = []
    for al, be in exponents:
        z = [al, be]
        for v in range(n_variants):
            m = X["V"] == v
            M = np.column_stack([X["N"][m] ** -al, X["D"][m] ** -be, np.ones(m.sum())]) / loss[m][:, None]
            coef = np.maximum(np.linalg.lstsq(M, np.ones(m.sum()), rcond=None)[0], 1e-6)
            z.extend(np.log(coef))
        out.append(np.array(z))
    return out


def _fit_shared(parts: list[tuple[dict, np.ndarray]], exponents) -> tuple[FormFit, dict, np.ndarray]:
    """The joint fit of ``parts`` ((inputs, losses) per variant, the baseline first)."""
    X = {k: np.concatenate([p[0][k] for p in parts]) for k in ("N", "D")}
    X["V"] = np.concatenate([np.full(len(p[1]), v) for v, p in enumerate(parts)])
    loss = np.concatenate([p[1] for p in parts])
    form = SharedExponents(len(parts), _shared_starts(X, loss, exponents, len(parts)))
    return fit_law(form, X, loss, chinchilla={}, n_random=JOINT_RANDOM_STARTS), X, loss


def _exponents(fits) -> list[tuple[float, float]]:
    pairs = [(float(f.law.z[3]), float(f.law.z[4])) for f in fits]
    return pairs + [tuple(np.mean(pairs, axis=0))]


def joint_model(base, var, x_t: float, seed: int = 0) -> tuple[PairModel | None, dict | str]:
    """The joint model (None for forms other than Chinchilla's) and its held-out errors against
    the separate fits' ({"joint", "separate", "n"}), or why they could not be had."""
    if base.form.name != "chinchilla" or var.form.name != "chinchilla":
        return None, "the joint fit (shared alpha, beta) is of Chinchilla's form only"
    parts = [(f.fit_inputs, f.used["eval_loss"].to_numpy(float)) for f in (base, var)]
    try:
        fit, X, loss = _fit_shared(parts, _exponents((base, var)))
    except FitError as e:
        return None, f"the joint fit failed: {e}"
    form = fit.form
    draws = None
    if base.bootstrap is not None and var.bootstrap is not None:
        # Each half resamples its own runs, as the separate fits do (the same counts: draw i of
        # the joint model refits the resample behind draw i of each separate fit).
        n = min(len(base.bootstrap.laws), len(var.bootstrap.laws))
        counts = np.hstack([resample_counts(len(p[1]), n, f.bootstrap.seed) for p, f in zip(parts, (base, var))])
        draws = refit_resamples(fit, X, loss, counts)
    cov = pair_field_cov(fit.form.log_jacobian(fit.z[None, :], X)[0], X, loss, fit.residuals, (base, var))
    pair = PairModel(Model.JOINT, (Chinchilla(), Chinchilla()), fit.z, with_field(draws, cov, seed), cov,
                     lambda R: (form.law_vectors(R, 0), form.law_vectors(R, 1)), x_t)
    return pair, _held_out(base, var, parts)


def _stack(fits) -> tuple[dict, np.ndarray]:
    """The fits' runs as one set of inputs (V: the variant's index) and losses."""
    X = {k: np.concatenate([f.fit_inputs[k] if k in f.fit_inputs else np.ones(len(f.used)) for f in fits])
         for k in ("N", "D")}
    X["V"] = np.concatenate([np.full(len(f.used), v) for v, f in enumerate(fits)])
    return X, np.concatenate([f.used["eval_loss"].to_numpy(float) for f in fits])


def pair_field_cov(jac: np.ndarray, X: dict, loss: np.ndarray, resid: np.ndarray, fits) -> np.ndarray | None:
    """The residual fields' share of a pair model's parameter covariance: the sandwich of
    discrepancy.field_parameter_cov over both variants' runs (``jac``: the model's log Jacobian
    there, ``resid`` its log residuals), one field per variant, independent of each other; None
    where analyse fitted no residual model (no bootstrap, or too few runs)."""
    if any(f.discrepancy_targets is None for f in fits):
        return None
    x = grid_x(X)
    # One REML over both variants' residuals (the model's directions projected out, as
    # analyse's residual model for the targets, any length scale), the variants a thousand
    # decades apart so that their fields do not correlate: the same hyperparameters for both.
    far = np.column_stack([1e3 * X["V"], np.zeros(len(loss))])
    disc = replace(estimate_discrepancies(np.zeros(jac.shape[1]), x + far, loss, resid, jac=jac)[-1], sigma=0.0)
    b = np.linalg.solve(jac.T @ jac + 1e-9 * np.eye(jac.shape[1]), jac.T)
    return sum(disc.sandwich(x[m], loss[m], b[:, m]) for m in (X["V"] == v for v in range(len(fits))))


def _held_out(base, var, parts) -> dict | str:
    """Errors (predicted - observed, nats) on each fit's top budget of refits without it: the
    separate fits' and the joint fit's."""
    masks = []
    for f, (X, loss) in zip((base, var), parts):
        used = f.used
        compute = used["flops"].to_numpy(float) if "flops" in used else train_flops(X["N"], X["D"])
        out = held_out_mask(compute, used["budget"].to_numpy(float))
        if (~out).sum() < MIN_RUNS_REFIT or not out.any():
            return f"too few runs below the top budget to refit without it ({(~out).sum()})"
        masks.append(out)
    sub = lambda X, idx: {k: v[idx] for k, v in X.items()}  # noqa: E731
    try:
        sep = np.concatenate([fit_law(Chinchilla(), sub(X, ~o), loss[~o]).predict(sub(X, o)) - loss[o]
                              for (X, loss), o in zip(parts, masks)])
        fit, _, _ = _fit_shared([(sub(X, ~o), loss[~o]) for (X, loss), o in zip(parts, masks)],
                                _exponents((base, var)))
        Xo = {k: np.concatenate([X[k][o] for (X, _), o in zip(parts, masks)]) for k in ("N", "D")}
        Xo["V"] = np.concatenate([np.full(o.sum(), v) for v, o in enumerate(masks)])
        joint = fit.predict(Xo) - np.concatenate([loss[o] for (_, loss), o in zip(parts, masks)])
    except FitError as e:
        return f"a refit without the top budget failed: {e}"
    return {"joint": joint, "separate": sep}


@dataclass
class ModelChoice:
    """Which model the multiplier comes from, and the evidence (module docstring of variants)."""

    model: Model
    reason: str
    held_out_rms: dict[str, float] | None = None  # nats, per model
    excess: float = math.nan  # mean held-out squared error of the joint model above the separate fits'
    excess_se: float = math.nan
    n_held_out: int = 0
    exponent_p: float = math.nan  # p-value of the separate fits' exponent differences
    exponent_diff: tuple[float, float] = (math.nan, math.nan)  # (alpha_v - alpha_b, beta_v - beta_b)

    def to_json(self) -> dict:
        fin = lambda x: float(x) if math.isfinite(x) else None  # noqa: E731
        return {"model": self.model.value, "reason": self.reason,
                "held_out_rms_nats": self.held_out_rms, "excess_nats2": fin(self.excess),
                "excess_se": fin(self.excess_se), "n_held_out": self.n_held_out,
                "exponent_diff": {"alpha": fin(self.exponent_diff[0]), "beta": fin(self.exponent_diff[1])},
                "exponent_p": fin(self.exponent_p),
                "rule": (f"joint when its held-out squared error is within one SE of the separate fits' and the "
                         f"exponent difference test gives p >= {EXPONENT_TEST_P:g}")}

    def text(self) -> str:
        out = f"model: {self.model.value} ({self.reason}"
        if self.held_out_rms:
            out += (f"; held-out RMS {self.held_out_rms['joint']:.4f} nats joint, {self.held_out_rms['separate']:.4f} "
                    f"separate, on {self.n_held_out} runs")
        if math.isfinite(self.exponent_p):
            out += (f"; exponents differ by {self.exponent_diff[0]:+.3f} (alpha), {self.exponent_diff[1]:+.3f} (beta), "
                    f"p = {self.exponent_p:.2g}")
        return out + ")"


def _robust_cov(x: np.ndarray) -> np.ndarray:
    """Covariance of draws winsorised at their 2.5th and 97.5th percentiles: an exponent's
    bootstrap has a few draws in other basins, which would swamp a plain covariance."""
    x = x[np.isfinite(x).all(axis=1)]
    lo, hi = np.percentile(x, [2.5, 97.5], axis=0)
    return np.atleast_2d(np.cov(np.clip(x, lo, hi), rowvar=False))


def exponent_test(base, var, sep: PairModel) -> tuple[float, tuple[float, float]]:
    """p-value of alpha and beta being equal in the two laws (Wald, chi^2 with 2 degrees of
    freedom; covariance: both bootstraps' plus both fields'), and the differences."""
    d = var.law.z[3:5] - base.law.z[3:5]
    if sep.draws is None or len(sep.draws) < 10:
        return math.nan, (float(d[0]), float(d[1]))
    p = base.form.n_params
    cov = _robust_cov(sep.draws[:, 3:5]) + _robust_cov(sep.draws[:, p + 3:p + 5])  # the fields included
    try:
        w = float(d @ np.linalg.solve(cov, d))
    except np.linalg.LinAlgError:
        return math.nan, (float(d[0]), float(d[1]))
    return float(chi2.sf(w, 2)), (float(d[0]), float(d[1]))


def choose_model(base, var, sep: PairModel, held: dict | str) -> ModelChoice:
    """Joint or separate (module docstring of variants): separate unless both tests pass."""
    if isinstance(held, str):
        return ModelChoice(Model.SEPARATE, held)
    excess, se = paired_excess(held["joint"], held["separate"])
    rms = {k: float(np.sqrt(np.mean(v**2))) for k, v in held.items()}
    p, diff = exponent_test(base, var, sep)
    common = dict(held_out_rms=rms, excess=excess, excess_se=se, n_held_out=len(held["joint"]), exponent_p=p,
                  exponent_diff=diff)
    if excess > se:
        return ModelChoice(Model.SEPARATE, "the joint fit extrapolates worse than the separate fits, beyond noise",
                           **common)
    if p < EXPONENT_TEST_P:
        return ModelChoice(Model.SEPARATE, "the exponents differ", **common)
    return ModelChoice(Model.JOINT, "shared exponents: held-out error within noise, exponent difference not "
                       "significant" if math.isfinite(p) else "shared exponents: held-out error within noise",
                       **common)
