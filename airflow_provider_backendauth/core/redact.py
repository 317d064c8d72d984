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
