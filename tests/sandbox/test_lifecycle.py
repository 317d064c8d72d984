"""Start/stop, addresses, discovery documents."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from backendauth_sandbox import Sandbox


def test_urls_and_discovery(sb: Sandbox) -> None:
    assert sb.url == f"http://127.0.0.1:{sb.port}"
    assert sb.fhir_base == sb.url + "/fhir"
    assert sb.token_url == sb.url + "/auth/token"
    assert sb.issuer == sb.url + "/auth"
    config = requests.get(sb.fhir_base + "/.well-known/smart-configuration", timeout=10).json()
    assert config["token_endpoint"] == sb.token_url
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert config["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "client-confidential-asymmetric" in config["capabilities"]
    assert "permission-v2" in config["capabilities"]
    assert "client_credentials" in config["grant_types_supported"]
    assert "system/*.rs" in config["scopes_supported"]
    oidc = requests.get(sb.issuer + "/.well-known/openid-configuration", timeout=10).json()
    assert oidc["issuer"] == sb.issuer
    sb.settings.smart_config_relative_token_endpoint = True
    config = requests.get(sb.fhir_base + "/.well-known/smart-configuration", timeout=10).json()
    assert config["token_endpoint"] == "../auth/token"


def test_stop_leaves_no_thread_or_socket() -> None:
    before = set(threading.enumerate())
    sb = Sandbox(patients=2).start()
    port = sb.port
    idle = requests.Session()  # keeps a keep-alive connection open across stop()
    assert idle.get(sb.fhir_base + "/.well-known/smart-configuration", timeout=10).ok
    sb.stop()
    assert set(threading.enumerate()) <= before
    assert not sb.running
    with pytest.raises(RuntimeError):
        _ = sb.url
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    idle.close()


def test_restart_and_fixed_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Sandbox(patients=1, port=port) as sb:
        assert sb.port == port
    with Sandbox(patients=1, port=port) as sb:
        assert sb.port == port


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        Sandbox(search_next_link="weird")
    with pytest.raises(TypeError):
        Sandbox(no_such_setting=1)
