"""Findings 2 and 6: writes outside the destination (server-chosen names), and sane numbers
and inputs (expires_in, token values, key files, extras, PEM text). Property tests check
that no input crashes with anything but the provider's own clear error."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_backendauth.core.auth.keys import load_signing_key, load_signing_key_file
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.auth.tokens import (
    MAX_EXPIRES_IN,
    _parse_expires_in,
)
from airflow_provider_backendauth.core.errors import (
    BackendAuthError,
    ConfigurationError,
    KeyLoadError,
    TokenRequestError,
)
from airflow_provider_backendauth.core.names import safe_type_name
from tests.security.hostile import Reply, bundle

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


# --- names -------------------------------------------------------------------------------


@FAST
@given(st.text(max_size=100))
@example("../../../../x")
@example("..")
@example("/etc/passwd")
@example("C:\\Windows\\x")
@example("\x00")
def test_no_server_string_leaves_the_destination(tmp_path_factory, name: str) -> None:
    safe = safe_type_name(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", safe)
    root = tmp_path_factory.getbasetemp() / "dest"
    for pattern in ("{}.000.ndjson", "Patient.included.{}.ndjson", "error/{}.000.ndjson"):
        target = (root / pattern.format(safe)).resolve()
        assert target.is_relative_to(root.resolve())


def test_per_type_include_names_stay_in_the_destination(good, connect, tmp_path) -> None:
    from airflow_provider_backendauth.operators.fhir import FhirSearchOperator

    page = bundle([{"resourceType": "Patient", "id": "p1"}])
    page["entry"].append(
        {"resource": {"resourceType": "../../../../x", "id": "evil"}, "search": {"mode": "include"}}
    )
    good.routes["/fhir/Patient"] = Reply(200, body=page)
    out = tmp_path / "a" / "b" / "out"
    FhirSearchOperator(
        task_id="search",
        backendauth_conn_id=connect(),
        resource_type="Patient",
        search_params={"_include": "Patient:link"},
        include_mode="per_type",
        destination=str(out),
    ).execute({})
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written and all(p.is_relative_to(out) for p in written), written
    assert not list(tmp_path.rglob("x.ndjson"))


# --- expires_in and token values -----------------------------------------------------------


@FAST
@given(JSON_VALUES | st.sampled_from(["Infinity", "-Infinity", "NaN", "1e400", "599", " 60 "]))
def test_expires_in_is_always_a_sane_lifetime(value: object) -> None:
    seconds = _parse_expires_in(value)
    assert 0 < seconds <= MAX_EXPIRES_IN


def token_reply(body: bytes) -> Reply:
    return Reply(200, {"Content-Type": "application/json"}, body)


def test_infinite_expires_in_does_not_break_test_connection(good, connect) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/token"] = token_reply(
        b'{"access_token": "tok-secret-inf-0001", "token_type": "Bearer", "expires_in": 1e400}'
    )
    good.routes["/fhir/metadata"] = Reply(200, body={"resourceType": "CapabilityStatement"})
    ok, message = BackendAuthHook(connect()).test_connection()
    assert ok, message


@pytest.mark.parametrize(
    "value", ["", "abc\r\nX-Injected: 1", "abc def", "t\u00e9st-token-1234", "\x00" * 10]
)
def test_unusable_access_tokens_are_refused(good, connect, value: str) -> None:
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

    good.routes["/token"] = token_reply(
        json.dumps({"access_token": value, "token_type": "Bearer"}).encode()
    )
    with pytest.raises(TokenRequestError, match="unusable access token"):
        BackendAuthHook(connect()).get_token()


# --- key files, PEM text and extras ----------------------------------------------------------


def test_key_file_that_is_a_device_is_refused_without_reading_it() -> None:
    with pytest.raises(KeyLoadError, match="not a regular file"):
        load_signing_key_file("/dev/zero")


def test_key_file_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "key.pem"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def load() -> None:
        try:
            load_signing_key_file(str(fifo))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # unblock the reader so the test process can exit
        with open(fifo, "wb"):
            pass
        pytest.fail("loading a FIFO as the key file hung")
    assert isinstance(result[0], KeyLoadError)


def test_huge_key_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "key.pem"
    big.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * (2 << 20))
    with pytest.raises(KeyLoadError, match="bytes"):
        load_signing_key_file(str(big))


@FAST
@given(st.text(max_size=300))
@example("-----BEGIN PRIVATE KEY-----\\nMIIB\\n-----END PRIVATE KEY-----")
@example("-----BEGIN RSA PRIVATE KEY----- Proc-Type: 4,ENCRYPTED -----END RSA PRIVATE KEY-----")
@example('{"keys": [{"d": 1}]}')
@example('{"kty": "EC", "d": "x", "crv": "P-999"}')
@example("[1, 2]")
def test_pem_repair_raises_only_key_errors(text: str) -> None:
    with pytest.raises(KeyLoadError):
        load_signing_key(text)


@pytest.mark.parametrize("extra", [[1, 2], "profile=smart", 3, ["profile"]])
def test_non_object_extras_are_a_clear_configuration_error(extra: object) -> None:
    with pytest.raises(ConfigurationError, match="JSON object"):
        ClientSettings.from_connection_fields(
            host="https://fhir.example.org",
            login="c",
            password=None,
            extra=extra,  # type: ignore[arg-type]
        )


@FAST
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "timeout",
                "retries",
                "allowed_hosts",
                "scope",
                "extra_claims",
                "verify_ssl",
                "reuse_policy",
                "assertion_lifetime",
                "profile",
                "nope",
            ]
        ),
        JSON_VALUES,
        max_size=4,
    )
    | JSON_VALUES
)
def test_extras_parsing_raises_only_configuration_errors(extra: object) -> None:
    with contextlib.suppress(BackendAuthError):
        ClientSettings.from_connection_fields(
            host="https://fhir.example.org",
            login="c",
            password=None,
            extra=extra,  # type: ignore[arg-type]
        )
