"""Network failures in plain words ("connection refused", "timed out", ...).

requests/urllib3 wrap the cause several layers deep (ConnectionError -> MaxRetryError ->
NewConnectionError -> ConnectionRefusedError) and their messages are long pool dumps that
never say what happened in the first 200 characters. ``describe_network_error`` walks the
chain and names the cause, so a user reads "connection refused", not "Max retries exceeded".
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import requests


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (args, urllib3's ``reason``, cause, context)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nested in (
            *[a for a in current.args if isinstance(a, BaseException)],
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
        ):
            if isinstance(nested, BaseException):
                stack.append(nested)


def describe_network_error(exc: BaseException) -> str:
    """A short plain reason for a failed request: what happened, never a pool dump."""
    from airflow_provider_backendauth.core.http.deadline import DeadlineExceededError

    if isinstance(exc, DeadlineExceededError):
        return exc.reason  # "did not answer within 30 s (total deadline: ...)"
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "verification failed"
            return f"TLS certificate not trusted ({reason})"
    if isinstance(exc, requests.exceptions.SSLError) or any(
        isinstance(c, ssl.SSLError) for c in causes
    ):
        return "TLS handshake failed"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timed out while connecting"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "timed out waiting for the answer"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror) or type(cause).__name__ == "NameResolutionError":
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    return type(exc).__name__
