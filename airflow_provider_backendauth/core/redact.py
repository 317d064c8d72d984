"""Redaction of secrets from text that came from a server or may quote one.

One place, used by every path that turns server text into an exception, a log line, XCom or a
trigger event.
"""

from __future__ import annotations

import re

_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_SECRET_WORDS = re.compile(r"(access_token|client_assertion|assertion)\W+[^\s&\"',}]+", re.I)


def redact(text: str) -> str:
    """Remove anything shaped like a JWT or a token/assertion value from server text."""
    text = _JWT_LIKE.sub("[redacted]", text)
    return _SECRET_WORDS.sub(lambda m: f"{m.group(1)}=[redacted]", text)


_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def short_error(exc: BaseException, limit: int = 240) -> str:
    """An exception's message fit for a log line or another error: redacted, query strings
    dropped (signed URLs carry credentials there; HTTP client errors quote URLs), shortened."""
    text = redact(_URL_QUERY.sub(r"\1?...", " ".join(str(exc).split())))
    return text if len(text) <= limit else text[:limit] + "..."
