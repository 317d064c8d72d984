"""Tokens of a FHIRPath expression (the grammar of FHIRPath N1, section "Grammar").

Only what a ViewDefinition path can hold: identifiers (plain and backtick-delimited),
``$this``/``$index``/``$total``, ``%constants``, string/number/boolean/date-time literals,
and the operators and punctuation of the grammar. A malformed expression raises
``FhirPathSyntaxError`` with the offending position, never a Python traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class FhirPathError(ValueError):
    """Base class of FHIRPath errors: the expression cannot be compiled or evaluated."""


class FhirPathSyntaxError(FhirPathError):
    """The expression does not follow the FHIRPath grammar (message gives the position)."""


@dataclass(frozen=True)
class Token:
    kind: str  # ident, delimited, string, number, datetime, time, var, const, op, eof
    value: str
    pos: int


_ESCAPES = {"'": "'", '"': '"', "`": "`", "/": "/", "\\": "\\", "f": "\f", "n": "\n"}
_ESCAPES.update({"r": "\r", "t": "\t"})

_NUMBER = re.compile(r"\d+(\.\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# @2020, @2020-01-01, @2020-01-01T10:00:00.000+02:00, @T10:00; kept as text.
_DATETIME = re.compile(
    r"@\d{4}(-\d{2}(-\d{2})?)?(T(\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?(Z|[+-]\d{2}:\d{2})?)?"
)
_TIME = re.compile(r"@T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?")
_OPERATORS = ("<=", ">=", "!=", "!~", "=", "~", "<", ">", "+", "-", "*", "/", "|", "&")
_PUNCT = ".,()[]{}"


def _quoted(text: str, start: int, quote: str) -> tuple[str, int]:
    """The unescaped body of the quoted token opening at ``start``, and the end position."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise FhirPathSyntaxError(f"bad \\u escape at position {i}")
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            if nxt not in _ESCAPES:
                raise FhirPathSyntaxError(f"unknown escape \\{nxt} at position {i}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    raise FhirPathSyntaxError(f"unterminated {quote}...{quote} starting at position {start}")


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens, ending with one ``eof`` token."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if text.startswith("//", i):  # line comment
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise FhirPathSyntaxError(f"unterminated comment at position {i}")
            i = end + 2
            continue
        if ch == "'":
            value, end = _quoted(text, i, "'")
            tokens.append(Token("string", value, i))
            i = end
            continue
        if ch == "`":
            value, end = _quoted(text, i, "`")
            tokens.append(Token("delimited", value, i))
            i = end
            continue
        if ch == "@":
            m = _TIME.match(text, i) or _DATETIME.match(text, i)
            if not m:
                raise FhirPathSyntaxError(f"malformed date/time literal at position {i}")
            kind = "time" if text.startswith("@T", i) else "datetime"
            tokens.append(Token(kind, m.group()[1:], i))
            i = m.end()
            continue
        if ch == "%":
            if i + 1 < n and text[i + 1] in "`'":
                value, end = _quoted(text, i + 1, text[i + 1])
            else:
                m = _IDENT.match(text, i + 1)
                if not m:
                    raise FhirPathSyntaxError(f"'%' without a name at position {i}")
                value, end = m.group(), m.end()
            tokens.append(Token("const", value, i))
            i = end
            continue
        if ch == "$":
            m = _IDENT.match(text, i + 1)
            if not m or m.group() not in ("this", "index", "total"):
                raise FhirPathSyntaxError(f"unknown $-variable at position {i}")
            tokens.append(Token("var", m.group(), i))
            i = m.end()
            continue
        if ch.isdigit():
            m = _NUMBER.match(text, i)
            assert m is not None
            tokens.append(Token("number", m.group(), i))
            i = m.end()
            continue
        m = _IDENT.match(text, i)
        if m:
            tokens.append(Token("ident", m.group(), i))
            i = m.end()
            continue
        for op in _OPERATORS:
            if text.startswith(op, i):
                tokens.append(Token("op", op, i))
                i += len(op)
                break
        else:
            if ch in _PUNCT:
                tokens.append(Token("op", ch, i))
                i += 1
                continue
            raise FhirPathSyntaxError(f"unexpected character {ch!r} at position {i}")
    tokens.append(Token("eof", "", n))
    return tokens
