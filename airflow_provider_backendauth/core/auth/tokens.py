"""The token exchange: post a signed assertion, get an access token.

Owns the request (the form, a bounded read within the deadline, retries, the DPoP rounds),
the parsing of a token answer (``AccessToken``: type, value and lifetime checked) and
``TokenCache`` (single flight). Why a refusal happened, in words, is ``token_errors.py``'s.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from airflow_provider_backendauth.core.auth.dpop import DpopProofs
from airflow_provider_backendauth.core.auth.token_errors import explain_refusal
from airflow_provider_backendauth.core.errors import (
    DpopError,
    ResponseTooLargeError,
    TokenRequestError,
)
from airflow_provider_backendauth.core.http.bodies import (
    MAX_TOKEN_RESPONSE_BYTES,
    json_of,
    read_body,
)
from airflow_provider_backendauth.core.http.deadline import Deadline
from airflow_provider_backendauth.core.http.policy import BearerPolicy
from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
from airflow_provider_backendauth.core.http.sessions import plain_session
from airflow_provider_backendauth.core.network import describe_network_error
from airflow_provider_backendauth.core.redact import (
    get_logger,
    remember_secret,
)
from airflow_provider_backendauth.core.retry import RetryPolicy

log = get_logger(__name__)

DEFAULT_EXPIRES_IN = 300
# No server needs a token longer-lived than a day; beyond that is a bug or an attack (1e400
# parses as infinity and overflows datetime arithmetic downstream).
MAX_EXPIRES_IN = 86400.0
MAX_TOKEN_LENGTH = 16384

# The token request form (RFC 7523 section 2.2); the assertion itself is built in assertion.py.
# Kept here, not there, so that what only sends tokens (downloads, REST) does not import the
# key machinery and cryptography with it.
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class AccessToken:
    """An access token and when it stops being usable. ``repr`` never shows the value."""

    value: str = field(repr=False)
    expires_at: float
    scope: str | None = None
    obtained_at: float = field(default_factory=time.time)
    token_type: str = "Bearer"  # or "DPoP": bound to a proof key (``core/auth/dpop.py``)

    @property
    def dpop_bound(self) -> bool:
        return self.token_type.lower() == "dpop"

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.obtained_at

    def expires_in(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def is_fresh(self, leeway: float, now: float | None = None) -> bool:
        """Usable for at least ``leeway`` more seconds (capped at a quarter of its life,
        so that a 10-second token is not renewed on every call)."""
        margin = min(leeway, self.lifetime / 4)
        return self.expires_in(now) > margin


class TokenEndpoint:
    """Posts client-assertion grants to one token URL, with retries for transient failures.

    Args:
        token_url: where to post.
        sign_assertion: returns a freshly signed assertion (new jti) per attempt.
        client_id: posted as ``client_id`` when ``client_id_in_form``.
        scope: None omits the parameter; "" sends an empty ``scope=``.
        session: the requests session to use (TLS settings come with it).
        timeout: seconds for connect and read.
        retry: retry policy for transient failures.
        hints: vendor-specific troubleshooting lines added to auth failures.
        on_token: called with each token value obtained (Airflow registers it for masking).
        dpop: the proof key and nonce memory, when the connection may use DPoP.
        dpop_mode: ``on`` sends a proof with every token request; ``auto`` only once the
            server asked for one (a DPoP error or challenge); ``off`` never.
    """

    def __init__(
        self,
        token_url: str,
        sign_assertion: Callable[[], str],
        *,
        client_id: str,
        scope: str | None = None,
        client_id_in_form: bool = False,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        hints: tuple[str, ...] = (),
        on_token: Callable[[str], None] | None = None,
        dpop: DpopProofs | None = None,
        dpop_mode: str = "off",
    ) -> None:
        self.dpop = dpop
        self.dpop_mode = dpop_mode
        self.token_url = token_url
        self._sign = sign_assertion
        self.client_id = client_id
        self.scope = scope
        self.client_id_in_form = client_id_in_form
        self._session = session or plain_session()
        # The assertion is the request's body: redirects stay at the token URL's origin.
        self._auth = BackendAuth(
            None, policy=BearerPolicy(None, [token_url], confined=True, error=TokenRequestError)
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.hints = hints
        self._on_token = on_token
        self.requests_made = 0

    def request_token(self) -> AccessToken:
        """Exchange a new assertion for a token, retrying what is worth retrying."""
        import tenacity

        def log_retry(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "Token request to %s failed (attempt %d of %d): %s; retrying",
                self.token_url,
                state.attempt_number,
                self.retry.attempts,
                exc,
            )

        retrying = self.retry.retrying(
            is_retryable=lambda e: isinstance(e, TokenRequestError) and e.retryable,
            retry_after_of=lambda e: getattr(e, "retry_after", None),
            before_sleep=log_retry,
        )
        token: AccessToken = retrying(self._request_once)
        return token

    def form(self) -> dict[str, str]:
        """The form one token request would post, with a freshly signed assertion (what
        ``backendauth inspect`` shows; nothing is sent)."""
        return self._form()

    def _form(self) -> dict[str, str]:
        assertion = self._sign()
        # A server may quote the assertion whole, or only a segment of it (the signature,
        # the claims), in an error: redact each by value from now on.
        remember_secret(assertion)
        for segment in assertion.split(".")[1:]:
            remember_secret(segment)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        if self.scope is not None:
            form["scope"] = self.scope
        if self.client_id_in_form:
            form["client_id"] = self.client_id
        return form

    def _request_once(self) -> AccessToken:
        # One attempt of the retry policy; inside it, more rounds when the server asks for
        # DPoP (a proof at all in "auto", then its nonce), each with a freshly signed
        # assertion: strict servers spend the first assertion's jti before they look at the
        # proof. In "auto", an unexplained invalid_grant is probed once with a proof too:
        # strict servers (oidc-provider) refuse a missing proof with just "invalid_grant:
        # grant request is invalid", no DPoP word and no challenge.
        probed: TokenRequestError | None = None
        for round_ in (1, 2, 3):
            response, started = self._post()
            if response.status_code == 200:
                return self._parse_success(response, started)
            failure = explain_refusal(self, response)
            if round_ < 3 and self._retry_for_dpop(failure, response):
                log.info(
                    "The token URL %s asked for DPoP (%s): asking again with a proof",
                    self.token_url,
                    failure.error or "challenge",
                )
                continue
            if round_ == 1 and self._probe_for_dpop(failure):
                log.info(
                    "The token URL %s refused with invalid_grant: asking again with a DPoP "
                    "proof, in case that is what it wants",
                    self.token_url,
                )
                probed = failure
                continue
            if probed is not None and self.dpop is not None:
                # The proof did not help: DPoP was not the cause; report the first refusal.
                self.dpop.server_asked = False
                raise probed
            raise failure
        raise AssertionError("unreachable")  # pragma: no cover

    def _probe_for_dpop(self, failure: TokenRequestError) -> bool:
        """In "auto", before any proof was sent: is this refusal worth one round with a
        proof (invalid_grant, which client_credentials has no grant to explain)?"""
        if self.dpop is None or self.dpop_mode != "auto" or self.dpop_active:
            return False
        if failure.error != "invalid_grant":
            return False
        self.dpop.server_asked = True  # undone if the proof does not help
        return True

    @property
    def dpop_active(self) -> bool:
        """Does a token request carry a proof? ("auto": once the server asked for one.)"""
        if self.dpop is None:
            return False
        return self.dpop_mode == "on" or (self.dpop_mode == "auto" and self.dpop.server_asked)

    def _post(self) -> tuple[requests.Response, float]:
        self.requests_made += 1
        started = time.time()
        # 'timeout' bounds the whole exchange, not each socket read (a server dripping a byte
        # per read would otherwise hold the worker indefinitely). Our sessions' adapter owns
        # that deadline from the send on; this one serves a session made elsewhere.
        deadline = Deadline(self.timeout)
        headers = {"Accept": "application/json"}
        if self.dpop is not None and self.dpop_active:
            headers["DPoP"] = self.dpop.proof("POST", self.token_url)
        try:
            response = self._session.post(
                self.token_url,
                data=self._form(),
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                auth=self._auth,
            )
            read_body(
                response,
                max_bytes=MAX_TOKEN_RESPONSE_BYTES,
                deadline=deadline,
                what="The token request",
                setting="(fixed limit: no token answer is this large)",
            )
        except ResponseTooLargeError as exc:
            raise TokenRequestError(str(exc), status_code=exc.status_code) from None
        except requests.exceptions.SSLError as exc:
            raise TokenRequestError(
                f"Could not reach the token URL {self.token_url}: "
                f"{describe_network_error(exc)}. If the server uses a private CA, set "
                "'ca_bundle'."
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TokenRequestError(
                f"Could not reach the token URL {self.token_url}: {describe_network_error(exc)}.",
                retryable=True,
            ) from None
        if self.dpop is not None:
            self.dpop.remember_nonce(self.token_url, response.headers.get("DPoP-Nonce"))
        return response, started

    def _retry_for_dpop(self, failure: TokenRequestError, response: requests.Response) -> bool:
        if self.dpop is None or not isinstance(failure, DpopError):
            return False
        if not self.dpop_active:
            if self.dpop_mode != "auto":
                return False
            self.dpop.server_asked = True  # the server wants DPoP: from now on, always
            return True
        # Proofs were sent: only a fresh nonce is worth one more round.
        return failure.error == "use_dpop_nonce" and self.dpop.nonce_for(self.token_url) is not None

    def _parse_success(self, response: requests.Response, started: float) -> AccessToken:
        try:
            body = json_of(response)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TokenRequestError(
                f"The token URL {self.token_url} answered 200 but without a JSON "
                "'access_token'; is this really the token endpoint?",
                status_code=200,
            )
        token_type = str(body.get("token_type") or "Bearer")
        sent_proof = self.dpop is not None and self.dpop_active
        if token_type.lower() == "dpop" and sent_proof:
            token_type = "DPoP"
        elif token_type.lower() == "bearer":
            token_type = "Bearer"
            if sent_proof and self.dpop_mode == "on":
                log.warning(
                    "The token URL %s issued a Bearer token although a DPoP proof was sent: "
                    "the server does not bind tokens to the key; using it as Bearer",
                    self.token_url,
                )
        else:
            raise TokenRequestError(
                f"The server issued a {token_type[:40]!r} token; only Bearer tokens and (with "
                "the 'dpop' extra) DPoP tokens are supported.",
                status_code=200,
            )
        value = body["access_token"]
        _check_token_value(value, self.token_url)
        remember_secret(value)  # redacted from every message and log line from now on
        if self._on_token is not None:
            self._on_token(value)
        scope = body.get("scope")
        return AccessToken(
            value=value,
            expires_at=started + _parse_expires_in(body.get("expires_in")),
            scope=scope if isinstance(scope, str) else None,
            obtained_at=started,
            token_type=token_type,
        )


def _parse_expires_in(value: Any) -> float:
    """``expires_in`` as seconds: int, float or numeric string; missing/garbage/NaN/<= 0 ->
    the default; huge or infinite values (``1e400``) clamped to ``MAX_EXPIRES_IN``."""
    if isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    try:
        seconds = float(str(value).strip()[:64])
    except (TypeError, ValueError, OverflowError):
        return DEFAULT_EXPIRES_IN
    if math.isnan(seconds) or seconds <= 0:
        return DEFAULT_EXPIRES_IN
    return min(seconds, MAX_EXPIRES_IN)


# RFC 6750 b64token, leniently: any visible ASCII except what would break or split the
# Authorization header (quotes and commas are allowed by some servers, so only controls,
# spaces and non-ASCII are refused).
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


def _check_token_value(value: str, token_url: str) -> None:
    if not value or not _TOKEN_CHARS.fullmatch(value) or len(value) > MAX_TOKEN_LENGTH:
        raise TokenRequestError(
            f"The token URL {token_url} issued an unusable access token (empty, longer than "
            f"{MAX_TOKEN_LENGTH} characters, or containing spaces, control characters such as "
            "CR/LF, or non-ASCII): refused, it would corrupt or split the Authorization header.",
            status_code=200,
        )


class TokenCache:
    """Hands out a valid token, fetching one only when needed and one at a time.

    Many threads asking at once trigger a single token request (single flight): the others
    wait for it and reuse the result. ``per_request`` reuse fetches a new token every time,
    for APIs that demand it.
    """

    def __init__(
        self,
        fetch: Callable[[], AccessToken],
        *,
        reuse: str = "cache",
        leeway: float = 30.0,
    ) -> None:
        self._fetch = fetch
        self.reuse = reuse
        self.leeway = leeway
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    def fresh(self) -> AccessToken | None:
        """The cached token if it is still fresh, read without waiting for the lock (a
        renewal in progress holds it); None otherwise, and always with ``per_request``."""
        token = self._token
        if self.reuse == "per_request" or token is None or not token.is_fresh(self.leeway):
            return None
        return token

    def get(self) -> AccessToken:
        if self.reuse == "per_request":
            return self._fetch()
        token = self._token
        if token is not None and token.is_fresh(self.leeway):
            return token
        with self._lock:
            token = self._token
            if token is not None and token.is_fresh(self.leeway):
                return token
            token = self._fetch()
            self._token = token
            return token

    def invalidate(self, value: str | None = None) -> None:
        """Forget the cached token; with ``value``, only if it is still that token (so many
        threads reporting the same rejected token cause one renewal, not many)."""
        with self._lock:
            if self._token is not None and (value is None or self._token.value == value):
                self._token = None

    @property
    def current(self) -> AccessToken | None:
        return self._token
