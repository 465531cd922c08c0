"""Safe arithmetic expressions for scaling laws written as text, e.g. ``"1.69 + 400/N**0.31 + 400/D**0.31"``.

A simulated world (:mod:`workers.simulated.world`) may take its true law as an
expression in N (parameters) and D (tokens) read from a spec file. Such text must never reach Python's
``eval``: ``eval`` of a string can import modules and run commands, and even plain integer arithmetic
such as ``9**9**9`` hangs the process computing a 370-million-digit number. So the text is parsed with
:func:`ast.parse` (which only builds a tree; nothing runs), every node is checked against a whitelist --
numbers, the variables N and D, the constants e and pi, binary ``+ - * / **``, unary ``+ -`` and calls to
a few numpy functions -- and the tree is turned into nested numpy closures once, so a whole (N, D) grid is
evaluated in one vectorised call. Anything else is rejected with :class:`ExpressionError`, whose one-line
message names the construct and lists what is allowed. Numbers become float64 before any arithmetic, so
overflow gives inf and 1/0 gives inf (numpy semantics, warnings silenced) instead of a hang or a crash;
the text length, tree depth and node count are bounded, so checking and evaluating take bounded time.

Contract: :func:`compile_expression` validates once and returns an :class:`Expression`; calling it with
N and D (anything numpy broadcasts) returns a new float64 array of the broadcast shape. The values may be
nan, inf or <= 0 where the law is undefined (a negative base to a fractional power, ``log(0)``); whether
that is an error is the caller's decision, and :func:`check_finite_positive` is the one check for it.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["Expression", "ExpressionError", "compile_expression", "check_finite_positive",
           "MAX_LENGTH", "MAX_DEPTH", "MAX_NODES"]

MAX_LENGTH = 500  # characters; a four-term law is ~40
MAX_DEPTH = 64  # tree depth; a sum of k terms is k deep, so this allows ~60-term sums
MAX_NODES = 400  # expression nodes in the whole tree

_VARIABLES = ("N", "D")
_CONSTANTS = {"e": np.e, "pi": np.pi}
# name -> (numpy ufunc, number of positional arguments)
_FUNCTIONS: dict[str, tuple[np.ufunc, int]] = {
    "log": (np.log, 1), "log10": (np.log10, 1), "log2": (np.log2, 1), "exp": (np.exp, 1),
    "sqrt": (np.sqrt, 1), "abs": (np.abs, 1), "tanh": (np.tanh, 1),
    "minimum": (np.minimum, 2), "maximum": (np.maximum, 2),
}
_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
           ast.Pow: np.power}
_UNARY = {ast.UAdd: np.positive, ast.USub: np.negative}

_ALLOWED = ("allowed: numbers, the variables N and D, the constants e and pi, binary + - * / **, unary + -, "
            "parentheses, and calls " + ", ".join(f"{f}()" for f, (_, k) in _FUNCTIONS.items() if k == 1)
            + " (one argument) and " + ", ".join(f"{f}()" for f, (_, k) in _FUNCTIONS.items() if k == 2)
            + " (two arguments)")
_EXAMPLE = "'1.69 + 400/N**0.31 + 400/D**0.31'"

_OPERATORS = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
              ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Invert: "~", ast.Not: "not"}
_CONSTRUCTS = {
    ast.Subscript: "subscript x[...]", ast.Slice: "slice", ast.Lambda: "lambda",
    ast.ListComp: "list comprehension", ast.SetComp: "set comprehension", ast.DictComp: "dict comprehension",
    ast.GeneratorExp: "generator expression", ast.Compare: "comparison", ast.BoolOp: "boolean operator and/or",
    ast.IfExp: "conditional expression (x if c else y)", ast.Tuple: "tuple", ast.List: "list",
    ast.Dict: "dict", ast.Set: "set", ast.NamedExpr: "assignment expression :=", ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string", ast.Starred: "starred expression", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield from",
}

_Eval = Callable[[Mapping[str, np.ndarray]], np.ndarray]


class ExpressionError(ValueError):
    """A scaling-law expression that is not allowed, not valid, or not usable; the message is one line."""


class Expression:
    """A validated scaling-law expression in N and D; call it with arrays to evaluate it.

    ``Expression(text)`` (or :func:`compile_expression`) parses and checks ``text`` once and raises
    :class:`ExpressionError` if it is not allowed. Instances are immutable and compare by their text.
    """

    __slots__ = ("_text", "_fn", "_variables", "_parameters")

    def __init__(self, text: str, variables: tuple[str, ...] = _VARIABLES, parameters: bool = False):
        fn, used, params = _compile(text, variables, parameters)
        self._text, self._fn, self._variables, self._parameters = text, fn, frozenset(used), tuple(params)

    @property
    def text(self) -> str:
        return self._text

    @property
    def variables(self) -> frozenset[str]:
        """The variables the expression uses: a subset of those it was compiled with ({"N", "D"})."""
        return self._variables

    @property
    def parameters(self) -> tuple[str, ...]:
        """The free parameters, in order of first use: every other name, when compiled with
        ``parameters=True`` (a law form to fit, orchestrator.fitting.forms); else ()."""
        return self._parameters

    def evaluate(self, env: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate with every variable and parameter bound in ``env`` (anything numpy
        broadcasts: a (k, 1) column of parameter values against (n,) runs gives (k, n))."""
        missing = [name for name in (*self._variables, *self._parameters) if name not in env]
        if missing:
            raise ExpressionError(f"no value for {', '.join(missing)} in {_snippet(self._text)}")
        with np.errstate(all="ignore"):
            return np.asarray(self._fn({k: np.asarray(v, dtype=np.float64) for k, v in env.items()}), dtype=np.float64)

    def __call__(self, N, D) -> np.ndarray:
        """Evaluate at N and D (broadcast together) in float64; returns a new array of the broadcast shape."""
        n = np.asarray(N, dtype=np.float64)
        d = np.asarray(D, dtype=np.float64)
        shape = np.broadcast_shapes(n.shape, d.shape)
        # Overflow -> inf, 0/0 -> nan and so on are values here, judged by the caller (module docstring).
        with np.errstate(all="ignore"):
            out = self._fn({"N": n, "D": d})
        return np.array(np.broadcast_to(out, shape), dtype=np.float64)

    def __repr__(self) -> str:
        return f"Expression({self._text!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Expression) and other._text == self._text

    def __hash__(self) -> int:
        return hash((Expression, self._text))


