"""``python -m backendauth_sandbox``: run the sandbox as its own process.

Prints one JSON line with the addresses (and writes it to ``--ready-file``), then serves until
SIGTERM or SIGINT. Drive it from another process through the ``/_sandbox/`` control API.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from .server import Sandbox
from .vendor_rules import VENDORS


def _client_spec(text: str) -> tuple[str, str, Path]:
    """``CLIENT_ID=VENDOR:PATH`` (or ``CLIENT_ID=PATH`` for the smart vendor)."""
    client_id, sep, rest = text.partition("=")
    if not sep or not client_id or not rest:
        raise argparse.ArgumentTypeError(f"expected CLIENT_ID=VENDOR:PATH, got '{text}'")
    vendor, sep, path = rest.partition(":")
    if not sep or vendor not in VENDORS:
        vendor, path = "smart", rest
    file = Path(path)
    if not file.is_file():
        raise argparse.ArgumentTypeError(f"no such key file: '{path}'")
    return client_id, vendor, file


def _setting(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got '{text}'")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backendauth_sandbox",
        description="Local SMART Backend Services + FHIR R4 + Bulk Data sandbox server.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to listen on; give a fixed one (e.g. --port 8765) so connection URLs stay "
        "the same across restarts (default 0: a free port, printed in the JSON line)",
    )
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--token-lifetime", type=int, default=300)
    parser.add_argument("--bulk-job-seconds", type=float, default=1.0)
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        type=_client_spec,
        metavar="CLIENT_ID=VENDOR:PATH",
        help="register a client from a public JWKS/JWK JSON file or a PEM file; "
        f"vendors: {', '.join(sorted(VENDORS))} (repeatable)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=_setting,
        metavar="NAME=VALUE",
        help="any SandboxSettings field, value as JSON (e.g. bulk_gzip=false) (repeatable)",
    )
    parser.add_argument("--ready-file", type=Path, help="also write the JSON line here")
    parser.add_argument("--log-level", default="WARNING")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    try:
        sandbox = Sandbox(
            patients=args.patients,
            token_lifetime=args.token_lifetime,
            seed=args.seed,
            host=args.host,
            port=args.port,
            bulk_job_seconds=args.bulk_job_seconds,
            **dict(args.set),
        )
        for client_id, vendor, path in args.client:
            sandbox.register_client(client_id, path.read_text(encoding="utf-8"), vendor=vendor)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    sandbox.start()
    try:
        ready = json.dumps(
            {
                "url": sandbox.url,
                "fhir_base": sandbox.fhir_base,
                "token_url": sandbox.token_url,
                "issuer": sandbox.issuer,
                "foreign_url": sandbox.foreign_url,
                "pid": os.getpid(),
            }
        )
        print(ready, flush=True)
        if args.ready_file is not None:
            # Written atomically: a reader never sees half a line.
            tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
            tmp.write_text(ready + "\n", encoding="utf-8")
            os.replace(tmp, args.ready_file)
        while not stop.wait(3600):
            pass
    finally:
        sandbox.stop()
        if args.ready_file is not None:
            with contextlib.suppress(OSError):
                args.ready_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
