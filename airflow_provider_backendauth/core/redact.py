"""Redaction of secrets from text that came from a server or may quote one.

One place, used by every path that turns server text into an exception, a log line, XCom or a
trigger event: every ``BackendAuthError`` message and ``diagnostics`` (``errors.py``), every
provider log record (``get_logger``), the trigger's events.

What is removed:

- by value: the access tokens this process obtained recently (``remember_secret``), wherever
  they appear, however the server quoted them ("Token abc... is not valid");
- by shape: ``Bearer <anything>``, anything shaped like a JWT (assertions, JWT access
  tokens, a client id that is a JWT), ``access_token=...``/``assertion=...`` pairs, and URL
  query strings (signed storage URLs carry credentials there, search URLs carry patient data).

What is escaped: every control character (C0 such as CR, LF and ESC, DEL, C1, and the Unicode
line and paragraph separators) becomes a visible escape (``\r``, ``\n``, ``\x1b``...), so a
server cannot forge log lines or send terminal escapes to whoever reads a log, an error or an
event. Server text reaches every exception, log record, trigger event and quoted diagnostic
through ``redact``: that is the one treatment, applied at each of those sinks.

``redact_values`` removes the remembered secrets (by value only) from data bound for XCom: a
REST answer that echoes the request's headers would otherwise put the access token there.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from typing import Any

REDACTED = "[redacted]"
# Shorter values are too likely to match ordinary words; real tokens are far longer.
MIN_SECRET_LENGTH = 8
# Current token plus the recent ones (renewals, several connections), and the recent client
# assertions with their payload and signature segments (a server may quote one bare).
_RECENT = 256

_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
# A secret's name followed by a value: ``access_token=...``, ``"assertion": "..."``. The
# separator must be there, so prose ("rejected the client assertion for client id") is kept.
_SECRET_WORDS = re.compile(
    r"(access_token|client_assertion|assertion)[\"']?\s*[=:]\s*[\"']?[^\s&\"',}]+", re.I
)
_BEARER = re.compile(r"\b(Bearer)(\s+|%20|\+)[^\s\"',;}\]]+", re.I)
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s'\"<>#]*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

_secrets: deque[str] = deque(maxlen=_RECENT)
_secrets_lock = threading.Lock()


def remember_secret(value: str) -> None:
    """Redact ``value`` from all text from now on (called with each access token obtained)."""
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    with _secrets_lock:
        if value not in _secrets:
            _secrets.append(value)


def redact(text: str) -> str:
    """``text`` without token values, bearer credentials, JWTs or URL query strings."""
    if not isinstance(text, str):
        text = str(text)
    with _secrets_lock:
        values = sorted(_secrets, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT_LIKE.sub(REDACTED, text)
    text = _SECRET_WORDS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _URL_QUERY.sub(lambda m: f"{m.group(1)}?{REDACTED}", text)
    return escape_controls(text)


def escape_controls(text: str) -> str:
    """``text`` with every control character shown as an escape (``\n``, ``\x1b``,
    ``\u2028``): one line, no terminal escapes."""
    return _CONTROL.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def redact_values(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every remembered secret replaced by
    ``[redacted]`` wherever a string holds it; nothing else changes (data is data: no
    redaction by shape, no escaping)."""
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    if not secrets:
        return value
    return _redact_values(value, secrets)


def _redact_values(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact_values(k, secrets): _redact_values(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_values(v, secrets) for v in value)
    return value


def short_error(exc: BaseException, limit: int = 240) -> str:
    """An exception's message fit for a log line or another error: redacted, query strings
    dropped (signed URLs carry credentials there; HTTP client errors quote URLs), shortened."""
    text = redact(" ".join(str(exc).split()))
    return text if len(text) <= limit else text[:limit] + "..."


class RedactingFilter(logging.Filter):
    """Formats a record's message once and redacts it (its arguments may be server text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error handling
            return True
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


_FILTER = RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter attached (a filter on a parent
    logger does not see its children's records, so each module's logger gets one)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
