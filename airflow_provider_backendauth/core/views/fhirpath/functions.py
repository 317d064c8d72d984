"""FHIRPath functions, each compiled once into a closure over its compiled arguments.

The SQL-on-FHIR v2 shareable subset (``where exists empty first not join ofType extension
getResourceKey getReferenceKey``), its experimental ``lowBoundary``/``highBoundary``, and a
few common N1 functions views reach for (``select all last tail skip take count distinct
iif hasValue toString startsWith endsWith lower upper length``; more string, conversion and
collection functions in ``strings.py``). Any other name is rejected when the view is
compiled, never on the first resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_backendauth.core.views.fhirpath import boundary
from airflow_provider_backendauth.core.views.fhirpath.lexer import FhirPathError
from airflow_provider_backendauth.core.views.fhirpath.parser import Literal, Member, Node
from airflow_provider_backendauth.core.views.fhirpath.runtime import (
    Compiled,
    Env,
    FhirPathEvalError,
    identity,
    is_type,
    plain_type_name,
    single,
    truth,
)

CompileArg = Callable[[Node], Compiled]
FunctionCompiler = Callable[[Compiled, tuple[Node, ...], CompileArg], Compiled]


def type_argument(node: Node, function: str) -> str:
    """The type name written as a function's argument (``ofType(Quantity)``)."""
    parts: list[str] = []
    while isinstance(node, Member):
        parts.append(node.name)
        if node.target is None:
            return plain_type_name(".".join(reversed(parts)))
        node = node.target
    raise FhirPathError(f"{function}() takes a type name, such as {function}(string)")