def compile_expression(text: str, variables: tuple[str, ...] = _VARIABLES, parameters: bool = False) -> Expression:
    """Parse and validate ``text`` once; the returned :class:`Expression` is evaluated by calling it.

    ``variables``: the names that are inputs. ``parameters``: every other name (not a constant
    or a function) is a free parameter, listed in :attr:`Expression.parameters`, instead of an
    error; a name used as a function or constant cannot be a parameter."""
    return Expression(text, tuple(variables), parameters)


def check_finite_positive(values, N=None, D=None, *, what: str = "expression") -> np.ndarray:
    """Return ``values`` as a float64 array if every value is finite and > 0, else raise ExpressionError.

    A loss must be positive and finite wherever a law is used; pass the N and D it was evaluated at so the
    message names the first bad point.
    """
    v = np.asarray(values, dtype=np.float64)
    bad = ~(np.isfinite(v) & (v > 0))
    if not bad.any():
        return v
    i = int(np.argmax(bad.ravel()))
    where = ""
    if N is not None and D is not None:
        n, d, _ = np.broadcast_arrays(np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64), v)
        where = f" at N={n.ravel()[i]:.4g}, D={d.ravel()[i]:.4g}"
    raise ExpressionError(
        f"{what} is not finite and positive at {int(bad.sum())} of {v.size} points, e.g. {v.ravel()[i]!r}"
        f"{where}; a loss must be > 0 everywhere the law is evaluated")


# --- validation and compilation -------------------------------------------------------------------------


def _snippet(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _compile(text, variables=_VARIABLES, parameters: bool = False) -> tuple[_Eval, set[str], list[str]]:
    if not isinstance(text, str):
        raise ExpressionError(f"a scaling-law expression must be a string, got {type(text).__name__}; "
                              f"for example {_EXAMPLE}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters long, more than the {MAX_LENGTH} allowed")
    if not text.strip():
        raise ExpressionError(f"expression is empty; write one arithmetic expression in N and D, e.g. {_EXAMPLE}")
    source = text.strip()  # eval mode rejects leading whitespace as an indent
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        at = f", column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"{_snippet(text)} is not a valid expression ({exc.msg}{at}); "
                              f"write one arithmetic expression in N and D, e.g. {_EXAMPLE}") from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; nesting too deep for the parser
        raise ExpressionError(f"{_snippet(text)} could not be parsed ({type(exc).__name__}: {exc}); "
                              f"write one arithmetic expression in N and D, e.g. {_EXAMPLE}") from exc
    compiler = _Compiler(source, tuple(variables), parameters)
    return compiler.build(tree.body, 1), compiler.variables, compiler.parameters


