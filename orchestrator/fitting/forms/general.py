"""Fitting any law form (orchestrator.fitting.forms) by robust least squares in log space.

The objective is Approach 3's (orchestrator.fitting.law): the weighted sum of Huber losses
(delta = 1e-3) of log residuals log L(z; N, D) - log L_obs. Chinchilla's form keeps its own
fast path (variable projection and an analytic batched LM, ``fit_law`` dispatches to it); any
other form is fitted here:

* Global search: starting points from a Chinchilla fit of the same runs where the form nests
  or approximates it (``LawForm.seeds``), the form's initial values, and a scrambled Sobol
  sample of its start box. All are scored at once; the best few are refined together.
* Local refinement: a batched Levenberg-Marquardt over many weighted problems at once, with
  the iteratively-reweighted Huber curvature (weights min(1, delta/|r|), as ``law.refine``)
  and the form's Jacobian (analytic or forward differences), parameters kept in their bounds
  by projection. The same routine refits every bootstrap resample from the full-data optimum,
  a thousand problems per array operation.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import qmc

from orchestrator.errors import InsufficientData
from orchestrator.fitting.forms.base import LawForm
from orchestrator.fitting.law import HUBER_DELTA, fit_approach3

__all__ = ["FormFit", "fit_law", "chinchilla_seed", "refine_form", "refit_resamples", "inputs_of", "N_RANDOM_STARTS"]

N_RANDOM_STARTS = 128  # Sobol points of the start box scored by the global search
KEEP_STARTS = 8  # of all starts, the best this many (and every seed) are refined
CHUNK_ELEMENTS = 400_000  # resamples x runs per block of refits (as orchestrator.fitting.bootstrap)
BOOT_RTOL = 1e-10


@dataclass
class FormFit:
    """A fitted form: its internal parameter vector, objective and log residuals
    (log predicted - log observed, per run)."""

    form: LawForm
    z: np.ndarray
    objective: float
    n_points: int
    converged: bool
    residuals: np.ndarray = field(repr=False)

    @classmethod
    def of_approach3(cls, a3) -> "FormFit":
        """Chinchilla's form as fitted by Approach 3 (orchestrator.fitting.law.Approach3Fit)."""
        from orchestrator.fitting.forms.builtin import Chinchilla

        return cls(Chinchilla(), a3.params.as_vector(), a3.objective, a3.n_points, a3.converged, a3.residuals)

    @property
    def values(self) -> dict[str, float]:
        return self.form.values(self.z)

    def predict(self, X: dict) -> np.ndarray:
        return self.form.loss(self.z[None, :], X)[0]

    def optimum(self, compute: float) -> dict:
        n, d, loss = self.form.optimum(self.z[None, :], compute)
        return {"compute": float(compute), "n_opt": float(n[0]), "d_opt": float(d[0]), "loss": float(loss[0])}


def inputs_of(form: LawForm, X: dict, idx=slice(None)) -> dict:
    """The arrays of ``X`` the form reads, restricted to rows ``idx``."""
    return {k: np.asarray(v, float)[idx] for k, v in X.items() if k in form.inputs}


def huber_batch(form: LawForm, Z: np.ndarray, X: dict, log_l: np.ndarray, W: np.ndarray,
                delta: float = HUBER_DELTA, order: int = 2):
    """Objective (k,) of k weighted problems (W: (k, n)); with ``order`` 2 also the gradient
    (k, P) and the IRLS curvature J^T diag(w min(1, delta/|r|)) J (k, P, P)."""
    with np.errstate(all="ignore"):
        f0 = form.log_loss(Z, X)
        r = np.broadcast_to(f0 - log_l, W.shape)
        ok = np.isfinite(r).all(axis=1)
        r = np.where(np.isfinite(r), r, 0.0)
        ar = np.abs(r)
        small = ar <= delta
        f = (W * np.where(small, 0.5 * r * r, delta * (ar - 0.5 * delta))).sum(axis=1)
    f = np.where(ok, f, np.inf)
    if order == 0:
        return f
    with np.errstate(all="ignore"):
        J = form.log_jacobian(Z, X, np.broadcast_to(f0, W.shape))
    J = np.where(np.isfinite(J), J, 0.0)
    psi = W * np.where(small, r, delta * np.sign(r))
    g = np.einsum("kn,knp->kp", psi, J)
    omega = W * np.minimum(1.0, delta / np.maximum(ar, 1e-300))
    H = np.matmul(J.transpose(0, 2, 1) * omega[:, None, :], J)
    return f, g, H


