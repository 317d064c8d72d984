"""The token endpoint: strict RFC 7523 client-assertion grant, verified with jwcrypto.

The client side of this project signs with pyjwt; verifying here with an independent JOSE
library is what makes the end-to-end tests honest. Every rejection carries a precise
``error_description`` (and an ``X-Sandbox-Reason`` header, because some vendors answer
plain text) so a failing test says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from jwcrypto import jwk, jws

from .clients import ClientRegistration, ClientRegistry, certificate_thumbprints
from .dpop import DpopRejected, DpopVerifier
from .httpd import Request, Response
from .responses import dumps, format_seconds, oauth_error, text_response
from .settings import SandboxSettings
from .stats import Stats
from .tokens import JtiCache, TokenStore
from .vendor_rules import ScopeError, VendorRules, grant_scope

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class TokenRequestRejected(Exception):
    """A token request failed; carries the OAuth error code and a precise description."""

    def __init__(self, error: str, description: str, status: int | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        # Set when the client is known before the request is rejected (picks the error style).
        self.registration: ClientRegistration | None = None
        self.label: str | None = None


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _parse_compact(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = assertion.split(".")
    if len(parts) != 3:
        raise TokenRequestRejected(
            "invalid_client",
            f"client_assertion is not a compact JWS (expected 3 dot-separated parts, "
            f"got {len(parts)})",
        )
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
    except (ValueError, binascii.Error):
        raise TokenRequestRejected(
            "invalid_client", "client_assertion header or payload is not base64url JSON"
        ) from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenRequestRejected("invalid_client", "client_assertion parts must be JSON objects")
    return header, claims


def _x5c_thumbprint(header: dict[str, Any]) -> str | None:
    """The SHA-256 thumbprint of the leaf certificate in an ``x5c`` header (RFC 7515 4.1.6:
    standard base64 DER), compared like ``x5t#S256``; a malformed ``x5c`` is refused."""
    chain = header.get("x5c")
    if chain is None:
        return None
    try:
        der = base64.b64decode(chain[0], validate=True)
    except (TypeError, KeyError, IndexError, ValueError, binascii.Error):
        raise TokenRequestRejected(
            "invalid_client", "x5c must be a list of base64 DER certificates"
        ) from None
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _key_fits_alg(key: jwk.JWK, alg: str) -> bool:
    if alg.startswith(("RS", "PS")):
        return bool(key.get("kty") == "RSA")
    return bool(key.get("kty") == "EC" and key.get("crv") == _EC_CURVES.get(alg))


