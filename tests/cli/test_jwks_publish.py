"""``backendauth jwks publish``: the public JWKS written where vendors fetch it (a local path
served over HTTP, S3 through moto), merged, never with a secret member, and ``backendauth
check`` warning when the connection's kid is missing from the JWKS at its ``jku``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from backendauth_sandbox.testing import generate_client_key
from tests.support.cli import keygen, run
from tests.support.servers import served_directory


@pytest.fixture(autouse=True)
def _no_adhoc_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BACKENDAUTH_CLI_ADHOC", raising=False)


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on loopback (what a vendor fetches the JWKS from)."""
    root = tmp_path / "www"
    root.mkdir()
    with served_directory(root) as url:
        yield root, url


def test_publish_merges_keeps_alg_and_replace_retires(tmp_path, capsys):
    old = keygen(capsys, tmp_path / "old")
    new = keygen(capsys, tmp_path / "new", "--alg", "ES384")
    target = tmp_path / "site" / "jwks.json"
    target.parent.mkdir()
    for made in ("old", "new"):
        status, out, err = run(
            capsys, "jwks", "publish", str(tmp_path / made / "private_key.pem"), "--to", str(target)
        )
        assert status == 0, err
    document = json.loads(target.read_text())
    assert [(k["kid"], k["alg"]) for k in document["keys"]] == [
        (old["kid"], "RS384"),
        (new["kid"], "ES384"),
    ]
    assert "Published" in out and new["kid"] in out
    status, _, err = run(
        capsys,
        "jwks",
        "publish",
        str(tmp_path / "new" / "private_key.pem"),
        "--to",
        str(target),
        "--replace",
    )
    assert status == 0, err
    assert [k["kid"] for k in json.loads(target.read_text())["keys"]] == [new["kid"]]


def test_publish_refuses_a_published_document_with_secret_members(tmp_path, capsys):
    keygen(capsys, tmp_path / "k")
    target = tmp_path / "jwks.json"
    target.write_text(json.dumps({"keys": [generate_client_key("RSA").private_jwk]}))
    before = target.read_text()
    status, _, err = run(
        capsys, "jwks", "publish", str(tmp_path / "k" / "private_key.pem"), "--to", str(target)
    )
    assert status == 1 and "secret member" in err
    assert target.read_text() == before


@pytest.mark.parametrize(
    "argv",
    [
        ["jwks", "publish", "k.pem"],
        ["jwks", "k.pem", "--to", "x.json"],
        ["jwks", "a.pem", "b.pem"],
        ["jwks", "publish", "k.pem", "--to", "x.json", "--merge", "y.json"],
    ],
    ids=["no-to", "to-without-publish", "two-keys", "publish-and-merge"],
)
def test_publish_usage_errors_exit_2(capsys, argv):
    status, _, err = run(capsys, *argv)
    assert status == 2 and err.count("\n") == 1


def test_check_warns_when_the_kid_is_missing_from_the_jwks_at_jku(
    sandbox, tmp_path, capsys, web_root
):
    root, url = web_root
    jku = f"{url}/jwks.json"
    old = keygen(capsys, tmp_path / "old")
    new = keygen(capsys, tmp_path / "new")
    assert (
        run(
            capsys,
            "jwks",
            "publish",
            old["files"]["private_key.pem"],
            "--to",
            str(root / "jwks.json"),
        )[0]
        == 0
    )
    client_id = f"jku-{new['kid'][:8]}"
    sandbox.register_client(
        client_id, json.loads((tmp_path / "new" / "jwks.json").read_text()), jku=jku
    )
    conn = {
        "conn_type": "backendauth",
        "host": sandbox.fhir_base,
        "login": client_id,
        "extra": {"profile": "smart", "key_file": new["files"]["private_key.pem"], "jku": jku},
    }
    status, out, _ = run(capsys, "check", "--conn-json", json.dumps(conn))
    assert status == 0, out  # the sandbox knows the key; the vendor fetching jku would not
    assert f"WARNING: kid '{new['kid']}' is not in the JWKS at jku" in out
    assert old["kid"] in out
    assert (
        run(
            capsys,
            "jwks",
            "publish",
            new["files"]["private_key.pem"],
            "--to",
            str(root / "jwks.json"),
        )[0]
        == 0
    )
    status, out, _ = run(capsys, "check", "--conn-json", json.dumps(conn))
    assert status == 0 and "WARNING" not in out, out
