"""Client settings: what a ``backendauth`` connection holds, parsed and validated.

The extras' names here are the connection's stable interface (they are stored in users'
connections and secrets backends): keep them, and when one must change, keep reading the old
name (``RENAMED_EXTRAS``) with a warning.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from airflow_provider_backendauth.core.errors import ConfigurationError

# Airflow's secret masker hides every extra whose name contains a sensitive word ("token",
# "private_key", "secret", ...: airflow's DEFAULT_SENSITIVE_FIELDS) in the UI, the REST API and
# logs. So only secrets may carry such words: "private_key_passphrase" is masked on purpose;
# the token URL, the reuse policy and the key file path are not secrets and must stay readable.
EXTRA_KEYS = (
    "profile",
    "auth_url",
    "scope",
    "algorithm",
    "key_id",
    "jku",
    "key_file",
    "private_key_passphrase",
    "audience",
    "assertion_lifetime",
    "extra_claims",
    "reuse_policy",
    "verify_ssl",
    "ca_bundle",
    "timeout",
    "retries",
    "allow_insecure_http",
    "allowed_hosts",
    "dpop",
    "dpop_key_file",
    "certificate_headers",
)

# Old extra name -> new name. Still read, with a DeprecatedExtraWarning.
RENAMED_EXTRAS = {
    "token_url": "auth_url",
    "token_reuse": "reuse_policy",
    "private_key_file": "key_file",
}


class DeprecatedExtraWarning(FutureWarning):
    """A connection uses an extra's old name. (A FutureWarning: it is meant for the users who
    maintain connections, so Python shows it by default.)"""


# Far beyond any real need; they stop values that would hang a task for years or retry for
# ever (``timeout=1e9``, ``retries=1e9``). ``timeout`` bounds one request as a whole (a bulk
# file download is bounded per read, not by it); ``retries`` backs off up to 30 s each.
MAX_TIMEOUT = 3600
MAX_RETRIES = 100


@dataclass(frozen=True)
class ClientSettings:
    """One client's configuration. Unset values (None) fall back to the profile preset.

    Attributes:
        base_url: the API/FHIR base URL (connection host).
        client_id: the registered client id (connection login).
        private_key: PEM/JWK/JWKS text (connection password); or the ``key_file`` extra.
        profile: vendor preset name.
        allowed_hosts: extra origins/hosts that may receive the bearer token (besides the
            base URL's origin), e.g. a vendor's separate file server.
        dpop: DPoP-bound tokens (RFC 9449): ``off``, ``on``, or ``auto`` (when the token
            endpoint asks); None takes the profile's.
        dpop_key_file: the DPoP proof key (PEM/JWK file); None makes a fresh EC P-256 key
            per process (never the assertion key).
        certificate_headers: assertion header members taken from the key's certificate
            (``x5t#S256``, ``x5t``, ``x5c``); None takes the profile's (Entra ID: x5t#S256).
        timeout: seconds one request may take as a whole, from 1 to ``MAX_TIMEOUT``.
        retries: retries after a failed request, from 0 to ``MAX_RETRIES``.

    Raises:
        ConfigurationError: ``timeout`` or ``retries`` is not a number within its bounds
            (checked however the settings are made: from a connection or in code).
    """

    base_url: str | None = None
    client_id: str = ""
    private_key: str | None = field(default=None, repr=False)
    profile: str | None = None
    token_url: str | None = None
    scope: str | None = None
    algorithm: str | None = None
    key_id: str | None = None
    jku: str | None = None
    private_key_file: str | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)
    audience: str | None = None
    assertion_lifetime: int | None = None
    extra_claims: Mapping[str, Any] = field(default_factory=dict)
    token_reuse: str | None = None
    verify_ssl: bool = True
    ca_bundle: str | None = None
    timeout: float = 30.0
    retries: int = 5
    allow_insecure_http: bool = False
    allowed_hosts: tuple[str, ...] = ()
    dpop: str | None = None
    dpop_key_file: str | None = None
    certificate_headers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_bounds("timeout", self.timeout, 1, MAX_TIMEOUT, whole=False)
        _check_bounds("retries", self.retries, 0, MAX_RETRIES, whole=True)
        object.__setattr__(self, "timeout", float(self.timeout))

    @property
    def tls_verify(self) -> bool | str:
        """What HTTP clients get as ``verify``: the CA bundle's path, or whether to verify."""
        return self.ca_bundle or self.verify_ssl

    @classmethod
    def from_connection_fields(
        cls,
        *,
        host: str | None,
        login: str | None,
        password: str | None,
        extra: Mapping[str, Any] | None,
        schema: str | None = None,
        port: int | None = None,
    ) -> ClientSettings:
        """Build settings from a connection's standard fields and extras (strings allowed:
        UIs, URIs and secrets backends deliver everything as text)."""
        if extra is not None and not isinstance(extra, Mapping):
            # A JSON list or string in the extra field: say so instead of a raw TypeError.
            raise ConfigurationError(
                'The connection\'s extra must be a JSON object (e.g. {"profile": "smart"}), '
                f"not a {type(extra).__name__}."
            )
        extra = _renamed(dict(extra or {}))
        unknown = sorted(set(extra) - set(EXTRA_KEYS))
        if unknown:
            raise ConfigurationError(
                f"Unknown connection extra(s): {', '.join(unknown)}. Known extras: "
                f"{', '.join(EXTRA_KEYS)}."
            )
        return cls(
            base_url=_base_url(host, schema, port),
            client_id=(login or "").strip(),
            private_key=password or None,
            profile=_text(extra, "profile"),
            token_url=_text(extra, "auth_url"),
            scope=_scope(extra),
            algorithm=_text(extra, "algorithm"),
            key_id=_text(extra, "key_id"),
            jku=_text(extra, "jku"),
            private_key_file=_text(extra, "key_file"),
            private_key_passphrase=_text(extra, "private_key_passphrase"),
            audience=_text(extra, "audience"),
            assertion_lifetime=_integer(extra, "assertion_lifetime", minimum=1),
            extra_claims=_claims(extra.get("extra_claims")),
            token_reuse=_choice(extra, "reuse_policy", ("cache", "per_request")),
            verify_ssl=_boolean(extra, "verify_ssl", True),
            ca_bundle=_text(extra, "ca_bundle"),
            timeout=float(_integer_or(extra, "timeout", minimum=1, default=30)),
            retries=_integer_or(extra, "retries", minimum=0, default=5),
            allow_insecure_http=_boolean(extra, "allow_insecure_http", False),
            allowed_hosts=_list(extra.get("allowed_hosts")),
            dpop=_choice(extra, "dpop", ("off", "on", "auto")),
            dpop_key_file=_text(extra, "dpop_key_file"),
            certificate_headers=_certificate_headers(extra.get("certificate_headers")),
        )

    @classmethod
    def from_connection(cls, conn: Any, extra: Mapping[str, Any] | None = None) -> ClientSettings:
        """From an Airflow ``Connection`` (duck-typed: ``core`` imports no Airflow).

        Args:
            conn: anything with host, login, password, schema, port and extra_dejson.
            extra: the extras when already read (async code uses ``aextra_dejson``).
        """
        return cls.from_connection_fields(
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson if extra is None else extra,
            schema=conn.schema,
            port=conn.port,
        )

    def describe(self) -> dict[str, Any]:
        """A loggable view: secrets replaced by whether they are set."""
        view: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("private_key", "private_key_passphrase"):
                value = "***" if value else None
            view[f.name] = value
        return view


def _renamed(extra: dict[str, Any]) -> dict[str, Any]:
    """The extras with old names moved to their new ones; the new name wins when both are set
    (an old connection edited in the form keeps the old key in its extra JSON)."""
    for old, new in RENAMED_EXTRAS.items():
        if old not in extra:
            continue
        value = extra.pop(old)
        if new in extra and extra[new] not in (None, ""):
            warnings.warn(
                f"Connection extra {old!r} is deprecated and ignored here because {new!r} is "
                f"also set; remove {old!r}.",
                DeprecatedExtraWarning,
                stacklevel=4,
            )
            continue
        warnings.warn(
            f"Connection extra {old!r} is deprecated: rename it to {new!r} (Airflow masks "
            f"extras whose name contains a secret word, so {old!r} showed as '***').",
            DeprecatedExtraWarning,
            stacklevel=4,
        )
        extra[new] = value
    return extra


def _base_url(host: str | None, schema: str | None, port: int | None) -> str | None:
    host = (host or "").strip()
    if not host:
        return None
    if "://" not in host:
        # A connection URI such as backendauth://id:key@fhir.example.org:8443/api%2FR4 arrives
        # as host, port and a path in "schema" (or "http"/"https" there, HttpHook style).
        scheme = schema if schema in ("http", "https") else "https"
        netloc, _, path = host.partition("/")
        if port and ":" not in netloc:
            netloc = f"{netloc}:{port}"
        if not path and schema and schema not in ("http", "https"):
            path = schema
        host = f"{scheme}://{netloc}/{path.strip('/')}"
    return host.rstrip("/")


def _text(extra: Mapping[str, Any], name: str) -> str | None:
    value = extra.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _scope(extra: Mapping[str, Any]) -> str | None:
    # An explicitly empty scope is meaningful (Koppeltaal wants "scope=" sent).
    if "scope" not in extra or extra["scope"] is None:
        return None
    value = extra["scope"]
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value).strip()


def _boolean(extra: Mapping[str, Any], name: str, default: bool) -> bool:
    value = extra.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"Extra {name!r} must be true or false, not {value!r}.")


