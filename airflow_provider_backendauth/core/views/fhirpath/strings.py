"""FHIRPath N1 string, conversion and collection functions beyond the SQL-on-FHIR subset.

Views written for other runners use them (``reference.replace('Patient/', '')``,
``code.substring(0, 3)``, ``value.toInteger()``): ``contains matches replace substring
indexOf trim toInteger toDecimal single union combine``. As everywhere, an empty input or
argument gives empty, and a function name or arity that does not fit is refused when the
view is compiled. A ``matches`` pattern written as a literal is compiled once per view.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

from airflow_provider_backendauth.core.views.fhirpath.functions import (
    CompileArg,
    FunctionCompiler,
    check_arity,
)
from airflow_provider_backendauth.core.views.fhirpath.operators import union
from airflow_provider_backendauth.core.views.fhirpath.parser import Node
from airflow_provider_backendauth.core.views.fhirpath.runtime import (
    Compiled,
    Env,
    FhirPathEvalError,
    single,
)

StringFn = Callable[[str, list[Any]], Any]


def _string_function(
    name: str, arity: tuple[int, int], apply: StringFn, result_type: str | None
) -> FunctionCompiler:
    """A function of one string and ``arity`` arguments (each a single value)."""

    def compile_function(
        inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg
    ) -> Compiled:
        check_arity(name, args, *arity)
        source, arg_fns = inp.fn, [compile_arg(a).fn for a in args]

        def run(focus: list[Any], env: Env) -> list[Any]:
            value = single(source(focus, env), f"{name}()")
            if value is None:
                return []
            if not isinstance(value, str):
                raise FhirPathEvalError(f"{name}() needs a string, got {type(value).__name__}")
            values = [single(fn(focus, env), f"{name}()") for fn in arg_fns]
            if any(v is None for v in values):
                return []
            result = apply(value, values)
            return [] if result is None else [result]

        return Compiled(run, result_type)

    return compile_function


@lru_cache(maxsize=256)
def _pattern(regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex, re.DOTALL)
    except re.error as exc:
        raise FhirPathEvalError(f"matches(): not a regular expression ({exc})") from None


def _substring(value: str, args: list[Any]) -> str | None:
    start = args[0]
    if start.__class__ is not int or start < 0 or start >= len(value):
        return None
    if len(args) == 1:
        return value[start:]
    length = args[1]
    return value[start : start + max(length, 0)] if length.__class__ is int else None


def _to_integer(items: list[Any]) -> list[Any]:
    value = single(items, "toInteger()")
    if value.__class__ is bool:
        return [int(value)]
    if value.__class__ is int:
        return [value]
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return [int(value)]
    return []


def _to_decimal(items: list[Any]) -> list[Any]:
    value = single(items, "toDecimal()")
    if value is None:
        return []
    if isinstance(value, (bool, int, Decimal)):  # true -> 1, false -> 0, as N1 says
        return [Decimal(value)]
    if isinstance(value, float):
        return [Decimal(repr(value))]
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d+)?", value):
        return [Decimal(value)]
    return []


def _conversion(
    name: str, convert: Callable[[list[Any]], list[Any]], result: str
) -> FunctionCompiler:
    def compile_function(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
        check_arity(name, args, 0, 0)
        source = inp.fn
        return Compiled(lambda focus, env: convert(source(focus, env)), result)

    return compile_function


def _single(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
    check_arity("single", args, 0, 0)
    source = inp.fn

    def run(focus: list[Any], env: Env) -> list[Any]:
        value = single(source(focus, env), "single()")
        return [] if value is None else [value]

    return Compiled(run, inp.type)


def _collection(name: str) -> FunctionCompiler:
    """union(other) (duplicates removed) and combine(other) (kept)."""

    def compile_function(
        inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg
    ) -> Compiled:
        check_arity(name, args, 1, 1)
        source, other = inp.fn, compile_arg(args[0]).fn
        if name == "union":
            return Compiled(lambda f, e: union(source(f, e), other(f, e)), None)
        return Compiled(lambda f, e: source(f, e) + other(f, e), None)

    return compile_function


STRING_FUNCTIONS: dict[str, FunctionCompiler] = {
    "contains": _string_function("contains", (1, 1), lambda v, a: str(a[0]) in v, "boolean"),
    "matches": _string_function(
        "matches", (1, 1), lambda v, a: _pattern(str(a[0])).search(v) is not None, "boolean"
    ),
    "replace": _string_function(
        "replace", (2, 2), lambda v, a: v.replace(str(a[0]), str(a[1])), "string"
    ),
    "substring": _string_function("substring", (1, 2), _substring, "string"),
    "indexOf": _string_function("indexOf", (1, 1), lambda v, a: v.find(str(a[0])), "integer"),
    "trim": _string_function("trim", (0, 0), lambda v, a: v.strip(), "string"),
    "toInteger": _conversion("toInteger", _to_integer, "integer"),
    "toDecimal": _conversion("toDecimal", _to_decimal, "decimal"),
    "single": _single,
    "union": _collection("union"),
    "combine": _collection("combine"),
}
