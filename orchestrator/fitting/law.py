"""Approach 3: fitting the scaling law L(N, D) = E + A / N^alpha + B / D^beta.

Hoffmann et al. (2022, section 3.3), as replicated by Besiroglu et al. (2024): minimise the
(optionally weighted) sum of Huber losses (delta = 1e-3) of log-space residuals
``LSE(a - alpha log N, b - beta log D, e) - log L`` over v = (a, b, e, alpha, beta), with
A = exp(a), B = exp(b), E = exp(e).

Global search by variable projection. For fixed exponents (alpha, beta) the law is linear in
(E, A, B), so a grid over the exponents, each solved by non-negative least squares on relative
errors (a first-order stand-in for log residuals), ranks the basins of the objective for the
cost of a few thousand 3-column solves. The best few distinct candidates are then polished on
the true Huber objective (batched ``refine`` below), and the best of them by L-BFGS with the
analytic gradient. This finds the optimum that the
4,500-start grid of the paper finds, in a tenth of a second rather than minutes
(bench/bench_fit.py compares the two on the Chinchilla data).

Refits near a known optimum (bootstrap resamples, see orchestrator.fitting.bootstrap) do not need
the global search: ``refine`` runs a batched Levenberg-Marquardt on many weighted problems at
once, with the iteratively-reweighted curvature of the Huber loss (weight min(1, delta/|r|),
which majorises the Huber loss, Holland & Welsch 1977), so one iteration for a thousand
resamples is a handful of numpy array operations.

Compute-optimal allocation (Hoffmann et al., appendix D.2): with C = 6ND,
N_opt = G (C/6)^a, D_opt = (1/G) (C/6)^b, G = (alpha A / (beta B))^(1/(alpha+beta)),
a = beta / (alpha + beta), b = alpha / (alpha + beta).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize, nnls

from orchestrator.errors import InsufficientData
from orchestrator.fitting import levenberg_marquardt
from orchestrator.results.runs import law_data_problem

__all__ = ["LawParams", "Approach3Fit", "InsufficientData", "fit_approach3", "refine", "huber_objective",
           "huber_terms", "predict_loss", "compute_optimal", "optimal_allocation", "HUBER_DELTA", "SEARCH_GRID"]

HUBER_DELTA = 1e-3
EXPONENT_BOUNDS = (0.0, 5.0)  # alpha, beta; as in the grid of Hoffmann et al. and Besiroglu et al.
# log E, log A, log B never go below this: exp(-30) ~ 1e-13 is zero for any loss. Unbounded,
# a fit in which E is not identified (the data favour E -> 0) walked log E to -800, where
# exp underflows to 0.0 and the next log of it fails.
LOG_COEF_MIN = -30.0
SEARCH_RUNS = 50_000  # the global search's runs at most (fit_approach3)
POINT_BLOCK = 2_000_000  # problems x points per block of huber_terms: 80 MB per (k, n, 5) temporary
SEARCH_GRID = np.linspace(0.02, 2.5, 48)  # alpha and beta of the global search's variable projection


@dataclass(frozen=True)
class LawParams:
    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @property
    def a(self) -> float:
        """Exponent of N_opt in C (NaN for a law that falls with neither N nor D)."""
        s = self.alpha + self.beta
        return self.beta / s if s > 0 else math.nan

    @property
    def b(self) -> float:
        """Exponent of D_opt in C (NaN for a law that falls with neither N nor D)."""
        s = self.alpha + self.beta
        return self.alpha / s if s > 0 else math.nan

    def as_vector(self) -> np.ndarray:
        """v = (log A, log B, log E, alpha, beta), the coordinates the fit works in."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    @classmethod
    def from_vector(cls, v) -> "LawParams":
        a, b, e, alpha, beta = (float(x) for x in v)
        return cls(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def predict_loss(p: LawParams, n, d):
    n, d = np.asarray(n, float), np.asarray(d, float)
    return p.E + p.A / n**p.alpha + p.B / d**p.beta


def optimal_allocation(E, A, B, alpha, beta, compute):
    """Arrays (N_opt, D_opt, L*) for laws given as arrays of parameters, at one compute budget.

    A law with no optimum (alpha or A zero, or beta or B: ``no_optimum``) gets inf, 0 or NaN
    here, which the callers flag or drop; numpy's warnings about them would only be noise."""
    E, A, B, alpha, beta = (np.asarray(x, float) for x in (E, A, B, alpha, beta))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = alpha + beta
        log_g = (np.log(alpha * A) - np.log(beta * B)) / s
        log_c6 = math.log(compute / 6.0)
        n_opt = np.exp(log_g + beta / s * log_c6)
        d_opt = np.exp(alpha / s * log_c6 - log_g)
        return n_opt, d_opt, E + A / n_opt**alpha + B / d_opt**beta


def no_optimum(p: LawParams) -> str:
    """Why the law has no compute-optimal allocation, or "" when it has one.

    With alpha or A (beta or B) at zero the loss does not fall with N (D): spending all of the
    compute on the other is optimal, and N_opt, D_opt come out as 0, infinite or absurd."""
    for var, power, power_name, coef, coef_name in (("N", p.alpha, "alpha", p.A, "A"), ("D", p.beta, "beta", p.B, "B")):
        if power < 0.01 or math.log(max(coef, 1e-300)) <= LOG_COEF_MIN + 1:
            return (f"the fitted loss does not fall with {var} ({power_name} = {power:.3g}, {coef_name} = {coef:.3g}): "
                    "there is no compute-optimal allocation, and N_opt and D_opt mean nothing")
    return ""


def compute_optimal(p: LawParams, compute: float) -> dict:
    """N_opt, D_opt and the loss there for a compute budget C (FLOPs, C = 6ND)."""
    n_opt, d_opt, loss = optimal_allocation(p.E, p.A, p.B, p.alpha, p.beta, compute)
    return {"compute": compute, "n_opt": float(n_opt), "d_opt": float(d_opt), "loss": float(loss)}


def huber_terms(V: np.ndarray, log_n, log_d, log_l, weights: np.ndarray, delta: float = HUBER_DELTA,
                order: int = 1):
    """Objective of many weighted problems at once: V is (k, 5), weights (k, n).

    Returns f (k,) for order 0; (f, gradient (k, 5)) for order 1; and for order 2 also the
    IRLS curvature J^T diag(w min(1, delta/|r|)) J (k, 5, 5), the Gauss-Newton matrix of the
    quadratic that majorises each Huber term at the current residual.
    """
    if len(V) * len(log_n) > POINT_BLOCK and len(log_n) > 1:
        # The terms are sums over points: blocks of points keep every (k, n, 5) temporary at
        # POINT_BLOCK elements (a million runs times 8 starts would be 2 GB at once).
        step = max(1, POINT_BLOCK // len(V))
        parts = [huber_terms(V, log_n[i:i + step], log_d[i:i + step], log_l[i:i + step], weights[:, i:i + step],
                             delta, order) for i in range(0, len(log_n), step)]
        return sum(parts) if order == 0 else tuple(sum(x) for x in zip(*parts))
    r, p0, p1, p2, ar, small = _lse_residuals(V, log_n, log_d, log_l, delta)
    f = (weights * np.where(small, 0.5 * r * r, delta * (ar - 0.5 * delta))).sum(axis=1)
    if order == 0:
        return f
    psi = weights * np.where(small, r, delta * np.sign(r))
    J = _lse_jacobian(p0, p1, p2, log_n, log_d)
    g = np.einsum("kn,knj->kj", psi, J)
    if order == 1:
        return f, g
    omega = weights * np.minimum(1.0, delta / np.maximum(ar, 1e-300))
    return f, g, np.matmul(J.transpose(0, 2, 1) * omega[:, None, :], J)


def _lse_residuals(V, log_n, log_d, log_l, delta):
    """Log residuals r (k, n) of the log-sum-exp law, its softmax weights, |r| and |r| <= delta."""
    t0 = V[:, 0:1] - V[:, 3:4] * log_n
    t1 = V[:, 1:2] - V[:, 4:5] * log_d
    t2 = V[:, 2:3]
    m = np.maximum(np.maximum(t0, t1), t2)  # log-sum-exp shifted by the max: no overflow
    e0, e1, e2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(t2 - m)
    s = e0 + e1 + e2
    r = m + np.log(s) - log_l
    ar = np.abs(r)
    return r, e0 / s, e1 / s, e2 / s, ar, ar <= delta  # softmax weights: d LSE / d t_k


def _lse_jacobian(p0, p1, p2, log_n, log_d):
    return np.stack([p0, p1, np.broadcast_to(p2, p0.shape), -p0 * log_n, -p1 * log_d], axis=-1)


def step_terms(v, log_n, log_d, log_l, delta: float = HUBER_DELTA, curvature: str = "irls"):
    """Per-point gradient (n, 5) and curvature (n, 15: its upper triangle) of the Huber
    objective at ``v``: what :func:`one_step` weights by each problem's counts (computed once
    for many blocks of them)."""
    r, p0, p1, p2, ar, small = _lse_residuals(np.asarray(v, float)[None, :], log_n, log_d, log_l, delta)
    J = _lse_jacobian(p0, p1, p2, log_n, log_d)[0]  # (n, 5)
    psi = np.where(small, r, delta * np.sign(r))[0]
    omega = (small if curvature == "exact" else np.minimum(1.0, delta / np.maximum(ar, 1e-300)))[0].astype(float)
    return psi[:, None] * J, omega[:, None] * J[:, _UPPER[0]] * J[:, _UPPER[1]]  # (n, 15): H is symmetric


_UPPER = np.triu_indices(5)


def one_step(v, log_n, log_d, log_l, weights: np.ndarray, delta: float = HUBER_DELTA,
             curvature: str = "irls", terms=None) -> np.ndarray:
    """One Gauss-Newton step from ``v`` for each row of ``weights`` (k, n): (k, 5) estimates.

    The per-point derivatives are taken once at ``v`` and each weighted problem's gradient and
    curvature are then matrix products (k x n by n x 5 and n x 25), so k problems cost about
    one evaluation instead of k. From the full-data optimum this is the linearised (one-step)
    bootstrap estimate (Davison & Hinkley 1997, 6.2).

    ``curvature="irls"`` takes each point's weight as min(1, delta/|r|), the majoriser ``refine``
    uses: a safe start for exact refits, but it overstates the Huber loss's curvature where
    |r| > delta, so its steps are short (sd of alpha over resamples 3.6 times too small with
    0.01-nat noise). ``"exact"`` takes the Huber loss's own second derivative (1 where
    |r| <= delta, else 0): a Newton step, the one-step M-estimator whose spread matches exact
    refits once many points lie within delta (10,000 random runs: sd of a within 2.5 %,
    correlation 0.999 per resample; 100,000: within 1 %; Hu & Kalbfleisch 2000).
    ``terms``: :func:`step_terms` at ``v``, when the caller already has them.
    """
    per_g, per_h = step_terms(v, log_n, log_d, log_l, delta, curvature) if terms is None else terms
    g = weights @ per_g
    H = np.empty((len(weights), 5, 5))
    H[:, _UPPER[0], _UPPER[1]] = H[:, _UPPER[1], _UPPER[0]] = weights @ per_h
    step = np.linalg.solve(H + 1e-12 * np.eye(5), -g[:, :, None])[:, :, 0]
    out = v[None, :] + step
    out[:, 3:] = np.clip(out[:, 3:], *EXPONENT_BOUNDS)
    out[:, :3] = np.maximum(out[:, :3], LOG_COEF_MIN)
    bad = ~np.isfinite(out).all(axis=1)
    out[bad] = v
    return out


def huber_objective(v: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                    delta: float = HUBER_DELTA, weights: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Sum of (weighted) Huber losses of log residuals and its gradient in (a, b, e, alpha, beta)."""
    w = np.ones((1, len(log_n))) if weights is None else np.asarray(weights, float)[None, :]
    f, g = huber_terms(np.asarray(v, float)[None, :], log_n, log_d, log_l, w, delta, order=1)
    return float(f[0]), g[0]


@dataclass
class Approach3Fit:
    params: LawParams
    objective: float
    n_points: int
    converged: bool
    residuals: np.ndarray = field(repr=False)  # log predicted - log observed, per point

    def summary(self) -> dict:
        d = asdict(self.params)
        d.update(a=self.params.a, b=self.params.b, objective=self.objective, n_points=self.n_points)
        return d


def _varpro_candidates(n, d, loss, w, alphas, betas, keep: int) -> list[np.ndarray]:
    """Best (alpha, beta) grid points with their non-negative (E, A, B), as start vectors.

    Each grid point is a 3-column non-negative least squares on relative residuals
    (E + A x + B y - L) / L with x = N^-alpha, y = D^-beta. Its data enter only through the
    3 x 3 Gram matrix and the right-hand side, and those of the whole grid are one matrix
    product of the per-run powers (alphas x runs by runs x betas), so a million runs cost a
    second where 2,304 solves on the runs themselves took minutes. The NNLS is solved on the
    Cholesky factor R of the (equilibrated) Gram matrix: |R c - R^-T r|^2 differs from the
    residual sum of squares by a constant."""
    u = np.sqrt(w) / loss  # row scale of the relative residuals
    X = n[None, :] ** -np.asarray(alphas, float)[:, None] * u  # (alphas, runs)
    Y = d[None, :] ** -np.asarray(betas, float)[:, None] * u
    one = u
    t = np.sqrt(w)  # target column: L / L, weighted
    sxy = X @ Y.T
    sx1, sy1, sxx, syy = X @ one, Y @ one, (X * X).sum(axis=1), (Y * Y).sum(axis=1)
    rx, ry, r1, s11, tt = X @ t, Y @ t, float(one @ t), float(one @ one), float(t @ t)
    scored = []
    for i, alpha in enumerate(alphas):
        for j, beta in enumerate(betas):
            G = np.array([[s11, sx1[i], sy1[j]], [sx1[i], sxx[i], sxy[i, j]], [sy1[j], sxy[i, j], syy[j]]])
            r = np.array([r1, rx[i], ry[j]])
            scale = np.sqrt(np.maximum(np.diag(G), 1e-300))  # columns differ by 1e6
            Gs = G / scale[:, None] / scale[None, :]
            try:
                R = np.linalg.cholesky(Gs + 1e-13 * np.eye(3)).T
            except np.linalg.LinAlgError:
                continue
            z = np.linalg.solve(R.T, r / scale)
            c, res = nnls(R, z)
            sse = max(tt - float(z @ z), 0.0) + res * res
            scored.append((sse, alpha, beta, c / scale))
    scored.sort(key=lambda s: s[0])
    starts, seen = [], []
    for _, alpha, beta, (E, A, B) in scored:
        # Distinct basins only: skip neighbours of an already chosen start.
        if any(abs(alpha - a0) < 0.15 and abs(beta - b0) < 0.15 for a0, b0 in seen):
            continue
        seen.append((alpha, beta))
        tiny = 1e-8
        starts.append(np.array([math.log(max(A, tiny)), math.log(max(B, tiny)), math.log(max(E, tiny)), alpha, beta]))
        if len(starts) == keep:
            break
    return starts


def lbfgs(x0, log_n, log_d, log_l, delta: float = HUBER_DELTA, weights=None):
    """One bounded L-BFGS run on the Huber objective (scipy's OptimizeResult)."""
    bounds = [(LOG_COEF_MIN, None)] * 3 + [EXPONENT_BOUNDS] * 2
    return minimize(huber_objective, x0, args=(log_n, log_d, log_l, delta, weights), jac=True, method="L-BFGS-B",
                    bounds=bounds, options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})


def fit_approach3(n, d, loss, *, weights=None, delta: float = HUBER_DELTA, keep: int = 8,
                  alphas=None, betas=None, extra_starts=(), screened: bool = False) -> Approach3Fit:
    """Global Approach 3 fit; see the module docstring. Needs at least 5 points.

    InsufficientData unless the runs can determine the law (runs.law_data_problem, a sort
    of the runs); ``screened``: the caller has checked that already (analyse does, to word the
    error its own way) and it is not checked again."""
    n, d, loss = (np.asarray(x, float) for x in (n, d, loss))
    if len(n) < 5:
        raise InsufficientData(f"Approach 3 needs at least 5 runs to fit its 5 parameters; have {len(n)}")
    problem = "" if screened else law_data_problem(n, d, loss)
    if problem:
        raise InsufficientData(f"Approach 3: {problem}")
    w = np.ones_like(n) if weights is None else np.asarray(weights, float)
    alphas = SEARCH_GRID if alphas is None else alphas
    betas = SEARCH_GRID if betas is None else betas
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    # The basins are found on a random SEARCH_RUNS of the runs when there are more: their
    # objective has the same basins as the whole one, and only the winner's polish needs every
    # run (a million runs: 80 s with the 8 candidates refined on all of them, 16 s this way).
    sub = np.random.default_rng(0).choice(len(n), SEARCH_RUNS, replace=False) if len(n) > SEARCH_RUNS else slice(None)
    starts = _varpro_candidates(n[sub], d[sub], loss[sub], w[sub], alphas, betas, keep) + [
        np.asarray(s, float) for s in extra_starts]
    # Every candidate is polished at once by the batched refit, then the winner by L-BFGS: one
    # scipy run instead of one per candidate (scipy's L-BFGS-B calls BLAS on tiny matrices,
    # which is slow when the cores are shared).
    V, f, _ = refine(np.array(starts), log_n[sub], log_d[sub], log_l[sub], np.tile(w[sub], (len(starts), 1)), delta)
    i = int(np.argmin(f))
    if len(n) > SEARCH_RUNS:
        V, f, _ = refine(V[i:i + 1], log_n, log_d, log_l, w[None, :], delta)
        i = 0
    res = lbfgs(V[i], log_n, log_d, log_l, delta, w)
    x, fun = (res.x, res.fun) if res.fun <= f[i] else (V[i], f[i])
    params = LawParams.from_vector(x)
    resid = np.log(predict_loss(params, n, d)) - log_l
    return Approach3Fit(params, float(fun), len(n), bool(res.success), resid)


def refine(V0: np.ndarray, log_n, log_d, log_l, weights: np.ndarray, delta: float = HUBER_DELTA,
           max_iter: int = 500, rtol: float = 1e-12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local fits of k weighted problems at once by Levenberg-Marquardt from V0 (k, 5).

    Returns (V, f, converged): each row stops once an accepted step lowers its objective by
    less than ``rtol`` relatively. Rows not converged after ``max_iter`` iterations are left
    for the caller to polish (with ``lbfgs``). Exponents stay within EXPONENT_BOUNDS.
    """
    def project(V):
        V[:, 3:] = np.clip(V[:, 3:], *EXPONENT_BOUNDS)
        V[:, :3] = np.maximum(V[:, :3], LOG_COEF_MIN)
        return V

    # lam_min floored: a rank-deficient H stays solvable.
    return levenberg_marquardt(V0, lambda V, rows: huber_terms(V, log_n, log_d, log_l, weights[rows], delta, order=2),
                               project, max_iter=max_iter, rtol=rtol, lam0=1e-4, lam_min=1e-10, lam_max=1e12,
                               jitter=1e-12)
