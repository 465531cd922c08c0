"""The built-in law forms, each with its reference, and custom forms from an expression.

``FORMS`` maps each built-in name to its class: chinchilla, kaplan, farseer, data-constrained
and n-only. A custom form comes from an expression with named parameters, parsed by the
project's safe expression parser (workers.simulated.expr: ast, a whitelist, numpy closures;
never eval). ``resolve_form`` turns what a user typed (``--form``, ``fit.form``) into a form.
"""

from __future__ import annotations

import math

import numpy as np

from orchestrator.fitting.forms.base import FormError, LawForm, Param
from orchestrator.fitting.law import EXPONENT_BOUNDS, LOG_COEF_MIN, optimal_allocation
from orchestrator.fitting import MAX_MAGNITUDE
from workers.simulated.expr import ExpressionError, compile_expression

__all__ = ["FORMS", "INPUTS", "form_by_name", "custom_form", "parse_param", "resolve_form"]

INPUTS = ("N", "D", "U")  # parameters, tokens trained, unique tokens


def _lse(*terms):
    m = np.maximum.reduce(terms)
    return m + np.log(sum(np.exp(t - m) for t in terms))


def _col(Z, i):
    return Z[:, i:i + 1]


class Chinchilla(LawForm):
    """L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2; fitted as in Besiroglu et al. 2024).

    Internal vector (log A, log B, log E, alpha, beta), as orchestrator.fitting.law's; the fit,
    its bootstrap and its optimum take that module's fast paths (variable projection, batched
    LM with analytic derivatives, closed-form allocation)."""

    name = "chinchilla"
    formula = "L = E + A/N^alpha + B/D^beta"
    params = (Param("A", 400.0, math.exp(LOG_COEF_MIN), math.inf, log=True, start=(1.0, 1e6)),
              Param("B", 400.0, math.exp(LOG_COEF_MIN), math.inf, log=True, start=(1.0, 1e8)),
              Param("E", 1.7, math.exp(LOG_COEF_MIN), math.inf, log=True, start=(0.1, 5.0)),
              Param("alpha", 0.3, *EXPONENT_BOUNDS, start=(0.05, 1.0)),
              Param("beta", 0.3, *EXPONENT_BOUNDS, start=(0.05, 1.0)))

    def log_loss(self, Z, X):
        ln, ld = np.log(X["N"]), np.log(X["D"])
        return _lse(_col(Z, 0) - _col(Z, 3) * ln, _col(Z, 1) - _col(Z, 4) * ld, _col(Z, 2) + 0 * ln * ld)

    def log_jacobian(self, Z, X, f0=None):
        Z = np.atleast_2d(Z)
        ln, ld = np.broadcast_arrays(np.log(X["N"]), np.log(X["D"]))
        t0, t1 = _col(Z, 0) - _col(Z, 3) * ln, _col(Z, 1) - _col(Z, 4) * ld
        t2 = np.broadcast_to(_col(Z, 2), t0.shape)
        m = np.maximum(np.maximum(t0, t1), t2)
        e0, e1, e2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(t2 - m)
        s = e0 + e1 + e2
        p0, p1, p2 = e0 / s, e1 / s, e2 / s
        return np.stack([p0, p1, p2, -p0 * ln, -p1 * ld], axis=-1)

    def optimum(self, Z, compute):
        Z = np.atleast_2d(Z)
        A, B, E = np.exp(Z[:, 0]), np.exp(Z[:, 1]), np.exp(Z[:, 2])
        return optimal_allocation(E, A, B, Z[:, 3], Z[:, 4], compute)

    def seeds(self, chinchilla):
        return [self.from_values(chinchilla)] if chinchilla else []


