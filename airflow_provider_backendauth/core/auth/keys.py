"""Private keys for signing client assertions: loading, algorithm fit, key ids.

Keys reach us in many shapes: PEM (PKCS#1, PKCS#8, SEC1 EC, encrypted with a passphrase),
a JWK, a JWKS, or a PEM whose line breaks a single-line form field or an environment
variable flattened into spaces or literal ``\\n``. Everything is normalised here into a
``SigningKey`` so the rest of the code never cares where the key came from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from airflow_provider_backendauth.core.auth.cache import CacheInfo, SingleFlightCache
from airflow_provider_backendauth.core.errors import ConfigurationError, KeyLoadError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
SUPPORTED_ALGORITHMS = RSA_ALGORITHMS + EC_ALGORITHMS

# ES512 is P-521, not P-512: the JWA name follows the hash, the curve is fixed per algorithm.
_CURVE_FOR_ALGORITHM = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_ALGORITHM_FOR_CURVE = {curve: alg for alg, curve in _CURVE_FOR_ALGORITHM.items()}
_JWK_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
MIN_RSA_BITS = 2048
# A PEM key plus a certificate chain is a few KB; JWKS with many keys stay well under this.
MAX_KEY_FILE_BYTES = 1 << 20

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key plus what its source said about it.

    Attributes:
        key: the cryptography private key object.
        kid: the key id from the JWK/JWKS (or keygen's note above a PEM), when given.
        named_alg: the algorithm the key names: a JWK's ``alg`` member (HelseID keys carry
            one) or the ``alg:`` note ``backendauth keygen`` writes above its PEM. A server
            that registered the key's JWKS accepts only that algorithm for it.
        certificate: the X.509 certificate bundled with the key, used for ``x5t`` headers.
    """

    key: PrivateKey = field(repr=False)
    kid: str | None = None
    named_alg: str | None = None
    certificate: x509.Certificate | None = field(default=None, repr=False)

    @property
    def kty(self) -> str:
        return "RSA" if isinstance(self.key, rsa.RSAPrivateKey) else "EC"

    @property
    def curve(self) -> str | None:
        return self.key.curve.name if isinstance(self.key, ec.EllipticCurvePrivateKey) else None

    def describe(self) -> str:
        """A short human description, safe to log: 'RSA 2048-bit key' or 'EC P-384 key'."""
        if isinstance(self.key, rsa.RSAPrivateKey):
            return f"RSA {self.key.key_size}-bit key"
        return f"EC {_JWK_CURVES.get(self.curve or '', self.curve)} key"

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK (without kid/alg)."""
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {"kty": "RSA", "n": _b64_uint(numbers.n), "e": _b64_uint(numbers.e)}
        assert isinstance(public, ec.EllipticCurvePublicKey)
        size = (public.curve.key_size + 7) // 8
        ec_numbers = public.public_numbers()
        return {
            "kty": "EC",
            "crv": _JWK_CURVES[public.curve.name],
            "x": _b64url(ec_numbers.x.to_bytes(size, "big")),
            "y": _b64url(ec_numbers.y.to_bytes(size, "big")),
        }

    def thumbprint(self) -> str:
        """The RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key."""
        jwk = self.public_jwk()
        members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
        canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
        return _b64url(hashlib.sha256(canonical.encode()).digest())

    def certificate_thumbprint(self, sha256: bool = True) -> str | None:
        """base64url SHA-256 (``x5t#S256``) or SHA-1 (``x5t``) of the DER certificate."""
        if self.certificate is None:
            return None
        algorithm: hashes.HashAlgorithm = hashes.SHA256() if sha256 else hashes.SHA1()  # noqa: S303
        return _b64url(self.certificate.fingerprint(algorithm))

    def public_jwks(self, kid: str | None = None, alg: str | None = None) -> dict[str, Any]:
        """A JWKS with the public key, as you would register it with a server."""
        jwk: dict[str, Any] = dict(self.public_jwk())
        jwk["kid"] = kid or self.kid or self.thumbprint()
        jwk["use"] = "sig"
        if alg:
            jwk["alg"] = alg
        return {"keys": [jwk]}


# Parsed keys, per process. Loading an RSA key costs ~36 ms (cryptography checks the key on
# every load), paid by every hook and client built for a connection; the parsed key is
# immutable and safe to share between threads. Entries are keyed by HMACs (with a secret
# drawn per process) of the key text and passphrase, so the cache keeps no copy of either
# and its keys are useless outside this process; the kid picks a key out of a JWKS.
_KEY_CACHE: SingleFlightCache[SigningKey] = SingleFlightCache(maxsize=32)
_KEY_CACHE_SECRET = secrets.token_bytes(32)


def _digest(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return hmac.new(_KEY_CACHE_SECRET, data, hashlib.sha256).digest()


def key_cache_info() -> CacheInfo:
    """Hits and misses of the per-process parsed-key cache."""
    return _KEY_CACHE.info()


def clear_key_cache() -> None:
    """Forget the parsed keys (tests; a process that wants a rotated key re-read at once
    needs nothing: new key text is a new entry)."""
    _KEY_CACHE.clear()


def load_signing_key(
    material: str | bytes,
    *,
    passphrase: str | bytes | None = None,
    kid: str | None = None,
) -> SigningKey:
    """Load a private key from PEM, JWK or JWKS text (parsed once per process for the same
    text, passphrase and kid).

    Args:
        material: the key text as pasted into the connection or read from a file.
        passphrase: for an encrypted PEM.
        kid: for a JWKS with several keys, the one to use.

    Raises:
        KeyLoadError: the text is not a usable private key; the message says why.
    """
    ident = (_digest(material), _digest(passphrase), kid)
    return _KEY_CACHE.get(
        ident, lambda: _parse_signing_key(material, passphrase=passphrase, kid=kid)
    )


def _parse_signing_key(
    material: str | bytes, *, passphrase: str | bytes | None, kid: str | None
) -> SigningKey:
    text = material.decode("utf-8", "replace") if isinstance(material, bytes) else material
    text = text.strip().strip('"').strip()
    if not text:
        raise KeyLoadError(
            "No private key was given: put the PEM or JWK in the connection's password "
            "field, or set the 'key_file' extra to a file on the worker."
        )
    if text.startswith("{"):
        return _load_jwk_text(text, kid)
    return _load_pem(text, passphrase)


def load_signing_key_file(
    path: str, *, passphrase: str | bytes | None = None, kid: str | None = None
) -> SigningKey:
    """Load a private key from a file on this machine (see ``load_signing_key`` and
    ``read_local_file``, which reads it)."""
    data = read_local_file(
        path,
        what="private key file",
        hint="point 'key_file' at the PEM/JWK file itself",
    )
    return load_signing_key(data, passphrase=passphrase, kid=kid)


def read_local_file(
    path: str, *, what: str, hint: str = "check the path", max_bytes: int = MAX_KEY_FILE_BYTES
) -> bytes:
    """The bytes of a small local file (a key, a JWKS, a passphrase), read with a bound.

    Only a regular file of at most ``max_bytes`` is read: ``/dev/zero`` would exhaust
    memory and a FIFO would hang the worker. The file is opened non-blocking and checked on
    the open descriptor, so swapping the path for a FIFO after a check cannot hang either.

    Args:
        what: how the messages name the file ("private key file", "passphrase file", ...).
        hint: what to do when the path is not a regular file.

    Raises:
        KeyLoadError: unreadable, not a regular file, or larger than ``max_bytes``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise KeyLoadError(
            f"Cannot read the {what} {path!r}: {exc.strerror or exc}. Check that the path "
            "exists (on every worker, for a connection) and is readable by this user."
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyLoadError(
                f"The {what} {path!r} is not a regular file (a device, FIFO or directory); {hint}."
            )
        if info.st_size > max_bytes:
            raise KeyLoadError(
                f"The {what} {path!r} is {info.st_size} bytes; at most {max_bytes} bytes are "
                "read. Check the path."
            )
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise KeyLoadError(f"Cannot read the {what} {path!r}: {exc.strerror or exc}.") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise KeyLoadError(f"The {what} {path!r} grew past {max_bytes} bytes.")
    return data


def check_algorithm(algorithm: str, key: SigningKey) -> str:
    """Return the canonical algorithm name if it can be used with ``key``.

    Raises:
        ConfigurationError: ``none``, HS*, unknown names, or a key of the wrong type/curve.
    """
    alg = algorithm.strip().upper()
    if alg in ("NONE", "") or alg.startswith("HS"):
        raise ConfigurationError(
            f"Signing algorithm {algorithm!r} is refused: client assertions must be signed "
            f"with a private key (one of {', '.join(SUPPORTED_ALGORITHMS)}); 'none' and the "
            "shared-secret HS* algorithms are not allowed."
        )
    if alg not in SUPPORTED_ALGORITHMS:
        raise ConfigurationError(
            f"Unknown signing algorithm {algorithm!r}; use one of "
            f"{', '.join(SUPPORTED_ALGORITHMS)}."
        )
    if alg in RSA_ALGORITHMS and key.kty != "RSA":
        raise KeyLoadError(
            f"Algorithm {alg} needs an RSA key, but the configured key is an "
            f"{key.describe()}. Use {_ALGORITHM_FOR_CURVE.get(key.curve or '', 'ES256')} "
            "or an RSA key."
        )
    if alg in EC_ALGORITHMS:
        wanted = _CURVE_FOR_ALGORITHM[alg]
        if key.kty != "EC":
            raise KeyLoadError(
                f"Algorithm {alg} needs an EC {_JWK_CURVES[wanted]} key, but the configured "
                f"key is an {key.describe()}. Use an RS*/PS* algorithm or an EC key."
            )
        if key.curve != wanted:
            raise KeyLoadError(
                f"Algorithm {alg} needs an EC {_JWK_CURVES[wanted]} key, but the configured "
                f"key is an {key.describe()}; with this key use "
                f"{_ALGORITHM_FOR_CURVE.get(key.curve or '', 'another algorithm')}."
            )
    return alg


def compatible_algorithms(key: SigningKey, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``candidates`` that this key can sign with, in order."""
    result = []
    for alg in candidates:
        try:
            check_algorithm(alg, key)
        except ConfigurationError:
            continue
        result.append(alg)
    return tuple(result)


def _load_pem(text: str, passphrase: str | bytes | None) -> SigningKey:
    blocks = _PEM_BLOCK.findall(_unflatten(text))
    if not blocks:
        raise KeyLoadError(
            "The private key is neither PEM ('-----BEGIN ... PRIVATE KEY-----') nor a JSON Web "
            "Key. Paste the whole key including the BEGIN/END lines."
        )
    key_blocks = [(label, body) for label, body in blocks if "PRIVATE KEY" in label]
    cert_blocks = [(label, body) for label, body in blocks if label == "CERTIFICATE"]
    if not key_blocks:
        labels = ", ".join(sorted({label for label, _ in blocks}))
        hint = (
            " That is the public half; the connection needs the private key."
            if "PUBLIC KEY" in labels
            else ""
        )
        raise KeyLoadError(f"The PEM holds no private key (found: {labels}).{hint}")
    label, body = key_blocks[0]
    pem = _rewrap(label, body).encode()
    password = passphrase.encode() if isinstance(passphrase, str) else passphrase
    try:
        key = serialization.load_pem_private_key(pem, password=password or None)
    except TypeError:
        if password:
            raise KeyLoadError(
                "A passphrase was given but the private key is not encrypted; remove the "
                "'private_key_passphrase' extra."
            ) from None
        raise KeyLoadError(
            "The private key is encrypted: set the 'private_key_passphrase' extra."
        ) from None
    except ValueError:
        if password or "ENCRYPTED" in label or "Proc-Type" in body:
            raise KeyLoadError(
                "Could not decrypt the private key: the passphrase is wrong or the PEM is damaged."
            ) from None
        raise KeyLoadError(
            f"The {label} block is not a valid private key (damaged or truncated PEM?)."
        ) from None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm and others
        raise KeyLoadError(f"Unsupported private key: {type(exc).__name__}.") from None
    certificate = None
    if cert_blocks:
        try:
            certificate = x509.load_pem_x509_certificate(_rewrap(*cert_blocks[0]).encode())
        except ValueError:
            raise KeyLoadError("The CERTIFICATE block next to the key is not valid.") from None
    notes = pem_notes(text)
    # The note's kid is for people matching files to jwks.json: the kid sent stays the
    # connection's choice (vendors such as CMS DPC assign their own).
    return SigningKey(
        key=_require_supported(key), certificate=certificate, named_alg=notes.get("alg")
    )


# RFC 7468 section 2 lets explanatory text precede a PEM block ("parsers MUST NOT
# malfunction" on it); ``backendauth keygen`` writes the key's algorithm and kid there so a
# PEM, which has no field for either, still says what its published JWKS pins.
# Matched anywhere in that text: a PEM flattened into one line keeps its notes.
_PEM_NOTE = re.compile(r"(?:^|\s)(alg|kid): *([A-Za-z0-9._~+/=-]{1,200})(?=\s|$)")


def pem_notes(text: str) -> dict[str, str]:
    """The ``alg:``/``kid:`` notes written above the first PEM block (see ``pem_note``)."""
    # Only the text before the first block: a note cannot be smuggled in after the key.
    head = _unflatten(text).split("-----BEGIN", 1)[0]
    return {name: value for name, value in _PEM_NOTE.findall(head)}


def pem_note(alg: str, kid: str) -> bytes:
    """The explanatory text ``backendauth keygen`` puts above a private key PEM."""
    return (
        "backendauth keygen: sign with this algorithm; the kid is the one in jwks.json\n"
        f"alg: {alg}\nkid: {kid}\n"
    ).encode()


def _unflatten(text: str) -> str:
    # Environment variables and single-line UI fields turn newlines into literal "\n" or "\r\n".
    return text.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n")


def _rewrap(label: str, body: str) -> str:
    """Rebuild a canonical PEM block from a body whose line breaks may have become spaces."""
    tokens = body.split()
    headers = []
    # Legacy encrypted PKCS#1 carries "Proc-Type: 4,ENCRYPTED" and "DEK-Info: ALG,IV" headers.
    while len(tokens) >= 2 and tokens[0].endswith(":"):
        headers.append(f"{tokens[0]} {tokens[1]}")
        tokens = tokens[2:]
    data = "".join(tokens)
    lines = [data[i : i + 64] for i in range(0, len(data), 64)]
    parts = [f"-----BEGIN {label}-----", *headers]
    if headers:
        parts.append("")
    parts += [*lines, f"-----END {label}-----", ""]
    return "\n".join(parts)


def _load_jwk_text(text: str, kid: str | None) -> SigningKey:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyLoadError(
            f"The private key looks like JSON but does not parse (line {exc.lineno}, column "
            f"{exc.colno}); paste the JWK or JWKS exactly as downloaded."
        ) from None
    if not isinstance(document, dict):
        raise KeyLoadError("A JWK must be a JSON object.")
    if "keys" in document:
        return _pick_from_jwks(document, kid)
    return _load_jwk(document)


def _pick_from_jwks(jwks: dict[str, Any], kid: str | None) -> SigningKey:
    keys = [k for k in jwks.get("keys") or [] if isinstance(k, dict)]
    private = [k for k in keys if "d" in k and k.get("use", "sig") == "sig"]
    if kid:
        chosen = [k for k in private if k.get("kid") == kid]
        if not chosen:
            known = ", ".join(str(k.get("kid")) for k in private) or "none"
            raise KeyLoadError(
                f"The JWKS has no private signing key with kid {kid!r} (private keys: {known})."
            )
        return _load_jwk(chosen[0])
    if len(private) == 1:
        return _load_jwk(private[0])
    if not private:
        raise KeyLoadError(
            "The JWKS contains no private key (no 'd' member): it is the public JWKS. The "
            "connection needs the private key."
        )
    raise KeyLoadError(
        f"The JWKS holds {len(private)} private signing keys; set the 'key_id' extra to the "
        "kid of the one to use."
    )


def _load_jwk(jwk: dict[str, Any]) -> SigningKey:
    import jwt.algorithms  # local: keeps module import cheap for DAG parsing

    kty = jwk.get("kty")
    if "d" not in jwk:
        raise KeyLoadError(
            "The JWK has no private part ('d'): it is a public key. The connection needs the "
            "private key."
        )
    data = json.dumps(jwk)
    try:
        if kty == "RSA":
            key: Any = jwt.algorithms.RSAAlgorithm.from_jwk(data)
        elif kty == "EC":
            key = jwt.algorithms.ECAlgorithm.from_jwk(data)
        else:
            raise KeyLoadError(
                f"JWK key type {kty!r} is not supported for client assertions; use RSA or EC."
            )
    except KeyLoadError:
        raise
    except Exception:
        raise KeyLoadError(f"The {kty} JWK is incomplete or damaged (check its members).") from None
    named_alg = jwk.get("alg")
    return SigningKey(
        key=_require_supported(key),
        kid=jwk.get("kid"),
        named_alg=str(named_alg) if named_alg else None,
    )


def _require_supported(key: Any) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyLoadError(
                f"The RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required."
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _JWK_CURVES:
            raise KeyLoadError(
                f"EC curve {key.curve.name} is not supported; use P-256, P-384 or P-521."
            )
        return key
    raise KeyLoadError(f"Unsupported private key type {type(key).__name__}; use an RSA or EC key.")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))