def check_arity(name: str, args: tuple[Node, ...], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise FhirPathError(f"{name}() takes {wanted} argument(s), got {len(args)}")


def _per_item(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg, name: str) -> Any:
    check_arity(name, args, 1, 1)
    return inp.fn, compile_arg(args[0]).fn


def _where(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    source, criteria = _per_item(inp, args, compile_arg, "where")

    def run(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in source(focus, env):
            result = criteria([item], env)
            if result and (
                (result[0] is True and len(result) == 1) or truth(result, "where()") is True
            ):
                out.append(item)
        return out

    return Compiled(run, inp.type)


def _select(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    source, projection = _per_item(inp, args, compile_arg, "select")

    def run(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in source(focus, env):
            out.extend(projection([item], env))
        return out

    return Compiled(run, compile_arg(args[0]).type)


def _all(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    source, criteria = _per_item(inp, args, compile_arg, "all")

    def run(focus: list[Any], env: Env) -> list[Any]:
        return [all(truth(criteria([i], env), "all()") is True for i in source(focus, env))]

    return Compiled(run, "boolean")


def _exists(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    check_arity("exists", args, 0, 1)
    if args:
        return _exists(_where(inp, args, compile_arg), (), compile_arg)
    source = inp.fn
    return Compiled(lambda focus, env: [bool(source(focus, env))], "boolean")


def _simple(
    name: str, transform: Callable[[list[Any]], list[Any]], result_type: str | None = None
) -> FunctionCompiler:
    """A function of its input collection alone (no arguments)."""

    def compile_function(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
        check_arity(name, args, 0, 0)
        source = inp.fn
        return Compiled(lambda focus, env: transform(source(focus, env)), result_type or inp.type)

    return compile_function


def _first(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
    check_arity("first", args, 0, 0)
    source = inp.fn
    return Compiled(lambda focus, env: source(focus, env)[:1], inp.type)


def _not(items: list[Any]) -> list[Any]:
    value = truth(items, "not()")
    return [] if value is None else [not value]


def _distinct(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if not any(item == seen and type(item) is type(seen) for seen in out):
            out.append(item)
    return out


def _to_string(items: list[Any]) -> list[Any]:
    value = single(items, "toString()")
    if value is None:
        return []
    if value.__class__ is bool:
        return ["true" if value else "false"]
    return [value] if isinstance(value, str) else [str(value)]


def _number_argument(name: str) -> FunctionCompiler:
    """skip(n) / take(n): an integer argument, evaluated against the expression's focus."""

    def compile_function(
        inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg
    ) -> Compiled:
        check_arity(name, args, 1, 1)
        source, count = inp.fn, compile_arg(args[0]).fn

        def run(focus: list[Any], env: Env) -> list[Any]:
            n = single(count(focus, env), f"{name}()")
            if n.__class__ is not int:
                raise FhirPathEvalError(f"{name}() needs an integer")
            items = source(focus, env)
            return items[max(n, 0) :] if name == "skip" else items[: max(n, 0)]

        return Compiled(run, inp.type)

    return compile_function


def _join(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    check_arity("join", args, 0, 1)
    source = inp.fn
    separator = compile_arg(args[0]).fn if args else None

    def run(focus: list[Any], env: Env) -> list[Any]:
        sep = single(separator(focus, env), "join()") if separator else ""
        items = source(focus, env)
        if not all(isinstance(i, str) for i in items):
            raise FhirPathEvalError("join() needs a collection of strings")
        return ["".join(items) if not sep else str(sep).join(items)]

    return Compiled(run, "string")


def _of_type(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
    check_arity("ofType", args, 1, 1)
    type_name = type_argument(args[0], "ofType")
    source = inp.fn
    return Compiled(lambda f, e: [i for i in source(f, e) if is_type(i, type_name)], type_name)


def _extension(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    check_arity("extension", args, 1, 1)
    source, url_fn = inp.fn, compile_arg(args[0]).fn
    literal = args[0].value if isinstance(args[0], Literal) and len(args[0].value) == 1 else None

    def run(focus: list[Any], env: Env) -> list[Any]:
        # The URL is almost always a literal: read once, not evaluated per resource.
        url = literal[0] if literal else single(url_fn(focus, env), "extension()")
        out: list[Any] = []
        for item in source(focus, env):
            if item.__class__ is dict:
                extensions = item.get("extension")
                if extensions.__class__ is list:
                    for extension in extensions:
                        if extension.__class__ is dict and extension.get("url") == url:
                            out.append(extension)
        return out

    return Compiled(run, "Extension")


def _resource_key(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
    # The key is the resource's logical id: unique per resource type, the same string a
    # reference to it ends with, and stable across exports (what incremental tables key on).
    check_arity("getResourceKey", args, 0, 0)
    source = inp.fn

    def run(focus: list[Any], env: Env) -> list[Any]:
        return [
            i["id"]
            for i in (focus if source is identity else source(focus, env))
            if i.__class__ is dict and "resourceType" in i and isinstance(i.get("id"), str)
        ]

    return Compiled(run, "string")


def reference_key(reference: str, wanted_type: str | None) -> str | None:
    """``Patient/123``, ``https://x/fhir/Patient/123/_history/2`` -> ``123`` (None if unusable)."""
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-1] or not parts[-2] or reference.startswith("#"):
        return None  # contained (#id), urn:uuid: or a bare id: no type to key on
    if wanted_type is not None and parts[-2] != wanted_type:
        return None
    return parts[-1]


def _reference_key(inp: Compiled, args: tuple[Node, ...], _: CompileArg) -> Compiled:
    check_arity("getReferenceKey", args, 0, 1)
    wanted = type_argument(args[0], "getReferenceKey") if args else None
    source = inp.fn

    def run(focus: list[Any], env: Env) -> list[Any]:
        out: list[Any] = []
        for item in source(focus, env):
            ref = item.get("reference") if item.__class__ is dict else None
            key = reference_key(ref, wanted) if isinstance(ref, str) else None
            if key is not None:
                out.append(key)
        return out

    return Compiled(run, "string")


def _iif(inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg) -> Compiled:
    check_arity("iif", args, 2, 3)
    condition, then = compile_arg(args[0]), compile_arg(args[1])
    otherwise = compile_arg(args[2]).fn if len(args) == 3 else None
    source = inp.fn

    def run(focus: list[Any], env: Env) -> list[Any]:
        items = source(focus, env)
        if truth(condition.fn(items, env), "iif()") is True:
            return then.fn(items, env)
        return otherwise(items, env) if otherwise else []

    return Compiled(run, then.type)


def _string_test(name: str, test: Callable[[str, str], bool]) -> FunctionCompiler:
    def compile_function(
        inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg
    ) -> Compiled:
        check_arity(name, args, 1, 1)
        source, other = inp.fn, compile_arg(args[0]).fn

        def run(focus: list[Any], env: Env) -> list[Any]:
            value, arg = single(source(focus, env), f"{name}()"), single(other(focus, env), name)
            if value is None or arg is None:
                return []
            return [test(str(value), str(arg))]

        return Compiled(run, "boolean")

    return compile_function


def _string_map(name: str, transform: Callable[[str], Any], result: str) -> FunctionCompiler:
    def apply(items: list[Any]) -> list[Any]:
        value = single(items, f"{name}()")
        return [] if value is None else [transform(str(value))]

    return _simple(name, apply, result)


def _boundary(name: str) -> FunctionCompiler:
    def compile_function(
        inp: Compiled, args: tuple[Node, ...], compile_arg: CompileArg
    ) -> Compiled:
        check_arity(name, args, 0, 1)
        precision = compile_arg(args[0]).fn if args else None
        source, static_type, high = inp.fn, inp.type, name == "highBoundary"

        def run(focus: list[Any], env: Env) -> list[Any]:
            digits = single(precision(focus, env), name) if precision else None
            value = single(source(focus, env), f"{name}()")
            if value is None:
                return []
            result = boundary.boundary(value, static_type, high, digits)
            return [] if result is None else [result]

        return Compiled(run, inp.type)

    return compile_function


FUNCTIONS: dict[str, FunctionCompiler] = {
    "where": _where,
    "select": _select,
    "all": _all,
    "exists": _exists,
    "empty": _simple("empty", lambda items: [not items], "boolean"),
    "hasValue": _simple("hasValue", lambda items: [len(items) == 1], "boolean"),
    "first": _first,
    "last": _simple("last", lambda items: items[-1:]),
    "tail": _simple("tail", lambda items: items[1:]),
    "count": _simple("count", lambda items: [len(items)], "integer"),
    "distinct": _simple("distinct", _distinct),
    "not": _simple("not", _not, "boolean"),
    "toString": _simple("toString", _to_string, "string"),
    "skip": _number_argument("skip"),
    "take": _number_argument("take"),
    "join": _join,
    "ofType": _of_type,
    "extension": _extension,
    "getResourceKey": _resource_key,
    "getReferenceKey": _reference_key,
    "iif": _iif,
    "startsWith": _string_test("startsWith", str.startswith),
    "endsWith": _string_test("endsWith", str.endswith),
    "lower": _string_map("lower", str.lower, "string"),
    "upper": _string_map("upper", str.upper, "string"),
    "length": _string_map("length", len, "integer"),
    "lowBoundary": _boundary("lowBoundary"),
    "highBoundary": _boundary("highBoundary"),
}
