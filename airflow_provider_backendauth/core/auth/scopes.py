"""SMART scope strings: the v1 spelling of a v2 scope, and which requested scopes a grant
does not cover.

One owner for how this client reads SMART scopes (App Launch 2.0's v1 ~ v2 equivalence), so
the token client's fallback to v1 and the warnings on a narrower grant (the client, the
hook's Test button) agree. Pure string work: no network, no settings. Limits: a
query-restricted v2 scope (``?``) is compared as text, not parsed.
"""

from __future__ import annotations


def smart_v1_scope(scope: str | None) -> str | None:
    """The SMART v1 spelling of a v2 scope string (``system/*.rs`` -> ``system/*.read``), or
    None when nothing in it is v2."""
    if not scope:
        return None
    changed = False
    result = []
    for item in scope.split():
        context, slash, rest = item.partition("/")
        resource, dot, permissions = rest.partition(".")
        if slash and dot and permissions and set(permissions) <= set("cruds") and "?" not in item:
            if set(permissions) <= set("rs"):
                v1 = "read"
            elif set(permissions) <= set("cud"):
                v1 = "write"
            else:
                v1 = "*"
            item = f"{context}/{resource}.{v1}"
            changed = True
        result.append(item)
    return " ".join(result) if changed else None


# SMART v1 permission words as v2 letters: system/*.read is system/*.rs (App Launch 2.0).
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}


def _smart_scope(item: str) -> tuple[str, str, frozenset[str]] | None:
    """(context, resource, permission letters) of a SMART scope in v1 or v2 spelling, or
    None for anything else (a query-restricted v2 scope included: compared as text)."""
    context, slash, rest = item.partition("/")
    resource, dot, permissions = rest.partition(".")
    if not (slash and dot and permissions) or "?" in item:
        return None
    letters = _V1_PERMISSIONS.get(permissions, permissions)
    if not set(letters) <= set("cruds"):
        return None
    return context, resource, frozenset(letters)


def missing_scopes(requested: str | None, granted: str | None) -> list[str]:
    """The requested scopes the granted ones do not cover, SMART v1 and v2 spellings taken
    as equal (``system/*.rs`` ~ ``system/*.read``) and a wildcard resource covering each
    type. Nothing is missing when the server did not say what it granted (RFC 6749 5.1:
    then it granted what was asked)."""
    if not requested or granted is None:
        return []
    have = granted.split()
    parsed = [p for p in map(_smart_scope, have) if p is not None]
    missing = []
    for item in requested.split():
        if item in have:
            continue
        wanted = _smart_scope(item)
        if wanted is not None and any(
            g[0] == wanted[0] and g[1] in ("*", wanted[1]) and wanted[2] <= g[2] for g in parsed
        ):
            continue
        missing.append(item)
    return missing
