"""The transport boundary (issue 17): every request goes through ``core/http/``.

No module outside ``airflow_provider_backendauth/core/http/`` constructs a requests session
or an aiohttp (or httpx) client, or reads a response's body itself (``.content``, ``.text``,
``.json()``, ``.raw``, ``iter_content``/``iter_lines``, aiohttp's ``read``, httpx's
``aread``/``aiter_*``): bodies are read by
the transport within a cap per purpose and handed on with ``body_of``/``text_of``/
``json_of``/``error_body_of``. Checked on the source (AST). A "response" is recognised by its
variable's name (``response``, ``resp``, ``reply``, ``answer``, with a prefix or a plural),
the project's spelling everywhere.

One exception, named here: ``core/bulk/wire.py``, the bulk file transfer engine's reader,
streams the raw body of export files itself, under the downloader's limits (``max_file_bytes``,
``max_compression_ratio``, the bounded inflaters of ``core/bulk/decode.py``; see
``docs/bulk-export.md``).
"""

from __future__ import annotations

import ast
import pathlib
import re
from collections.abc import Iterator

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_backendauth"
TRANSPORT = PACKAGE / "core" / "http"
EXCEPTIONS = {PACKAGE / "core" / "bulk" / "wire.py": {"raw"}}

BODY_ATTRIBUTES = frozenset(
    {
        "content",
        "text",
        "json",
        "raw",
        "iter_content",
        "iter_lines",
        "iter_bytes",
        "iter_raw",
        "aread",
        "aiter_bytes",
        "aiter_raw",
        "aiter_lines",
        "aiter_text",
        "read",
    }
)
RESPONSE_NAME = re.compile(r"(^|_)(response|resp|reply|answer)s?$", re.I)
CLIENT_CONSTRUCTORS = {
    ("requests", "Session"),
    ("requests", "session"),
    ("httpx", "Client"),
    ("httpx", "AsyncClient"),
    ("aiohttp", "ClientSession"),
    ("aiohttp", "TCPConnector"),
}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def violations(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """(line, what) for each construction of an HTTP client and each body read in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    allowed = EXCEPTIONS.get(path, set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in BODY_ATTRIBUTES:
            owner = _name(node.value)
            if RESPONSE_NAME.search(owner) and node.attr not in allowed:
                yield node.lineno, f"reads {owner}.{node.attr}"
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                pair = (_name(func.value), func.attr)
                if pair in CLIENT_CONSTRUCTORS:
                    yield node.lineno, f"constructs {pair[0]}.{pair[1]}"
            elif isinstance(func, ast.Name) and func.id in (
                "Session",
                "AsyncClient",
                "ClientSession",
            ):
                yield node.lineno, f"constructs {func.id}"


def outside_the_transport() -> list[pathlib.Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if TRANSPORT not in p.parents]


def test_the_transport_and_the_rest_exist() -> None:
    assert len(list(TRANSPORT.glob("*.py"))) >= 6
    assert len(outside_the_transport()) > 40


@pytest.mark.parametrize("path", outside_the_transport(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_transport_makes_clients_and_reads_bodies(path: pathlib.Path) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line} {what}" for line, what in violations(path)]
    assert not bad, bad


def test_the_check_sees_a_violation(tmp_path: pathlib.Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import aiohttp, requests, httpx\n"
        "def f(url):\n"
        "    session = requests.Session()\n"
        "    response = session.get(url)\n"
        "    data = response.json()\n"
        "    async def g():\n"
        "        async with httpx.AsyncClient() as client:\n"
        "            reply = await client.get(url)\n"
        "            return reply.content, status_response.text\n"
        "    return response.raw.read(), [line for line in response.iter_lines()]\n"
        "async def h(url):\n"
        "    async with aiohttp.ClientSession() as session:\n"
        "        answer = await session.get(url)\n"
        "        return await answer.read()\n"
    )
    found = sorted(violations(probe))
    assert found == [
        (3, "constructs requests.Session"),
        (5, "reads response.json"),
        (7, "constructs httpx.AsyncClient"),
        (9, "reads reply.content"),
        (9, "reads status_response.text"),
        (10, "reads response.iter_lines"),
        (10, "reads response.raw"),
        (12, "constructs aiohttp.ClientSession"),
        (14, "reads answer.read"),
    ], found