def refine_form(form: LawForm, Z0: np.ndarray, X: dict, log_l: np.ndarray, W: np.ndarray,
                delta: float = HUBER_DELTA, max_iter: int = 300, rtol: float = 1e-12):
    """Batched Levenberg-Marquardt from Z0 (k, P): (Z, f, converged), as ``law.refine``."""
    Z = form.clip(np.array(Z0, float))
    f, g, H = huber_batch(form, Z, X, log_l, W, delta)
    P = Z.shape[1]
    lam = np.full(len(Z), 1e-3)
    active = np.isfinite(f)
    eye = np.eye(P)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        Hk = H[idx]
        diag = np.maximum(np.diagonal(Hk, axis1=1, axis2=2), 1e-12 * (1 + np.abs(Hk).max(axis=(1, 2)))[:, None])
        try:
            step = np.linalg.solve(Hk + lam[idx, None, None] * diag[:, :, None] * eye, -g[idx][:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            step = -g[idx] / np.maximum(diag * (1 + lam[idx, None]), 1e-300)
        Zn = form.clip(Z[idx] + np.where(np.isfinite(step), step, 0.0))
        fn = huber_batch(form, Zn, X, log_l, W[idx], delta, order=0)
        ok = fn < f[idx]
        done = (ok & (f[idx] - fn <= rtol * np.maximum(f[idx], 1e-300))) | (lam[idx] > 1e10)
        j = idx[ok]
        if len(j):
            fj, gj, Hj = huber_batch(form, Zn[ok], X, log_l, W[j], delta)
            Z[j], f[j], g[j], H[j] = Zn[ok], fj, gj, Hj
        lam[j] = np.maximum(lam[j] / 3.0, 1e-9)
        lam[idx[~ok]] *= 4.0
        active[idx[done]] = False
    return Z, f, ~active


def _starts(form: LawForm, seeds: list[np.ndarray], n_random: int, seed: int) -> np.ndarray:
    box = np.array([p.start_range for p in form.params])
    sobol = qmc.Sobol(form.n_params, scramble=True, seed=seed).random(n_random)
    random = box[:, 0] + sobol * (box[:, 1] - box[:, 0])
    return form.clip(np.vstack([*seeds, form.init()[None, :], random]))


def fit_law(form: LawForm, X: dict, loss, *, weights=None, chinchilla: dict | None = None,
            n_random: int = N_RANDOM_STARTS, seed: int = 0) -> FormFit:
    """Global fit of ``form`` to runs X (arrays N, D, U as the form needs) with losses ``loss``.

    ``chinchilla``: a Chinchilla fit's values on the same runs, for the form's seeds (fitted
    here when the runs have D and none is given). InsufficientData with fewer runs than the
    form's parameters."""
    loss = np.asarray(loss, float)
    X = inputs_of(form, X)
    n = len(loss)
    if n < form.n_params:
        raise InsufficientData(f"the {form.name} form has {form.n_params} parameters and needs at least "
                               f"{form.n_params} runs; have {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if form.name == "chinchilla":
        return FormFit.of_approach3(fit_approach3(X["N"], X["D"], loss, weights=weights))
    if chinchilla is None:
        chinchilla = chinchilla_seed(X, loss, weights)
    log_l = np.log(loss)
    seeds = form.seeds(chinchilla)
    starts = _starts(form, seeds, n_random, seed)
    f0 = huber_batch(form, starts, X, log_l, np.tile(w, (len(starts), 1)), order=0)
    best = np.argsort(f0)[:KEEP_STARTS]
    pick = np.unique(np.concatenate([np.arange(len(seeds)), best]))
    pick = pick[np.isfinite(f0[pick])]
    if not len(pick):
        raise InsufficientData(f"the {form.name} form is not finite and positive at any starting point on these runs")
    Z, f, conv = refine_form(form, starts[pick], X, log_l, np.tile(w, (len(pick), 1)), max_iter=400)
    i = int(np.argmin(f))
    Z, f, conv = refine_form(form, Z[i:i + 1], X, log_l, w[None, :], max_iter=200, rtol=1e-15)
    with np.errstate(all="ignore"):
        resid = form.log_loss(Z, X)[0] - log_l
    return FormFit(form, Z[0], float(f[0]), n, bool(conv[0]), np.broadcast_to(resid, log_l.shape).copy())


def chinchilla_seed(X: dict, loss, weights=None, **search) -> dict | None:
    """A Chinchilla fit's values (E, A, B, alpha, beta) on runs X, the other forms' starting
    points (LawForm.seeds); None without D or when the runs cannot determine it. ``search``:
    fit_approach3's global-search options."""
    if "D" not in X or len(loss) < 5:
        return None
    try:
        return asdict(fit_approach3(X["N"], X["D"], loss, weights=weights, **search).params)
    except (ValueError, np.linalg.LinAlgError):  # InsufficientData, or degenerate early data
        return None


def refit_resamples(fit: FormFit, X: dict, loss, counts: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Every resample's (rows of ``counts``) refit of ``fit.form`` from the full-data optimum:
    (k, P) internal vectors, in blocks of about CHUNK_ELEMENTS resample-runs, on every core."""
    form = fit.form
    X = inputs_of(form, X)
    log_l = np.log(np.asarray(loss, float))
    cores = os.cpu_count() or 1
    # At most CHUNK_ELEMENTS per block, and at least one block per core.
    size = max(8, min(CHUNK_ELEMENTS // max(1, len(log_l)), -(-len(counts) // cores)))
    starts = range(0, len(counts), size)

    def run(i):
        W = counts[i:i + size]
        return refine_form(form, np.tile(fit.z, (len(W), 1)), X, log_l, W, delta, rtol=BOOT_RTOL)[0]

    if len(starts) <= 1:
        return run(0) if len(counts) else np.zeros((0, form.n_params))
    with ThreadPoolExecutor(max_workers=cores) as pool:
        return np.concatenate(list(pool.map(run, starts)))

