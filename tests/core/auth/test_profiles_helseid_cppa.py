"""HelseID's CPPA API accepts each access token once: the ``helseid_cppa`` profile asks for a
token per request up front, instead of learning it from a 401 on every call after the first.
Proved against the sandbox with single-use tokens switched on."""

from __future__ import annotations

from airflow_provider_backendauth.core.auth.profiles import get_profile
from tests.support.clients import make_client


def test_helseid_cppa_profile_is_helseid_with_a_token_per_request():
    cppa, helseid = get_profile("helseid_cppa"), get_profile("helseid")
    assert cppa.token_reuse == "per_request" and helseid.token_reuse == "cache"
    assert cppa.scope == "nhn:cppa/access"
    for same in ("algorithms", "typ", "max_lifetime", "client_id_in_form", "include_nbf"):
        assert getattr(cppa, same) == getattr(helseid, same), same


def test_one_token_per_request_without_a_401_first(sandbox):
    sandbox.settings.update(single_use_tokens=True)
    client = make_client(sandbox, "helseid", profile="helseid_cppa")
    session = client.new_session()
    for _ in range(3):
        response = session.get(f"{sandbox.fhir_base}/Patient", params={"_count": 1})
        assert response.status_code == 200
        assert response.history == []  # no 401 was needed to learn the rule
    assert sandbox.stats["token_requests_by_client"][client.settings.client_id] == 3


def test_the_caching_profile_pays_a_401_per_call_on_such_an_api(sandbox):
    # Why the variant exists: the cached token is refused on its second use.
    sandbox.settings.update(single_use_tokens=True)
    client = make_client(sandbox, "helseid", profile="helseid")
    session = client.new_session()
    assert session.get(f"{sandbox.fhir_base}/Patient").history == []
    second = session.get(f"{sandbox.fhir_base}/Patient")
    assert second.status_code == 200
    assert [r.status_code for r in second.history] == [401]