class _Compiler:
    """Checks one parsed tree against the whitelist and turns it into numpy closures in the same walk."""

    def __init__(self, text: str, variables: tuple[str, ...] = _VARIABLES, parameters: bool = False):
        self.text = text
        self.nodes = 0
        self.allowed_variables = variables
        self.free = parameters
        self.variables: set[str] = set()
        self.parameters: list[str] = []

    def reject(self, node: ast.AST, what: str, hint: str = "") -> ExpressionError:
        col = getattr(node, "col_offset", None)
        at = f" at column {col + 1}" if col is not None else ""
        allowed = _ALLOWED if self.allowed_variables == _VARIABLES else _ALLOWED.replace(
            "the variables N and D", "the variables " + ", ".join(self.allowed_variables) + " and named parameters")
        return ExpressionError(f"{what} is not allowed in a scaling-law expression ({_snippet(self.text)}{at}"
                               f"{'; ' + hint if hint else ''}); {allowed}")

    def build(self, node: ast.AST, depth: int) -> _Eval:
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression {_snippet(self.text)} is nested more than {MAX_DEPTH} levels deep")
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"expression {_snippet(self.text)} has more than {MAX_NODES} terms and operators")

        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BinOp):
            ufunc = _BINARY.get(type(node.op))
            if ufunc is None:
                sym = _OPERATORS.get(type(node.op), type(node.op).__name__)
                raise self.reject(node, f"operator {sym!r}", "write powers as **" if sym == "^" else "")
            left, right = self.build(node.left, depth + 1), self.build(node.right, depth + 1)
            return lambda env: ufunc(left(env), right(env))
        if isinstance(node, ast.UnaryOp):
            ufunc = _UNARY.get(type(node.op))
            if ufunc is None:
                raise self.reject(node, f"unary operator {_OPERATORS.get(type(node.op), type(node.op).__name__)!r}")
            operand = self.build(node.operand, depth + 1)
            return lambda env: ufunc(operand(env))
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.Attribute):
            raise self.reject(node, f"attribute access '.{node.attr}'")
        raise self.reject(node, _CONSTRUCTS.get(type(node), f"{type(node).__name__} node"))

    def _constant(self, node: ast.Constant) -> _Eval:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = {str: "string", bytes: "bytes", complex: "complex number", bool: "boolean"}.get(type(value))
            raise self.reject(node, f"{kind} constant {value!r}" if kind else f"constant {value!r}")
        try:
            number = np.float64(float(value))
        except OverflowError:  # an integer literal beyond float64, like 1e999 as a float literal
            number = np.float64(np.inf)
        return lambda env: number

    def _name(self, node: ast.Name) -> _Eval:
        name = node.id
        if name in self.allowed_variables:
            self.variables.add(name)
            return lambda env: env[name]
        if name in _CONSTANTS:
            value = np.float64(_CONSTANTS[name])
            return lambda env: value
        if name in _FUNCTIONS:
            raise self.reject(node, f"function {name!r} without a call", f"write {name}(...)")
        if self.free and name.isidentifier() and not name.startswith("_"):
            if name not in self.parameters:
                self.parameters.append(name)
            return lambda env: env[name]
        raise self.reject(node, f"name {name!r}", "the only variables are " + " and ".join(self.allowed_variables)
                          if self.allowed_variables != _VARIABLES else
                          "the only variables are N (parameters) and D (tokens)")

    def _call(self, node: ast.Call, depth: int) -> _Eval:
        if not isinstance(node.func, ast.Name):
            # e.g. __import__('os').system(...): the callee is itself an expression; reject what it is.
            if isinstance(node.func, ast.Attribute):
                raise self.reject(node.func, f"attribute access '.{node.func.attr}'")
            raise self.reject(node.func, f"call of a {_CONSTRUCTS.get(type(node.func), type(node.func).__name__)}")
        name = node.func.id
        if name not in _FUNCTIONS:
            raise self.reject(node, f"call to {name!r}")
        if node.keywords:
            kw = node.keywords[0]
            raise self.reject(kw, f"keyword argument '{kw.arg}='" if kw.arg else "**keyword arguments")
        ufunc, arity = _FUNCTIONS[name]
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.reject(arg, "starred argument *x")
        if len(node.args) != arity:
            raise ExpressionError(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, "
                                  f"got {len(node.args)}, in {_snippet(self.text)}")
        args = [self.build(a, depth + 1) for a in node.args]
        if arity == 1:
            (only,) = args
            return lambda env: ufunc(only(env))
        first, second = args
        return lambda env: ufunc(first(env), second(env))
