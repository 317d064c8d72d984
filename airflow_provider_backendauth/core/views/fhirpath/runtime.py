"""What compiled FHIRPath closures share at run time: the environment, navigation, typing.

Values are the resource's own JSON values (dict, list, str, bool, int, Decimal or float), so
evaluation copies nothing. A collection is a Python list. ``bool`` is a subclass of ``int``
in Python, so every type test here checks ``bool`` first: FHIRPath never mixes them.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from airflow_provider_backendauth.core.views.fhirpath.lexer import FhirPathError


class FhirPathEvalError(FhirPathError):
    """An expression failed on one resource (e.g. a comparison of a collection of several)."""


class Env:
    """Per-resource state the closures read: the resource, the view's constants, %rowIndex."""

    __slots__ = ("constants", "resource", "row_index")

    def __init__(self, resource: dict[str, Any], constants: dict[str, list[Any]]) -> None:
        self.resource = resource
        self.constants = constants
        self.row_index = 0


Fn = Callable[[list[Any], Env], list[Any]]
"""A compiled expression: ``fn(focus, env)`` -> the result collection."""


class Compiled(NamedTuple):
    fn: Fn
    type: str | None  # the FHIR type of the result when known at compile time
    # For a plain member chain from the focus (``status``, ``code.text``): its names, so a
    # column can read them without building collections.
    names: tuple[str, ...] | None = None


def identity(focus: list[Any], env: Env) -> list[Any]:
    """The expression's focus itself: the input of a path's first step."""
    return focus


STRING_TYPES = frozenset(
    {
        "string", "code", "id", "uri", "url", "canonical", "uuid", "oid", "markdown",
        "base64Binary", "date", "dateTime", "instant", "time", "xhtml", "integer64",
    }
)  # fmt: skip
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
PRIMITIVE_TYPES = STRING_TYPES | INTEGER_TYPES | {"boolean", "decimal"}

# Suffixes of choice elements (value[x], effective[x], deceased[x], ...): the FHIR R4/R5 data
# types. Navigating ``value`` finds ``valueQuantity`` only when the suffix is one of these, so
# an element such as ``diagnosisSequence`` is never mistaken for ``diagnosis``.
_COMPLEX_TYPES = [
    "Address", "Age", "Annotation", "Attachment", "CodeableConcept", "CodeableReference",
    "Coding", "ContactDetail", "ContactPoint", "Contributor", "Count", "DataRequirement",
    "Distance", "Dosage", "Duration", "Expression", "HumanName", "Identifier", "Meta", "Money",
    "ParameterDefinition", "Period", "Quantity", "Range", "Ratio", "RatioRange", "Reference",
    "RelatedArtifact", "SampledData", "Signature", "Timing", "TriggerDefinition",
    "UsageContext", "Availability", "ExtendedContactDetail", "VirtualServiceDetail",
    "MonetaryComponent",
]  # fmt: skip
CHOICE_SUFFIXES = frozenset([t[0].upper() + t[1:] for t in PRIMITIVE_TYPES] + _COMPLEX_TYPES)


def type_suffix(type_name: str) -> str:
    """``dateTime`` -> ``DateTime``: how a type names itself at the end of a choice element."""
    return type_name[0].upper() + type_name[1:]


def plain_type_name(name: str) -> str:
    """``FHIR.string`` / ``System.String`` -> the FHIR type name the rest of the code uses."""
    if name.startswith("System."):
        name = name[len("System.") :]
        return {"String": "string", "Integer": "integer", "Decimal": "decimal"}.get(
            name, name[0].lower() + name[1:]
        )
    return name[len("FHIR.") :] if name.startswith("FHIR.") else name


def choice_value(item: dict[str, Any], name: str) -> Any:
    """The value of the choice element ``name[x]`` in ``item``, or None."""
    size = len(name)
    for key in item:
        if len(key) > size and key.startswith(name) and key[size:] in CHOICE_SUFFIXES:
            return item[key]
    return None


def element(item: Any, name: str) -> Any:
    """The JSON value of ``item.name`` (of the choice element ``name[x]`` too), None if none."""
    if item.__class__ is not dict:
        return None
    value = item.get(name)
    return choice_value(item, name) if value is None else value


def member(items: list[Any], name: str) -> list[Any]:
    """``items.name``: every child called ``name`` (lists flattened, nulls dropped)."""
    if len(items) == 1:  # the common case (a resource, a forEach item): no accumulator
        value = element(items[0], name)
        if value is None:
            return []
        if value.__class__ is list:
            # The resource's own list, not a copy: nothing downstream mutates a result.
            return value if None not in value else [v for v in value if v is not None]
        return [value]
    out: list[Any] = []
    for item in items:
        value = element(item, name)
        if value is None:
            continue
        if value.__class__ is list:
            out.extend(value if None not in value else (v for v in value if v is not None))
        else:
            out.append(value)
    return out


def is_type(value: Any, type_name: str) -> bool:
    """Whether ``value`` can be of FHIR type ``type_name`` when only its JSON form is known."""
    if value.__class__ is bool:
        return type_name == "boolean"
    if value.__class__ is int:
        return type_name in INTEGER_TYPES or type_name == "integer64"
    if isinstance(value, (Decimal, float)):
        return type_name == "decimal"
    if isinstance(value, str):
        return type_name in STRING_TYPES
    if isinstance(value, dict):
        resource_type = value.get("resourceType")
        if resource_type is not None:
            return bool(resource_type == type_name or type_name in ("Resource", "DomainResource"))
        return type_name not in PRIMITIVE_TYPES  # a complex type: the JSON does not say which
    return False


def truth(result: list[Any], what: str) -> bool | None:
    """FHIRPath's singleton evaluation of a collection as a boolean (None = empty)."""
    if not result:
        return None
    if len(result) > 1:
        raise FhirPathEvalError(f"{what} needs a single value, got a collection of {len(result)}")
    value = result[0]
    return value if value.__class__ is bool else True


def single(result: list[Any], what: str) -> Any:
    """The only item of ``result``, None when empty; an error for several."""
    if not result:
        return None
    if len(result) > 1:
        raise FhirPathEvalError(f"{what} needs a single value, got a collection of {len(result)}")
    return result[0]


def as_decimal(value: Any) -> Decimal:
    """A number as a Decimal without float noise (a float's shortest repr, not its binary)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def is_number(value: Any) -> bool:
    return value.__class__ is not bool and isinstance(value, (int, Decimal, float))