class Kaplan(LawForm):
    """L = E + ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D: Kaplan et al. (2020), eq. 1.5 (4.1),
    with an irreducible term E added (their fits had none: loss fell as a pure power law within
    their range). Unlike Chinchilla's additive form, the N and D terms interact: a small model
    gains less from more data."""

    name = "kaplan"
    formula = "L = E + ((Nc/N)^(alpha_N/alpha_D) + Dc/D)^alpha_D"
    params = (Param("E", 1.5, 1e-6, math.inf, log=True, start=(0.1, 5.0)),
              Param("Nc", 1e10, 1.0, math.inf, log=True, start=(1e4, 1e16)),
              Param("Dc", 1e10, 1.0, math.inf, log=True, start=(1e4, 1e16)),
              Param("alpha_N", 0.3, 1e-3, 5.0, start=(0.05, 1.0)),
              Param("alpha_D", 0.3, 1e-3, 5.0, start=(0.05, 1.0)))

    def log_loss(self, Z, X):
        ln, ld = np.log(X["N"]), np.log(X["D"])
        e, lnc, ldc, an, ad = (_col(Z, i) for i in range(5))
        inner = _lse((an / ad) * (lnc - ln), ldc - ld)
        return _lse(e + 0 * inner, ad * inner)

    def seeds(self, c):
        # Each limit is Chinchilla's: D -> inf gives (Nc/N)^alpha_N = A/N^alpha, N -> inf gives
        # (Dc/D)^alpha_D = B/D^beta.
        if not c or min(c["alpha"], c["beta"]) < 1e-3:
            return []
        return [self.from_values({"E": c["E"], "Nc": math.exp(math.log(c["A"]) / c["alpha"]),
                                  "Dc": math.exp(math.log(c["B"]) / c["beta"]), "alpha_N": c["alpha"],
                                  "alpha_D": c["beta"]})]


FARSEER_N_UNIT = 1e9  # Farseer's N in billions: x = N / 1e9 (a reparametrisation of a_i only)


class Farseer(LawForm):
    """L = exp(a3 x^gamma + b3) + exp(a2 x^beta + b2) * D^(-exp(a1 x^alpha + b1)), x = N / 1e9:
    Li et al. (2025, "Farseer: A Refined Scaling Law in Large Language Models", eq. 5). The data
    term's coefficient and its exponent both depend on N, so the benefit of more data changes
    with model size, which the additive Chinchilla form cannot express. Nine parameters; N in
    billions keeps x^alpha near 1 (N -> N/s only rescales a1, a2, a3)."""

    name = "farseer"
    formula = "L = exp(a3 x^gamma + b3) + exp(a2 x^beta + b2) D^-exp(a1 x^alpha + b1), x = N/1e9"
    params = (Param("a1", 0.0, -20, 20, start=(-1, 1)), Param("b1", math.log(0.3), -10, 3, start=(-3, 0.5)),
              Param("alpha", 0.3, -3, 3, start=(-1, 1)),
              Param("a2", 0.0, -50, 50, start=(-2, 2)), Param("b2", 6.0, -20, 60, start=(0, 15)),
              Param("beta", 0.3, -3, 3, start=(-1, 1)),
              Param("a3", 0.1, -20, 20, start=(-1, 1)), Param("b3", 0.5, -10, 5, start=(-1, 2)),
              Param("gamma", -0.3, -3, 3, start=(-1, 0)))

    def _terms(self, Z, X):
        lx, ld = np.log(np.asarray(X["N"], float) / FARSEER_N_UNIT), np.log(X["D"])
        a1, b1, al, a2, b2, be, a3, b3, ga = (_col(Z, i) for i in range(9))
        with np.errstate(all="ignore"):
            xa, xb, xg = np.exp(al * lx), np.exp(be * lx), np.exp(ga * lx)
            k = np.exp(a1 * xa + b1)
            return lx, ld, xa, xb, xg, k, a3 * xg + b3 + 0 * ld, a2 * xb + b2 - k * ld

    def log_loss(self, Z, X):
        *_, t3, t2 = self._terms(Z, X)
        return _lse(t3, t2)

    def log_jacobian(self, Z, X, f0=None):
        Z = np.atleast_2d(Z)
        lx, ld, xa, xb, xg, k, t3, t2 = self._terms(Z, X)
        with np.errstate(all="ignore"):
            m = np.maximum(t3, t2)
            e3, e2 = np.exp(t3 - m), np.exp(t2 - m)
            p3, p2 = e3 / (e3 + e2), e2 / (e3 + e2)
            q = -p2 * ld * k  # d log L / d log k
            shape = p2.shape
            cols = [q * xa, q, q * _col(Z, 0) * xa * lx, p2 * xb, p2, p2 * _col(Z, 3) * xb * lx,
                    p3 * xg, p3, p3 * _col(Z, 6) * xg * lx]
            return np.stack([np.broadcast_to(c, shape) for c in cols], axis=-1)

    def seeds(self, c):
        # With a1 = a2 = 0 the data term is Chinchilla's B/D^beta; exp(b3 + a3 x^gamma) with
        # gamma = -alpha is E (1 + a3 x^-alpha + ...) ~ E + A/N^alpha for a3 = A / (E 1e9^alpha).
        if not c:
            return []
        a3 = c["A"] / (c["E"] * FARSEER_N_UNIT ** c["alpha"])
        out = []
        for al in (0.3, -0.3):
            out.append(np.array([0.0, math.log(max(c["beta"], 1e-4)), al, 0.0, math.log(c["B"]), al,
                                 float(np.clip(a3, -20, 20)), math.log(c["E"]), -c["alpha"]]))
        return out


