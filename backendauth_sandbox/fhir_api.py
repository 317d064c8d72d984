"""FHIR R4 REST endpoints (search, read, metadata) and the MyDataHelps-like REST endpoint."""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

from .discovery import capability_statement
from .dpop import DpopRejected, DpopVerifier
from .fhir_search import (
    INCLUDES,
    TYPE_PARAMS,
    SearchError,
    encode_cursor,
    include_targets,
    parse_search,
)
from .fhir_store import FhirStore, StoredResource, format_instant
from .httpd import Request, Response
from .responses import (
    FHIR_JSON,
    dpop_challenge,
    dumps,
    fhir_response,
    invalid_token,
    json_response,
    outcome_response,
)
from .settings import SandboxSettings
from .stats import Stats
from .tokens import AccessToken, TokenStore
from .vendor_rules import scope_permits_read

PARTICIPANTS_PATH = "/api/v1/administration/participants"


def authenticate(
    tokens: TokenStore, request: Request, dpop: DpopVerifier, *, consume: bool = False
) -> AccessToken | Response:
    """The access token of ``request`` if valid, else the 401 to answer.

    A DPoP-bound token must come with ``Authorization: DPoP`` and a proof signed by the key
    it is bound to (with ``ath``); sent as ``Bearer`` it is refused (RFC 9449 section 7.2,
    no downgrade). A Bearer token sent with the DPoP scheme is refused too.
    """
    scheme, value = request.authorization()
    if scheme == "dpop" and value:
        try:
            jkt = dpop.verify(request, access_token=value)
        except DpopRejected as rejected:
            return dpop_challenge(rejected.error, rejected.description)
        token, reason = tokens.check(value, consume=consume)
        if reason:
            return dpop_challenge("invalid_token", reason)
        assert token is not None
        if token.jkt is None:
            return dpop_challenge("invalid_token", "a Bearer token was sent with the DPoP scheme")
        if token.jkt != jkt:
            return dpop_challenge(
                "invalid_dpop_proof", "the proof key is not the key the token is bound to"
            )
        return token
    token, reason = tokens.check(value if scheme == "bearer" else None, consume=consume)
    if reason:
        return invalid_token(reason)
    assert token is not None
    if token.jkt is not None:
        return dpop_challenge(
            "invalid_token", "a DPoP-bound token was sent as Bearer; send it with the DPoP scheme"
        )
    return token


