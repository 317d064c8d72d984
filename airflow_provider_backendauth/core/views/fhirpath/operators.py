"""FHIRPath operators (N1 section 6) as closures over their compiled operands.

Empty propagates (``{} = x`` is empty) except where the spec says otherwise (``and``/``or``
three-valued logic, ``|``, ``&``). Numbers mix ints, Decimals and floats exactly: arithmetic
goes through Decimal so ``0.1 + 0.2 = 0.3`` holds as the spec requires.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import DivisionByZero, InvalidOperation
from typing import Any

from airflow_provider_backendauth.core.views.fhirpath import temporal
from airflow_provider_backendauth.core.views.fhirpath.runtime import (
    INTEGER_TYPES,
    Compiled,
    Env,
    FhirPathEvalError,
    as_decimal,
    is_number,
    single,
    truth,
)
from airflow_provider_backendauth.core.views.fhirpath.temporal import looks_temporal


def _equal(a: Any, b: Any) -> bool:
    if a.__class__ is bool or b.__class__ is bool:
        return a is b
    return bool(a == b)


def _equivalent(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return " ".join(a.lower().split()) == " ".join(b.lower().split())
    if is_number(a) and is_number(b):
        da, db = as_decimal(a), as_decimal(b)
        places = min(-da.as_tuple().exponent, -db.as_tuple().exponent)  # type: ignore[operator]
        return round(da, max(places, 0)) == round(db, max(places, 0))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equivalent(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equivalent(x, y) for x, y in zip(a, b, strict=True))
    return _equal(a, b)


def _equality(left: list[Any], right: list[Any]) -> list[Any]:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    if len(left) == 1:
        a, b = left[0], right[0]
        if a.__class__ is str and b.__class__ is str and a != b and looks_temporal(a):
            order = temporal.compare(a, b)  # the same instant in two offsets, or unknown
            if order != temporal.NOT_TEMPORAL:
                return [] if order is None else [order == 0]
        return [_equal(a, b)]
    return [all(_equal(a, b) for a, b in zip(left, right, strict=True))]


def _equivalence(left: list[Any], right: list[Any]) -> list[Any]:
    if len(left) != len(right):
        return [False]
    return [all(any(_equivalent(a, b) for b in right) for a in left)]


def _compare(op: str) -> Callable[[Any, Any], bool]:
    return {
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }[op]


def _ordering(op: str) -> Callable[[list[Any], list[Any]], list[Any]]:
    test = _compare(op)

    def run(left: list[Any], right: list[Any]) -> list[Any]:
        a, b = single(left, f"'{op}'"), single(right, f"'{op}'")
        if a is None or b is None:
            return []
        if is_number(a) and is_number(b):
            return [test(a, b)]
        if isinstance(a, str) and isinstance(b, str):
            if looks_temporal(a) and looks_temporal(b):
                order = temporal.compare(a, b)
                if order != temporal.NOT_TEMPORAL:
                    return [] if order is None else [test(order, 0)]
            return [test(a, b)]
        raise FhirPathEvalError(f"'{op}' cannot compare {type(a).__name__} and {type(b).__name__}")

    return run


def _arithmetic(op: str) -> Callable[[list[Any], list[Any]], list[Any]]:
    def run(left: list[Any], right: list[Any]) -> list[Any]:
        a, b = single(left, f"'{op}'"), single(right, f"'{op}'")
        if a is None or b is None:
            return []
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return [a + b]
        if not (is_number(a) and is_number(b)):
            raise FhirPathEvalError(f"'{op}' needs numbers, got {type(a).__name__}")
        both_int = a.__class__ is int and b.__class__ is int
        if both_int and op in ("+", "-", "*"):
            return [a + b if op == "+" else a - b if op == "-" else a * b]
        da, db = as_decimal(a), as_decimal(b)
        try:
            if op == "+":
                return [da + db]
            if op == "-":
                return [da - db]
            if op == "*":
                return [da * db]
            if op == "/":
                return [da / db]
            if op == "div":
                result = da // db
                return [int(result) if both_int else result]
            result = da % db  # mod
            return [int(result) if both_int else result]
        except (DivisionByZero, InvalidOperation, ZeroDivisionError):
            return []  # FHIRPath: division by zero is empty
        except ArithmeticError as exc:  # Overflow: a result beyond Decimal's exponent range
            raise FhirPathEvalError(f"'{op}' overflowed") from exc

    return run


def _concat(left: list[Any], right: list[Any]) -> list[Any]:
    a, b = single(left, "'&'"), single(right, "'&'")
    return [("" if a is None else str(a)) + ("" if b is None else str(b))]


def union(left: list[Any], right: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in (*left, *right):
        if not any(_equal(item, seen) for seen in out):
            out.append(item)
    return out


def _membership(op: str) -> Callable[[list[Any], list[Any]], list[Any]]:
    def run(left: list[Any], right: list[Any]) -> list[Any]:
        element, pool = (left, right) if op == "in" else (right, left)
        item = single(element, f"'{op}'")
        if item is None:
            return []
        return [any(_equal(item, x) for x in pool)]

    return run


def _not_equal(left: list[Any], right: list[Any]) -> list[Any]:
    result = _equality(left, right)
    return [not result[0]] if result else []


_SIMPLE: dict[str, Callable[[list[Any], list[Any]], list[Any]]] = {
    "=": _equality,
    "!=": _not_equal,
    "~": _equivalence,
    "!~": lambda a, b: [not _equivalence(a, b)[0]],
    "&": _concat,
    "|": union,
    **{op: _ordering(op) for op in ("<", ">", "<=", ">=")},
    **{op: _arithmetic(op) for op in ("+", "-", "*", "/", "div", "mod")},
    **{op: _membership(op) for op in ("in", "contains")},
}
BOOLEAN_RESULT = frozenset({"=", "!=", "~", "!~", "<", ">", "<=", ">=", "in", "contains"})


def _logic(op: str, left: Compiled, right: Compiled) -> Compiled:
    lf, rf = left.fn, right.fn

    if op == "and":

        def run(focus: list[Any], env: Env) -> list[Any]:
            a = truth(lf(focus, env), "'and'")
            if a is False:
                return [False]
            b = truth(rf(focus, env), "'and'")
            if b is False:
                return [False]
            return [True] if a and b else []

    elif op == "or":

        def run(focus: list[Any], env: Env) -> list[Any]:
            a = truth(lf(focus, env), "'or'")
            if a is True:
                return [True]
            b = truth(rf(focus, env), "'or'")
            if b is True:
                return [True]
            return [False] if a is False and b is False else []

    elif op == "xor":

        def run(focus: list[Any], env: Env) -> list[Any]:
            a, b = truth(lf(focus, env), "'xor'"), truth(rf(focus, env), "'xor'")
            return [] if a is None or b is None else [a != b]

    else:  # implies

        def run(focus: list[Any], env: Env) -> list[Any]:
            a = truth(lf(focus, env), "'implies'")
            if a is False:
                return [True]
            b = truth(rf(focus, env), "'implies'")
            if b is True:
                return [True]
            return [False] if a is True and b is False else []

    return Compiled(run, "boolean")


def _arithmetic_type(op: str, left: str | None, right: str | None) -> str | None:
    if op == "&":
        return "string"
    if op == "|":
        return left if left == right else None
    numeric = {left, right}
    if op == "/":
        return "decimal"
    if numeric <= INTEGER_TYPES | {"integer"}:
        return "integer"
    if numeric <= INTEGER_TYPES | {"integer", "decimal"}:
        return "decimal"
    if op == "+" and left == right == "string":
        return "string"
    return None


def _equals_literal(op: str, left: Compiled, literal: Any) -> Compiled:
    """``path = 'official'``: the commonest comparison in views, without the generic steps."""
    lf, negated = left.fn, op == "!="

    def run(focus: list[Any], env: Env) -> list[Any]:
        items = lf(focus, env)
        if not items:
            return []
        if len(items) != 1:
            return [negated]
        value = items[0]
        return [(value == literal and value.__class__ is not bool) is not negated]

    return Compiled(run, "boolean")


def binary(op: str, left: Compiled, right: Compiled, right_literal: Any = None) -> Compiled:
    """The closure of ``left op right``; ``right_literal``: right's value if it is a
    one-item string or number literal."""
    if op in ("and", "or", "xor", "implies"):
        return _logic(op, left, right)
    temporal_literal = isinstance(right_literal, str) and looks_temporal(right_literal)
    if op in ("=", "!=") and right_literal is not None and not temporal_literal:
        return _equals_literal(op, left, right_literal)
    combine = _SIMPLE[op]
    lf, rf = left.fn, right.fn

    def run(focus: list[Any], env: Env) -> list[Any]:
        return combine(lf(focus, env), rf(focus, env))

    result_type = "boolean" if op in BOOLEAN_RESULT else _arithmetic_type(op, left.type, right.type)
    return Compiled(run, result_type)


def negate(operand: Compiled) -> Compiled:
    """Unary minus."""
    fn = operand.fn

    def run(focus: list[Any], env: Env) -> list[Any]:
        value = single(fn(focus, env), "unary '-'")
        if value is None:
            return []
        if not is_number(value):
            raise FhirPathEvalError("unary '-' needs a number")
        return [-value if value.__class__ is int else -as_decimal(value)]

    return Compiled(run, operand.type)
