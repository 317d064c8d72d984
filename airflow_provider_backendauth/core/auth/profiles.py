"""Provider profiles: what each vendor's token endpoint expects, as data.

A profile is a preset, never a subclass: every value can be overridden from the connection.
Values come from the vendors' documentation (``Profile.documentation``); where a
vendor's behaviour is unconfirmed the preset is the SMART default and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AudienceRule = Literal["token_url", "issuer"]
TokenReuse = Literal["cache", "per_request"]
CertificateHeader = Literal["x5t#S256", "x5t"]

SMART_ALGORITHMS = ("RS384", "ES384")


@dataclass(frozen=True)
class Profile:
    """A vendor preset for the client-assertion grant.

    Attributes:
        name: registry key, as stored in the connection's ``profile`` extra.
        label: shown in the connection form.
        token_url: fixed token endpoint, or None to discover it from the base URL.
        algorithms: allowed signing algorithms, preferred first.
        typ: the JWT header ``typ``; None leaves it out.
        kid_required: refuse to sign without a key id (the vendor matches keys by kid).
        kid_from_thumbprint: when no kid is configured, use the RFC 7638 thumbprint.
        audience: ``token_url`` (the URL posted to) or ``issuer`` (``issuer_url``).
        max_lifetime: the vendor's cap on ``exp - now`` in seconds.
        lifetime: the default assertion lifetime (never above ``max_lifetime``).
        scope: the default scope; "" means "send an empty scope", None means "omit it".
        client_id_in_form: also post ``client_id`` in the form.
        include_iat / include_nbf: send those claims.
        token_reuse: ``cache`` until expiry, or ``per_request`` (a new token per API call).
        certificate_header: send ``x5t#S256``/``x5t`` from the key's certificate.
        discovery_path: where to discover the token endpoint relative to the base URL; None
            when the vendor publishes no discovery document (the token URL must be set).
        probe_path: what a connection test GETs (relative to the base URL) to see the API
            accept the token; None when the API has nothing cheap and harmless to read.
        notes: troubleshooting lines shown when the vendor rejects a token request.
        register_key: what to do with a new public key for this vendor (``backendauth
            keygen`` prints these; the guides in docs/vendors/ expand on them).
        connection_extras: extras a new connection needs besides the key, as (name,
            placeholder) pairs (``backendauth keygen`` prints them in its connection).
        documentation: the vendor's own developer documentation, where a user reads on.
        dpop: whether tokens are DPoP-bound (RFC 9449): ``off``, ``on``, or ``auto`` (send
            proofs once the token endpoint asks for them).
    """

    name: str
    label: str
    token_url: str | None = None
    algorithms: tuple[str, ...] = SMART_ALGORITHMS
    typ: str | None = "JWT"
    kid_required: bool = True
    kid_from_thumbprint: bool = True
    audience: AudienceRule = "token_url"
    issuer_url: str | None = None
    max_lifetime: int = 300
    lifetime: int = 300
    scope: str | None = None
    client_id_in_form: bool = False
    include_iat: bool = True
    include_nbf: bool = False
    token_reuse: TokenReuse = "cache"
    certificate_header: CertificateHeader | None = None
    discovery_path: str | None = ".well-known/smart-configuration"
    probe_path: str | None = "metadata"  # FHIR's CapabilityStatement
    notes: tuple[str, ...] = field(default_factory=tuple)
    register_key: tuple[str, ...] = field(default_factory=tuple)
    connection_extras: tuple[tuple[str, str], ...] = ()
    documentation: str | None = None
    dpop: Literal["off", "on", "auto"] = "off"


_SMART_DOCUMENTATION = "https://hl7.org/fhir/smart-app-launch/backend-services.html"
_SMART_REGISTER = (
    "register jwks.json with the server as the client's public key set (or host it at an "
    "HTTPS URL and register that URL; then set the 'jku' extra to it)",
    "use the client id the server assigns as the connection's Client ID (login)",
)

_HELSEID_ALGORITHMS = (
    "RS512",
    "RS384",
    "RS256",
    "PS512",
    "PS384",
    "PS256",
    "ES512",
    "ES384",
    "ES256",
)
_HELSEID_REGISTER = (
    "in HelseID Selvbetjening, create the client configuration (Ta i bruk HelseID -> Ny "
    "klientkonfigurasjon) and upload the public JWK from jwks.json instead of having a key "
    "issued",
    "use the clientId Selvbetjening shows as the connection's Client ID (login)",
)
_HELSEID_NOTES = (
    "the test environment is https://helseid-sts.test.nhn.no/connect/token: set 'auth_url' to it",
)


_PROFILES: tuple[Profile, ...] = (
    Profile(
        name="smart",
        label="SMART Backend Services v2 (discovers the token URL)",
        scope="system/*.rs",
        register_key=_SMART_REGISTER,
        documentation=_SMART_DOCUMENTATION,
    ),
    Profile(
        name="mydatahelps",
        label="MyDataHelps (CareEvolution)",
        token_url="https://mydatahelps.org/identityserver/connect/token",
        algorithms=("RS256",),
        kid_required=False,
        kid_from_thumbprint=False,
        lifetime=200,
        scope="api",
        probe_path=None,  # a REST API, no FHIR CapabilityStatement
        notes=(
            "the client id is the full service account name, e.g. MyDataHelps.1234.test",
            "the private key must match the public key registered for the service account",
            "only RS256 is supported",
        ),
        register_key=(
            "in MyDataHelps Designer, open the project's service accounts and add one with the "
            "contents of public_key.pem",
            "use the full service account name (e.g. MyDataHelps.1234.test) as the Client ID",
        ),
        documentation="https://developer.mydatahelps.org",
    ),
    Profile(
        name="koppeltaal",
        label="Koppeltaal 2.0",
        token_url="https://auth-service.koppeltaal.headease.nl/oauth2/token",
        algorithms=("RS512", "RS384", "ES384"),
        kid_required=False,
        scope="",
        notes=(
            "Koppeltaal answers failures with a plain-text '401 Access Denied'",
            "keys registered as PEM must sign with RS512",
        ),
        register_key=(
            "when joining the Koppeltaal domain, register public_key.pem (sign with RS512) or "
            "jwks.json",
            "use the client_id you receive when joining the domain as the Client ID",
        ),
        documentation="https://devguide.koppeltaal.nl",
    ),
    Profile(
        name="helseid",
        label="HelseID (Norsk helsenett)",
        token_url="https://helseid-sts.nhn.no/connect/token",
        issuer_url="https://helseid-sts.nhn.no",
        algorithms=_HELSEID_ALGORITHMS,
        typ="client-authentication+jwt",
        max_lifetime=60,
        lifetime=60,
        client_id_in_form=True,
        include_nbf=True,
        discovery_path=".well-known/openid-configuration",
        notes=(
            *_HELSEID_NOTES,
            "an API that accepts each token once (the CPPA v1 API) needs profile "
            "'helseid_cppa' or 'reuse_policy' set to 'per_request'",
        ),
        register_key=_HELSEID_REGISTER,
        documentation="https://utviklerportal.nhn.no",
        # HelseID issues DPoP-bound tokens to clients registered for them, and NHN's APIs
        # behind it increasingly require them: follow the token endpoint's lead.
        dpop="auto",
    ),
    # HelseID's CPPA v1 API accepts each access token for one request only ("a new token
    # must be obtained for each API call"): caching would cost a 401 and a second token
    # request on every call after the first, so this variant asks for a token per request.
    Profile(
        name="helseid_cppa",
        label="HelseID for the NHN CPPA API (one token per request)",
        token_url="https://helseid-sts.nhn.no/connect/token",
        issuer_url="https://helseid-sts.nhn.no",
        algorithms=_HELSEID_ALGORITHMS,
        typ="client-authentication+jwt",
        max_lifetime=60,
        lifetime=60,
        scope="nhn:cppa/access",
        client_id_in_form=True,
        include_nbf=True,
        token_reuse="per_request",
        discovery_path=".well-known/openid-configuration",
        notes=(
            *_HELSEID_NOTES,
            "the client configuration must consume the service 'CPPA REST API Public'",
        ),
        register_key=(
            *_HELSEID_REGISTER,
            "add 'CPPA REST API Public' to the client system's supported services",
        ),
        documentation="https://utviklerportal.nhn.no",
        # HelseID issues DPoP-bound tokens to clients registered for them, and NHN's APIs
        # behind it increasingly require them: follow the token endpoint's lead.
        dpop="auto",
    ),
    Profile(
        name="redox",
        label="Redox (FHIR and Platform API)",
        token_url="https://api.redoxengine.com/v2/auth/token",
        notes=(
            "Redox matches the key by kid: the kid defaults to the key's RFC 7638 thumbprint; "
            "set 'key_id' if you registered another",
        ),
        register_key=(
            "in the Redox dashboard, add a public key for the API key (paste the JWK from "
            "jwks.json, or give a JWKS URL where you host jwks.json)",
            "the kid in jwks.json is what Redox matches; use the dashboard's client id as the "
            "Client ID",
        ),
        documentation="https://docs.redoxengine.com",
    ),
    Profile(
        name="nhs_england",
        label="NHS England APIs (signed JWT)",
        token_url="https://api.service.nhs.uk/oauth2/token",
        algorithms=("RS512",),
        notes=(
            "the client id is the application's API key",
            "the integration environment is https://int.api.service.nhs.uk/oauth2/token",
            "the kid must be the one published in your JWKS for this application",
        ),
        register_key=(
            "in the NHS England developer portal, register jwks.json (or its hosted URL) as "
            "the application's public key set",
            "use the application's API key as the Client ID and the kid from jwks.json as 'key_id'",
        ),
        documentation="https://digital.nhs.uk/developer",
    ),
    Profile(
        name="epic",
        label="Epic (Backend Services)",
        token_url=None,
        algorithms=("RS384", "ES384"),
        scope="system/*.read",
        notes=("Epic expects a hosted JWKS URL: set 'jku' to it if registered that way",),
        register_key=(
            "host jwks.json at an HTTPS URL and register that JWKS URL on the Epic app "
            "(Backend Systems); set the 'jku' extra to the same URL",
            "use the app's client id as the Client ID",
        ),
        connection_extras=(("jku", "<the HTTPS URL where you host jwks.json>"),),
        documentation="https://fhir.epic.com/Documentation?docId=oauth2&section=BackendOAuth2Guide",
    ),
    Profile(
        name="oracle_health",
        label="Oracle Health (Cerner) Backend Services",
        algorithms=("RS384", "ES384"),
        scope="system/*.read",
        register_key=_SMART_REGISTER,
        documentation=_SMART_DOCUMENTATION,
    ),
    Profile(
        name="entra_id",
        label="Microsoft Entra ID (certificate credentials)",
        token_url=None,
        algorithms=("PS256", "RS256"),
        kid_required=False,
        kid_from_thumbprint=False,
        lifetime=300,
        max_lifetime=600,
        client_id_in_form=True,
        certificate_header="x5t#S256",
        notes=(
            "set 'auth_url' to https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token",
            "set 'scope' to <resource>/.default, e.g. the FHIR service URL + '/.default'",
            "the password field must hold the private key followed by its certificate PEM",
        ),
        register_key=(
            "in the Entra admin center, App registrations -> your app -> Certificates & "
            "secrets -> Certificates -> Upload certificate.pem",
            "the private key file written by keygen already ends with the certificate: use it "
            "as the key; the x5t#S256 printed above must match the thumbprint Entra derives",
            "use the application (client) id as the Client ID",
        ),
        discovery_path=None,
        connection_extras=(
            ("auth_url", "https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token"),
            ("scope", "<the FHIR service URL>/.default"),
        ),
        documentation="https://learn.microsoft.com/entra/identity-platform/certificate-credentials",
    ),
    Profile(
        name="medplum",
        label="Medplum",
        token_url="https://api.medplum.com/oauth2/token",
        algorithms=("ES384", "ES256", "ES512", "RS256", "RS384", "RS512"),
        kid_required=False,
        register_key=(
            "in Medplum, open the client application and set its JWKS URI to where you host "
            "jwks.json",
            "use the client application's id as the Client ID",
        ),
        documentation="https://www.medplum.com/docs/auth/client-assertion",
    ),
    Profile(
        name="athenahealth",
        label="athenahealth (unconfirmed details)",
        token_url="https://api.platform.athenahealth.com/oauth2/v1/token",
        algorithms=("RS384", "ES384", "RS256"),
        kid_required=False,
        notes=("athenahealth rate-limits token requests: keep 'reuse_policy' at 'cache'",),
        register_key=(
            "register the public key with your athenahealth app (details unconfirmed: check "
            "athenahealth's developer portal for JWKS vs PEM)",
        ),
        documentation="https://docs.athenahealth.com",
    ),
    Profile(
        name="cms_dpc",
        label="CMS Data at the Point of Care (DPC)",
        token_url="https://sandbox.dpc.cms.gov/api/v1/Token/auth",
        algorithms=("RS384",),
        kid_from_thumbprint=False,
        scope="system/*.*",
        notes=("the kid must be the public key id DPC returned when the key was registered",),
        register_key=(
            "upload public_key.pem to DPC and note the public key id it returns",
            "set 'key_id' to that id; use DPC's client token id as the Client ID",
        ),
        documentation="https://dpc.cms.gov",
    ),
    Profile(
        name="custom",
        label="Custom (everything from the connection)",
        algorithms=(
            "RS384",
            "ES384",
            "RS256",
            "RS512",
            "PS256",
            "PS384",
            "PS512",
            "ES256",
            "ES512",
        ),
        kid_required=False,
        max_lifetime=3600,
        register_key=(
            "register jwks.json (or public_key.pem) with the server, in the form it accepts",
        ),
        documentation="https://www.rfc-editor.org/rfc/rfc7523",
    ),
)

PROFILES: dict[str, Profile] = {p.name: p for p in _PROFILES}
DEFAULT_PROFILE = "smart"


def get_profile(name: str | None) -> Profile:
    """Look up a profile by name (case-insensitive; ``-`` and ``_`` alike)."""
    from airflow_provider_backendauth.core.errors import ConfigurationError

    key = (name or DEFAULT_PROFILE).strip().lower().replace("-", "_")
    try:
        return PROFILES[key]
    except KeyError:
        raise ConfigurationError(
            f"Unknown provider profile {name!r}; choose one of {', '.join(PROFILES)}."
        ) from None
