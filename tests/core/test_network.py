"""Network failures are named in plain words, not as urllib3 pool dumps."""

from __future__ import annotations

import requests

from airflow_provider_backendauth.core.network import describe_network_error
from tests.support import servers


def _failure(url: str, **kwargs: object) -> BaseException:
    try:
        requests.post(url, timeout=kwargs.pop("timeout", 5), **kwargs)  # type: ignore[arg-type]
    except requests.RequestException as exc:
        return exc
    raise AssertionError(f"{url} answered")


def test_refused():
    with servers.refusing_port() as port:
        assert (
            describe_network_error(_failure(f"http://127.0.0.1:{port}/t")) == "connection refused"
        )


def test_read_timeout():
    with servers.silent_server() as url:
        error = _failure(f"{url}/t", timeout=0.5)
    assert describe_network_error(error) == "timed out waiting for the answer"


def test_untrusted_certificate():
    with servers.self_signed_https() as url:
        message = describe_network_error(_failure(f"{url}/t"))
    assert message.startswith("TLS certificate not trusted (")
    assert "self-signed" in message or "self signed" in message


def test_unknown_host():
    assert (
        describe_network_error(_failure("http://no-such-host.invalid/t")) == "host name not found"
    )


def test_anything_else_is_its_type():
    assert describe_network_error(ValueError("x")) == "ValueError"
