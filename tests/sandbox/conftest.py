from __future__ import annotations

from collections.abc import Iterator

import pytest

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import ClientKey, generate_client_key


@pytest.fixture(scope="session")
def rsa_key() -> ClientKey:
    return generate_client_key("RSA", kid="rsa-1")


@pytest.fixture(scope="session")
def other_rsa_key() -> ClientKey:
    return generate_client_key("RSA", kid="rsa-1")


@pytest.fixture(scope="session")
def rsa_cert_key() -> ClientKey:
    return generate_client_key("RSA", kid="rsa-cert", certificate=True)


@pytest.fixture(scope="session")
def ec_keys() -> dict[str, ClientKey]:
    return {kind: generate_client_key(kind) for kind in ("EC-P256", "EC-P384", "EC-P521")}


@pytest.fixture
def sb() -> Iterator[Sandbox]:
    with Sandbox(patients=12, seed=7, bulk_job_seconds=0.0) as sandbox:
        yield sandbox
