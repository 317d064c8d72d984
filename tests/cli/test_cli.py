"""The ``backendauth`` CLI: in-process for behaviour, as a subprocess for exit codes and the
console script. JWKS and certificates are checked with jwcrypto / cryptography, never with
the code that wrote them; tokens come from the real sandbox server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwk, jws

from airflow_provider_backendauth.cli.main import main
from airflow_provider_backendauth.core.auth.keys import load_signing_key_file
from backendauth_sandbox.testing import assertion_claims, generate_client_key, sign_assertion

BACKENDAUTH = Path(sys.executable).with_name("backendauth")
JWT_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]{20,}")


@pytest.fixture(autouse=True)
def _no_adhoc_connection(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # check/inspect expose --conn-json as an environment connection of this process.
    monkeypatch.delenv("AIRFLOW_CONN_BACKENDAUTH_CLI_ADHOC", raising=False)
    yield


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def keygen(
    capsys: pytest.CaptureFixture[str], out: Path, profile: str, *more: str
) -> dict[str, Any]:
    status, stdout, stderr = run(
        capsys, "keygen", "--profile", profile, "--out", str(out), "--bits", "2048", "--json", *more
    )
    assert status == 0, stderr
    summary: dict[str, Any] = json.loads(stdout)
    return summary


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- keygen ---------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path, capsys):
    out = tmp_path / "keys"
    keygen(capsys, out, "smart")
    assert stat.S_IMODE(os.stat(out / "private_key.pem").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / "keys" if False else out).st_mode) == 0o700
    for public in ("public_key.pem", "jwks.json", "certificate.pem"):
        assert (out / public).is_file()
    assert not list(out.glob("*.tmp"))


def test_keygen_jwks_verifies_assertions_signed_with_the_private_key(tmp_path, capsys):
    summary = keygen(capsys, tmp_path, "smart")
    jwks = jwk.JWKSet.from_json((tmp_path / "jwks.json").read_text())
    (public,) = list(jwks["keys"])
    assert public.get("alg") == "RS384" == summary["algorithm"]
    assert public.get("use") == "sig"
    assert public.get("kid") == summary["kid"] == public.thumbprint()  # RFC 7638, by jwcrypto
    assert not public.has_private
    # The private key signs (core signer) and jwcrypto verifies with the published JWKS.
    from airflow_provider_backendauth.core.auth.assertion import (
        AssertionSpec,
        ClientAssertionSigner,
    )

    key = load_signing_key_file(str(tmp_path / "private_key.pem"))
    spec = AssertionSpec(client_id="c", audience="https://a", algorithm="RS384", kid=public.kid)
    token = jws.JWS()
    token.deserialize(ClientAssertionSigner(key, spec).sign())
    token.verify(public)
    assert json.loads(token.payload)["iss"] == "c"


def test_keygen_default_is_rsa_3072(tmp_path, capsys):
    status, _, _ = run(capsys, "keygen", "--profile", "redox", "--out", str(tmp_path))
    assert status == 0
    key = serialization.load_pem_public_key((tmp_path / "public_key.pem").read_bytes())
    assert key.key_size == 3072  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("profile", "alg", "curve"),
    [
        ("medplum", None, "secp384r1"),
        ("helseid", "ES256", "secp256r1"),
        ("custom", "ES512", "secp521r1"),
    ],
)
def test_keygen_makes_ec_keys_on_the_algorithms_curve(tmp_path, capsys, profile, alg, curve):
    summary = keygen(capsys, tmp_path, profile, *(["--alg", alg] if alg else []))
    public = serialization.load_pem_public_key((tmp_path / "public_key.pem").read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == curve
    jwks = json.loads((tmp_path / "jwks.json").read_text())
    assert jwks["keys"][0]["alg"] == summary["algorithm"]


def test_keygen_certificate_and_its_x5t_s256(tmp_path, capsys):
    summary = keygen(capsys, tmp_path, "entra_id", "--subject", "my app", "--days", "30")
    certificate = x509.load_pem_x509_certificate((tmp_path / "certificate.pem").read_bytes())
    assert summary["x5t#S256"] == b64url(certificate.fingerprint(hashes.SHA256()))
    assert certificate.subject.rfc4514_string() == "CN=my app"
    assert summary["algorithm"] == "PS256"
    # Entra identifies the key by its certificate: the key file carries it, ready to use.
    key = load_signing_key_file(str(tmp_path / "private_key.pem"))
    assert key.certificate_thumbprint() == summary["x5t#S256"]
    public = certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public == (tmp_path / "public_key.pem").read_bytes()


def test_keygen_encrypts_with_the_passphrase_file(tmp_path, capsys):
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse\n")
    summary = keygen(capsys, tmp_path / "k", "smart", "--passphrase-file", str(secret))
    pem = (tmp_path / "k" / "private_key.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert serialization.load_pem_private_key(pem, password=b"correct horse")
    assert summary["connection"]["extra"]["private_key_passphrase"] == "<your passphrase>"
    assert "correct horse" not in json.dumps(summary)


def test_keygen_next_steps_name_the_vendor_and_a_ready_connection(tmp_path, capsys):
    status, out, _ = run(
        capsys, "keygen", "--profile", "helseid_cppa", "--out", str(tmp_path), "--bits", "2048"
    )
    assert status == 0
    assert "Selvbetjening" in out and "CPPA REST API Public" in out
    exported = re.search(r"export AIRFLOW_CONN_BACKENDAUTH_HELSEID_CPPA='(.+)'", out)
    assert exported is not None
    conn = json.loads(exported.group(1))
    assert conn["extra"] == {
        "profile": "helseid_cppa",
        "key_file": str((tmp_path / "private_key.pem").resolve()),
    }
    assert "https://utviklerportal.nhn.no" in out


def test_keygen_custom_kid_goes_into_jwks_and_connection(tmp_path, capsys):
    summary = keygen(capsys, tmp_path, "nhs_england", "--kid", "test-1")
    assert json.loads((tmp_path / "jwks.json").read_text())["keys"][0]["kid"] == "test-1"
    assert summary["connection"]["extra"]["key_id"] == "test-1"
    assert summary["algorithm"] == "RS512"


def test_keygen_refuses_to_overwrite_a_key(tmp_path, capsys):
    keygen(capsys, tmp_path, "smart")
    before = (tmp_path / "private_key.pem").read_bytes()
    status, _, err = run(capsys, "keygen", "--profile", "smart", "--out", str(tmp_path))
    assert status == 1 and "--force" in err
    assert (tmp_path / "private_key.pem").read_bytes() == before
    keygen(capsys, tmp_path, "smart", "--force")
    assert (tmp_path / "private_key.pem").read_bytes() != before
    assert stat.S_IMODE(os.stat(tmp_path / "private_key.pem").st_mode) == 0o600


# -- jwks -----------------------------------------------------------------------------------


def test_jwks_of_a_key_matches_keygen(tmp_path, capsys):
    keygen(capsys, tmp_path, "smart")
    status, out, _ = run(capsys, "jwks", str(tmp_path / "private_key.pem"), "--profile", "smart")
    assert status == 0
    assert json.loads(out) == json.loads((tmp_path / "jwks.json").read_text())


def test_jwks_merge_for_rotation_keeps_old_and_new(tmp_path, capsys):
    keygen(capsys, tmp_path / "old", "smart")
    new = keygen(capsys, tmp_path / "new", "smart", "--alg", "ES384")
    published = tmp_path / "old" / "jwks.json"
    merged_file = tmp_path / "merged.json"
    status, _, err = run(
        capsys,
        "jwks",
        str(tmp_path / "new" / "private_key.pem"),
        "--merge",
        str(published),
        "--out",
        str(merged_file),
    )
    assert status == 0, err
    merged = json.loads(merged_file.read_text())
    kids = [jwk.JWK(**k).get("kid") for k in merged["keys"]]  # each one a valid JWK
    old_kid = json.loads(published.read_text())["keys"][0]["kid"]
    assert kids == [old_kid, new["kid"]]
    # Idempotent: merging the same key again changes nothing.
    status, out, _ = run(
        capsys, "jwks", str(tmp_path / "new" / "private_key.pem"), "--merge", str(merged_file)
    )
    assert status == 0 and json.loads(out) == json.loads(merged_file.read_text())


def test_jwks_merge_refuses_a_kid_clash_and_private_documents(tmp_path, capsys):
    keygen(capsys, tmp_path / "a", "smart", "--kid", "k1")
    keygen(capsys, tmp_path / "b", "smart", "--kid", "k1")
    status, _, err = run(
        capsys,
        "jwks",
        str(tmp_path / "b" / "private_key.pem"),
        "--kid",
        "k1",
        "--merge",
        str(tmp_path / "a" / "jwks.json"),
    )
    assert status == 1 and "different key with kid 'k1'" in err
    private = tmp_path / "private.json"
    private.write_text(json.dumps({"keys": [generate_client_key("RSA").private_jwk]}))
    status, _, err = run(
        capsys, "jwks", str(tmp_path / "a" / "private_key.pem"), "--merge", str(private)
    )
    assert status == 1 and "private key" in err


# -- bad input: one line, non-zero, no traceback ---------------------------------------------


def _secp256k1_pem(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256K1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def _encrypted_pem(path: Path, tmp: Path) -> str:
    (tmp / "good").write_text("right")
    main(
        [
            "keygen",
            "--profile",
            "smart",
            "--out",
            str(path),
            "--bits",
            "2048",
            "--passphrase-file",
            str(tmp / "good"),
            "--json",
        ]
    )
    return str(path / "private_key.pem")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_profile", "Unknown provider profile 'epik'"),
        ("hs256", "not HS256"),
        ("alg_not_of_profile", "signs with RS256, not RS384"),
        ("missing_key_file", "No such file"),
        ("unsupported_curve", "secp256k1 is not supported"),
        ("wrong_passphrase", "passphrase is wrong"),
        ("not_a_key", "neither PEM"),
        ("empty_passphrase_file", "is empty"),
        ("bad_conn_json", "--conn-json is not JSON"),
        ("small_rsa", "at least 2048 bits"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, capsys, case, expected):
    (tmp_path / "wrong").write_text("wrong\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "garbage.pem").write_text("hello")
    argv = {
        "unknown_profile": ["keygen", "--profile", "epik", "--out", str(tmp_path)],
        "hs256": ["keygen", "--profile", "custom", "--alg", "HS256", "--out", str(tmp_path)],
        "alg_not_of_profile": ["keygen", "--profile", "mydatahelps", "--alg", "RS384"],
        "missing_key_file": ["jwks", str(tmp_path / "nope.pem")],
        "unsupported_curve": ["jwks", _secp256k1_pem(tmp_path / "k1.pem")],
        "wrong_passphrase": [
            "jwks",
            _encrypted_pem(tmp_path / "enc", tmp_path),
            "--passphrase-file",
            str(tmp_path / "wrong"),
        ],
        "not_a_key": ["jwks", str(tmp_path / "garbage.pem")],
        "empty_passphrase_file": [
            "keygen",
            "--profile",
            "smart",
            "--out",
            str(tmp_path / "x"),
            "--passphrase-file",
            str(tmp_path / "empty"),
        ],
        "bad_conn_json": ["inspect", "--conn-json", "{nope"],
        "small_rsa": ["keygen", "--profile", "smart", "--bits", "1024", "--out", str(tmp_path)],
    }[case]
    capsys.readouterr()
    status, out, err = run(capsys, *argv)
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("backendauth: error: ")
    assert expected in err
    assert "Traceback" not in err + out


def test_bad_input_exit_code_from_the_console_script(tmp_path):
    result = subprocess.run(
        [str(BACKENDAUTH), "jwks", str(tmp_path / "missing.pem")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("backendauth: error: ") and result.stderr.count("\n") == 1
    usage = subprocess.run(
        [str(BACKENDAUTH), "keygen"], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 2 and "--profile" in usage.stderr


def test_key_commands_do_not_import_airflow_or_requests(tmp_path):
    code = (
        "import sys\n"
        "from airflow_provider_backendauth.cli.main import main\n"
        f"assert main(['keygen', '--profile', 'smart', '--out', {str(tmp_path)!r}, '--json', "
        "'--bits', '2048']) == 0\n"
        f"assert main(['jwks', {str(tmp_path / 'private_key.pem')!r}]) == 0\n"
        "heavy = [m for m in ('airflow', 'requests', 'jwcrypto') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# -- check / inspect against the sandbox -------------------------------------------------------


def _client(
    sandbox: Any, tmp_path: Path, capsys: Any, vendor: str = "smart", profile: str | None = None
) -> dict[str, Any]:
    summary = keygen(capsys, tmp_path / vendor, profile or vendor)
    client_id = f"cli-{vendor}-{summary['kid'][:8]}"
    sandbox.register_client(
        client_id, json.loads((tmp_path / vendor / "jwks.json").read_text()), vendor=vendor
    )
    extra = {"profile": profile or vendor, "key_file": summary["files"]["private_key.pem"]}
    if vendor != "smart":
        extra["auth_url"] = sandbox.token_url
    return {
        "conn_type": "backendauth",
        "host": sandbox.fhir_base,
        "login": client_id,
        "extra": extra,
    }


def test_check_succeeds_and_prints_the_token_only_when_asked(
    sandbox, tmp_path, capsys, monkeypatch
):
    conn = _client(sandbox, tmp_path, capsys)
    monkeypatch.setenv("AIRFLOW_CONN_CLI_FHIR", json.dumps(conn))
    status, out, _ = run(capsys, "check", "cli_fhir")
    assert status == 0
    assert out.startswith("OK: Token obtained from ")
    assert re.search(r"GET \S*/metadata answered 200", out), out
    assert "RS384" in out  # the values used are part of the answer
    status, shown, _ = run(capsys, "check", "cli_fhir", "--show-token")
    assert status == 0
    token = shown.rsplit("access token: ", 1)[1].strip()
    assert token and token not in out
    patient = requests.get(
        f"{sandbox.fhir_base}/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert patient.status_code == 200


def test_check_from_flags_and_conn_json(sandbox, tmp_path, capsys):
    conn = _client(sandbox, tmp_path, capsys, vendor="redox")
    status, out, _ = run(capsys, "check", "--conn-json", json.dumps(conn))
    assert status == 0, out
    status, out, _ = run(
        capsys,
        "check",
        "--host",
        conn["host"],
        "--client-id",
        conn["login"],
        "--key-file",
        conn["extra"]["key_file"],
        "--profile",
        "redox",
        "--token-url",
        sandbox.token_url,
    )
    assert status == 0, out


def test_check_failure_explains_and_exits_1(sandbox, tmp_path, capsys):
    conn = _client(sandbox, tmp_path, capsys)
    conn["login"] = "not-registered"
    status, out, err = run(capsys, "check", "--conn-json", json.dumps(conn))
    assert status == 1
    assert out.startswith("FAILED: ") and "unknown client_id" in out
    assert "Traceback" not in out + err


def test_check_unknown_connection_is_one_line(capsys):
    status, _, err = run(capsys, "check", "no_such_connection_here")
    assert status == 1 and err.count("\n") == 1 and "isn't defined" in err


def test_inspect_connection_shows_the_assertion_without_signature(sandbox, tmp_path, capsys):
    conn = _client(sandbox, tmp_path, capsys, vendor="helseid", profile="helseid_cppa")
    status, out, _ = run(capsys, "inspect", "--conn-json", json.dumps(conn))
    assert status == 0
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["header"]["typ"] == "client-authentication+jwt"
    claims = report["claims"]
    assert claims["iss"] == claims["sub"] == conn["login"]
    assert claims["aud"] == sandbox.token_url
    assert claims["exp"] - claims["iat"] == 60 and claims["nbf"] == claims["iat"]
    assert report["form"]["client_id"] == conn["login"]
    assert report["form"]["scope"] == "nhn:cppa/access"
    assert report["token_reuse"] == "per_request"
    assert report["signature"].startswith("<elided")
    assert not JWT_LIKE.search(out)
    assert "lifetime (exp - iat): 60 s" in out


def test_inspect_decodes_a_jwt_and_elides_the_signature(capsys):
    key = generate_client_key("EC-P384")
    token = sign_assertion(key, assertion_claims("abc", "https://auth.example/token"), "ES384")
    status, out, _ = run(capsys, "inspect", token)
    assert status == 0
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["header"] == {"alg": "ES384", "kid": key.kid, "typ": "JWT"}
    assert report["claims"]["aud"] == "https://auth.example/token"
    assert token.rsplit(".", 1)[1] not in out
    assert report["signature"] == "<elided: 96 bytes>"


def test_airflow_cli_registration_builds_the_command_group():
    from airflow_provider_backendauth import get_provider_info
    from airflow_provider_backendauth.cli.airflow_commands import get_cli_commands

    (group,) = get_cli_commands()
    assert group.name == "backendauth"
    assert [c.name for c in group.subcommands] == ["keygen", "jwks", "check", "inspect", "flatten"]
    # Airflow 3.2+ builds its parser from these (3.1 has no provider CLI commands and ignores
    # the key): prove they parse like the standalone script.
    from airflow.providers_manager import ProvidersManager

    if not hasattr(ProvidersManager, "cli_command_functions"):
        assert "cli" not in get_provider_info()  # 3.1's provider.yaml schema refuses the key
        pytest.skip("this Airflow has no provider CLI commands (3.1)")
    (path,) = get_provider_info()["cli"]
    assert path == "airflow_provider_backendauth.cli.airflow_commands.get_cli_commands"
    from airflow.cli.cli_parser import get_parser

    args = get_parser().parse_args(["backendauth", "jwks", "k.pem", "--merge", "old.json"])
    assert (args.key, args.merge) == (["k.pem"], "old.json")


@pytest.mark.e2e
def test_console_script_and_airflow_subcommand_check_exit_codes(sandbox, tmp_path, capsys):
    conn = _client(sandbox, tmp_path, capsys)
    env = {**os.environ, "AIRFLOW_CONN_CLI_E2E": json.dumps(conn)}
    good = subprocess.run(
        [str(BACKENDAUTH), "check", "cli_e2e"], capture_output=True, text=True, env=env, timeout=300
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("OK: ")
    env["AIRFLOW_CONN_CLI_E2E"] = json.dumps({**conn, "login": "nobody"})
    bad = subprocess.run(
        [sys.executable, "-m", "airflow", "backendauth", "check", "cli_e2e"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: " in bad.stdout and "Traceback" not in bad.stdout + bad.stderr
    assert not JWT_LIKE.search(good.stdout + bad.stdout)


@pytest.mark.e2e
def test_check_reads_a_connection_stored_in_the_metadata_database(
    sandbox, tmp_path, capsys, airflow_db
):
    conn = _client(sandbox, tmp_path, capsys)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "connections",
            "add",
            "cli_in_db",
            "--conn-json",
            json.dumps(conn),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = subprocess.run(
        [str(BACKENDAUTH), "check", "cli_in_db"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
