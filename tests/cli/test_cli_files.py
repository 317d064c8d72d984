"""What the CLI reads and writes on the local disk: no write through a planted symlink, no
secret member copied into a published JWKS, no unbounded read of a file the user names."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from backendauth_sandbox.testing import generate_client_key
from tests.support.cli import keygen, run


@pytest.mark.parametrize("name", ["private_key.pem", "jwks.json", "public_key.pem"])
def test_keygen_does_not_write_through_a_symlink_planted_at_the_temporary_name(
    tmp_path, capsys, name
):
    out = tmp_path / "keys"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / f"{name}.tmp").symlink_to(victim)
    keygen(capsys, out)
    assert victim.read_text() == "precious\n"
    assert (out / name).is_file() and not (out / name).is_symlink()
    assert stat.S_IMODE(os.stat(out / "private_key.pem").st_mode) == 0o600


def test_jwks_out_does_not_write_through_a_symlink_planted_at_the_temporary_name(tmp_path, capsys):
    keygen(capsys, tmp_path / "k")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "published.json"
    Path(f"{target}.tmp").symlink_to(victim)
    status, _, err = run(
        capsys, "jwks", str(tmp_path / "k" / "private_key.pem"), "--out", str(target)
    )
    assert status == 0, err
    assert victim.read_text() == "precious\n"
    assert json.loads(target.read_text())["keys"][0]["kty"] == "RSA"
    # A public document: readable by the web server that hosts it.
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".published.json")]


@pytest.mark.parametrize(
    "secret",
    [
        {"kty": "oct", "kid": "shared", "k": "c2VjcmV0LXNoYXJlZC1rZXk"},
        {"kty": "RSA", "kid": "crt", "n": "AQAB", "e": "AQAB", "p": "AQ", "q": "AQ"},
        {"kty": "RSA", "kid": "crt2", "n": "AQAB", "e": "AQAB", "dp": "AQ", "dq": "AQ", "qi": "AQ"},
        {"kty": "RSA", "kid": "multi", "n": "AQAB", "e": "AQAB", "oth": [{"r": "AQ"}]},
    ],
    ids=["k", "p-q", "dp-dq-qi", "oth"],
)
def test_jwks_merge_never_copies_secret_members(tmp_path, capsys, secret):
    keygen(capsys, tmp_path / "k")
    published = tmp_path / "published.json"
    published.write_text(json.dumps({"keys": [secret]}))
    status, out, err = run(
        capsys, "jwks", str(tmp_path / "k" / "private_key.pem"), "--merge", str(published)
    )
    assert status == 1, out
    assert "secret" in err and secret["kid"] in err
    for value in ("c2VjcmV0LXNoYXJlZC1rZXk", '"p"', '"dp"', '"oth"'):
        assert value not in out


def test_merge_refuses_the_new_key_private_members_too():
    from airflow_provider_backendauth.core.auth.keygen import merge_jwks
    from airflow_provider_backendauth.core.errors import KeyLoadError

    private = generate_client_key("EC-P256").private_jwk
    with pytest.raises(KeyLoadError, match="secret"):
        merge_jwks({"keys": []}, {"keys": [private]})


@pytest.mark.parametrize("option", ["--merge", "--passphrase-file"])
def test_files_named_on_the_command_line_are_read_with_a_bound(tmp_path, capsys, option):
    keygen(capsys, tmp_path / "k")
    status, _, err = run(
        capsys, "jwks", str(tmp_path / "k" / "private_key.pem"), option, "/dev/zero"
    )
    assert status == 1
    assert "not a regular file" in err and "/dev/zero" in err


def test_a_huge_merge_file_is_refused_before_it_is_read(tmp_path, capsys):
    keygen(capsys, tmp_path / "k")
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as handle:
        handle.truncate(64 << 20)  # sparse: 64 MB that cost no disk
    status, _, err = run(
        capsys, "jwks", str(tmp_path / "k" / "private_key.pem"), "--merge", str(huge)
    )
    assert status == 1 and "bytes" in err and str(huge) in err