class DataConstrained(LawForm):
    """L = E + A/N^alpha + B/D'^beta with D' = U + U R* (1 - exp(-(D/U - 1)/R*)) once D > U:
    Muennighoff et al. (2023, "Scaling Data-Constrained Language Models", eq. 5), the effective
    data of D tokens drawn from U unique ones (repeated tokens are worth less; R* is the number
    of repetitions at which their value has fallen by 1/e). Their analogous decay of excess
    parameters (R*_N) is left out: it needs a compute-optimal N per U, and the repeated-data
    term is what a table of repeated-epoch runs identifies. Needs a column of unique tokens (U);
    the optimum is taken with fresh data (U = D)."""

    name = "data-constrained"
    formula = "L = E + A/N^alpha + B/D'^beta, D' = U + U R* (1 - exp(-(D/U - 1)/R*)) for D > U"
    inputs = frozenset({"N", "D", "U"})
    params = Chinchilla.params + (Param("R_star", 15.0, 1e-2, 1e4, log=True, start=(1.0, 100.0)),)

    def log_loss(self, Z, X):
        d = np.asarray(X["D"], float)
        u = np.minimum(np.asarray(X["U"], float), d)
        rs = np.exp(_col(Z, 5))
        with np.errstate(all="ignore"):
            reps = np.maximum(d / u - 1.0, 0.0)
            d_eff = u + u * rs * (-np.expm1(-reps / rs))
        return Chinchilla.log_loss(self, Z, {"N": X["N"], "D": d_eff})

    def optimum(self, Z, compute):
        return Chinchilla.optimum(self, Z, compute)

    def seeds(self, c):
        return [np.append(Chinchilla().from_values(c), math.log(15.0))] if c else []


class NOnly(LawForm):
    """L = E + A/N^alpha: the parameter-scaling law (Kaplan et al. 2020, eq. 1.1 with an
    irreducible term), for tables without D such as fixed-token architecture studies. It has
    no compute-optimal allocation."""

    name = "n-only"
    formula = "L = E + A/N^alpha"
    inputs = frozenset({"N"})
    params = (Chinchilla.params[0], Chinchilla.params[2], Chinchilla.params[3])

    def log_loss(self, Z, X):
        ln = np.log(X["N"])
        return _lse(_col(Z, 0) - _col(Z, 2) * ln, _col(Z, 1) + 0 * ln)

    def seeds(self, c):
        return [np.array([math.log(c["A"]), math.log(c["E"]), c["alpha"]])] if c else []