def _check_bounds(name: str, value: Any, low: int, high: int, *, whole: bool) -> None:
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a whole number" if whole else "a number"
        raise ConfigurationError(f"{name!r} must be {what}, not {value!r}.")
    # ``not low <= value`` also refuses NaN, which every comparison answers False.
    if not low <= value:
        raise ConfigurationError(f"{name!r} must be at least {low}, not {value!r}.")
    if not value <= high:
        raise ConfigurationError(f"{name!r} must be at most {high}, not {value!r}.")


def _integer(extra: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    value = extra.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigurationError(f"Extra {name!r} must be a whole number, not {value!r}.") from None
    if number < minimum:
        raise ConfigurationError(f"Extra {name!r} must be at least {minimum}, not {number}.")
    return number


def _integer_or(extra: Mapping[str, Any], name: str, *, minimum: int, default: int) -> int:
    value = _integer(extra, name, minimum=minimum)
    return default if value is None else value


def _choice(extra: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> str | None:
    value = _text(extra, name)
    if value is not None and value not in choices:
        raise ConfigurationError(
            f"Extra {name!r} must be one of {', '.join(choices)}, not {value!r}."
        )
    return value


def _claims(value: Any) -> Mapping[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigurationError(
                'Extra \'extra_claims\' must be a JSON object, e.g. {"tenant": "x"}.'
            ) from None
    if not isinstance(value, Mapping):
        raise ConfigurationError("Extra 'extra_claims' must be a JSON object.")
    return dict(value)


CERTIFICATE_HEADERS = ("x5t#S256", "x5t", "x5c")


def _certificate_headers(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = _list(value, "certificate_headers")
    unknown = [n for n in names if n not in CERTIFICATE_HEADERS]
    if unknown:
        raise ConfigurationError(
            f"Extra 'certificate_headers' takes {', '.join(CERTIFICATE_HEADERS)}, not "
            f"{', '.join(unknown)}."
        )
    return names


def _list(value: Any, name: str = "allowed_hosts") -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.replace(",", " ").split() if v.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    raise ConfigurationError(f"Extra {name!r} must be a list (or a space-separated string).")
