"""An independent, OpenID-certified authorization server on 127.0.0.1: panva's oidc-provider
(npm package ``oidc-provider``), configured strictly by ``oidc_server.mjs`` beside this file.

Why: the sandbox shares the project's reading of the specifications; a certified server
written by someone else checks the client against another one (private_key_jwt only,
client_credentials, single-use assertion ``jti``, bounded assertion lifetime, DPoP with
``use_dpop_nonce``, resource-bound JWT access tokens), and a resource endpoint
(``GET /fhir/...``) verifies DPoP-bound requests with jose, oidc-provider's JOSE library.

Installed on first use into the project-local ``.cache/oidc-provider`` (``npm install`` of a
pinned version; CI reaches the npm registry), or ahead of time with
``python -m tests.support.oidc_provider install`` (the Makefile does that before the suite).
Started on a port the server binds itself (port 0: no free-port race); ready when it prints
its issuer. Clients are registered through the server's dynamic registration endpoint
(RFC 7591) with an initial access token, as a real deployment would.

Every token request's outcome is printed by the server as one line; ``events()`` waits for
the expected count to be read (the server writes before it answers), with no sleep.

This is a test helper: a failed install or start raises with what to check, never skips.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import requests

from tests.support.npm import install_pinned
from tests.support.servers import LoggedProcess

REPO = Path(__file__).resolve().parents[2]
OIDC_PROVIDER_VERSION = "9.13.3"
CACHE = REPO / ".cache" / "oidc-provider"
SCRIPT = Path(__file__).with_name("oidc_server.mjs")
START_TIMEOUT = 60.0  # seconds; the server starts in well under 1 s on an idle machine
FHIR_RESOURCE = "https://fhir.example.org/r4"


class OidcProviderUnavailable(RuntimeError):
    """oidc-provider could not be installed or started (the message says what to check)."""


def entry() -> Path:
    return CACHE / "node_modules" / "oidc-provider" / "lib" / "index.js"


def install() -> Path:
    """Install oidc-provider into ``.cache/oidc-provider`` unless that version is there."""
    return install_pinned(
        "oidc-provider",
        OIDC_PROVIDER_VERSION,
        entry(),
        OidcProviderUnavailable,
        "the independent authorization server tests",
    )


class OidcServer:
    """oidc-provider on ``127.0.0.1:<port it chose>`` in a node subprocess.

    Args:
        scopes: the scopes the server knows (a client may ask only for those registered
            with it among these).
        max_assertion_age: the longest ``exp - iat`` of a client assertion it accepts.
        token_ttl: access token lifetime (seconds) unless the client was registered with
            its own.
    """

    def __init__(
        self,
        *,
        scopes: tuple[str, ...] = ("system/Patient.rs", "system/Observation.rs"),
        max_assertion_age: int = 300,
        token_ttl: int = 300,
    ) -> None:
        self.scopes = scopes
        self.max_assertion_age = max_assertion_age
        self.token_ttl = token_ttl
        self._initial_access_token = secrets.token_urlsafe(24)
        self._process: LoggedProcess | None = None
        self._events: list[dict[str, Any]] = []
        self.issuer = ""

    def start(self) -> OidcServer:
        install()
        node = shutil.which("node") or shutil.which("nodejs")
        if node is None:
            raise OidcProviderUnavailable("node is not installed (Debian: apt-get install nodejs)")
        config = {
            "scopes": list(self.scopes),
            "max_assertion_age": self.max_assertion_age,
            "token_ttl": self.token_ttl,
            "initial_access_token": self._initial_access_token,
            "resource": FHIR_RESOURCE,
        }
        env = {
            **os.environ,
            "OIDC_TEST_CONFIG": json.dumps(config),
            "OIDC_PROVIDER_ENTRY": str(entry()),
            "NODE_ENV": "test",
        }
        env.pop("DEBUG", None)
        self._process = process = LoggedProcess([node, str(SCRIPT)], env=env, on_line=self._on_line)
        if not process.wait_for(lambda: bool(self.issuer), START_TIMEOUT):
            why = "exited" if process.exited else "did not start in time"
            output = process.tail()
            self.stop()
            raise OidcProviderUnavailable(f"oidc-provider ({SCRIPT.name}) {why}:\n{output}")
        return self

    def _on_line(self, line: str) -> None:
        if line.startswith("listening ") and not self.issuer:
            self.issuer = line.split(" ", 1)[1]
        elif line.startswith("event "):
            self._events.append(json.loads(line[len("event ") :]))

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def __enter__(self) -> OidcServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    def register(
        self,
        jwks: dict[str, Any],
        *,
        scope: str | None = None,
        dpop: bool = False,
        token_ttl: int | None = None,
        require_dpop_nonce: bool = False,
        signing_alg: str | None = None,
    ) -> str:
        """Register a client with this public JWKS (RFC 7591); its server-chosen client id."""
        metadata: dict[str, Any] = {"jwks": jwks}
        if scope is not None:
            metadata["scope"] = scope
        if dpop:
            metadata["dpop_bound_access_tokens"] = True
        if token_ttl is not None:
            metadata["x_token_ttl"] = token_ttl
        if require_dpop_nonce:
            metadata["x_require_dpop_nonce"] = True
        if signing_alg is not None:
            metadata["token_endpoint_auth_signing_alg"] = signing_alg
        answer = requests.post(
            f"{self.issuer}/reg",
            json=metadata,
            headers={"Authorization": f"Bearer {self._initial_access_token}"},
            timeout=30,
        )
        if answer.status_code != 201:
            raise AssertionError(f"registration refused: {answer.status_code} {answer.text}")
        client_id: str = answer.json()["client_id"]
        return client_id

    def events(self, client_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        """The first ``count`` token request outcomes of ``client_id`` (waits for them)."""

        def mine() -> list[dict[str, Any]]:
            return [e for e in self._events if e.get("client_id") == client_id]

        assert self._process is not None, "the server is not running"
        if not self._process.wait_for(lambda: len(mine()) >= count, timeout=timeout):
            raise AssertionError(
                f"the server reported {len(mine())} of {count} token requests of "
                f"{client_id!r}:\n{self._process.tail(20)}"
            )
        return mine()[:count]

    def public_jwks(self) -> dict[str, Any]:
        """The server's signing keys (to verify the JWT access tokens it issues)."""
        answer = requests.get(f"{self.issuer}/jwks", timeout=30)
        answer.raise_for_status()
        keys: dict[str, Any] = answer.json()
        return keys


def main(argv: list[str]) -> int:
    if argv[1:] == ["install"]:
        print(install())
        return 0
    print("usage: python -m tests.support.oidc_provider install", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
