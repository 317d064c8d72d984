"""The ``requests`` sessions the client sends through: TLS settings and User-Agent set, and
the environment's proxy settings read once per origin instead of twice per request.

requests honours ``HTTP(S)_PROXY``/``NO_PROXY`` (``trust_env``) by walking the whole process
environment twice for every request (``getproxies_environment``, once for the proxies and
once for the bypass list). With 70 variables that was about 30% of a streamed GET on
loopback (1.1 ms a request, 0.78 ms without it), and a bulk export or a search makes a
request per file or page. The answer depends only on the URL's scheme and host and on
a handful of variables, so ``ClientSession`` keeps it per origin and per value of those
variables: a variable changed later (a test, a task setting a proxy) is seen on the next
request, as before. Per-request ``proxies=`` and ``trust_env = False`` behave as in requests.
One thing does not: a session's own ``verify`` (the connection's ``ca_bundle`` or
``verify_ssl``) is not replaced by ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``.

Redirects: a ``ClientSession`` never follows one by requests' own rules (they judge origins
with another URL parser than the one that connects, re-send bodies across origins and read
each redirect's body whole). Every session ``plain_session`` makes carries a token-less
``BackendAuth``, so redirects are followed by the one redirect rule
(``core/http/redirects.py``) unless the request brings its own policy.

This module imports no Airflow.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_provider_backendauth.core.http.deadline import with_deadline
from airflow_provider_backendauth.core.http.requests_auth import BackendAuth

# Sent on every request (token, FHIR, bulk; sync and async), so server logs can tell us apart.
USER_AGENT = "airflow-provider-backendauth"

# What requests' environment lookup reads for http(s) URLs: the proxy variables in both
# spellings, REQUEST_METHOD (a CGI process ignores HTTP_PROXY) and the CA bundle variables.
ENVIRONMENT_KEYS = (
    *(
        name
        for base in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
        for name in (base, base.upper())
    ),
    "REQUEST_METHOD",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
)
_CACHE_SIZE = 64  # origins per session; past that the cache starts again


class ClientSession(requests.Session):
    """A ``requests.Session`` whose environment lookup is memoised per origin (see the
    module's docstring); otherwise requests' own."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """None: requests never follows a redirect itself (see the module's docstring)."""
        return None

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> Any:  # requests' settings dict (a TypedDict in its stubs only)
        # The connection's own TLS setting wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE.
        # requests lets those replace a request's verify=None before it looks at the
        # session's, so a connection's ca_bundle (or verify_ssl false) was silently ignored
        # on any worker that sets them. Only the default (True) leaves the environment's
        # bundle in charge, as in requests.
        if verify is None and self.verify is not True:
            verify = self.verify
        if not self.trust_env or proxies or not isinstance(url, str):
            return dict(super().merge_environment_settings(url, proxies, stream, verify, cert))
        parts = urlsplit(url)
        key = (
            parts.scheme,
            parts.netloc,
            stream,
            verify,
            cert,
            self.stream,
            self.verify,
            self.cert,
            tuple(sorted(self.proxies.items())),
            tuple(os.environ.get(name) for name in ENVIRONMENT_KEYS),
        )
        try:
            settings = self._environment.get(key)
        except TypeError:  # an unhashable verify/cert: requests' own path
            return dict(super().merge_environment_settings(url, proxies, stream, verify, cert))
        if settings is None:
            settings = dict(super().merge_environment_settings(url, {}, stream, verify, cert))
            if len(self._environment) >= _CACHE_SIZE:
                self._environment.clear()
            self._environment[key] = settings
        # requests may update what it is given; the cached answer must not change.
        return {**settings, "proxies": dict(settings["proxies"])}


def plain_session(verify: bool | str = True) -> ClientSession:
    """A session with the given TLS verification (a CA bundle path, or a bool) and our
    User-Agent, and no token: redirects follow the one redirect rule (a token-less
    ``BackendAuth``); its ``timeout`` is a total deadline per request
    (``core/http/deadline.py``)."""
    session = with_deadline(ClientSession())
    session.verify = verify
    session.headers["User-Agent"] = USER_AGENT
    session.auth = BackendAuth(None)
    return session
