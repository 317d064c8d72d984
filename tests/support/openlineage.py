"""Validation of OpenLineage events against the spec's JSON schemas (vendored beside this
module in openlineage_schema/, with their licence)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).parent / "openlineage_schema"


class EventValidator:
    """Validates a RunEvent against the spec's schema, and each facet the operators set
    (``outputStatistics``, ``errorMessage``, ``schema``) against that facet's own schema (the
    event schema checks facets only against the base facet)."""

    def __init__(self) -> None:
        import jsonschema
        from referencing import Registry, Resource

        schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.json"))]
        registry = Registry().with_resources(
            (schema["$id"], Resource.from_contents(schema)) for schema in schemas
        )
        main = next(s for s in schemas if s["$id"].endswith("/OpenLineage.json"))

        def check(ref: str) -> Any:
            return jsonschema.Draft202012Validator({"$ref": ref}, registry=registry)

        self.event = check(main["$id"] + "#/$defs/RunEvent")
        self.facets = {
            name: check(schema["$id"] + prop["$ref"])
            for schema in schemas
            if schema is not main
            for name, prop in schema.get("properties", {}).items()
        }
        self.checked: set[str] = set()

    def validate(self, event: dict[str, Any]) -> None:
        self.event.validate(event)
        facet_groups = [event["run"].get("facets", {})]
        for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
            facet_groups += [dataset.get("facets", {}), dataset.get("outputFacets", {})]
        for facets in facet_groups:
            self.validate_facets(facets)

    def validate_facets(self, facets: dict[str, Any]) -> None:
        """Validate facets (already serialised) the operators set, by their names."""
        for name, facet in facets.items():
            if name in self.facets:
                self.facets[name].validate(facet)
                self.checked.add(name)
