"""Simulated worlds: a true scaling law plus the noise real sweeps show, for benchmarking planners.

A :class:`World` answers a trial at (N parameters, D tokens) without training anything, following the
noise model of the planner benchmark (docs/benchmarks.md)::

    y = L(N, D) * exp(k_lr u**2 + k_b v**2 + k_x u v) + residual(N, D) + seed_noise(L) + outlier

- L is the true law: the Chinchilla form E + A / N**alpha + B / D**beta (Hoffmann et al. 2022, eq. 2),
  or any arithmetic expression in N and D, parsed safely by :mod:`workers.simulated.expr` (never ``eval``), so a
  planner that fits the Chinchilla form can meet a law of another form.
- residual is a fixed smooth random field per world: real sweeps sit 0.003-0.03 nats around their fitted
  law and most of that is not seed noise. It approximates a Gaussian process in (log10 N, log10 D) with an
  RBF kernel of standard deviation ``residual_amplitude`` and length scale ``residual_length_scale``
  decades, drawn as a sum of random Fourier features (Rahimi & Recht 2007, "Random Features for
  Large-Scale Kernel Machines"): ``s * sqrt(2/M) * sum_m cos(w_m . x + b_m)``, w_m ~ N(0, I / l**2),
  b_m ~ U(0, 2 pi). Over world seeds its covariance is exactly the RBF kernel; within one world its
  spatial standard deviation over a wide domain is close to s.
- seed noise is Gaussian with a sigma that grows with the loss: in the default tier 0.002 nats at
  L <= 3 rising to 0.05 nats at L >= 7, the seed-repeat envelope Porian et al. 2024 ("Resolving
  Discrepancies in Compute-Optimal Scaling of Language Models") report on RefinedWeb; the hard tier,
  0.01 -> 0.10, is their OpenWebText2 envelope. Between L = 3 and 7, log sigma is linear in log L.
  Sigma is taken at the point's mean loss L + residual.
- outliers: with probability ``outlier_prob`` (2 %) a trial adds U(outlier_low, outlier_high) nats, a
  run gone wrong; Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt") find about 2 % of
  Chinchilla's points were dropped as outliers.
- the hyperparameter landscape (only in a world with ``hparams``; without one the factor is 1 and a
  trial's lr and batch are ignored): u = ln(lr / lr*(N, D)) and v = ln(B / B*(N, D)), B in tokens. The
  true optima are power rules; the benchmark's visible landscape (bench.worlds) is the Step Law of Li et
  al. 2025 ("Predictable Scale: Part I"), lr* = 1.79 N^-0.713 D^0.307 and B* = 0.58 D^0.571. The default
  curvatures k_lr = 0.0058, k_b = 0.0057, k_x = -0.0060 (per ln^2) are a quadratic fit of log loss near
  the optimum of a published 1B-parameter, 100B-token grid of 117 runs: a 2x miss of either costs about
  0.28 % of the loss, and k_x < 0 means a larger batch wants a larger learning rate. The factor is >= 1
  with equality at (lr*, B*), so L(N, D) stays the minimum over (lr, B) and ``compute_optimal`` and
  ``exponent_a`` remain the truth. Divergence is a modelling choice, not a published figure (real runs
  diverge somewhere above their optimum): from lr = diverge_from * lr* (4x) a trial returns NaN with a
  probability rising linearly in log lr to 1 at diverge_all * lr* (8x); its uniform is drawn on a stream
  of its own, so the noise a (seed, key) draws does not depend on the landscape.

Contract: a world is a pure function of its :class:`workers.config.WorldConfig` (the spec's ``world:``
section, validated there). ``true_loss`` and ``residual`` are
vectorised and fixed by the config, and so are ``optimal_hparams``, ``hparam_factor`` and
``divergence_probability``; ``observe(n, d, key, lr, batch)`` is deterministic in (world seed, key), so a
retried trial reproduces its value, and different keys give independent noise (derive the key from the
trial id with :func:`observation_key`). The noise streams depend only on (seed, key), not on the law, so
two worlds with one seed see common random numbers. ``observe`` may return nan or inf where an expression
law is undefined or where the learning rate is in the divergence band; that is a diverged trial, data for
the caller. The world does not sleep: ``duration_s`` is for the caller that emulates a trial's wall time.
``compute_optimal`` and ``exponent_a`` describe the true law (noise-free), the ground truth a planner is
scored against.
"""

