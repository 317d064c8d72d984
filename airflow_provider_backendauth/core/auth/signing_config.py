"""The signing configuration of a connection, resolved and checked with no network: the
key, the algorithm, the kid, the assertion lifetime and the certificate header members.

Owns how settings and profile combine into what the assertion is signed with, and every
refusal of a combination a server would reject later with a vaguer message (a key naming an
algorithm the profile does not sign with, a lifetime beyond the profile's limit, a missing
kid or certificate). ``BackendAuthClient`` calls these in its constructor, so a bad
connection fails before any request. Limits: what the server registered (its JWKS, accepted
algorithms) is unknown here; discovery may still narrow the algorithm (``client.py``).
"""

from __future__ import annotations

import base64
from typing import Any

from airflow_provider_backendauth.core.auth.keys import (
    SigningKey,
    check_algorithm,
    compatible_algorithms,
    load_signing_key,
    load_signing_key_file,
)
from airflow_provider_backendauth.core.auth.profiles import Profile
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import ConfigurationError, KeyLoadError


def load_key(s: ClientSettings) -> SigningKey:
    """The connection's signing key: the password field or the 'key_file' extra, not both."""
    if s.private_key and s.private_key_file:
        raise ConfigurationError(
            "Both a private key (password field) and 'key_file' are set; keep one."
        )
    if s.private_key_file:
        return load_signing_key_file(
            s.private_key_file, passphrase=s.private_key_passphrase, kid=s.key_id
        )
    if not s.private_key:
        raise KeyLoadError(
            "No private key: paste the PEM/JWK into the connection's password field or set "
            "the 'key_file' extra."
        )
    return load_signing_key(s.private_key, passphrase=s.private_key_passphrase, kid=s.key_id)


def chosen_algorithm(settings: ClientSettings, profile: Profile, key: SigningKey) -> str | None:
    """The algorithm the connection or the key names, checked: the 'algorithm' extra,
    else the key's own (a JWK ``alg``, keygen's note). A server that registered the key's
    JWKS accepts only the algorithm pinned there, so a key naming an algorithm the
    profile does not sign with, or an extra contradicting the key, is refused now rather
    than by the server ("no applicable key")."""
    named = key.named_alg
    if named:
        try:
            named = check_algorithm(named, key)
        except ConfigurationError as exc:
            raise KeyLoadError(f"The key names algorithm {named!r} but: {exc}") from None
    explicit = settings.algorithm
    if explicit:
        explicit = check_algorithm(explicit, key)
        if named and explicit != named:
            raise ConfigurationError(
                f"The 'algorithm' extra is {explicit} but the key names {named} (its JWK "
                "'alg', or the note keygen wrote above its PEM): a server that registered "
                "the key's JWKS accepts only that. Remove 'algorithm' or make them agree."
            )
        return explicit
    if named and named not in profile.algorithms:
        raise ConfigurationError(
            f"The key names algorithm {named} (its JWK 'alg', or the note keygen wrote "
            f"above its PEM), which profile {profile.name!r} does not sign with "
            f"(allowed: {', '.join(profile.algorithms)}). Use a key made for this "
            "profile ('backendauth keygen --profile "
            f"{profile.name}'), or another profile."
        )
    return named


def default_algorithm(profile: Profile, key: SigningKey) -> str:
    """The profile's first algorithm that works with the key."""
    usable = compatible_algorithms(key, profile.algorithms)
    if not usable:
        raise KeyLoadError(
            f"Profile {profile.name!r} signs with {', '.join(profile.algorithms)}, "
            f"none of which works with the configured {key.describe()}. Use a key of "
            "the right type, or set the 'algorithm' extra."
        )
    return usable[0]


def key_id(settings: ClientSettings, profile: Profile, key: SigningKey) -> str | None:
    """The kid: the 'key_id' extra, the key's own, or (if the profile says so) its thumbprint."""
    kid = settings.key_id or key.kid
    if not kid and profile.kid_from_thumbprint:
        kid = key.thumbprint()
    if not kid and profile.kid_required:
        raise ConfigurationError(
            f"Profile {profile.name!r} requires a key id (kid): set the 'key_id' extra "
            "to the kid registered with the vendor."
        )
    return kid


def assertion_lifetime(settings: ClientSettings, profile: Profile) -> int:
    """The assertion's lifetime in seconds, refused above the profile's limit."""
    lifetime = settings.assertion_lifetime or profile.lifetime
    if lifetime > profile.max_lifetime:
        raise ConfigurationError(
            f"assertion_lifetime {lifetime} s exceeds profile {profile.name!r}'s "
            f"limit of {profile.max_lifetime} s; the server would reject it."
        )
    return lifetime


def certificate_headers(
    settings: ClientSettings, profile: Profile, key: SigningKey
) -> dict[str, Any]:
    """Header members from the key's certificate: the connection's ``certificate_headers``
    or the profile's (Entra ID: ``x5t#S256``). Refused now when there is no certificate."""
    wanted = settings.certificate_headers
    if wanted is None:
        wanted = (profile.certificate_header,) if profile.certificate_header else ()
    if not wanted:
        return {}
    certificate = key.certificate
    if certificate is None:
        raise KeyLoadError(
            f"The assertion needs {', '.join(wanted)} from the key's certificate: put the "
            "certificate PEM after the private key in the password field (or key file)."
        )
    headers: dict[str, Any] = {}
    if "x5t#S256" in wanted:
        headers["x5t_s256"] = key.certificate_thumbprint(sha256=True)
    if "x5t" in wanted:
        headers["x5t"] = key.certificate_thumbprint(sha256=False)
    if "x5c" in wanted:
        from cryptography.hazmat.primitives import serialization

        der = certificate.public_bytes(serialization.Encoding.DER)
        headers["x5c"] = (base64.b64encode(der).decode("ascii"),)  # standard base64
    return headers
