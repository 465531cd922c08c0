"""workers.simulated.expr: scaling laws as text are evaluated vectorised, and anything but arithmetic is refused."""

import builtins
import math
import warnings

import numpy as np
import pytest

from workers.simulated.expr import MAX_LENGTH, Expression, ExpressionError, check_finite_positive, compile_expression

T0_TEXT = "1.8172 + 482.01/N**0.3478 + 2085.43/D**0.3658"


def t0(n, d):
    return 1.8172 + 482.01 / n**0.3478 + 2085.43 / d**0.3658


def test_chinchilla_law_evaluates_over_a_grid_at_once():
    n, d = np.meshgrid(np.geomspace(1e6, 3e9, 7), np.geomspace(1e7, 1e12, 5))
    expr = compile_expression(T0_TEXT)
    out = expr(n, d)
    assert out.shape == (5, 7) and out.dtype == np.float64
    np.testing.assert_allclose(out, t0(n, d), rtol=1e-14)
    assert expr.variables == {"N", "D"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1.69 + 400/N**0.31 + 400/D**0.31", lambda n, d: 1.69 + 400 / n**0.31 + 400 / d**0.31),
        ("1.8 + 482*N**-0.35 + 2085*D**-0.37", lambda n, d: 1.8 + 482 * n**-0.35 + 2085 * d**-0.37),
        ("-(-N) - +D", lambda n, d: n - d),
        ("2**-1 * (N - D) / 3", lambda n, d: 0.5 * (n - d) / 3),
        ("2**3**2", lambda n, d: 2.0**9 + 0 * n),  # ** is right-associative, as in Python
        ("log(N) + log10(D) + log2(N) + exp(-N/1e9)",
         lambda n, d: np.log(n) + np.log10(d) + np.log2(n) + np.exp(-n / 1e9)),
        ("sqrt(N) + abs(-D) + tanh(N/D)", lambda n, d: np.sqrt(n) + np.abs(d) + np.tanh(n / d)),
        ("minimum(N, D) + maximum(N, 2*D)", lambda n, d: np.minimum(n, d) + np.maximum(n, 2 * d)),
        ("e * pi + N", lambda n, d: math.e * math.pi + n),
        ("  1.7 + 1e3 / (N * D) ** 0.25  ", lambda n, d: 1.7 + 1e3 / (n * d) ** 0.25),
    ],
)
def test_allowed_constructs_match_numpy(text, expected):
    n = np.array([1e6, 3e7, 2e9])
    d = np.array([5e6, 1e9, 4e11])
    np.testing.assert_allclose(compile_expression(text)(n, d), expected(n, d), rtol=1e-13)


def test_inputs_broadcast_and_integers_are_floats():
    expr = compile_expression("N / D")
    assert expr(np.arange(1, 4)[:, None], np.arange(1, 3)).shape == (3, 2)
    assert expr(1, 2)[()] == 0.5  # integer inputs, true division
    out = compile_expression("2.5")(np.ones(4), np.ones(4))  # a constant law still gives one value per point
    assert out.shape == (4,) and np.all(out == 2.5)
    assert compile_expression("3 + N").variables == {"N"}
    assert compile_expression("1.5").variables == frozenset()


def test_expression_is_validated_once_and_reusable():
    expr = compile_expression(T0_TEXT)
    assert isinstance(expr, Expression) and expr.text == T0_TEXT
    first = expr(np.array([1e8]), np.array([1e10]))
    expr(np.array([1e6, 1e7]), np.array([1e9, 1e9]))
    np.testing.assert_array_equal(expr(np.array([1e8]), np.array([1e10])), first)
    assert expr == compile_expression(T0_TEXT) and hash(expr) == hash(compile_expression(T0_TEXT))


def test_no_eval_or_exec_is_used(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec must not be called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    assert compile_expression("N + D")(1.0, 2.0)[()] == 3.0


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "N.__class__",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "[x for x in N]",
        "{x: 1 for x in N}",
        "(x for x in N)",
        "lambda: 1",
        "open('f')",
        "N if D else 1",
        "'a'",
        "b'a'",
        "f'{N}'",
        "N[0]",
        "N < D",
        "N and D",
        "not N",
        "~N",
        "N // 2",
        "N % 2",
        "N ^ 2",
        "N @ D",
        "N << 2",
        "(N, D)",
        "[N]",
        "{N}",
        "x",
        "E + N",  # only N and D are variables; a law's constants must be numbers
        "True + N",
        "None",
        "1j * N",
        "log",
        "log(N, 2)",
        "log(N, base=2)",
        "log(*N)",
        "minimum(N)",
        "np.log(N)",
        "getattr(N, 'real')",
        "(y := 2)",
        "...",
        "a=1",
        "import os",
        "N +",
        "",
        "   ",
        "N\x00",
    ],
)
def test_anything_but_arithmetic_is_rejected(text):
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and message


def test_rejection_names_the_construct_and_lists_what_is_allowed():
    with pytest.raises(ExpressionError, match=r"attribute access '\.__class__'.*allowed: numbers, the variables N"):
        compile_expression("N.__class__")
    with pytest.raises(ExpressionError, match=r"call to 'open'.*log\(\)"):
        compile_expression("open('f')")
    with pytest.raises(ExpressionError, match=r"operator '\^'.*write powers as \*\*"):
        compile_expression("N^2")
    with pytest.raises(ExpressionError, match="not a valid expression"):
        compile_expression("a=1")


def test_non_string_is_rejected():
    with pytest.raises(ExpressionError, match="must be a string"):
        compile_expression(1.5)


def test_resource_limits():
    with pytest.raises(ExpressionError, match="characters long"):
        compile_expression("N" + "+1" * MAX_LENGTH)
    for deep in ["-" * 400 + "N", "log(" * 80 + "N" + ")" * 80, "+".join(["N"] * 200)]:
        with pytest.raises(ExpressionError, match="nested more than"):
            compile_expression(deep)
    # Parentheses add no tree depth, so redundant ones are harmless.
    assert compile_expression("(" * 200 + "N" + ")" * 200)(3.0, 1.0)[()] == 3.0
    with pytest.raises(ExpressionError, match="more than"):
        compile_expression("*".join(["(" + "+".join(["N"] * 30) + ")"] * 14))


@pytest.mark.timeout(5)
def test_overflow_is_inf_not_a_hang_and_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_expression("9**9**9")(1.0, 1.0)[()] == math.inf
        assert compile_expression("10**400 + N")(1.0, 1.0)[()] == math.inf
        assert compile_expression(
            "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
            "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
            "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
            " * N")(1.0, 1.0)[()] == math.inf
        assert compile_expression("1/(N - N)")(2.0, 1.0)[()] == math.inf
        assert math.isnan(compile_expression("(-N)**0.5")(2.0, 1.0)[()])
        assert compile_expression("log(N - 1)")(1.0, 1.0)[()] == -math.inf


def test_check_finite_positive():
    n = np.array([1.0, 2.0, 3.0])
    good = compile_expression("N")(n, n)
    np.testing.assert_array_equal(check_finite_positive(good, n, n), good)
    bad = compile_expression("2 - N")(n, n)
    with pytest.raises(ExpressionError, match=r"at 2 of 3 points.*N=2"):
        check_finite_positive(bad, n, n)
    with pytest.raises(ExpressionError, match="not finite"):
        check_finite_positive(np.array([1.0, math.nan]))