def _numeric_claim(claims: dict[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenRequestRejected("invalid_client", f"assertion is missing the '{name}' claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRequestRejected(
            "invalid_client",
            f"'{name}' must be a NumericDate (seconds since the epoch), got {value!r}",
        )
    if value > 100_000_000_000:
        raise TokenRequestRejected(
            "invalid_client", f"'{name}' looks like milliseconds; it must be in seconds"
        )
    return float(value)


class AuthServer:
    """Handles ``POST /auth/token``."""

    def __init__(
        self,
        clients: ClientRegistry,
        tokens: TokenStore,
        settings: SandboxSettings,
        stats: Stats,
        token_url: Callable[[], str],
        issuer: Callable[[], str],
        dpop: DpopVerifier,
    ) -> None:
        self.dpop = dpop
        self.clients = clients
        self.tokens = tokens
        self.jtis = JtiCache()
        self.settings = settings
        self.stats = stats
        self._token_url = token_url
        self._issuer = issuer

    # --- entry point ---------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        registration: ClientRegistration | None = None
        client_label = "<unknown>"
        try:
            if request.method != "POST":
                raise TokenRequestRejected(
                    "invalid_request", "the token endpoint only accepts POST", 405
                )
            form, registration, client_label = self._read_form(request)
            return self._grant(request, form, registration)
        except TokenRequestRejected as rejected:
            registration = rejected.registration or registration
            client_label = rejected.label or client_label
            self.stats.token_failure(rejected.error, rejected.description)
            return self._error_response(rejected, registration)
        finally:
            self.stats.token_request(client_label)

    # --- request shape -------------------------------------------------------------------

    def _read_form(self, request: Request) -> tuple[dict[str, str], ClientRegistration | None, str]:
        """Parse and sanity-check the form; identify the client as early as possible."""
        body_text = request.body.decode("utf-8", "replace")
        if request.content_type in ("application/json", "application/fhir+json") or (
            body_text.lstrip().startswith("{")
        ):
            registration, label = self._client_from_json(body_text)
            rejected = TokenRequestRejected(
                "invalid_request",
                "the token request was sent as a JSON body; send the parameters as form fields "
                "(Content-Type: application/x-www-form-urlencoded)",
                400,
            )
            rejected.registration, rejected.label = registration, label
            raise rejected
        if not request.body and "grant_type" in request.query:
            raise TokenRequestRejected(
                "invalid_request",
                "token parameters were sent in the URL query; send them as form fields in the "
                "POST body",
                400,
            )
        if request.content_type != "application/x-www-form-urlencoded":
            raise TokenRequestRejected(
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded, got "
                f"'{request.content_type or 'none'}'",
                400,
            )
        raw = request.form()
        repeated = sorted(name for name, values in raw.items() if len(values) > 1)
        if repeated:
            raise TokenRequestRejected(
                "invalid_request", f"parameter(s) sent more than once: {', '.join(repeated)}", 400
            )
        form = {name: values[0] for name, values in raw.items()}
        registration, label = self._client_from_form(form)
        return form, registration, label

    def _client_from_form(self, form: dict[str, str]) -> tuple[ClientRegistration | None, str]:
        candidate = None
        assertion = form.get("client_assertion")
        if assertion:
            try:
                _, claims = _parse_compact(assertion)
                iss = claims.get("iss")
                candidate = iss if isinstance(iss, str) else None
            except TokenRequestRejected:
                candidate = None
        candidate = candidate or form.get("client_id")
        if not candidate:
            return None, "<unknown>"
        return self.clients.get(candidate), candidate

    def _client_from_json(self, body_text: str) -> tuple[ClientRegistration | None, str]:
        try:
            data = json.loads(body_text)
        except ValueError:
            return None, "<unknown>"
        if not isinstance(data, dict):
            return None, "<unknown>"
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        return self._client_from_form(form)

    # --- the grant -----------------------------------------------------------------------

    def _grant(
        self, request: Request, form: dict[str, str], registration: ClientRegistration | None
    ) -> Response:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise TokenRequestRejected("invalid_request", "grant_type is missing", 400)
        if grant_type != "client_credentials":
            raise TokenRequestRejected(
                "unsupported_grant_type",
                f"grant_type must be client_credentials, got '{grant_type}'",
                400,
            )
        if "client_secret" in form:
            raise TokenRequestRejected(
                "invalid_client",
                "client_secret is not accepted; authenticate with a signed client_assertion "
                "(private_key_jwt)",
            )
        assertion_type = form.get("client_assertion_type")
        if assertion_type != JWT_BEARER:
            raise TokenRequestRejected(
                "invalid_request",
                f"client_assertion_type must be {JWT_BEARER}, got '{assertion_type or ''}'",
                400,
            )
        assertion = form.get("client_assertion")
        if not assertion:
            raise TokenRequestRejected("invalid_request", "client_assertion is missing", 400)
        header, claims = _parse_compact(assertion)

        iss = claims.get("iss")
        if not isinstance(iss, str) or not iss:
            raise TokenRequestRejected("invalid_client", "assertion is missing the 'iss' claim")
        if registration is None:
            raise TokenRequestRejected("invalid_client", f"unknown client_id '{iss}'")
        rules = registration.rules
        form_client_id = form.get("client_id")
        if rules.client_id_in_form and not form_client_id:
            raise TokenRequestRejected(
                "invalid_request",
                f"client_id must be sent as a form field ({rules.name} requires it)",
                400,
            )
        if form_client_id is not None and form_client_id != iss:
            raise TokenRequestRejected(
                "invalid_client",
                f"form client_id '{form_client_id}' does not match the assertion iss '{iss}'",
            )

        now = time.time()
        wait = self.clients.allow_token_request(registration, now)
        if wait is not None:
            raise TokenRequestRejected(
                "rate_limited",
                f"more than {registration.token_requests_per_minute} token requests in a "
                f"minute; retry in {math.ceil(wait)} s (cache the access token)",
                429,
            )

        key = self._check_header(header, registration)
        self._verify_signature(assertion, header, key, registration)
        keep_until = self._check_claims(claims, registration, request, now)
        jti = claims["jti"]
        if not self.jtis.use(registration.client_id, jti, keep_until):
            raise TokenRequestRejected(
                "invalid_client", f"jti '{jti}' was already used (replayed assertion)"
            )
        # After the assertion's jti is spent, as strict servers do: a use_dpop_nonce answer
        # must be followed by a freshly signed assertion, not a replay of this one.
        jkt = self._dpop_binding(request, registration)
        try:
            scope = grant_scope(rules, form.get("scope"), registration.scopes)
        except ScopeError as exc:
            raise TokenRequestRejected("invalid_scope", str(exc), 400) from None

        lifetime = self.settings.token_lifetime
        token = self.tokens.issue(registration.client_id, scope, lifetime, jkt=jkt)
        self.stats.incr("tokens_issued")
        if jkt is not None:
            self.stats.incr("dpop_tokens_issued")
        body: dict[str, Any] = {
            "access_token": token.value,
            "token_type": "DPoP" if jkt is not None else rules.token_type,
            "expires_in": str(lifetime) if rules.expires_in_as_string else lifetime,
        }
        if scope:
            body["scope"] = scope
        response = Response(200, dumps(body), "application/json")
        response.header("Cache-Control", "no-store").header("Pragma", "no-cache")
        return response

    def _dpop_binding(self, request: Request, registration: ClientRegistration) -> str | None:
        """The thumbprint the token will be bound to (cnf.jkt), or None for a Bearer token."""
        if request.header("DPoP") is None:
            if registration.dpop == "require":
                raise TokenRequestRejected(
                    "invalid_dpop_proof",
                    f"DPoP proof JWT not provided: client '{registration.client_id}' must "
                    "request DPoP-bound tokens (RFC 9449)",
                    400,
                )
            return None
        try:
            return self.dpop.verify(request)
        except DpopRejected as rejected:
            raise TokenRequestRejected(rejected.error, rejected.description, 400) from None

    def _check_header(
        self, header: dict[str, Any], registration: ClientRegistration
    ) -> list[jwk.JWK]:
        """Check the JOSE header; return the candidate verification keys."""
        rules = registration.rules
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise TokenRequestRejected("invalid_client", "assertion header is missing 'alg'")
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise TokenRequestRejected(
                "invalid_client", f"alg '{alg}' is never accepted; sign with an asymmetric key"
            )
        if alg not in registration.algorithms:
            raise TokenRequestRejected(
                "invalid_client",
                f"alg '{alg}' is not allowed for this client "
                f"(allowed: {', '.join(registration.algorithms)})",
            )
        typ = header.get("typ")
        if typ is None and rules.typ_required:
            raise TokenRequestRejected(
                "invalid_client",
                f"assertion header is missing 'typ' (expected {' or '.join(rules.typ_values)})",
            )
        if typ is not None and str(typ).lower() not in {t.lower() for t in rules.typ_values}:
            raise TokenRequestRejected(
                "invalid_client",
                f"assertion header typ '{typ}' is not accepted "
                f"(expected {' or '.join(rules.typ_values)})",
            )
        if "crit" in header:
            raise TokenRequestRejected("invalid_client", "the 'crit' header is not supported")

        jku = header.get("jku")
        if jku is not None:
            if not rules.jku_allowed:
                raise TokenRequestRejected(
                    "invalid_client", f"the jku header is not supported by {rules.name}"
                )
            if registration.jku is None:
                raise TokenRequestRejected(
                    "invalid_client", "jku was sent but no JWKS URL is registered for this client"
                )
            if jku != registration.jku:
                raise TokenRequestRejected(
                    "invalid_client",
                    f"jku '{jku}' does not match the registered JWKS URL '{registration.jku}'",
                )

        candidates = list(registration.keys)
        kid = header.get("kid")
        if kid is None and rules.kid_required:
            raise TokenRequestRejected("invalid_client", "assertion header is missing 'kid'")
        if kid is not None:
            by_kid = [k for k in candidates if k.get("kid") == kid]
            if not by_kid and (rules.kid_required or all(k.get("kid") for k in candidates)):
                raise TokenRequestRejected("invalid_client", f"no registered key has kid '{kid}'")
            candidates = by_kid or candidates

        thumbprint = header.get("x5t#S256") or header.get("x5t") or _x5c_thumbprint(header)
        if rules.x5t_required and not thumbprint:
            raise TokenRequestRejected(
                "invalid_client",
                "assertion header needs 'x5t#S256' (or legacy 'x5t'): the certificate thumbprint",
            )
        if thumbprint:
            known = [k for k in candidates if certificate_thumbprints(k)]
            if known:
                matching = [k for k in known if thumbprint in certificate_thumbprints(k)]
                if not matching:
                    raise TokenRequestRejected(
                        "invalid_client",
                        "the x5t#S256/x5t thumbprint matches no registered certificate",
                    )
                candidates = matching

        fitting = [k for k in candidates if _key_fits_alg(k, alg)]
        if not fitting:
            raise TokenRequestRejected(
                "invalid_client",
                f"alg '{alg}' does not fit the registered key type "
                f"({', '.join(sorted({str(k.get('kty')) for k in candidates}))})",
            )
        # A registered JWK that names its algorithm is used with that one only (RFC 7517
        # section 4.4), as strict servers do ("no applicable key found").
        pinned = [k for k in fitting if k.get("alg") in (None, alg)]
        if not pinned:
            named = ", ".join(sorted({str(k.get("alg")) for k in fitting}))
            raise TokenRequestRejected(
                "invalid_client",
                f"no applicable key: the registered key(s) name alg {named}, the assertion "
                f"is signed with '{alg}'",
            )
        return pinned

    def _verify_signature(
        self,
        assertion: str,
        header: dict[str, Any],
        keys: list[jwk.JWK],
        registration: ClientRegistration,
    ) -> None:
        alg = str(header["alg"])
        for key in keys:
            token = jws.JWS()
            token.allowed_algs = [alg]
            try:
                token.deserialize(assertion)
                token.verify(key, alg=alg)
                return
            except Exception:  # noqa: S112 - any failure means "try the next key"
                continue
        raise TokenRequestRejected(
            "invalid_client",
            "signature verification failed: the assertion was not signed by a key registered "
            f"for '{registration.client_id}' (wrong private key?)",
        )

    def _check_claims(
        self,
        claims: dict[str, Any],
        registration: ClientRegistration,
        request: Request,
        now: float,
    ) -> float:
        """Validate the claims; return until when the jti must be remembered."""
        rules: VendorRules = registration.rules
        skew = self.settings.clock_skew_seconds
        client_id = registration.client_id
        sub = claims.get("sub")
        if sub is None:
            raise TokenRequestRejected("invalid_client", "assertion is missing the 'sub' claim")
        if claims.get("iss") != client_id or sub != client_id:
            raise TokenRequestRejected(
                "invalid_client",
                f"iss and sub must both equal the client_id '{client_id}' "
                f"(iss={claims.get('iss')!r}, sub={sub!r})",
            )

        accepted = self._accepted_audiences(request, rules)
        aud = claims.get("aud")
        if aud is None:
            raise TokenRequestRejected("invalid_client", "assertion is missing the 'aud' claim")
        audiences = aud if isinstance(aud, list) else [aud]
        if not any(a in accepted for a in audiences):
            raise TokenRequestRejected(
                "invalid_client",
                f"aud {aud!r} does not match the token endpoint "
                f"({' or '.join(repr(a) for a in accepted[:2])})",
            )

        exp = _numeric_claim(claims, "exp", required=True)
        assert exp is not None
        iat = _numeric_claim(claims, "iat", required=rules.require_iat)
        nbf = _numeric_claim(claims, "nbf", required=rules.require_nbf)
        if exp < now - skew:
            raise TokenRequestRejected(
                "invalid_client", f"assertion expired {int(now - exp)} s ago (exp is in the past)"
            )
        if rules.max_exp_seconds is not None and exp - now > (
            rules.max_exp_seconds + rules.exp_cap_leeway
        ):
            raise TokenRequestRejected(
                "invalid_client",
                f"exp is {int(exp - now)} s in the future; {rules.name} allows at most "
                f"{rules.max_exp_seconds} s",
            )
        if iat is not None:
            if iat > now + skew:
                raise TokenRequestRejected(
                    "invalid_client", f"iat is {int(iat - now)} s in the future (clock skew?)"
                )
            if rules.max_lifetime_from_iat is not None and exp - iat > (
                rules.max_lifetime_from_iat + rules.lifetime_leeway
            ):
                raise TokenRequestRejected(
                    "invalid_client",
                    f"exp - iat is {int(exp - iat)} s; {rules.name} allows at most "
                    f"{rules.max_lifetime_from_iat} s",
                )
        if nbf is not None and nbf > now + skew:
            raise TokenRequestRejected(
                "invalid_client", f"nbf is {int(nbf - now)} s in the future (clock skew?)"
            )
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise TokenRequestRejected(
                "invalid_client", "assertion is missing the 'jti' claim (a unique string)"
            )
        return max(exp, now) + skew

    def _accepted_audiences(self, request: Request, rules: VendorRules) -> list[str]:
        accepted = [self._token_url()]
        host = request.header("Host")
        if host:
            accepted.append(f"http://{host}/auth/token")
        if rules.aud_may_be_issuer:
            accepted.append(self._issuer())
            if host:
                accepted.append(f"http://{host}/auth")
        return accepted

    # --- errors --------------------------------------------------------------------------

    def _error_response(
        self, rejected: TokenRequestRejected, registration: ClientRegistration | None
    ) -> Response:
        rules = registration.rules if registration is not None else None
        status = rejected.status
        if status is None:
            status = rules.invalid_client_status if rules is not None else 401
        if rules is not None and rules.plain_text_errors and status != 429:
            # Koppeltaal's real server answers with plain text, not OAuth JSON.
            if status == 400:
                response = text_response(400, "Bad Request")
            else:
                response = text_response(401, "Access Denied")
        else:
            response = oauth_error(status, rejected.error, rejected.description)
        if status == 429:
            response.header("Retry-After", format_seconds(60))
        if status == 405:
            response.header("Allow", "POST")
        reason = rejected.description.encode("ascii", "replace").decode("ascii")
        response.header("X-Sandbox-Reason", reason)
        return response