from __future__ import annotations

import hashlib
import math
import numbers

import numpy as np
from scipy.optimize import minimize_scalar

from workers.config import WorldConfig
from workers.simulated.expr import check_finite_positive, compile_expression
from workers.flops import tokens_for_budget

__all__ = ["World", "SEED_NOISE_TIERS", "observation_key"]

# tier -> (sigma at L <= 3, sigma at L >= 7) in nats (Porian et al. 2024; see the module docstring); the
# keys are the values NoiseConfig.tier allows
SEED_NOISE_TIERS: dict[str, tuple[float, float]] = {"default": (0.002, 0.05), "hard": (0.01, 0.10),
                                                    "none": (0.0, 0.0)}
_SIGMA_LOSSES = (3.0, 7.0)  # sigma is flat below the first and above the second

N_SEARCH_BOUNDS = (1e2, 1e15)  # parameters; compute_optimal's bracket
_SEARCH_POINTS = 521  # coarse scan over the bracket (0.025 decades apart) before the bounded refinement
_N_FEATURES = 512  # random Fourier features: the field's sd is within ~sqrt(2/M) of the configured one
_CHUNK = 4096  # points per block when evaluating the field, bounding memory at _CHUNK * _N_FEATURES
# Where an expression law is checked to be finite and positive: the benchmark's design space with a margin
# that reaches the targets' optima (N ~ 1e10 at C = 1e21).
_PROBE_N, _PROBE_D = (1e6, 1e11), (1e6, 1e13)
# Independent random streams of one world seed.
_STREAM_RESIDUAL, _STREAM_OBSERVE, _STREAM_DIVERGE = 0, 1, 2


