"""``Sandbox``: the public object. Owns the listening servers, routes requests, applies faults."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from . import control
from .auth_server import AuthServer
from .bulk import STORAGE_PATH, BulkExports
from .clients import ClientRegistration, ClientRegistry, KeyMaterial, make_registration
from .discovery import openid_configuration, smart_configuration
from .dpop import DpopVerifier
from .faults import FaultRule, Faults
from .fhir_api import FhirApi
from .fhir_store import FhirStore
from .httpd import HttpServer, Request, Response
from .responses import json_response, outcome_response
from .settings import SandboxSettings
from .stats import Stats
from .tokens import TokenStore

_BULK_FILE = re.compile(r"^/fhir/_bulk/files/")
_BULK_JOB = re.compile(r"^/fhir/_bulk/jobs/")
_EXPORT = re.compile(r"^/fhir/(?:Patient/|Group/[^/]+/)?\$export$")
_READ = re.compile(r"^/fhir/[A-Z][A-Za-z]+/[^/$_][^/]*$")


def route_kind(path: str) -> str:
    """A coarse label per endpoint family, used for ``stats['requests_by_kind']``."""
    if path.startswith(control.PREFIX + "/") or path == control.PREFIX:
        return "control"
    if path == "/auth/token":
        return "token"
    if path.endswith(("/.well-known/smart-configuration", "/.well-known/openid-configuration")):
        return "discovery"
    if path == "/fhir/metadata":
        return "metadata"
    if _EXPORT.match(path):
        return "bulk_kickoff"
    if _BULK_JOB.match(path):
        return "bulk_status"
    if _BULK_FILE.match(path) or path.startswith("/storage/"):
        return "bulk_file"
    if path.startswith("/api/"):
        return "rest"
    if path.startswith("/fhir/"):
        return "fhir_read" if _READ.match(path) else "fhir_search"
    return "other"


class Sandbox:
    """A strict SMART Backend Services auth server + FHIR R4 + Bulk Data server on 127.0.0.1.

    Use as a context manager (``with Sandbox() as sb: ...``) or call ``start()``/``stop()``.
    Every keyword argument besides ``patients``, ``seed``, ``host`` and ``port`` is a field of
    ``SandboxSettings`` and can be changed at runtime through ``sb.settings``.
    """

    def __init__(
        self,
        patients: int = 20,
        token_lifetime: int = 300,
        seed: int = 42,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bulk_job_seconds: float = 1.0,
        **settings: Any,
    ) -> None:
        if patients < 0:
            raise ValueError("patients must be >= 0")
        self.patients = patients
        self.seed = seed
        self.host = host
        self._requested_port = port
        self.settings = SandboxSettings(
            token_lifetime=token_lifetime, bulk_job_seconds=bulk_job_seconds, **settings
        )
        self.faults = Faults()
        self.clients = ClientRegistry()
        self.tokens = TokenStore()
        self._stats = Stats()
        self._stop_event = threading.Event()
        self._server: HttpServer | None = None
        self._foreign: HttpServer | None = None
        self._lock = threading.Lock()
        self.store = FhirStore(patients, seed)
        self.dpop = DpopVerifier(self.settings, self._stats)
        self.fhir = FhirApi(
            self.store,
            self.tokens,
            self.settings,
            self._stats,
            fhir_base=lambda: self.fhir_base,
            token_url=lambda: self.token_url,
            dpop=self.dpop,
        )
        self.bulk = BulkExports(
            self.store,
            self.tokens,
            self.settings,
            self._stats,
            fhir_base=lambda: self.fhir_base,
            foreign_url=lambda: self.foreign_url,
            dpop=self.dpop,
        )
        self.auth = AuthServer(
            self.clients,
            self.tokens,
            self.settings,
            self._stats,
            token_url=lambda: self.token_url,
            issuer=lambda: self.issuer,
            dpop=self.dpop,
        )

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Sandbox:
        with self._lock:
            if self._server is not None:
                return self
            self._stop_event.clear()
            self._server = HttpServer(self.host, self._requested_port, self._handle, "main")
            # A second origin (same host, other port) plays signed cloud storage for bulk files.
            self._foreign = HttpServer(self.host, 0, self._handle_foreign, "foreign")
            self._server.start()
            self._foreign.start()
        return self

    def stop(self) -> None:
        """Shut down both listeners, close every connection, join every thread."""
        with self._lock:
            self._stop_event.set()  # wakes handlers sleeping in a delay fault
            for server in (self._server, self._foreign):
                if server is not None:
                    server.close()
            self._server = None
            self._foreign = None
            self.bulk.close()

    close = stop

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # --- addresses -----------------------------------------------------------------------

    def _main(self) -> HttpServer:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; call start() or use 'with'")
        return self._server

    @property
    def port(self) -> int:
        return self._main().port

    @property
    def url(self) -> str:
        return self._main().base_url

    @property
    def fhir_base(self) -> str:
        return self.url + "/fhir"

    @property
    def token_url(self) -> str:
        return self.url + "/auth/token"

    @property
    def issuer(self) -> str:
        return self.url + "/auth"

    @property
    def foreign_url(self) -> str:
        """The other origin that serves bulk files in ``bulk_file_origin`` foreign/redirect."""
        if self._foreign is None:
            raise RuntimeError("the sandbox is not running; call start() or use 'with'")
        return self._foreign.base_url

    # --- runtime knobs -------------------------------------------------------------------

    @property
    def token_lifetime(self) -> int:
        return self.settings.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        self.settings.update(token_lifetime=int(seconds))

    @property
    def bulk_job_seconds(self) -> float:
        return self.settings.bulk_job_seconds

    @bulk_job_seconds.setter
    def bulk_job_seconds(self, seconds: float) -> None:
        self.settings.update(bulk_job_seconds=float(seconds))

    def register_client(
        self,
        client_id: str,
        public_jwks: KeyMaterial,
        vendor: str = "smart",
        algorithms: Iterable[str] | None = None,
        scopes: Iterable[str] | str | None = None,
        *,
        jku: str | None = None,
        token_requests_per_minute: int | None = -1,
        dpop: str = "allow",
    ) -> ClientRegistration:
        """Register (or replace) a client and its public key(s).

        ``public_jwks``: a JWKS dict, a single JWK dict, PEM text/bytes, or jwcrypto key
        objects (private parts are ignored). ``algorithms`` overrides the vendor's allowed
        list; ``scopes`` limits what the client may be granted. ``jku``: the JWKS URL the
        client registered (a ``jku`` header must equal it). ``token_requests_per_minute``:
        quota answered with 429 (default: the vendor's, e.g. 50 for athenahealth). ``dpop``:
        "allow" binds a token to the DPoP key of a request with a proof (RFC 9449), "require"
        refuses token requests without one.
        """
        registration = make_registration(
            client_id,
            public_jwks,
            vendor,
            algorithms,
            scopes,
            jku,
            token_requests_per_minute,
            dpop,
        )
        self.clients.add(registration)
        return registration

    def issue_token(
        self,
        client_id: str = "sandbox-test",
        scope: str = "system/*.rs",
        lifetime: float | None = None,
    ) -> str:
        """Mint an access token without the token endpoint (for tests of the FHIR side only)."""
        value = self.settings.token_lifetime if lifetime is None else lifetime
        return self.tokens.issue(client_id, scope, value).value

    def rotate_dpop_nonce(self) -> str:
        """Retire the current DPoP nonce now (as a restart would); returns the next one."""
        return self.dpop.rotate_nonce()

    def expire_tokens(self) -> int:
        """Make every issued access token invalid now; returns how many were still valid."""
        return self.tokens.expire_all()

    @property
    def stats(self) -> dict[str, Any]:
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "fhir_base": self.fhir_base,
            "token_url": self.token_url,
            "issuer": self.issuer,
            "foreign_url": self.foreign_url,
            "patients": self.patients,
            "seed": self.seed,
            "settings": self.settings.as_dict(),
            "clients": [c.describe() for c in self.clients.all()],
        }

    # --- request handling ----------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        kind = route_kind(request.path)
        self._stats.request(request.path, kind)
        rule = None if kind == "control" else self.faults.take(request)
        response = self._route(request, kind) if rule is None else self._faulty(rule, request, kind)
        if not response.drop:
            self._stats.response(response.status)
            if self.settings.dpop_nonce and request.header("DPoP") is not None:
                # RFC 9449 sections 8 and 9: the nonce to use next, on every answer to a
                # request with a proof (after a rotation, the new one).
                response.header("DPoP-Nonce", self.dpop.nonce)
        return response

    def _handle_foreign(self, request: Request) -> Response:
        self._stats.foreign_request(
            request.path, request.header("Authorization"), request.header("DPoP")
        )
        rule = self.faults.take(request)
        if rule is None:
            return self._route_foreign(request, "bulk_file")
        return self._faulty(rule, request, "bulk_file", self._route_foreign)

    def _route_foreign(self, request: Request, kind: str) -> Response:
        if request.path.startswith(STORAGE_PATH):
            return self.bulk.serve_storage(request)
        return Response(404, b"no such object\n", "text/plain")

    def _faulty(
        self,
        rule: FaultRule,
        request: Request,
        kind: str,
        route: Callable[[Request, str], Response] | None = None,
    ) -> Response:
        route = route or self._route
        self._stats.incr("faults_applied")
        if rule.expire_tokens:
            self.tokens.expire_all()
        if rule.delay > 0:
            self._stop_event.wait(rule.delay)
        if rule.drop:
            self._stats.incr("connections_dropped")
            return Response(0, drop=True)
        if rule.status is not None:
            response = rule.error_response(request)
        else:
            response = route(request, kind)
            if rule.drop_after_bytes is not None:
                response.truncate_after = rule.drop_after_bytes
            if rule.hold_after_bytes is not None and response.status < 300:
                _hold_body(response, rule, self._stop_event, self._stats)
        for name, value in rule.headers.items():
            response.header(name, value)
        return response

    def _route(self, request: Request, kind: str) -> Response:
        if kind == "control":
            return control.handle_control(self, request)
        if kind == "token":
            return self.auth.handle(request)
        if kind == "discovery":
            return self._discovery(request)
        if kind in ("metadata", "fhir_search", "fhir_read"):
            return self.fhir.handle(request)
        if kind == "rest":
            return self.fhir.handle_rest(request)
        if kind == "bulk_kickoff":
            return self.bulk.kickoff(request)
        if kind == "bulk_status":
            return self.bulk.status(request)
        if kind == "bulk_file" and not request.path.startswith(STORAGE_PATH):
            return self.bulk.serve_file(request)
        return outcome_response(404, f"no such endpoint: {request.path}", code="not-found")

    def _discovery(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return json_response(405, {"error": "method not allowed"})
        if request.path in (
            "/fhir/.well-known/smart-configuration",
            "/.well-known/smart-configuration",
        ):
            return json_response(
                200,
                smart_configuration(
                    self.token_url, self.issuer, self.settings.smart_config_relative_token_endpoint
                ),
            )
        if request.path == "/auth/.well-known/openid-configuration":
            return json_response(200, openid_configuration(self.token_url, self.issuer))
        return json_response(404, {"error": "not found"})


def _body_parts(
    file_path: str | None, offset: int, length: int | None, stream: Any, body: bytes
) -> Iterator[bytes]:
    if file_path is not None:
        remaining = length
        with open(file_path, "rb") as handle:
            handle.seek(offset)
            while remaining is None or remaining > 0:
                part = handle.read(65536 if remaining is None else min(65536, remaining))
                if not part:
                    return
                if remaining is not None:
                    remaining -= len(part)
                yield part
    elif stream is not None:
        yield from stream
    else:
        yield body


def _hold_body(response: Response, rule: Any, stop: threading.Event, stats: Stats) -> None:
    """Send the first ``rule.hold_after_bytes`` bytes of the body, then stall until the rule
    is released (or the sandbox stops): a download caught mid-file, for as long as a test
    needs (e.g. to kill the process downloading it), with no timing involved."""
    if response.file_path is not None:
        length = response.file_length
        if length is None:
            length = os.path.getsize(response.file_path) - response.file_offset
        response.content_length = length
    elif response.stream is None:
        response.content_length = len(response.body)
    parts = _body_parts(
        response.file_path,
        response.file_offset,
        response.content_length,
        response.stream,
        response.body,
    )
    limit = int(rule.hold_after_bytes)

    def held() -> Iterator[bytes]:
        sent = 0
        holding = False
        for part in parts:
            if not holding and sent + len(part) >= limit:
                head, part = part[: limit - sent], part[limit - sent :]
                if head:
                    yield head
                sent = limit
                holding = True
                stats.incr("responses_held")
                while not rule.released.wait(0.05) and not stop.is_set():
                    pass
                stats.incr("responses_released")
            if part:
                sent += len(part)
                yield part

    response.stream = held()
    response.file_path = None
    response.body = b""
