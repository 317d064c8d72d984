"""One small DAG per vendor profile (MyDataHelps, Koppeltaal, HelseID, Redox, NHS England):
its connection and one token-checked API call.

Each DAG ``backendauth_vendor_<profile>`` makes one authenticated GET with
``BackendAuthHttpOperator`` and checks the answer's shape, which proves the whole chain:
key -> signed assertion (with the vendor's algorithm, ``kid``, ``typ``, lifetime and claims)
-> access token -> API call. The token itself never reaches the logs or XCom.

Connection ids are ``backendauth_<profile>``; each DAG's docs show the connection for the
real vendor. To run them against the bundled sandbox, register a client with
``vendor="<profile>"`` and set the connection's host to the sandbox (``sb.fhir_base``, or
``{sb.url}/api/v1/administration`` for MyDataHelps) and its ``token_url`` extra to
``sb.token_url``. The ``endpoint`` param can be changed per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_backendauth.operators.http import BackendAuthHttpOperator

if TYPE_CHECKING:
    import requests


@dataclass(frozen=True)
class VendorExample:
    profile: str
    title: str
    endpoint: str
    connection: str  # the AIRFLOW_CONN_... example for the real vendor
    notes: str = ""
    headers: tuple[tuple[str, str], ...] = ()


def is_fhir_bundle(response: requests.Response) -> bool:
    """A FHIR search answered with a Bundle."""
    body = response.json()
    return isinstance(body, dict) and body.get("resourceType") == "Bundle"


def is_participant_page(response: requests.Response) -> bool:
    """A MyDataHelps participants page."""
    body = response.json()
    return isinstance(body, dict) and isinstance(body.get("participants"), list)


def summary(response: requests.Response) -> dict[str, Any]:
    """What the call proved, without any personal data: status and how many items came back."""
    body = response.json()
    items = body.get("entry") or body.get("participants") or []
    return {
        "status": response.status_code,
        "kind": body.get("resourceType") or "participants",
        "items": len(items),
    }


VENDORS = (
    VendorExample(
        profile="mydatahelps",
        title="MyDataHelps (CareEvolution)",
        endpoint="participants?pageSize=1",
        connection="""\
export AIRFLOW_CONN_BACKENDAUTH_MYDATAHELPS='{"conn_type": "backendauth",
  "host": "https://designer.mydatahelps.org/api/v1/administration/projects/<project id>",
  "login": "MyDataHelps.<org>.<name>",
  "password": "-----BEGIN PRIVATE KEY-----\\n...",
  "extra": {"profile": "mydatahelps"}}'""",
        notes="The login is the full service account name. RS256, scope `api`, no kid.",
    ),
    VendorExample(
        profile="koppeltaal",
        title="Koppeltaal 2.0",
        endpoint="Patient?_count=1",
        connection="""\
export AIRFLOW_CONN_BACKENDAUTH_KOPPELTAAL='{"conn_type": "backendauth",
  "host": "https://fhir-server.koppeltaal.headease.nl/fhir/DEFAULT",
  "login": "<client id from joining the domain>",
  "password": "-----BEGIN PRIVATE KEY-----\\n...",
  "extra": {"profile": "koppeltaal"}}'""",
        notes="RS512; an empty `scope=` is sent; failures come back as plain-text 401s.",
    ),
    VendorExample(
        profile="helseid",
        title="HelseID (Norsk helsenett)",
        endpoint="Patient?_count=1",
        connection="""\
export AIRFLOW_CONN_BACKENDAUTH_HELSEID='{"conn_type": "backendauth",
  "host": "https://<the HelseID-protected API you call>",
  "login": "<client id from HelseID Selvbetjening>",
  "password": "<the private JWK (or PEM) downloaded from Selvbetjening>",
  "extra": {"profile": "helseid", "scope": "nhn:<api>/<scope>",
            "auth_url": "https://helseid-sts.test.nhn.no/connect/token"}}'""",
        notes=(
            "60 s assertions with `iat`/`nbf`, `typ` `client-authentication+jwt`, `client_id` "
            "in the form; drop `token_url` for production. Set the `endpoint` param to a "
            "resource of the API you call."
        ),
    ),
    VendorExample(
        profile="redox",
        title="Redox (FHIR API)",
        endpoint="Patient?_count=1",
        connection="""\
export AIRFLOW_CONN_BACKENDAUTH_REDOX='{"conn_type": "backendauth",
  "host": "https://api.redoxengine.com/fhir/R4/<organization>/<environment>",
  "login": "<client id>",
  "password": "-----BEGIN PRIVATE KEY-----\\n...",
  "extra": {"profile": "redox", "key_id": "<kid registered with Redox>"}}'""",
        notes="RS384/ES384; Redox picks the key by `kid` (default: the key's thumbprint).",
    ),
    VendorExample(
        profile="nhs_england",
        title="NHS England APIs (signed JWT)",
        endpoint="Patient?_count=1",
        connection="""\
export AIRFLOW_CONN_BACKENDAUTH_NHS_ENGLAND='{"conn_type": "backendauth",
  "host": "https://int.api.service.nhs.uk/personal-demographics/FHIR/R4",
  "login": "<the application's API key>",
  "password": "-----BEGIN PRIVATE KEY-----\\n...",
  "extra": {"profile": "nhs_england", "key_id": "<kid in your JWKS>",
            "auth_url": "https://int.api.service.nhs.uk/oauth2/token"}}'""",
        notes=(
            "RS512 with the `kid` published in your JWKS. NHS APIs want an `X-Request-ID` "
            "UUID per request (sent here). For PDS set the `endpoint` param to e.g. "
            "`Patient?family=Smith&birthdate=eq2010-10-22`."
        ),
        headers=(("X-Request-ID", "{{ macros.uuid.uuid4() }}"),),
    ),
)


def _doc(vendor: VendorExample) -> str:
    return (
        f"### {vendor.title}: connection and one token-checked call\n\n"
        f"Connection `backendauth_{vendor.profile}`:\n\n```bash\n{vendor.connection}\n```\n\n"
        f"{vendor.notes}\n\nAgainst the sandbox: register a client with "
        f'`vendor="{vendor.profile}"`, point the host at the sandbox and set the `token_url` '
        "extra to `sb.token_url`."
    )


for _vendor in VENDORS:
    with DAG(
        dag_id=f"backendauth_vendor_{_vendor.profile}",
        description=f"{_vendor.title}: token-checked API call",
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        params={"endpoint": Param(_vendor.endpoint, type="string")},
        tags=["backendauth", "vendor", _vendor.profile, "example"],
        doc_md=_doc(_vendor),
    ):
        BackendAuthHttpOperator(
            task_id="authenticated_call",
            backendauth_conn_id=f"backendauth_{_vendor.profile}",
            method="GET",
            endpoint="{{ params.endpoint }}",
            headers={"Accept": "application/json", **dict(_vendor.headers)},
            response_check=(
                is_participant_page if _vendor.profile == "mydatahelps" else is_fhir_bundle
            ),
            response_filter=summary,
        )
