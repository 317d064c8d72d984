"""``BackendAuthClient``: settings + profile -> signed assertions -> cached access tokens.

Everything that can be checked without the network (key, algorithm, kid, URLs, lifetime)
is checked in the constructor, so a bad connection fails before any request is made; the
signing choices themselves are ``signing_config.py``'s. Owns the token URL (fixed or
discovered, with the audience check), the process-wide token cache per configuration and
the builders of what a connection makes (sessions, REST/FHIR clients, the trigger's client).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_backendauth.core.auth.assertion import AssertionSpec, ClientAssertionSigner
from airflow_provider_backendauth.core.auth.discovery import SmartConfiguration, discover
from airflow_provider_backendauth.core.auth.dpop import GENERATED_DPOP_KEYS, DpopProofs
from airflow_provider_backendauth.core.auth.keys import (
    compatible_algorithms,
    load_signing_key_file,
)
from airflow_provider_backendauth.core.auth.profiles import Profile, get_profile
from airflow_provider_backendauth.core.auth.scopes import missing_scopes, smart_v1_scope
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.auth.shared_tokens import LazyTokens, shared_token_cache
from airflow_provider_backendauth.core.auth.signing_config import (
    assertion_lifetime,
    certificate_headers,
    chosen_algorithm,
    default_algorithm,
    key_id,
    load_key,
)
from airflow_provider_backendauth.core.auth.tokens import AccessToken, TokenCache, TokenEndpoint
from airflow_provider_backendauth.core.errors import (
    BackendAuthError,
    ConfigurationError,
    InvalidScopeError,
)
from airflow_provider_backendauth.core.http.policy import BearerPolicy
from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
from airflow_provider_backendauth.core.http.sessions import plain_session
from airflow_provider_backendauth.core.redact import get_logger
from airflow_provider_backendauth.core.retry import RetryPolicy
from airflow_provider_backendauth.core.urls import check_url, display_url, origin_of

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    import aiohttp

    from airflow_provider_backendauth.core.fhir.rest import RestClient
    from airflow_provider_backendauth.core.fhir.search import FhirClient
    from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions

log = get_logger(__name__)

# The longest assertion lifetime most servers accept (SMART Backend Services: 5 minutes).
COMMON_MAX_LIFETIME = 300


class BackendAuthClient:
    """Obtains access tokens for one client with the client-assertion grant.

    Args:
        settings: the connection's settings.
        on_token: called with every new token value (the Airflow hook masks it).
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.profile: Profile = get_profile(settings.profile)
        self._on_token = on_token
        insecure = settings.allow_insecure_http
        self.base_url = (
            check_url(settings.base_url, "base URL", allow_insecure_http=insecure).rstrip("/")
            if settings.base_url
            else None
        )
        configured_token_url = settings.token_url or self.profile.token_url
        self._token_url = (
            check_url(configured_token_url, "token URL", allow_insecure_http=insecure)
            if configured_token_url
            else None
        )
        if self._token_url is None and self.profile.discovery_path is None:
            raise ConfigurationError(
                f"Profile {self.profile.name!r} has no fixed token URL and no discovery "
                "document: set the 'auth_url' extra to the token URL."
            )
        if self._token_url is None and self.base_url is None:
            raise ConfigurationError(
                f"Profile {self.profile.name!r} has no fixed token URL: set the connection's "
                "base URL (host) so it can be discovered, or set the 'auth_url' extra."
            )
        if not settings.client_id:
            raise ConfigurationError("No client id: set the connection's Client ID (login) field.")
        self.key = load_key(settings)
        self._explicit_algorithm = chosen_algorithm(settings, self.profile, self.key)
        self.algorithm = self._explicit_algorithm or default_algorithm(self.profile, self.key)
        self.kid = key_id(settings, self.profile, self.key)
        self.lifetime = assertion_lifetime(settings, self.profile)
        # Fail now if the profile needs a certificate.
        certificate_headers(settings, self.profile, self.key)
        self.scope = settings.scope if settings.scope is not None else self.profile.scope
        self.token_reuse = settings.token_reuse or self.profile.token_reuse
        self.retry = RetryPolicy.from_retries(settings.retries)
        self.allowed_origins = self._allowed_origins()
        self.dpop_mode = settings.dpop or self.profile.dpop
        self.dpop = self._dpop_proofs()
        self._http = self.new_plain_session()
        self._tokens: TokenCache | None = None
        self._endpoint: TokenEndpoint | None = None
        self._lock = threading.Lock()

    # -- configuration checks (no network) ---------------------------------------------

    def _dpop_proofs(self) -> DpopProofs | None:
        """The DPoP proof key: the configured one, else a fresh EC P-256 key shared by every
        client of this connection in this process (never the assertion key unless the user
        points 'dpop_key_file' at it)."""
        if self.dpop_mode == "off":
            return None
        if self.settings.dpop_key_file:
            return DpopProofs(load_signing_key_file(self.settings.dpop_key_file))
        s = self.settings
        identity = "|".join(
            (s.client_id, self.key.thumbprint(), self.base_url or "", s.token_url or "")
        )
        return GENERATED_DPOP_KEYS.for_connection(identity)

    def _allowed_origins(self) -> frozenset[str]:
        origins = set()
        if self.base_url:
            origins.add(origin_of(self.base_url))
        insecure = self.settings.allow_insecure_http
        for entry in self.settings.allowed_hosts:
            url = entry if "://" in entry else f"https://{entry}"
            origins.add(origin_of(check_url(url, "allowed host", allow_insecure_http=insecure)))
        return frozenset(origins)

    def new_plain_session(self) -> requests.Session:
        """A ``requests.Session`` with the connection's TLS settings and our User-Agent, and
        no auth (for the token endpoint, discovery and storage URLs)."""
        return plain_session(self.settings.tls_verify)

    # -- network -----------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        """The token endpoint; discovered (once per process) when the profile has none."""
        if self._token_url is None:
            config = self.discover()
            discovered = check_url(
                config.token_endpoint,
                "discovered token URL",
                allow_insecure_http=self.settings.allow_insecure_http,
            )
            self._check_discovered_endpoint(discovered)
            self._token_url = discovered
            if self._explicit_algorithm is None and config.signing_algorithms:
                preferred = [a for a in self.profile.algorithms if a in config.signing_algorithms]
                usable = compatible_algorithms(self.key, tuple(preferred))
                if usable:
                    self.algorithm = usable[0]
        return self._token_url

    def _fixed_audience(self) -> str | None:
        """The ``aud`` set by the connection or the profile (None: the token URL)."""
        return self.settings.audience or (
            self.profile.issuer_url if self.profile.audience == "issuer" else None
        )

    def _check_discovered_endpoint(self, endpoint: str) -> None:
        """A fixed audience names the real authorization server; a discovered token URL is
        whatever the discovery answer says. Were they allowed to differ, whoever controls that
        answer (a compromised FHIR server, a proxy) would receive an assertion valid at the
        real server for its lifetime. So the discovered URL must be at the audience's origin.
        Without a fixed audience the assertion's ``aud`` is the discovered URL itself: it is
        valid nowhere else."""
        audience = self._fixed_audience()
        if audience is None:
            return
        try:
            same = origin_of(audience) == origin_of(endpoint)
        except BackendAuthError:
            same = False  # an audience that is not a URL: nothing to compare with
        if not same:
            raise ConfigurationError(
                f"The assertion's audience is {audience!r}, but the token URL came from SMART "
                f"discovery ({display_url(endpoint)}), which is not at the audience's origin: "
                "whoever controls the discovery answer would receive an assertion valid at "
                "that audience. Refused. Set the connection's 'auth_url' extra to the token "
                "URL (then discovery is not used), or remove 'audience'."
            )

    def discover(self) -> SmartConfiguration:
        assert self.base_url is not None and self.profile.discovery_path is not None
        return discover(
            self.base_url,
            path=self.profile.discovery_path,
            session=self._http,
            timeout=self.settings.timeout,
            allowed_origins=self.allowed_origins,
        )

    def assertion_spec(self) -> AssertionSpec:
        token_url = self.token_url
        audience = self._fixed_audience()
        return AssertionSpec(
            client_id=self.settings.client_id,
            audience=audience or token_url,
            algorithm=self.algorithm,
            lifetime=self.lifetime,
            typ=self.profile.typ,
            kid=self.kid,
            jku=self.settings.jku,
            include_iat=self.profile.include_iat,
            include_nbf=self.profile.include_nbf,
            extra_claims=self.settings.extra_claims,
            **certificate_headers(self.settings, self.profile, self.key),
        )

    def _hints(self) -> tuple[str, ...]:
        """Lines added to the checklist of a refused assertion: the profile's notes and,
        for a lifetime beyond what most servers accept, the lifetime. Strict servers refuse
        a long-lived assertion with only "client authentication failed" (oidc-provider, for
        one), so the checklist is the user's only pointer to it."""
        hints = self.profile.notes
        if self.lifetime > COMMON_MAX_LIFETIME:
            hints = (
                *hints,
                f"the server accepts assertions living {self.lifetime} s (the "
                f"'assertion_lifetime' extra); many allow {COMMON_MAX_LIFETIME} s at most",
            )
        return hints

    @property
    def endpoint(self) -> TokenEndpoint:
        with self._lock:
            if self._endpoint is None:
                signer = ClientAssertionSigner(self.key, self.assertion_spec())
                self._endpoint = TokenEndpoint(
                    self.token_url,
                    signer.sign,
                    client_id=self.settings.client_id,
                    scope=self.scope,
                    client_id_in_form=self.profile.client_id_in_form,
                    session=self._http,
                    timeout=self.settings.timeout,
                    retry=self.retry,
                    hints=self._hints(),
                    on_token=self._on_token,
                    dpop=self.dpop,
                    dpop_mode=self.dpop_mode,
                )
            return self._endpoint

    @property
    def tokens(self) -> TokenCache:
        """The process-wide token cache for this client configuration."""
        if self._tokens is None:
            self._tokens = shared_token_cache(
                self._fingerprint(), self._request_token, reuse=self.token_reuse
            )
        return self._tokens

    def _request_token(self) -> AccessToken:
        try:
            token = self.endpoint.request_token()
        except InvalidScopeError:
            # Servers that advertise SMART v2 yet reject v2 scopes exist (Oracle Health):
            # fall back to the v1 spelling, but only for a profile default, never for a
            # scope the user chose.
            fallback = smart_v1_scope(self.scope)
            if self.settings.scope is not None or fallback is None:
                raise
            log.warning(
                "The token URL refused SMART v2 scope %r; retrying with v1 scope %r",
                self.scope,
                fallback,
            )
            self.scope = self.endpoint.scope = fallback
            token = self.endpoint.request_token()
        log.info(
            "Obtained an access token for client %r from %s (expires in %d s, scope %r)",
            self.settings.client_id,
            self.endpoint.token_url,
            token.lifetime,
            token.scope,
        )
        missing = missing_scopes(self.scope, token.scope)
        if missing:
            log.warning(
                "The token URL granted scope %r, which does not cover %s of the requested %r: "
                "calls needing it will be refused",
                token.scope,
                " ".join(missing),
                self.scope,
            )
        return token

    def _fingerprint(self) -> str:
        """What makes two clients' tokens interchangeable: the cache renews with the first
        client's endpoint, so everything that goes into the assertion (lifetime, jku, typ,
        headers, ...) and how the token URL is reached count too. Without them, lowering
        'assertion_lifetime' after a server refused it kept signing the old one in that
        process."""
        s = self.settings
        parts: dict[str, Any] = {
            "assertion": dataclasses.asdict(self.assertion_spec()),
            "tls_verify": s.tls_verify,
            "token_url": self.token_url,
            "client_id": s.client_id,
            "scope": self.scope,
            "key": self.key.thumbprint(),
            "kid": self.kid,
            "alg": self.algorithm,
            "aud": s.audience,
            "reuse": self.token_reuse,
            "claims": dict(s.extra_claims),
            # Bearer and DPoP tokens never mix, nor tokens bound to different proof keys.
            "dpop": self.dpop.thumbprint if self.dpop is not None else None,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get_token(self) -> AccessToken:
        """A valid access token (cached, renewed before expiry)."""
        return self.tokens.get()

    @functools.cached_property
    def settings_digest(self) -> str:
        """A digest of the settings (equal settings, equal digest; the key never kept)."""
        data = json.dumps(dataclasses.asdict(self.settings), sort_keys=True, default=str)
        return hashlib.sha256(data.encode()).hexdigest()

    def bearer_policy(self, **options: Any) -> BearerPolicy:
        """The token-attachment decision for this client's origins (see ``BearerPolicy``).

        The token cache is looked up on first use, not now: that may need discovery (the
        network), which the triggerer must do in a thread.
        """
        return BearerPolicy(self.lazy_tokens(), self.allowed_origins, dpop=self.dpop, **options)

    def fresh_token(self) -> AccessToken:
        """A newly requested token, bypassing the cache (the Test button checks the exchange
        itself, not a token some earlier task obtained)."""
        return self._request_token()

    def auth(self) -> BackendAuth:
        """A requests ``AuthBase`` for the configured origins (see ``BackendAuth``)."""
        return BackendAuth(None, policy=self.bearer_policy())

    def lazy_tokens(self) -> LazyTokens:
        """This client's token cache, looked up on first use (it may need discovery, i.e.
        the network, which building an HTTP helper should not)."""
        return LazyTokens(self)

    # -- what a connection makes: one builder each -------------------------------------

    def new_session(self) -> requests.Session:
        """A ``requests.Session`` that authenticates to the base URL's origin."""
        session = self.new_plain_session()
        session.auth = self.auth()
        return session

    def rest_client(
        self,
        *,
        retry_args: Mapping[str, Any] | None = None,
        session: requests.Session | None = None,
    ) -> RestClient:
        """A ``RestClient`` over an authenticated session (``session``, else a new one),
        relative to the base URL, retrying as the connection's ``retries`` and ``timeout``
        say (``retry_args``: tenacity arguments that replace ours)."""
        from airflow_provider_backendauth.core.fhir.rest import RestClient

        return RestClient(
            session or self.new_session(),
            self.base_url,
            retry=self.retry,
            timeout=self.settings.timeout,
            retry_args=retry_args,
        )

    def fhir_client(
        self, *, retry_args: Mapping[str, Any] | None = None, **limits: int
    ) -> FhirClient:
        """A ``FhirClient`` (search paging) for the base URL, over an authenticated session;
        ``limits``: ``max_page_bytes``, ``max_page_entries``."""
        from airflow_provider_backendauth.core.fhir.search import FhirClient

        assert self.base_url is not None
        return FhirClient(
            self.new_session(),
            self.base_url,
            retry=self.retry,
            timeout=self.settings.timeout,
            allowed_origins=self.allowed_origins,
            retry_args=retry_args,
            **limits,
        )

    def authorized_sessions(self, *, timeout: float | None = None) -> AuthorizedSessions:
        """``AuthorizedSessions`` (one session per thread: bulk export, downloads) with this
        client's token cache, allowed origins and TLS settings."""
        from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions

        return AuthorizedSessions(
            self.new_plain_session,
            self.lazy_tokens(),
            self.allowed_origins,
            timeout=timeout or self.settings.timeout,
            dpop=self.dpop,
        )

    def async_session(self) -> AbstractAsyncContextManager[aiohttp.ClientSession]:
        """The triggerer's HTTP session for this connection's TLS settings, while in use: the
        event loop's shared session (``aiohttp_driver.shared_session``), whose connections
        every trigger with the same TLS settings reuses. Send with ``aiohttp_driver.send_async``
        and this connection's ``settings.timeout``."""
        from airflow_provider_backendauth.core.http.aiohttp_driver import shared_session

        return shared_session(self.settings.tls_verify)