class Custom(LawForm):
    """A form from an expression in N, D and U with named parameters (``--form EXPR --param ...``).

    Every name other than N, D, U, the constants e and pi and the parser's functions is a
    parameter; each needs ``--param NAME=INIT:LO:HI`` unless it is one of Chinchilla's names
    (E, A, B, alpha, beta), which start from the Chinchilla fit's values. Parameters are fitted
    in natural units, so their bounds may include zero or negative values."""

    name = "custom"

    def __init__(self, text: str, params: dict[str, tuple[float, float, float]]):
        try:
            self.expr = compile_expression(text, INPUTS, parameters=True)
        except ExpressionError as e:
            raise FormError(f"--form: {e}") from None
        bad = [k for k in params if k in INPUTS or k in ("e", "pi")]
        if bad:
            raise FormError(f"--param {bad[0]}: {bad[0]!r} is an input of the law (N, D, U) or a constant, "
                            "not a parameter")
        unknown = [k for k in params if k not in self.expr.parameters]
        if unknown:
            raise FormError(f"--param {unknown[0]}: the expression has no parameter {unknown[0]!r} "
                            f"(its parameters: {', '.join(self.expr.parameters) or 'none'})")
        if not self.expr.parameters:
            raise FormError(f"--form {text!r}: the expression has no parameters to fit")
        if "N" not in self.expr.variables:
            raise FormError(f"--form {text!r}: the expression does not use N")
        defaults = {"E": (1.7, 0.0, math.inf), "A": (400.0, 0.0, math.inf), "B": (400.0, 0.0, math.inf),
                    "alpha": (0.3, 0.0, 5.0), "beta": (0.3, 0.0, 5.0)}
        out = []
        for name in self.expr.parameters:
            if name not in params and name not in defaults:
                raise FormError(f"--param {name}: parameter {name!r} of the expression needs a starting value and "
                                f"bounds, e.g. --param {name}=1:0:1e6 (INIT:LO:HI)")
            init, lo, hi = params[name] if name in params else defaults[name]
            if not (lo <= init <= hi):
                raise FormError(f"--param {name}={init:g}:{lo:g}:{hi:g}: the bounds [{lo:g}, {hi:g}] exclude the "
                                f"initial value {init:g}")
            span = (lo if math.isfinite(lo) else init - 3 * max(1.0, abs(init)),
                    hi if math.isfinite(hi) else init + 3 * max(1.0, abs(init)))
            out.append(Param(name, float(init), float(lo), float(hi), start=span))
        self.params = tuple(out)
        self.inputs = frozenset(self.expr.variables | {"N"})
        self.formula = f"L = {text}"
        self.text = text

    def log_loss(self, Z, X):
        env = {k: v for k, v in X.items() if k in self.expr.variables}
        env.update({p.name: _col(Z, i) for i, p in enumerate(self.params)})
        with np.errstate(all="ignore"):
            # An expression that omits a parameter or an input returns a smaller array: broadcast it
            # to every (parameter row, run); a loss <= 0 is undefined (NaN), as an infinite objective.
            shape = np.broadcast_shapes((len(Z), 1), *(np.shape(v) for v in env.values()))
            out = np.broadcast_to(self.expr.evaluate(env), shape)
            return np.log(np.where(out > 0, out, np.nan))

    def seeds(self, c):
        if not c:
            return []
        z = self.init()
        hit = False
        for i, p in enumerate(self.params):
            if p.name in c and p.lo <= c[p.name] <= p.hi:
                z[i], hit = c[p.name], True
        return [z] if hit else []


FORMS: dict[str, type[LawForm]] = {f.name: f for f in (Chinchilla, Kaplan, Farseer, DataConstrained, NOnly)}


def form_by_name(name: str) -> LawForm:
    try:
        return FORMS[name]()
    except KeyError:
        raise FormError(f"--form {name!r}: unknown form (expected one of {', '.join(FORMS)}, auto, or an expression "
                        "in N, D and U with --param NAME=INIT:LO:HI for its parameters)") from None


def parse_param(text: str) -> tuple[str, tuple[float, float, float]]:
    """``NAME=INIT:LO:HI`` (LO and HI may be empty or inf for no bound) -> (name, (init, lo, hi))."""
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not name.strip().isidentifier() or len(parts) not in (1, 3):
        raise FormError(f"--param {text!r}: expected NAME=INIT:LO:HI, e.g. G=1:0:1e6")
    try:
        init = float(parts[0])
        lo = float(parts[1]) if len(parts) == 3 and parts[1].strip() else -math.inf
        hi = float(parts[2]) if len(parts) == 3 and parts[2].strip() else math.inf
    except ValueError:
        raise FormError(f"--param {text!r}: INIT, LO and HI must be numbers, e.g. G=1:0:1e6") from None
    if not all(math.isfinite(x) or abs(x) == math.inf for x in (init, lo, hi)) or not math.isfinite(init):
        raise FormError(f"--param {text!r}: the initial value must be a finite number")
    if lo > hi:
        raise FormError(f"--param {text!r}: LO {lo:g} is above HI {hi:g}")
    huge = [x for x in (init, lo, hi) if math.isfinite(x) and abs(x) > MAX_MAGNITUDE]
    if huge:  # the start box's width hi - lo, steps of 3 |init| and squared predictions would overflow
        raise FormError(f"--param {text!r}: {huge[0]:g} is beyond +-{MAX_MAGNITUDE:g}, where the fit's arithmetic "
                        "overflows (expected values within it; an empty LO or HI is no bound)")
    return name.strip(), (init, lo, hi)


def custom_form(text: str, params: list[str] | tuple = ()) -> LawForm:
    parsed = dict(parse_param(p) for p in params)
    return Custom(text, parsed)


def resolve_form(name: str, params=()) -> LawForm:
    """A built-in form by name, or a custom form when ``name`` is an expression (has an operator
    or a parenthesis); ``params`` are ``--param`` strings, for custom forms only."""
    if name in FORMS:
        if params:
            raise FormError(f"--param applies to a custom --form expression, not to the built-in form {name!r}")
        return form_by_name(name)
    if any(ch in name for ch in "+-*/()"):
        return custom_form(name, params)
    return form_by_name(name)