def _nonneg(owner: str, name: str, value, *, positive: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < 0 or (positive and x == 0):
        raise ValueError(f"{owner}.{name}={value!r}: expected a finite number {'> 0' if positive else '>= 0'}")
    return x


def _power(rule, n, d) -> np.ndarray:
    """A PowerRule (coef * N^n_exp * D^d_exp) evaluated over arrays."""
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    return rule.coef * n**rule.n_exp * d**rule.d_exp


def _scalar_or_array(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def observation_key(trial_id: str) -> int:
    """A stable observation key for ``World.observe`` from a trial id (first 64 bits of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(str(trial_id).encode()).digest()[:8], "big")


class World:
    """A simulated world built from a :class:`WorldConfig`; its contract is in the module docstring."""

    def __init__(self, config: WorldConfig):
        if not isinstance(config, WorldConfig):
            raise TypeError(f"World needs a WorldConfig, got {type(config).__name__}")
        self.config = config
        self._expression = compile_expression(config.expression) if config.expression is not None else None
        rng = np.random.default_rng([config.seed, _STREAM_RESIDUAL])
        self._omega = rng.standard_normal((_N_FEATURES, 2)) / config.noise.residual_length_scale
        self._phase = rng.uniform(0.0, 2.0 * math.pi, _N_FEATURES)
        if self._expression is not None:
            n, d = np.meshgrid(np.geomspace(*_PROBE_N, 11), np.geomspace(*_PROBE_D, 15))
            check_finite_positive(self.true_loss(n, d), n, d,
                                  what=f"WorldConfig.expression={config.expression!r}")

    def __repr__(self) -> str:
        law = f"law={self.config.law.params}" if self.config.law is not None else f"expression={self.config.expression!r}"
        landscape = ", hparams" if self.config.hparams is not None else ""
        return f"World({law}{landscape}, tier={self.config.noise.tier!r}, seed={self.config.seed})"

    def true_loss(self, n, d) -> np.ndarray:
        """The noiseless law L(N, D), vectorised over anything numpy broadcasts."""
        n = np.asarray(n, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        if self._expression is not None:
            return self._expression(n, d)
        e, a, b, alpha, beta = self.config.law.params
        with np.errstate(divide="ignore", over="ignore"):
            return e + a / n**alpha + b / d**beta

    def residual(self, n, d) -> np.ndarray:
        """The world's fixed smooth residual field at (N, D), in nats (module docstring)."""
        x, y = np.broadcast_arrays(np.log10(np.asarray(n, dtype=np.float64)),
                                   np.log10(np.asarray(d, dtype=np.float64)))
        amplitude = self.config.noise.residual_amplitude
        if amplitude == 0.0:
            return np.zeros(x.shape)
        points = np.stack([x.ravel(), y.ravel()], axis=1)
        out = np.empty(len(points))
        for start in range(0, len(points), _CHUNK):
            block = points[start:start + _CHUNK]
            out[start:start + _CHUNK] = np.cos(block @ self._omega.T + self._phase).sum(axis=1)
        return (amplitude * math.sqrt(2.0 / _N_FEATURES) * out).reshape(x.shape)

    def seed_sigma(self, loss) -> np.ndarray:
        """Seed-noise sd at loss level ``loss``: flat below L = 3 and above L = 7, log-log linear between."""
        loss = np.asarray(loss, dtype=np.float64)
        low, high = SEED_NOISE_TIERS[self.config.noise.tier]
        if high == 0.0:
            return np.zeros(loss.shape)
        l0, l1 = _SIGMA_LOSSES
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.clip((np.log(loss) - math.log(l0)) / (math.log(l1) - math.log(l0)), 0.0, 1.0)
        return np.exp(math.log(low) + t * (math.log(high) - math.log(low)))

    def optimal_hparams(self, n, d):
        """The true optima (lr*, B*) at (N, D), B in tokens; vectorised (floats for scalar inputs).

        Raises ValueError in a world without a landscape: there the loss does not depend on them.
        """
        h = self._landscape("optimal_hparams")
        return _scalar_or_array(_power(h.lr, n, d)), _scalar_or_array(_power(h.batch, n, d))

    def hparam_factor(self, n, d, lr, batch) -> np.ndarray:
        """exp(k_lr u^2 + k_b v^2 + k_x u v), the factor on L(N, D) at (lr, batch); >= 1, 1 at the optimum."""
        h = self._landscape("hparam_factor")
        u = np.log(np.asarray(lr, dtype=np.float64) / _power(h.lr, n, d))
        v = np.log(np.asarray(batch, dtype=np.float64) / _power(h.batch, n, d))
        return np.exp(h.k_lr * u**2 + h.k_b * v**2 + h.k_x * u * v)

    def divergence_probability(self, n, d, lr) -> np.ndarray:
        """Probability that a trial at learning rate ``lr`` diverges: 0 up to diverge_from * lr*, linear in
        log lr up to 1 at diverge_all * lr* (a modelling choice; module docstring)."""
        h = self._landscape("divergence_probability")
        u = np.log(np.asarray(lr, dtype=np.float64) / _power(h.lr, n, d))
        lo, hi = math.log(h.diverge_from), math.log(h.diverge_all)
        return np.clip((u - lo) / (hi - lo), 0.0, 1.0)

    def _landscape(self, what: str):
        if self.config.hparams is None:
            raise ValueError(f"{what}: this world has no hyperparameter landscape (set world.hparams)")
        return self.config.hparams

    def observe(self, n: float, d: float, key: int, lr: float | None = None,
                batch: float | None = None) -> float:
        """One trial's final loss at (n, d), trained at (lr, batch tokens); the same (world seed, key) always
        gives the same value. Without a landscape lr and batch are ignored; with one both are required."""
        if isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
            raise ValueError(f"observe key={key!r}: expected an integer >= 0 (see observation_key)")
        noise = self.config.noise
        if self.config.hparams is None:
            mean = float(self.true_loss(n, d) + self.residual(n, d))
            diverged = False
        else:
            if lr is None or batch is None:
                raise ValueError(f"observe: this world has a hyperparameter landscape (world.hparams), so a trial "
                                 f"needs lr and batch (got lr={lr!r}, batch={batch!r})")
            lr = _nonneg("observe", "lr", lr, positive=True)
            batch = _nonneg("observe", "batch", batch, positive=True)
            loss = float(self.true_loss(n, d)) * float(self.hparam_factor(n, d, lr, batch))
            mean = loss + float(self.residual(n, d))
            # A stream of its own: the seed noise and outliers of (seed, key) stay those of a world without one.
            p = float(self.divergence_probability(n, d, lr))
            diverged = np.random.default_rng([self.config.seed, _STREAM_DIVERGE, int(key)]).random() < p
        rng = np.random.default_rng([self.config.seed, _STREAM_OBSERVE, int(key)])
        # Draw all three numbers whatever the config, so changing outlier settings leaves seed noise alone.
        z, u, jump = rng.standard_normal(), rng.random(), rng.uniform(noise.outlier_low, noise.outlier_high)
        if diverged:
            return math.nan
        outlier = jump if u < noise.outlier_prob else 0.0
        return float(mean + float(self.seed_sigma(mean)) * z + outlier)

    def compute_optimal(self, compute: float) -> dict[str, float]:
        """The true law's compute-optimal point at ``compute`` FLOPs: {"n_opt", "d_opt", "loss"}.

        Minimises L(N, C / 6N) over log N numerically (so expression laws work too): a coarse scan over
        N_SEARCH_BOUNDS finds the best basin, then a bounded Brent search refines it.
        """
        c = _nonneg("compute_optimal", "compute", compute, positive=True)

        def loss_at(log10_n: np.ndarray) -> np.ndarray:
            n = 10.0 ** np.asarray(log10_n, dtype=np.float64)
            d = np.array([tokens_for_budget(c, x) for x in n.ravel()]).reshape(n.shape)
            values = self.true_loss(n, d)
            return np.where(np.isfinite(values), values, np.inf)

        grid = np.linspace(math.log10(N_SEARCH_BOUNDS[0]), math.log10(N_SEARCH_BOUNDS[1]), _SEARCH_POINTS)
        values = loss_at(grid)
        i = int(np.argmin(values))
        if not np.isfinite(values[i]) or i in (0, len(grid) - 1):
            raise ValueError(f"compute_optimal({compute!r}): the loss has no interior minimum for N in "
                             f"{N_SEARCH_BOUNDS} (best at N={10 ** grid[i]:.3g}, loss {values[i]!r}); "
                             "the law may not depend on both N and D")
        res = minimize_scalar(lambda x: float(loss_at(x)), bounds=(grid[i - 1], grid[i + 1]), method="bounded",
                              options={"xatol": 1e-10})
        n_opt = 10.0 ** float(res.x)
        d_opt = tokens_for_budget(c, n_opt)
        return {"n_opt": n_opt, "d_opt": d_opt, "loss": float(self.true_loss(n_opt, d_opt))}

    def exponent_a(self, c1: float, c2: float) -> float:
        """Local slope a = d log N_opt / d log C of the true law between computes c1 and c2 (N_opt ∝ C^a)."""
        if float(c1) == float(c2):
            raise ValueError(f"exponent_a: c1 and c2 must differ, got {c1!r} twice")
        n1 = self.compute_optimal(c1)["n_opt"]
        n2 = self.compute_optimal(c2)["n_opt"]
        return math.log(n2 / n1) / math.log(float(c2) / float(c1))
