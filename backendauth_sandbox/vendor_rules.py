"""What each vendor's token endpoint insists on, as data.

Derived from the vendors' own documentation (each guide in docs/vendors/ names it). Strict
exactly where the vendor is strict (MyDataHelps: RS256 only and scope ``api``; NHS England:
RS512, ``typ`` and ``kid`` required, 310 s cap; HelseID: ``client_id`` in the form,
``iat``/``nbf``, 60 s lifetime), lenient where the vendor documents nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGS = ("ES256", "ES384", "ES512")
ASYMMETRIC_ALGS = RSA_ALGS + EC_ALGS


@dataclass(frozen=True)
class VendorRules:
    """Token-endpoint rules of one vendor mode.

    ``scope_mode`` is one of: ``smart`` (SMART system scopes, required), ``smart_v1`` (SMART
    v1 only: v2 scopes are refused like Oracle Health/Cerner does), ``exact`` (scope must be
    exactly ``required_scope``), ``present`` (the parameter must be sent but may be empty; the
    server decides), ``nhn`` (``nhn:`` scopes; none asked grants all the client may have, as
    IdentityServer does), ``entra`` (one ``<resource>/.default``),
    ``required`` (any non-empty scope), ``optional``.
    """

    name: str
    algorithms: tuple[str, ...]
    kid_required: bool
    typ_required: bool = True
    typ_values: tuple[str, ...] = ("JWT",)
    jku_allowed: bool = True
    x5t_required: bool = False
    aud_may_be_issuer: bool = False
    max_exp_seconds: int | None = 300
    exp_cap_leeway: int = 10
    max_lifetime_from_iat: int | None = None
    lifetime_leeway: int = 5
    require_iat: bool = False
    require_nbf: bool = False
    client_id_in_form: bool = False
    scope_mode: str = "optional"
    required_scope: str | None = None
    server_scope: str = "system/*.cruds"
    plain_text_errors: bool = False
    invalid_client_status: int = 401
    token_type: str = "Bearer"
    expires_in_as_string: bool = False
    token_requests_per_minute: int | None = None


VENDORS: dict[str, VendorRules] = {
    rules.name: rules
    for rules in (
        VendorRules(
            "smart",
            ("RS384", "ES384"),
            kid_required=True,
            scope_mode="smart",
            token_type="bearer",
        ),
        VendorRules(
            "mydatahelps",
            ("RS256",),
            kid_required=False,
            max_exp_seconds=None,
            scope_mode="exact",
            required_scope="api",
            invalid_client_status=400,
            jku_allowed=False,
        ),
        VendorRules(
            "koppeltaal",
            ("RS512",),
            kid_required=False,
            typ_required=False,
            scope_mode="present",
            plain_text_errors=True,
        ),
        VendorRules(
            "helseid",
            ("RS512", *(a for a in ASYMMETRIC_ALGS if a != "RS512")),
            kid_required=True,
            typ_values=("client-authentication+jwt", "JWT"),
            aud_may_be_issuer=True,
            max_exp_seconds=60,
            max_lifetime_from_iat=60,
            require_iat=True,
            require_nbf=True,
            client_id_in_form=True,
            scope_mode="nhn",
            server_scope="nhn:sandbox/read",
            invalid_client_status=400,
            jku_allowed=False,
        ),
        VendorRules(
            "redox",
            ("RS384", "ES384"),
            kid_required=True,
            require_iat=True,
            max_lifetime_from_iat=300,
            scope_mode="optional",
        ),
        VendorRules(
            "nhs_england",
            ("RS512",),
            kid_required=True,
            jku_allowed=False,
            scope_mode="optional",
            expires_in_as_string=True,
            invalid_client_status=401,
        ),
        VendorRules(
            "entra_id",
            ("PS256", "RS256"),
            kid_required=False,
            typ_required=False,
            x5t_required=True,
            max_exp_seconds=None,
            client_id_in_form=True,
            scope_mode="entra",
            jku_allowed=False,
        ),
        VendorRules(
            "medplum",
            ("ES384", "ES256", "ES512", "RS256", "RS384", "RS512"),
            kid_required=False,
            typ_required=False,
            scope_mode="optional",
        ),
        VendorRules(
            "epic",
            ("RS384", "ES384"),
            kid_required=True,
            scope_mode="optional",
            token_type="bearer",
        ),
        VendorRules(
            "oracle_health",
            ("RS384", "ES384"),
            kid_required=True,
            typ_required=False,
            scope_mode="smart_v1",
        ),
        VendorRules(
            "athenahealth",
            ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512"),
            kid_required=False,
            typ_required=False,
            scope_mode="required",
            token_requests_per_minute=50,
        ),
        VendorRules(
            "cms_dpc",
            ("RS384",),
            kid_required=True,
            typ_required=False,
            scope_mode="exact",
            required_scope="system/*.*",
        ),
        VendorRules(
            "any",
            ASYMMETRIC_ALGS,
            kid_required=False,
            typ_required=False,
            typ_values=("JWT", "client-authentication+jwt"),
            aud_may_be_issuer=True,
            scope_mode="optional",
            token_type="bearer",
        ),
    )
}


# --- scopes -----------------------------------------------------------------------------

_SMART_SCOPE = re.compile(
    r"^(?P<context>system|user|patient)/(?P<type>\*|[A-Z][A-Za-z]*)\."
    r"(?P<perm>read|write|\*|c?r?u?d?s?)(?P<query>\?.*)?$"
)
_V1_PERMS = {"read": "rs", "write": "cud", "*": "cruds"}


class ScopeError(ValueError):
    """The requested scope is not allowed (answered as ``invalid_scope``)."""


def parse_smart_scope(scope: str) -> tuple[str, str, str] | None:
    """``system/Patient.rs`` -> (context, type, permission letters), or None if not SMART."""
    match = _SMART_SCOPE.match(scope)
    if match is None or not match["perm"]:
        return None
    perm = match["perm"]
    return match["context"], match["type"], _V1_PERMS.get(perm, perm)


def smart_scope_covers(granted: str, requested: str) -> bool:
    if granted == requested:
        return True
    g, r = parse_smart_scope(granted), parse_smart_scope(requested)
    if g is None or r is None or g[0] != r[0]:
        return False
    return g[1] in ("*", r[1]) and set(r[2]) <= set(g[2])


def grant_scope(
    rules: VendorRules, requested: str | None, registered: tuple[str, ...] | None
) -> str:
    """Return the scope string to grant, or raise ScopeError with a precise reason."""
    mode = rules.scope_mode
    if mode == "present":
        if requested is None:
            raise ScopeError("the scope parameter must be present (it may be empty)")
        return " ".join(registered) if registered else rules.server_scope
    wanted = (requested or "").split()
    if not wanted:
        if mode == "optional":
            return " ".join(registered) if registered else ""
        if mode == "nhn":
            # IdentityServer (HelseID) grants every scope the client is allowed when none is asked.
            return " ".join(registered) if registered else rules.server_scope
        raise ScopeError("the scope parameter is required")
    if mode == "exact" and wanted != [rules.required_scope]:
        raise ScopeError(f"scope must be exactly '{rules.required_scope}'")
    if mode in ("smart", "smart_v1"):
        for scope in wanted:
            parsed = parse_smart_scope(scope)
            if parsed is None:
                raise ScopeError(f"'{scope}' is not a SMART scope (e.g. system/*.rs)")
            if parsed[0] != "system":
                raise ScopeError(f"'{scope}': backend services may only ask for system/ scopes")
            perm = scope.split(".", 1)[1].split("?", 1)[0]
            if mode == "smart_v1" and perm not in _V1_PERMS:
                raise ScopeError(
                    f"'{scope}': this server only supports SMART v1 scopes "
                    "(e.g. system/Patient.read)"
                )
    if mode == "nhn" and registered is None:
        for scope in wanted:
            if not scope.startswith("nhn:"):
                raise ScopeError(f"'{scope}' is not an nhn: scope")
    if mode == "entra" and (len(wanted) != 1 or not wanted[0].endswith("/.default")):
        raise ScopeError("scope must be a single '<resource>/.default' scope")
    if registered is not None:
        for scope in wanted:
            if not any(smart_scope_covers(allowed, scope) for allowed in registered):
                raise ScopeError(f"scope '{scope}' is not allowed for this client")
    return " ".join(wanted)


def scope_permits_read(granted: str, resource_type: str) -> bool:
    """Does a granted scope string allow reading/searching ``resource_type``?

    Tokens whose scope holds no SMART scope at all (``api``, ``nhn:...``, empty) come from
    vendors whose scopes say nothing about resource types: they may read everything.
    """
    parsed = [p for p in (parse_smart_scope(s) for s in granted.split()) if p is not None]
    if not parsed:
        return True
    return any(t in ("*", resource_type) and set(perm) & {"r", "s"} for _, t, perm in parsed)
