"""FHIRPath tokens and syntax: malformed expressions fail with a position, not a traceback."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_backendauth.core.views.fhirpath.lexer import FhirPathSyntaxError, tokenize
from airflow_provider_backendauth.core.views.fhirpath.parser import (
    Binary,
    Call,
    Index,
    Literal,
    Member,
    TypeOp,
    parse,
)


def test_tokens_cover_the_grammar_used_by_views() -> None:
    kinds = [(t.kind, t.value) for t in tokenize("name.where(use = 'x\\'y').`family` // note")]
    assert kinds == [
        ("ident", "name"),
        ("op", "."),
        ("ident", "where"),
        ("op", "("),
        ("ident", "use"),
        ("op", "="),
        ("string", "x'y"),
        ("op", ")"),
        ("op", "."),
        ("delimited", "family"),
        ("eof", ""),
    ]
    assert [t.kind for t in tokenize("%rowIndex $this @2020-01-01T10:00Z @T12:30 1.50")] == [
        "const", "var", "datetime", "time", "number", "eof",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name.where(use = 'x)", "unterminated '...' starting at position 17"),
        ("@@", "malformed date/time literal at position 0"),
        ("a # b", "unexpected character '#' at position 2"),
        ("$that", "unknown $-variable at position 0"),
        ("'\\q'", "unknown escape \\q"),
        ("/* open", "unterminated comment"),
    ],
)
def test_lexer_errors_give_the_position(text: str, message: str) -> None:
    with pytest.raises(
        FhirPathSyntaxError, match=message.replace("$", "\\$").replace("\\q", "\\\\q")
    ):
        tokenize(text)


def test_precedence_follows_the_specification() -> None:
    tree = parse("a or b and c = 1 + 2 * 3")
    assert isinstance(tree, Binary) and tree.op == "or"
    right = tree.right
    assert isinstance(right, Binary) and right.op == "and"
    equality = right.right
    assert isinstance(equality, Binary) and equality.op == "="
    total = equality.right
    assert isinstance(total, Binary) and total.op == "+"
    assert isinstance(total.right, Binary) and total.right.op == "*"


def test_invocations_indexers_and_type_operators() -> None:
    tree = parse("name[0].given.first() is FHIR.string")
    assert isinstance(tree, TypeOp) and tree.type_name == "FHIR.string"
    first = tree.operand
    assert isinstance(first, Call) and first.name == "first" and first.args == ()
    given = first.target
    assert isinstance(given, Member) and given.name == "given"
    assert isinstance(given.target, Index)
    assert parse("1.50") == Literal((Decimal("1.50"),), "decimal")
    assert parse("{}") == Literal((), None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name.", "expected a name after '.' at position 5, found end of expression"),
        ("where(a", "expected ')' at position 7"),
        ("a b", "unexpected token at position 2, found 'b'"),
        ("", "the expression is empty"),
        ("name[0", "expected ']'"),
        (") x", "expected a term at position 0"),
    ],
)
def test_parser_errors_give_the_position(text: str, message: str) -> None:
    with pytest.raises(
        FhirPathSyntaxError,
        match=message.replace("(", "\\(").replace(")", "\\)").replace("[", "\\["),
    ):
        parse(text)
