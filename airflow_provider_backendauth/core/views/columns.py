"""One view column compiled into a getter: ``get(focus, env)`` -> the column's value.

A column is one value (None when its path gives nothing) or, with ``collection: true``, a
list. A path that gives several values to a single-value column is the view's error, raised
as ``ViewDefinitionError`` naming the column and path. The common column, a plain element
name (``status``, ``code``, ``display``), reads the element straight from the item without
building a collection; anything else goes through the compiled FHIRPath closure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_backendauth.core.errors import ViewDefinitionError
from airflow_provider_backendauth.core.views.fhirpath.runtime import (
    Compiled,
    Env,
    FhirPathEvalError,
    choice_value,
)

Getter = Callable[[list[Any], Env], Any]


def column_getter(where: str, path: str, compiled: Compiled, collection: bool) -> Getter:
    """The getter of the column at ``where`` (its position and name, for messages)."""
    fn = compiled.fn

    def evaluate(focus: list[Any], env: Env) -> list[Any]:
        try:
            return fn(focus, env)
        except FhirPathEvalError as exc:
            raise ViewDefinitionError(f"{where}: path {path!r}: {exc}") from exc

    if collection:
        return lambda focus, env: list(evaluate(focus, env))  # a copy: rows never alias input

    def one(focus: list[Any], env: Env) -> Any:
        try:  # evaluate(), inlined: this runs for every column of every row
            result = fn(focus, env)
        except FhirPathEvalError as exc:
            raise ViewDefinitionError(f"{where}: path {path!r}: {exc}") from exc
        if not result:
            return None
        if len(result) == 1:
            return result[0]
        raise ViewDefinitionError(
            f"{where} (path {path!r}) gave {len(result)} values; declare it "
            "'collection': true or narrow the path (e.g. with first())"
        )

    if compiled.names is None or len(compiled.names) != 1:
        return one
    (name,) = compiled.names

    def element(focus: list[Any], env: Env) -> Any:
        if focus:
            item = focus[0]
            if item.__class__ is dict:
                value = item.get(name)
                if value is None:
                    value = choice_value(item, name)
                if value.__class__ is not list:
                    return value
                return one(focus, env)  # a repeating element: 0, 1 or too many values
        return None

    return element
