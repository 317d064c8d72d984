"""FHIRPath expressions parsed into a small syntax tree (a Pratt parser over ``lexer`` tokens).

The tree is compiled once per view (``compile.py``); nothing here runs per resource.
Operator precedence follows FHIRPath N1 section 6.10 (highest first): ``.``/``[]``,
unary ``+ -``, ``* / div mod``, ``+ - &``, ``is as``, ``|``, ``< > <= >=``,
``= ~ != !~``, ``in contains``, ``and``, ``xor or``, ``implies``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_provider_backendauth.core.views.fhirpath.lexer import (
    FhirPathSyntaxError,
    Token,
    tokenize,
)


class Node:
    """Base class of the syntax tree."""


@dataclass(frozen=True)
class Literal(Node):
    value: tuple[Any, ...]  # the collection the literal stands for (empty for ``{}``)
    type: str | None


@dataclass(frozen=True)
class Const(Node):
    name: str  # %name


@dataclass(frozen=True)
class Var(Node):
    name: str  # $this, $index, $total


@dataclass(frozen=True)
class Member(Node):
    target: Node | None  # None: navigate from the expression's focus
    name: str


@dataclass(frozen=True)
class Call(Node):
    target: Node | None  # None: call on the expression's focus
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class TypeOp(Node):
    op: str  # is, as
    operand: Node
    type_name: str


_BINARY_POWER = {
    "implies": 10,
    "or": 20,
    "xor": 20,
    "and": 30,
    "in": 40,
    "contains": 40,
    "=": 50,
    "~": 50,
    "!=": 50,
    "!~": 50,
    "<": 60,
    ">": 60,
    "<=": 60,
    ">=": 60,
    "|": 70,
    "is": 80,
    "as": 80,
    "+": 90,
    "-": 90,
    "&": 90,
    "*": 100,
    "/": 100,
    "div": 100,
    "mod": 100,
}
_UNARY_POWER = 110
_WORD_OPERATORS = {k for k in _BINARY_POWER if k.isalpha()}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect(self, value: str) -> Token:
        tok = self.advance()
        if tok.kind != "op" or tok.value != value:
            raise self.error(tok, f"expected {value!r}")
        return tok

    def error(self, tok: Token, what: str) -> FhirPathSyntaxError:
        found = "end of expression" if tok.kind == "eof" else repr(tok.value)
        return FhirPathSyntaxError(f"{what} at position {tok.pos}, found {found}")

    def binary_power(self, tok: Token) -> int:
        if tok.kind == "op" and tok.value in _BINARY_POWER:
            return _BINARY_POWER[tok.value]
        if tok.kind == "ident" and tok.value in _WORD_OPERATORS:
            return _BINARY_POWER[tok.value]
        return 0

    def parse(self) -> Node:
        node = self.expression(0)
        if self.tok.kind != "eof":
            raise self.error(self.tok, "unexpected token")
        return node

    def expression(self, right_power: int) -> Node:
        left = self.postfix(self.term())
        while True:
            power = self.binary_power(self.tok)
            if power <= right_power:
                return left
            op = self.advance().value
            if op in ("is", "as"):
                left = TypeOp(op, left, self.type_specifier())
            else:
                left = Binary(op, left, self.expression(power))

    def type_specifier(self) -> str:
        parts = [self.identifier()]
        while self.tok.kind == "op" and self.tok.value == ".":
            self.advance()
            parts.append(self.identifier())
        return ".".join(parts)

    def identifier(self) -> str:
        tok = self.advance()
        if tok.kind not in ("ident", "delimited"):
            raise self.error(tok, "expected an identifier")
        return tok.value

    def term(self) -> Node:
        tok = self.advance()
        if tok.kind == "number":
            if "." in tok.value:
                return Literal((Decimal(tok.value),), "decimal")
            return Literal((int(tok.value),), "integer")
        if tok.kind == "string":
            return Literal((tok.value,), "string")
        if tok.kind == "datetime":
            kind = "dateTime" if "T" in tok.value else "date"
            return Literal((tok.value,), kind)
        if tok.kind == "time":
            return Literal((tok.value[1:],), "time")
        if tok.kind == "const":
            return Const(tok.value)
        if tok.kind == "var":
            return Var(tok.value)
        if tok.kind == "op" and tok.value in ("+", "-"):
            return Unary(tok.value, self.expression(_UNARY_POWER))
        if tok.kind == "op" and tok.value == "(":
            inner = self.expression(0)
            self.expect(")")
            return inner
        if tok.kind == "op" and tok.value == "{":
            self.expect("}")
            return Literal((), None)
        if tok.kind == "ident" and tok.value in ("true", "false"):
            return Literal((tok.value == "true",), "boolean")
        if tok.kind in ("ident", "delimited"):
            return self.invocation(None, tok)
        raise self.error(tok, "expected a term")

    def invocation(self, target: Node | None, name: Token) -> Node:
        if name.kind == "ident" and self.tok.kind == "op" and self.tok.value == "(":
            self.advance()
            args: list[Node] = []
            if not (self.tok.kind == "op" and self.tok.value == ")"):
                args.append(self.expression(0))
                while self.tok.kind == "op" and self.tok.value == ",":
                    self.advance()
                    args.append(self.expression(0))
            self.expect(")")
            return Call(target, name.value, tuple(args))
        return Member(target, name.value)

    def postfix(self, node: Node) -> Node:
        while self.tok.kind == "op" and self.tok.value in (".", "["):
            if self.advance().value == ".":
                name = self.advance()
                if name.kind not in ("ident", "delimited"):
                    raise self.error(name, "expected a name after '.'")
                node = self.invocation(node, name)
            else:
                index = self.expression(0)
                self.expect("]")
                node = Index(node, index)
        return node


def parse(text: str) -> Node:
    """The syntax tree of ``text``; raises ``FhirPathSyntaxError`` when it is malformed."""
    if not isinstance(text, str) or not text.strip():
        raise FhirPathSyntaxError("the expression is empty")
    return _Parser(text).parse()
