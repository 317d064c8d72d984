"""A ViewDefinition's ``constant`` list checked and turned into FHIRPath ``%constants``.

Each constant has an SQL name (``^[A-Za-z][A-Za-z0-9_]*$``), not one of the built-in
``%resource``/``%rootResource``/``%context``/``%rowIndex``, and exactly one ``value[x]`` of
a type the spec allows, whose JSON matches it (``valueInteger: true`` is refused: Python's
``bool`` is an ``int``). Decimals become ``Decimal`` (a float given by ``json.loads`` is read
from its shortest repr), ``integer64`` strings become ``int``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from airflow_provider_backendauth.core.errors import ViewDefinitionError

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_CONSTANT_KEY = re.compile(r"^value([A-Z][A-Za-z0-9]*)$")
# The types a constant may have (ViewDefinition.constant.value[x]) and the JSON they take.
_CONSTANT_JSON: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        [
            "base64Binary",
            "canonical",
            "code",
            "date",
            "dateTime",
            "id",
            "instant",
            "oid",
            "string",
            "time",
            "uri",
            "url",
            "uuid",
        ],
        (str,),
    ),
    **dict.fromkeys(("integer", "positiveInt", "unsignedInt"), (int,)),
    "integer64": (int, str),
    "decimal": (int, float, Decimal),
    "boolean": (bool,),
}


def view_constants(view: dict[str, Any]) -> tuple[dict[str, list[Any]], dict[str, str | None]]:
    """(each constant's value as a one-item collection, each constant's FHIR type)."""
    values: dict[str, list[Any]] = {}
    types: dict[str, str | None] = {}
    specs = view.get("constant", [])
    if not isinstance(specs, list):
        raise ViewDefinitionError("constant: must be a list")
    for i, spec in enumerate(specs):
        where = f"constant[{i}]"
        if not isinstance(spec, dict):
            raise ViewDefinitionError(f"{where}: must be an object")
        name = spec.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise ViewDefinitionError(f"{where}: 'name' must match ^[A-Za-z][A-Za-z0-9_]*$")
        if name in values or name in ("resource", "rootResource", "context", "rowIndex"):
            raise ViewDefinitionError(f"{where}: constant name {name!r} is already defined")
        keys = [m for m in map(_CONSTANT_KEY.match, spec) if m]
        if len(keys) != 1:
            raise ViewDefinitionError(
                f"{where} {name!r}: needs exactly one value[x] (valueString...)"
            )
        fhir_type = keys[0].group(1)[0].lower() + keys[0].group(1)[1:]
        value = spec[keys[0].group()]
        allowed = _CONSTANT_JSON.get(fhir_type)
        if allowed is None:
            raise ViewDefinitionError(
                f"{where} {name!r}: {keys[0].group()} is not a type a constant can have "
                f"(allowed: {', '.join(sorted(_CONSTANT_JSON))})"
            )
        if not isinstance(value, allowed) or (value.__class__ is bool) != (fhir_type == "boolean"):
            raise ViewDefinitionError(
                f"{where} {name!r}: {keys[0].group()} must be a JSON "
                f"{'/'.join(t.__name__ for t in allowed)}"
            )
        if isinstance(value, float):
            value = Decimal(repr(value))
        if fhir_type == "integer64" and isinstance(value, str):
            value = int(value)
        values[name] = [value]
        types[name] = fhir_type
    return values, types
