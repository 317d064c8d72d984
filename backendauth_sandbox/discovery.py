"""Open discovery documents: SMART configuration, OpenID configuration, CapabilityStatement."""

from __future__ import annotations

from typing import Any

SMART_SCOPES = [
    "system/*.rs",
    "system/*.read",
    "system/Patient.rs",
    "system/Observation.rs",
    "system/Condition.rs",
    "system/Encounter.rs",
    "system/Group.rs",
]


def smart_configuration(
    token_url: str, issuer: str, relative_token_endpoint: bool
) -> dict[str, Any]:
    return {
        "issuer": issuer,
        # Relative URLs resolve against the FHIR base; some servers publish them that way.
        "token_endpoint": "../auth/token" if relative_token_endpoint else token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SMART_SCOPES,
        "response_types_supported": ["token"],
        "capabilities": [
            "client-confidential-asymmetric",
            "permission-v1",
            "permission-v2",
        ],
    }


def openid_configuration(token_url: str, issuer: str) -> dict[str, Any]:
    """What HelseID-style clients read from ``{issuer}/.well-known/openid-configuration``."""
    return {
        "issuer": issuer,
        "token_endpoint": token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": [
            "RS256",
            "RS384",
            "RS512",
            "PS256",
            "PS384",
            "PS512",
            "ES256",
            "ES384",
            "ES512",
        ],
    }


def capability_statement(
    fhir_base: str,
    token_url: str,
    search_params: dict[str, tuple[str, ...]],
    includes: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    """An R4 CapabilityStatement: resources, search parameters and the $export operations."""
    param_types = {
        "_id": "token",
        "_lastUpdated": "date",
        "patient": "reference",
        "subject": "reference",
    }
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    export_ops = {"Patient": bulk + "patient-export", "Group": bulk + "group-export"}
    resources = []
    for resource_type, params in search_params.items():
        entry: dict[str, Any] = {
            "type": resource_type,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "searchParam": [
                {"name": name, "type": param_types.get(name, "string")}
                for name in ("_id", "_lastUpdated", *params)
            ],
        }
        if includes.get(resource_type):
            entry["searchInclude"] = list(includes[resource_type])
        if resource_type in export_ops:
            entry["operation"] = [{"name": "export", "definition": export_ops[resource_type]}]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2024-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "software": {"name": "airflow-provider-backendauth sandbox"},
        "implementation": {"description": "Local SMART Backend Services sandbox", "url": fhir_base},
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [{"url": "token", "valueUri": token_url}],
                        }
                    ],
                },
                "resource": resources,
                "operation": [{"name": "export", "definition": bulk + "export"}],
            }
        ],
    }
