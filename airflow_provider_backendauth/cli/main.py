"""The ``backendauth`` command line: argument definitions, dispatch and error reporting.

The commands are declared once, as data (``COMMANDS``), and turned into an argparse parser
here and into Airflow CLI commands in ``airflow_commands.py``, so ``backendauth check X`` and
``airflow backendauth check X`` cannot drift apart.

Exit status: 0 success, 1 failure (a refused check, a bad key, an unreadable file, ...),
2 bad usage. Errors are one line on stderr, never a traceback (set ``BACKENDAUTH_DEBUG=1``
to see one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PROG = "backendauth"


@dataclass(frozen=True)
class Option:
    """One argument: argparse ``add_argument`` flags and keywords (the subset Airflow's
    ``Arg`` accepts too)."""

    flags: tuple[str, ...]
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    # A function name in ``commands.py``, or ``module:function`` for a command kept in its own
    # module of this package (``flatten:flatten``); imported only when the command runs.
    handler: str
    options: tuple[Option, ...]
    description: str = ""


_PASSPHRASE = Option(
    ("--passphrase-file",),
    "file holding the passphrase of the private key (first line; never pass it as an argument)",
    {"metavar": "FILE"},
)
_CONNECTION = (
    Option(
        ("--conn-json",),
        "the connection as Airflow JSON (as in AIRFLOW_CONN_*), or @FILE to read it from a file",
        {"metavar": "JSON"},
    ),
    Option(("--host",), "base URL (connection host)", {"metavar": "URL"}),
    Option(("--client-id",), "client id (connection login)", {"metavar": "ID"}),
    Option(("--key-file",), "private key file (PEM, JWK or JWKS)", {"metavar": "FILE"}),
    Option(("--profile",), "provider profile (default: smart)", {"metavar": "PROFILE"}),
    Option(("--token-url",), "token endpoint (default: the profile's)", {"metavar": "URL"}),
    Option(("--scope",), "scope (default: the profile's)", {"metavar": "SCOPE"}),
    Option(
        ("--extra",),
        "any other connection extra, e.g. --extra key_id=k1 (repeatable)",
        {"action": "append", "metavar": "NAME=VALUE", "default": None},
    ),
    _PASSPHRASE,
)

COMMANDS: tuple[Command, ...] = (
    Command(
        "keygen",
        "generate a key pair for a profile, with its JWKS, public PEM and certificate",
        "keygen",
        (
            Option(("--profile",), "provider profile the key is for", {"required": True}),
            Option(("--alg",), "signing algorithm (default: the profile's preferred one)"),
            Option(("--kid",), "key id to publish (default: the RFC 7638 thumbprint)"),
            Option(("--out",), "directory for the files (default: .)", {"default": "."}),
            _PASSPHRASE,
            Option(("--bits",), "RSA key size (default: 3072)", {"type": int, "default": 3072}),
            Option(("--days",), "certificate validity in days", {"type": int, "default": 365}),
            Option(("--subject",), "certificate subject common name", {"metavar": "CN"}),
            Option(("--force",), "overwrite existing files", {"action": "store_true"}),
            Option(("--json",), "print a JSON summary instead of text", {"action": "store_true"}),
        ),
        "Writes private_key.pem (mode 0600), public_key.pem, jwks.json and certificate.pem, "
        "then prints what to register with the vendor.",
    ),
    Command(
        "jwks",
        "print the public JWKS of a private key, merged into a published one, or publish it",
        "jwks",
        (
            Option(
                ("key",),
                "private key file (PEM, JWK or JWKS); 'publish KEY --to URL' writes its public "
                "JWKS to where vendors fetch it",
                {"metavar": "[publish] KEY", "nargs": "+"},
            ),
            Option(
                ("--to",),
                "with publish: where the JWKS lives (s3://conn@bucket/jwks.json, gs://..., "
                "abfs://..., or a local path); merged with what is there",
                {"metavar": "URL"},
            ),
            Option(
                ("--replace",),
                "with publish: write only this key (retire the others)",
                {"action": "store_true"},
            ),
            Option(
                ("--merge",),
                "published JWKS to add the key to (key rotation: old and new kid side by side)",
                {"metavar": "JWKS.json"},
            ),
            Option(("--kid",), "key id (default: the JWK's own, else the RFC 7638 thumbprint)"),
            Option(("--alg",), "alg member (default: from --profile, the JWK or the EC curve)"),
            Option(("--profile",), "choose the alg the profile would sign with"),
            Option(("--out",), "write here (atomically) instead of stdout", {"metavar": "FILE"}),
            _PASSPHRASE,
        ),
    ),
    Command(
        "check",
        "sign an assertion, exchange it for a token and call the API, like the UI's Test",
        "check",
        (
            Option(("conn_id",), "Airflow connection id", {"nargs": "?", "metavar": "CONN_ID"}),
            *_CONNECTION,
            Option(("--show-token",), "print the access token", {"action": "store_true"}),
        ),
        "Exit status 0 when the token exchange (and the API call) worked, 1 otherwise. The "
        "token is never printed unless --show-token is given.",
    ),
    Command(
        "inspect",
        "show the header and claims of the assertion a connection would send (or of a JWT)",
        "inspect",
        (
            Option(
                ("target",),
                "an Airflow connection id, or a JWT to decode",
                {"nargs": "?", "metavar": "CONN_ID|JWT"},
            ),
            *_CONNECTION,
        ),
        "The signature is never shown. Nothing is sent to the token endpoint (profiles without "
        "a fixed token URL fetch the server's discovery document to learn it).",
    ),
    Command(
        "flatten",
        "run a SQL-on-FHIR ViewDefinition over NDJSON files into a table (Parquet, Delta Lake)",
        "flatten:flatten",
        (
            Option(("view",), "the ViewDefinition (JSON file)", {"metavar": "VIEW.json"}),
            Option(
                ("inputs",),
                "NDJSON files of resources (.ndjson or .ndjson.gz; paths or URLs)",
                {"nargs": "+", "metavar": "INPUT.ndjson"},
            ),
            Option(("--out",), "the table's folder (path or URL)", {"required": True}),
            Option(
                ("--incremental",),
                "merge into the table at --out (the inputs are an export with _since)",
                {"action": "store_true"},
            ),
            Option(
                ("--deleted",),
                "a bulk export's deleted file (Bundle of DELETE requests; repeatable)",
                {"action": "append", "metavar": "FILE", "default": None},
            ),
            Option(
                ("--decimals",),
                "decimal columns as the exact FHIR text (default) or decimal(38,18)",
                {"choices": ("string", "decimal"), "default": "string"},
            ),
            Option(
                ("--temporal",),
                "date/dateTime columns as text (default, as the spec) or date/timestamp",
                {"choices": ("string", "timestamp"), "default": "string"},
            ),
            Option(("--json",), "print a JSON summary instead of text", {"action": "store_true"}),
        ),
        "Nothing is visible at --out until the whole table version is committed; an invalid "
        "view or a malformed line fails with nothing written. See docs/tables.md.",
    ),
)


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class UsageError(CommandError):
    """The command was called wrongly (what argparse cannot see): exit status 2, like
    argparse's own usage errors."""


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Keys and connections for airflow-provider-backendauth "
        "(SMART Backend Services / RFC 7523 private_key_jwt).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        for option in command.options:
            sub.add_argument(*option.flags, help=option.help, **option.kwargs)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args.handler, args)


def run(handler: str, args: argparse.Namespace) -> int:
    """Run a command's handler; turn every expected failure into one line on stderr."""
    import importlib

    module_name, _, name = handler.rpartition(":")
    module = importlib.import_module(
        f"airflow_provider_backendauth.cli.{module_name or 'commands'}"
    )
    function: Callable[[argparse.Namespace], int] = getattr(module, name)
    try:
        return function(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        print(f"{PROG} {handler}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("BACKENDAUTH_DEBUG"):
            raise
        print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr)
        return 1


def describe_error(exc: BaseException) -> str:
    from airflow_provider_backendauth.core.errors import BackendAuthError

    if isinstance(exc, (BackendAuthError, CommandError)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        text = f"{where}{exc.strerror}"
    elif type(exc).__name__ == "AirflowNotFoundException" and str(exc):
        text = str(exc)  # "The conn_id `x` isn't defined": the class name adds nothing
    else:
        # Other foreign errors: their own message, with what kind of error it is.
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message held


if __name__ == "__main__":
    sys.exit(main())
