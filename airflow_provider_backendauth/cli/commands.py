"""What each ``backendauth`` command does: read inputs, call ``core`` (or the hook), print.

Key handling is ``core.auth.keys`` / ``core.auth.keygen``; the connection check is the
hook's ``test_connection``; the assertion shown by ``inspect`` is the one the token request
would carry. Nothing here prints a private key, a signature or (without ``--show-token``) an
access token.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from airflow_provider_backendauth.cli.main import CommandError, UsageError

_JWT = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
# The connection id used for --conn-json/flags: a fresh id nobody configures by hand.
_ADHOC_CONN_ID = "backendauth_cli_adhoc"

_QUIET_AIRFLOW_LOGGERS = (
    "airflow.sdk._shared.secrets_masker.secrets_masker",
    "airflow.sdk.execution_time.secrets_masker",
    "airflow._shared.secrets_masker.secrets_masker",
    "airflow.models.crypto",
    "airflow.sdk.crypto",
)

KEY_FILE = "private_key.pem"
PUBLIC_FILE = "public_key.pem"
JWKS_FILE = "jwks.json"
CERT_FILE = "certificate.pem"


def _out(text: str = "") -> None:
    print(text, flush=True)


# -- keygen -------------------------------------------------------------------------------


def keygen(args: argparse.Namespace) -> int:
    from airflow_provider_backendauth.core.auth.keygen import generate_key
    from airflow_provider_backendauth.core.auth.profiles import get_profile

    profile = get_profile(args.profile)
    passphrase = _read_passphrase(args.passphrase_file)
    out = Path(args.out)
    paths = {name: out / name for name in (KEY_FILE, PUBLIC_FILE, JWKS_FILE, CERT_FILE)}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.force:
        raise CommandError(
            f"{', '.join(existing)} already exist(s); use --force to overwrite or --out DIR "
            "for another directory (keep the old key until the new one is registered)."
        )
    key = generate_key(
        profile,
        algorithm=args.alg,
        kid=args.kid,
        rsa_bits=args.bits,
        common_name=args.subject,
        valid_days=args.days,
    )
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = key.private_pem(passphrase)
    if profile.certificate_header:
        # Certificate-identified profiles (Entra ID) read the certificate after the key.
        private += key.certificate_pem()
    _write_private(paths[KEY_FILE], private)
    _write_atomic(paths[PUBLIC_FILE], key.public_pem())
    _write_atomic(paths[JWKS_FILE], (json.dumps(key.public_jwks(), indent=2) + "\n").encode())
    _write_atomic(paths[CERT_FILE], key.certificate_pem())

    certificate = key.signing_key.certificate
    assert certificate is not None
    summary: dict[str, Any] = {
        "profile": profile.name,
        "algorithm": key.algorithm,
        "kid": key.kid,
        "key": key.signing_key.describe(),
        "x5t#S256": key.x5t_s256,
        "certificate_expires": certificate.not_valid_after_utc.isoformat(),
        "files": {name: str(path) for name, path in paths.items()},
        "connection": _suggested_connection(profile, key, paths[KEY_FILE], args, passphrase),
    }
    if args.json:
        _out(json.dumps(summary, indent=2))
        return 0
    files = summary["files"]
    encrypted = " (encrypted with your passphrase)" if passphrase else ""
    _out(
        f"Generated an {summary['key']} for profile {profile.name!r}: alg {key.algorithm}, "
        f"kid {key.kid}"
    )
    _out(f"  {files[KEY_FILE]:<34} private key{encrypted}, mode 0600: keep it secret")
    _out(f"  {files[PUBLIC_FILE]:<34} public key (PEM)")
    _out(f"  {files[JWKS_FILE]:<34} public JWKS (kid, alg {key.algorithm}, use sig)")
    _out(
        f"  {files[CERT_FILE]:<34} self-signed certificate until "
        f"{certificate.not_valid_after_utc:%Y-%m-%d}, x5t#S256 {key.x5t_s256}"
    )
    _out()
    _out(f"Next steps for {profile.label}:")
    steps = [*profile.register_key]
    steps.append(
        "create the connection (Admin -> Connections, type 'Backend Services Auth', or as "
        "an environment variable):\n       export AIRFLOW_CONN_BACKENDAUTH_"
        f"{profile.name.upper()}='{json.dumps(summary['connection'])}'"
    )
    steps.append(f"check it: backendauth check backendauth_{profile.name}")
    for number, step in enumerate(steps, 1):
        _out(f"  {number}. {step}")
    for note in profile.notes:
        _out(f"  Note: {note}")
    if profile.documentation:
        vendor = profile.label.split(" (")[0]
        _out(f"More: the {vendor} documentation, {profile.documentation}")
    return 0


def _suggested_connection(
    profile: Any, key: Any, key_path: Path, args: argparse.Namespace, passphrase: bytes | None
) -> dict[str, Any]:
    from airflow_provider_backendauth.core.auth.keys import compatible_algorithms

    extra: dict[str, Any] = {"profile": profile.name, "key_file": str(key_path.resolve())}
    if compatible_algorithms(key.signing_key, profile.algorithms)[:1] != (key.algorithm,):
        extra["algorithm"] = key.algorithm  # the client would otherwise pick another one
    if args.kid:
        extra["key_id"] = key.kid
    elif profile.kid_required and not profile.kid_from_thumbprint:
        extra["key_id"] = "<the key id the vendor returns>"
    if passphrase:
        extra["private_key_passphrase"] = "<your passphrase>"
    extra.update(profile.connection_extras)
    conn: dict[str, Any] = {"conn_type": "backendauth"}
    if profile.token_url is None:
        conn["host"] = "<the FHIR / API base URL>"
    conn["login"] = "<client id>"
    conn["extra"] = extra
    return conn


def _read_passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    from airflow_provider_backendauth.core.auth.keys import read_local_file

    lines = read_local_file(path, what="passphrase file").splitlines()
    passphrase = lines[0] if lines else b""
    if not passphrase:
        raise CommandError(f"The passphrase file {path} is empty.")
    return passphrase


def _write_private(path: Path, data: bytes) -> None:
    _write_atomic(path, data, mode=0o600)


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` all at once: readers see the old file or the new one.

    The temporary file is a fresh, unpredictable name in the target directory, created with
    O_EXCL and O_NOFOLLOW (``tempfile.mkstemp``) with mode 0600 until it is complete: a
    symlink planted at a guessable name such as ``<name>.tmp`` cannot redirect the write,
    and a private key is never readable by others, not even briefly.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- jwks ---------------------------------------------------------------------------------


def jwks(args: argparse.Namespace) -> int:
    from airflow_provider_backendauth.core.auth.keygen import merge_jwks
    from airflow_provider_backendauth.core.auth.keys import (
        check_algorithm,
        compatible_algorithms,
        load_signing_key_file,
        read_local_file,
    )
    from airflow_provider_backendauth.core.auth.profiles import get_profile
    from airflow_provider_backendauth.core.errors import KeyLoadError

    publish = args.key[0] == "publish" and len(args.key) == 2
    if len(args.key) != 1 and not publish:
        raise UsageError("give one key file (or: publish KEY --to URL)")
    if publish != bool(args.to) or (args.replace and not publish):
        raise UsageError("--to and --replace go with 'publish KEY', and 'publish' needs --to")
    if publish and (args.merge or args.out):
        raise UsageError("publish merges with what is at --to itself: drop --merge/--out")
    key_path = args.key[-1]
    passphrase = _read_passphrase(args.passphrase_file)
    key = load_signing_key_file(key_path, passphrase=passphrase, kid=args.kid)
    alg = args.alg
    if alg is None and args.profile:
        profile = get_profile(args.profile)
        usable = compatible_algorithms(key, profile.algorithms)
        if not usable:
            raise KeyLoadError(
                f"Profile {profile.name!r} signs with {', '.join(profile.algorithms)}, none of "
                f"which works with this {key.describe()}."
            )
        alg = usable[0]
    if alg is None:
        alg = key.named_alg or {
            "secp256r1": "ES256",
            "secp384r1": "ES384",
            "secp521r1": "ES512",
        }.get(key.curve or "")
    if alg is not None:
        alg = check_algorithm(alg, key)
    document = key.public_jwks(kid=args.kid, alg=alg)
    if publish:
        return _publish(args.to, document, replace=args.replace)
    if args.merge:
        merge_text = read_local_file(args.merge, what="JWKS to merge into")
        try:
            existing = json.loads(merge_text)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            raise CommandError(f"{args.merge} is not JSON{where}.") from None
        document = merge_jwks(existing, document)
    text = json.dumps(document, indent=2) + "\n"
    if args.out:
        _write_atomic(Path(args.out), text.encode())
        kids = ", ".join(str(k.get("kid")) for k in document["keys"])
        print(f"Wrote {args.out} (kids: {kids})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _publish(to: str, document: dict[str, Any], *, replace: bool) -> int:
    from airflow_provider_backendauth.core.auth.published import kids, publish_jwks
    from airflow_provider_backendauth.operators._common import storage_path

    written = publish_jwks(storage_path(to), document, replace=replace)
    _out(f"Published {to} (kids: {', '.join(kids(written))})")
    return 0


# -- check --------------------------------------------------------------------------------


def check(args: argparse.Namespace) -> int:
    hook = _hook(_connection_id(args))
    ok, message = hook.test_connection()
    _out(("OK: " if ok else "FAILED: ") + " ".join(message.split()))
    warning = _jku_warning(hook)
    if warning:
        _out(f"WARNING: {warning}")
    if ok and args.show_token:
        _out(f"access token: {hook.get_token()}")
    return 0 if ok else 1


def _jku_warning(hook: Any) -> str | None:
    """Is the kid this connection sends in the JWKS at its ``jku`` (what the vendor fetches)?
    A rotation step done out of order shows up here before the vendor refuses a token."""
    from airflow_provider_backendauth.core.auth.published import fetch_jwks, kids
    from airflow_provider_backendauth.core.errors import BackendAuthError

    try:
        client = hook.client
    except BackendAuthError:
        return None  # the check above already said what is wrong with the connection
    jku = client.settings.jku
    if not jku:
        return None
    try:
        published = kids(
            fetch_jwks(jku, session=client.new_plain_session(), timeout=client.settings.timeout)
        )
    except BackendAuthError as exc:
        return f"could not read the JWKS at jku to check the kid: {exc}"
    if client.kid in published:
        return None
    return (
        f"kid {client.kid!r} is not in the JWKS at jku {jku} (kids there: "
        f"{', '.join(published) or 'none'}): publish the key there ('backendauth jwks publish') "
        "and wait for the vendor's cache before switching the connection to it."
    )


def _hook(conn_id: str) -> Any:
    """The hook for ``conn_id``, wherever the connection is stored.

    Outside a task, Airflow 3's hooks see environment variables and external secrets
    backends but not the metadata database (that needs an API server); the CLI runs where
    the database is reachable, so a connection found only there is handed to the hook as
    an environment connection of this process.
    """
    import logging

    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    # The token exchange logs at INFO; keep stdout for the answer (and the token, if asked).
    logging.getLogger("airflow_provider_backendauth").setLevel(logging.WARNING)
    # Airflow masks every extra of a connection it reads and warns, once, about a value too
    # short to mask ("epic", a misspelt profile): noise before the answer, about nothing the
    # user can act on here. Its logger's module moved between Airflow versions.
    # Reading a connection from the database warns when no Fernet key is set: not this
    # command's business either.
    for name in [*logging.root.manager.loggerDict, *_QUIET_AIRFLOW_LOGGERS]:
        if name.endswith(("secrets_masker", ".crypto")):
            logging.getLogger(name).setLevel(logging.ERROR)
    hook = BackendAuthHook(conn_id)
    try:
        hook.get_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ != "AirflowNotFoundException":
            raise
        from airflow.models.connection import Connection

        stored = Connection.get_connection_from_secrets(conn_id)  # raises the same if absent
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = stored.as_json()
        hook = BackendAuthHook(conn_id)
    return hook


def _connection_id(args: argparse.Namespace) -> str:
    """The connection to use: CONN_ID, or --conn-json/flags exposed to Airflow as an
    environment connection (so the hook reads it exactly as it reads any other)."""
    given = getattr(args, "conn_id", None) or getattr(args, "target", None)
    if given and args.conn_json:
        raise UsageError("give either a connection id or --conn-json, not both")
    conn = _connection_from_options(args)
    if conn is None:
        if not given:
            raise UsageError("give a connection id, --conn-json, or --host/--client-id/...")
        return str(given)
    if given:
        # CONN_ID with flags: that connection with these changes (e.g. a rotated key file).
        conn = _connection_from_options(args, base=_stored_connection(str(given)))
        assert conn is not None
    os.environ[f"AIRFLOW_CONN_{_ADHOC_CONN_ID.upper()}"] = json.dumps(conn)
    return _ADHOC_CONN_ID


def _stored_connection(conn_id: str) -> dict[str, Any]:
    """A defined connection (environment, secrets backend or database) as Airflow JSON."""
    conn: dict[str, Any] = json.loads(_hook(conn_id).get_connection(conn_id).as_json())
    return conn


def _connection_from_options(
    args: argparse.Namespace, base: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    conn = dict(base) if base is not None else _conn_json(args.conn_json) if args.conn_json else {}
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            raise CommandError("The connection's extra is not a JSON object.") from None
    if not isinstance(extra, dict):
        raise CommandError("The connection's extra must be a JSON object.")
    for name, value in (("host", args.host), ("login", args.client_id)):
        if value is not None:
            conn[name] = value
    if args.key_file is not None:
        # The file replaces whatever key the connection held (e.g. checking a rotated key).
        conn.pop("password", None)
        extra.pop("private_key_file", None)  # the old name of key_file
        extra["key_file"] = str(Path(args.key_file).resolve())
    for name, value in (
        ("profile", args.profile),
        ("auth_url", args.token_url),
        ("scope", args.scope),
    ):
        if value is not None:
            extra[name] = value
    passphrase = _read_passphrase(args.passphrase_file)
    if passphrase is not None:
        extra["private_key_passphrase"] = passphrase.decode()
    for item in args.extra or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--extra wants NAME=VALUE, not {item!r}")
        extra[name.strip()] = value
    if base is None and not conn and not extra:
        return None
    conn.setdefault("conn_type", "backendauth")
    conn["extra"] = extra
    return conn


def _conn_json(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        conn = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"--conn-json is not JSON (line {exc.lineno}, column {exc.colno})."
        ) from None
    if not isinstance(conn, dict):
        raise CommandError("--conn-json must be a JSON object.")
    return conn


# -- inspect ------------------------------------------------------------------------------


def inspect(args: argparse.Namespace) -> int:
    target = (args.target or "").strip()
    if target and _JWT.match(target) and _connection_from_options(args) is None:
        decoded = decode_jwt(target)
        _out(json.dumps(decoded, indent=2))
        for line in _time_notes(decoded["claims"]):
            _out(line)
        return 0
    try:
        hook = _hook(_connection_id(args))
    except Exception as exc:
        if type(exc).__name__ != "AirflowNotFoundException" or target.count(".") != 2:
            raise
        # Three dot-separated parts: the user most likely meant a JWT.
        raise CommandError(
            f"{target!r} is neither a JWT (three base64url parts with JSON, the first "
            "starting 'eyJ') nor a defined connection id."
        ) from None
    client = hook.client
    # The exact form the token request would post (a fresh assertion: new jti and exp).
    form = client.endpoint.form()
    decoded = decode_jwt(form["client_assertion"])
    form["client_assertion"] = "<the assertion above>"
    report = {
        "token_url": client.endpoint.token_url,
        **decoded,
        "form": form,
        "token_reuse": client.token_reuse,
    }
    _out(json.dumps(report, indent=2))
    for line in _time_notes(decoded["claims"]):
        _out(line)
    return 0


def decode_jwt(token: str) -> dict[str, Any]:
    """Header and claims of a compact JWS, unverified; the signature is replaced by its size."""
    try:
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(claims_b64))
    except ValueError:
        raise CommandError("That is not a JWT (three base64url parts with JSON).") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise CommandError("That is not a JWT: its header and claims must be JSON objects.")
    size = len(_b64decode(signature_b64)) if signature_b64 else 0
    return {"header": header, "claims": claims, "signature": f"<elided: {size} bytes>"}


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _time_notes(claims: dict[str, Any]) -> list[str]:
    notes = []
    for name in ("iat", "nbf", "exp"):
        value = claims.get(name)
        if isinstance(value, (int, float)):
            when = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
            notes.append(f"{name}: {when:%Y-%m-%d %H:%M:%S} UTC")
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, (int, float)) and isinstance(iat, (int, float)):
        notes.append(f"lifetime (exp - iat): {int(exp - iat)} s")
    return notes
