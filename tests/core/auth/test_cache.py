"""Per-process caches: parsed signing keys, SMART discovery (single flight)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from airflow_provider_backendauth.core.auth.cache import SingleFlightCache
from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.discovery import discover, discovery_cache_info
from airflow_provider_backendauth.core.auth.keys import (
    clear_key_cache,
    key_cache_info,
    load_signing_key,
)
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import DiscoveryError, KeyLoadError
from backendauth_sandbox.testing import generate_client_key

THREADS = 16
DISCOVERY_PATH = "/fhir/.well-known/smart-configuration"


def together(task: Callable[[], Any], threads: int = THREADS) -> list[Any]:
    """Run ``task`` in ``threads`` threads released at the same moment; results or errors."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = task()
        except Exception as exc:
            results[i] = exc

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    return results


@pytest.fixture(autouse=True)
def _cold_key_cache() -> None:
    clear_key_cache()


def discovery_gets(sandbox: Any) -> int:
    return int(sandbox.stats["requests_by_path"].get(DISCOVERY_PATH, 0))


def test_sixteen_clients_for_one_key_parse_it_once(sandbox):
    key = generate_client_key("RSA")
    settings = ClientSettings.from_connection_fields(
        host=sandbox.fhir_base, login="cache-client", password=key.private_pem, extra={}
    )
    clients = together(lambda: BackendAuthClient(settings))
    assert all(isinstance(c, BackendAuthClient) for c in clients), clients
    info = key_cache_info()
    assert (info.misses, info.hits) == (1, THREADS - 1)
    assert len({id(c.key.key) for c in clients}) == 1  # one parsed key object, shared


def test_the_key_cache_is_keyed_by_material_passphrase_and_kid():
    first, second = generate_client_key("RSA", kid="a"), generate_client_key("RSA", kid="b")
    jwks = json.dumps({"keys": [first.private_jwk, second.private_jwk]})
    assert load_signing_key(jwks, kid="a").kid == "a"
    assert load_signing_key(jwks, kid="b").kid == "b"  # not the cached "a"
    assert load_signing_key(first.private_pem) is load_signing_key(first.private_pem)
    assert key_cache_info().misses == 3

    encrypted = (
        serialization.load_pem_private_key(first.private_pem.encode(), password=None)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right"),
        )
        .decode()
    )
    with pytest.raises(KeyLoadError, match="passphrase is wrong"):
        load_signing_key(encrypted, passphrase="wrong")
    assert load_signing_key(encrypted, passphrase="right").key.key_size == 2048
    with pytest.raises(KeyLoadError):  # a failure is not cached
        load_signing_key(encrypted, passphrase="wrong")
    assert key_cache_info().misses == 6


def test_the_cache_keeps_no_key_text():
    key = generate_client_key("RSA")
    load_signing_key(key.private_pem, passphrase=None)
    from airflow_provider_backendauth.core.auth import keys

    idents = list(keys._KEY_CACHE._entries)
    assert idents and all(key.private_pem not in repr(ident) for ident in idents)
    assert all(isinstance(part, bytes | None) for ident in idents for part in ident[:2])


def test_sixteen_cold_threads_make_one_discovery_request(sandbox):
    # A slow answer makes every thread arrive while the first request is in flight.
    sandbox.faults.add(DISCOVERY_PATH, delay=0.3)
    before = discovery_gets(sandbox)
    configs = together(lambda: discover(sandbox.fhir_base))
    assert {c.token_endpoint for c in configs} == {sandbox.token_url}
    assert discovery_gets(sandbox) - before == 1
    assert discovery_cache_info().misses == 1


def test_a_failed_discovery_is_shared_then_retried(sandbox):
    sandbox.faults.add(DISCOVERY_PATH, delay=0.3, status=503)
    before = discovery_gets(sandbox)
    outcomes = together(lambda: discover(sandbox.fhir_base))
    assert all(isinstance(o, DiscoveryError) for o in outcomes), outcomes
    assert discovery_gets(sandbox) - before == 1  # one failing request, not sixteen in a row
    assert discover(sandbox.fhir_base).token_endpoint == sandbox.token_url  # not cached
    assert discovery_gets(sandbox) - before == 2


def test_single_flight_cache_evicts_the_least_recently_used():
    cache: SingleFlightCache[int] = SingleFlightCache(maxsize=2)
    calls: list[str] = []

    def compute(name: str) -> Callable[[], int]:
        return lambda: calls.append(name) or len(calls)

    cache.get("a", compute("a"))
    cache.get("b", compute("b"))
    cache.get("a", compute("a"))  # a is now the most recent
    cache.get("c", compute("c"))  # evicts b
    cache.get("a", compute("a"))
    cache.get("b", compute("b"))
    assert calls == ["a", "b", "c", "b"]


@pytest.mark.parametrize(
    "changed",
    [
        {"assertion_lifetime": 120},
        {"jku": "https://keys.example.org/jwks.json"},
        {"verify_ssl": False},
    ],
    ids=["lifetime", "jku", "tls"],
)
def test_the_token_cache_is_shared_only_by_clients_that_sign_and_send_alike(changed):
    # The process-wide token cache renews with the first client's endpoint: a client whose
    # assertion or TLS setting differs must not get it (lowering 'assertion_lifetime' after
    # a strict server refused 600 s kept signing 600 s in that process).
    key = generate_client_key("EC-P384")
    extra = {"profile": "custom", "auth_url": "https://auth.example.org/token"}

    def client(**more: Any) -> BackendAuthClient:
        settings = ClientSettings.from_connection_fields(
            host="https://fhir.example.org",
            login="c1",
            password=key.private_pem,
            extra={**extra, **more},
        )
        return BackendAuthClient(settings)

    assert client().tokens is client().tokens  # same configuration: one cache, one token
    assert client(**changed).tokens is not client().tokens