class FhirApi:
    """``/fhir/{Type}``, ``/fhir/{Type}/_search``, ``/fhir/{Type}/{id}``, ``/fhir/metadata``."""

    def __init__(
        self,
        store: FhirStore,
        tokens: TokenStore,
        settings: SandboxSettings,
        stats: Stats,
        fhir_base: Callable[[], str],
        token_url: Callable[[], str],
        dpop: DpopVerifier,
    ) -> None:
        self.dpop = dpop
        self.store = store
        self.tokens = tokens
        self.settings = settings
        self.stats = stats
        self._fhir_base = fhir_base
        self._token_url = token_url

    def handle(self, request: Request) -> Response:
        if request.path == "/fhir/metadata":
            if request.method not in ("GET", "HEAD"):
                return outcome_response(405, "metadata is read-only", code="not-supported")
            return fhir_response(
                200,
                capability_statement(self._fhir_base(), self._token_url(), TYPE_PARAMS, INCLUDES),
            )
        auth = authenticate(
            self.tokens, request, self.dpop, consume=self.settings.single_use_tokens
        )
        if isinstance(auth, Response):
            return auth
        parts = request.path[len("/fhir/") :].split("/")
        resource_type = parts[0]
        if not resource_type:
            return outcome_response(404, "no resource type in the URL", code="not-found")
        if not scope_permits_read(auth.scope, resource_type):
            return outcome_response(
                403,
                f"the access token's scope '{auth.scope}' does not allow reading {resource_type}",
                code="forbidden",
            )
        if len(parts) == 1:
            if request.method not in ("GET", "HEAD"):
                return outcome_response(
                    405,
                    f"{request.method} {resource_type} is not supported (read-only server)",
                    code="not-supported",
                )
            return self._search(
                request,
                resource_type,
                list(parse_qsl(request.query_string, keep_blank_values=True)),
            )
        if len(parts) == 2 and parts[1] == "_search":
            if request.method != "POST":
                return outcome_response(405, "_search needs POST", code="not-supported")
            if request.content_type != "application/x-www-form-urlencoded":
                return outcome_response(
                    400,
                    "POST _search needs Content-Type application/x-www-form-urlencoded",
                    code="invalid",
                )
            params = parse_qsl(request.query_string, keep_blank_values=True) + parse_qsl(
                request.body.decode("utf-8", "replace"), keep_blank_values=True
            )
            return self._search(request, resource_type, params)
        if len(parts) == 2:
            if request.method not in ("GET", "HEAD"):
                return outcome_response(405, "read-only server", code="not-supported")
            return self._read(resource_type, parts[1])
        return outcome_response(404, f"no such endpoint: {request.path}", code="not-found")

    # --- read and search -----------------------------------------------------------------

    def _read(self, resource_type: str, resource_id: str) -> Response:
        self.stats.incr("fhir_reads")
        if resource_type not in self.store.by_type:
            return outcome_response(
                404, f"resource type '{resource_type}' is not supported", code="not-supported"
            )
        stored = self.store.get(resource_type, resource_id)
        if stored is None:
            return outcome_response(
                404, f"{resource_type}/{resource_id} does not exist", code="not-found"
            )
        response = Response(200, stored.json, FHIR_JSON)
        response.header("ETag", 'W/"1"')
        response.header("Last-Modified", format_instant(stored.last_updated))
        return response

    def _search(
        self, request: Request, resource_type: str, params: list[tuple[str, str]]
    ) -> Response:
        self.stats.incr("fhir_searches")
        try:
            search = parse_search(
                resource_type,
                params,
                self.settings.search_default_count,
                self.settings.search_max_count,
            )
        except SearchError as exc:
            code = "not-supported" if exc.param == "type" else "invalid"
            status = 404 if exc.param == "type" else 400
            return outcome_response(status, str(exc), code=code)
        results = search.run(self.store)
        page = [] if search.summary_count else results[search.offset : search.offset + search.count]
        base = self._fhir_base()
        links = [
            {"relation": "self", "url": f"{base}/{resource_type}?{urlencode(search.canonical)}"}
        ]
        next_offset = search.offset + search.count
        if not search.summary_count and search.count > 0 and next_offset < len(results):
            links.append(
                {
                    "relation": "next",
                    "url": self._next_link(
                        resource_type, encode_cursor(search.canonical, next_offset)
                    ),
                }
            )
        head = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": format_instant(time.time())},
            "type": "searchset",
            "total": len(results),
            "link": links,
        }
        entries = [self._entry(base, r, "match") for r in page]
        entries += [
            self._entry(base, r, "include")
            for r in include_targets(self.store, page, search.includes)
        ]
        body = dumps(head)
        if entries:
            body = body[:-1] + b',"entry":[' + b",".join(entries) + b"]}"
        return Response(200, body, FHIR_JSON)

    @staticmethod
    def _entry(base: str, stored: StoredResource, mode: str) -> bytes:
        full_url = json.dumps(f"{base}/{stored.type}/{stored.id}").encode("utf-8")
        return (
            b'{"fullUrl":'
            + full_url
            + b',"resource":'
            + stored.json
            + b',"search":{"mode":"'
            + mode.encode("ascii")
            + b'"}}'
        )

    def _next_link(self, resource_type: str, cursor: str) -> str:
        relative = f"{resource_type}?_cursor={cursor}"
        style = self.settings.search_next_link
        if style == "relative":
            return relative
        if style == "path":
            return "/fhir/" + relative
        return f"{self._fhir_base()}/{relative}"

    # --- MyDataHelps-like REST -----------------------------------------------------------

    def handle_rest(self, request: Request) -> Response:
        auth = authenticate(
            self.tokens, request, self.dpop, consume=self.settings.single_use_tokens
        )
        if isinstance(auth, Response):
            # This API answers its own JSON body; the challenge headers stay the same.
            response = json_response(
                401, {"message": "Authorization has been denied for this request."}
            )
            response.headers.extend(auth.headers)
            return response
        if request.path.rstrip("/") != PARTICIPANTS_PATH:
            return json_response(404, {"message": f"no such endpoint: {request.path}"})
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"message": "only GET is supported"})
        try:
            page_size = int(request.param("pageSize") or 100)
            if not 1 <= page_size <= 1000:
                raise ValueError
        except ValueError:
            return json_response(400, {"message": "pageSize must be an integer from 1 to 1000"})
        offset = 0
        page_id = request.param("pageID")
        if page_id:
            try:
                offset = int(base64.urlsafe_b64decode(page_id + "=" * (-len(page_id) % 4)))
            except (ValueError, binascii.Error):
                return json_response(400, {"message": f"invalid pageID '{page_id}'"})
        patients = self.store.by_type["Patient"]
        chunk = patients[offset : offset + page_size]
        next_offset = offset + page_size
        next_page = (
            base64.urlsafe_b64encode(str(next_offset).encode()).rstrip(b"=").decode()
            if next_offset < len(patients)
            else None
        )
        return json_response(
            200,
            {
                "participants": [self._participant(p) for p in chunk],
                "nextPageID": next_page,
                "totalParticipants": len(patients),
            },
        )

    def _participant(self, stored: StoredResource) -> dict[str, object]:
        patient = stored.resource
        name = patient["name"][0]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox:{self.store.seed}:{stored.id}")),
            "participantIdentifier": patient["identifier"][0]["value"],
            "enrolled": True,
            "enrollmentDate": format_instant(stored.last_updated),
            "demographics": {
                "firstName": name["given"][0],
                "lastName": name["family"],
                "dateOfBirth": patient["birthDate"],
                "gender": patient["gender"],
            },
            "customFields": {"fhirPatientId": stored.id},
        }
