"""FhirClient.search and RestClient over HTTP against the sandbox (no mocked requests)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_backendauth.core.auth.client import BackendAuthClient
from airflow_provider_backendauth.core.auth.settings import ClientSettings
from airflow_provider_backendauth.core.errors import ApiError, ConfigurationError, FhirError
from airflow_provider_backendauth.core.fhir.rest import RestClient
from airflow_provider_backendauth.core.fhir.search import FhirClient, normalise_params, resolve_link
from airflow_provider_backendauth.core.urls import origin_of
from tests.support.clients import FAST_RETRY, make_client, register


@pytest.fixture
def sb(sandbox: Any) -> Iterator[Any]:
    yield sandbox
    sandbox.settings.update(search_next_link="absolute")


@pytest.fixture
def session(sb: Any) -> requests.Session:
    """An authenticated session (BackendAuth) for a freshly registered SMART client."""
    return make_client(sb).new_session()


@pytest.fixture
def fhir(sb: Any, session: requests.Session) -> FhirClient:
    return FhirClient(session, sb.fhir_base, retry=FAST_RETRY, timeout=10)


def all_ids(search: Any) -> list[str]:
    return [r["id"] for page in search for r in page.matches]


# -- helpers that need no server -------------------------------------------------------------


def test_normalise_params() -> None:
    assert normalise_params({"_id": ["a", "b"], "x": None, "flag": True, "n": 3}) == [
        ("_id", "a"),
        ("_id", "b"),
        ("flag", "true"),
        ("n", "3"),
    ]
    assert normalise_params([("a", "1"), ("a", "2")]) == [("a", "1"), ("a", "2")]
    assert normalise_params(None) == []


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://h/fhir/Patient?p=2", "https://h/fhir/Patient?p=2"),
        ("Patient?p=2", "https://h/fhir/Patient?p=2"),
        ("/fhir/Patient?p=2", "https://h/fhir/Patient?p=2"),
        ("?p=2", "https://h/fhir/Patient?p=2"),
    ],
)
def test_resolve_link(link: str, expected: str) -> None:
    assert (
        resolve_link(link, base_url="https://h/fhir", current_url="https://h/fhir/Patient?p=1")
        == expected
    )


def test_bad_arguments_fail_before_any_request(fhir: FhirClient, sb: Any) -> None:
    before = sb.stats["requests"]
    for bad in ("patient", "Patient/1", ""):
        with pytest.raises(ConfigurationError, match="resource type"):
            fhir.search(bad)
    with pytest.raises(ConfigurationError, match="count"):
        fhir.search("Patient", count=0)
    assert sb.stats["requests"] == before


# -- paging ----------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["absolute", "relative", "path"])
def test_pages_follow_next_links(fhir: FhirClient, sb: Any, style: str) -> None:
    sb.settings.update(search_next_link=style)
    search = fhir.search("Patient", count=6)
    pages = list(search)
    assert [len(p.matches) for p in pages] == [6, 6, 6, 2]
    assert [p.number for p in pages] == [1, 2, 3, 4]
    ids = [r["id"] for p in pages for r in p.matches]
    assert len(ids) == len(set(ids)) == 20
    assert pages[-1].next_url is None
    assert all(p.url.startswith(sb.fhir_base + "/Patient") for p in pages)
    assert search.summary()["resources"] == 20
    assert search.pages == 4
    assert not search.truncated


def test_progress_is_logged_at_a_rate_not_per_page(
    fhir: FhirClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A line per page costs as much as a fast server's page: the first page, then one line
    # per PROGRESS_LOG_SECONDS, and the total at the end.
    with caplog.at_level(logging.INFO, logger="airflow_provider_backendauth.core.fhir.search"):
        list(fhir.search("Patient", count=7))
    lines = [r.getMessage() for r in caplog.records if "search: " in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("Patient search: page 1, 7")
    assert lines[1].startswith("Patient search: done: page 3, 20")
    assert "s elapsed" in lines[-1]


def test_debug_logs_every_page(fhir: FhirClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="airflow_provider_backendauth.core.fhir.search"):
        list(fhir.search("Patient", count=7))
    lines = [r.getMessage() for r in caplog.records if "search: page" in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == [
        f"Patient search: page {n}" for n in (1, 2, 3)
    ]


def test_one_retry_loop_per_client(fhir: FhirClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import tenacity

    list(fhir.search("Patient", count=50))  # the token's and this client's retry loops
    built: list[object] = []
    original = tenacity.Retrying.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(tenacity.Retrying, "__init__", counting_init)
    assert len(list(fhir.search("Patient", count=5))) == 4
    assert len(list(fhir.search("Observation", count=50))) > 1
    assert built == []
    fhir.rest.retry = FAST_RETRY.__class__(attempts=2)  # a new policy is honoured
    list(fhir.search("Patient", count=5))
    assert len(built) == 1


def test_params_lists_repeat(fhir: FhirClient) -> None:
    ids = all_ids(
        fhir.search("Patient", {"_id": ["pat-0001,pat-0002,pat-0003", "pat-0002,pat-0003"]})
    )
    assert sorted(ids) == ["pat-0002", "pat-0003"]


def test_last_updated_window(fhir: FhirClient) -> None:
    everything = all_ids(fhir.search("Observation", count=100))
    first_half = all_ids(
        fhir.search(
            "Observation",
            {"_lastUpdated": ["ge2024-01-01T00:00:00+00:00", "lt2024-07-01T00:00:00+00:00"]},
            count=100,
        )
    )
    second_half = all_ids(fhir.search("Observation", {"_lastUpdated": "ge2024-07-01"}, count=100))
    assert 0 < len(first_half) < len(everything)
    assert sorted(first_half + second_half) == sorted(everything)


def test_max_pages(fhir: FhirClient, sb: Any) -> None:
    before = sb.stats["fhir_searches"]
    search = fhir.search("Patient", count=5, max_pages=2)
    assert [len(p.matches) for p in search] == [5, 5]
    assert search.truncated
    assert sb.stats["fhir_searches"] - before == 2


@pytest.mark.parametrize(("limit", "sizes"), [(12, [5, 5, 2]), (10, [5, 5]), (25, [5, 5, 5, 5])])
def test_max_resources(fhir: FhirClient, limit: int, sizes: list[int]) -> None:
    search = fhir.search("Patient", count=5, max_resources=limit)
    assert [len(p.matches) for p in search] == sizes
    assert search.resources == min(limit, 20)
    assert search.truncated is (limit < 20)


def test_include_separated_from_matches(fhir: FhirClient) -> None:
    search = fhir.search("Observation", {"_include": "Observation:patient"}, count=10)
    pages = list(search)
    assert all(r["resourceType"] == "Observation" for p in pages for r in p.matches)
    included = [r for p in pages for r in p.included]
    assert included and all(r["resourceType"] == "Patient" for r in included)
    # Every included Patient is one a match on the same page refers to.
    for page in pages:
        referenced = {r["subject"]["reference"].split("/")[-1] for r in page.matches}
        assert {r["id"] for r in page.included} <= referenced
    assert search.included == len(included)


def test_memory_is_per_page(fhir: FhirClient) -> None:
    """Pages are fetched lazily and released: the search keeps no reference to past pages."""
    import gc
    import weakref

    search = fhir.search("Observation", count=5)
    iterator = iter(search)
    first = next(iterator)
    assert search.pages == 1 and first.next_url and first.bundle["resourceType"] == "Bundle"
    first_ref = weakref.ref(first)
    del first
    later = [page.number for page in iterator]
    gc.collect()
    assert first_ref() is None
    assert later[0] == 2 and len(later) >= 2


def test_search_can_be_iterated_once(fhir: FhirClient) -> None:
    search = fhir.search("Patient", count=50)
    list(search)
    with pytest.raises(RuntimeError, match="once"):
        list(search)


def test_resources_iter(fhir: FhirClient) -> None:
    assert len(list(fhir.search("Patient", count=8).resources_iter())) == 20


# -- foreign next links ---------------------------------------------------------------------


def localhost_session(sb: Any) -> tuple[str, requests.Session]:
    """A client that knows the sandbox as ``localhost``: the sandbox's absolute next links
    say ``127.0.0.1``, which is then another origin."""
    base = sb.fhir_base.replace("127.0.0.1", "localhost")
    client_id, key = register(sb)
    settings = ClientSettings.from_connection_fields(
        host=base, login=client_id, password=key.private_pem, extra={"auth_url": sb.token_url}
    )
    return base, BackendAuthClient(settings).new_session()


def test_next_link_to_another_origin_is_refused(sb: Any) -> None:
    base, session = localhost_session(sb)
    fhir = FhirClient(session, base, retry=FAST_RETRY)
    assert fhir.allowed_origins == {origin_of(base)}
    before = sb.stats["fhir_searches"]
    with pytest.raises(FhirError, match=r"next link points to http://127\.0\.0\.1.*refusing"):
        list(fhir.search("Patient", count=5))
    assert sb.stats["fhir_searches"] - before == 1


def test_relative_next_links_stay_on_the_configured_origin(sb: Any) -> None:
    sb.settings.update(search_next_link="relative")
    base, session = localhost_session(sb)
    fhir = FhirClient(session, base, retry=FAST_RETRY)
    pages = list(fhir.search("Patient", count=5))
    assert len(pages) == 4
    assert all(p.url.startswith(base) for p in pages)


# -- tokens ----------------------------------------------------------------------------------


def test_token_expiring_between_pages_is_renewed(sb: Any) -> None:
    client = make_client(sb)
    fhir = FhirClient(client.new_session(), sb.fhir_base, retry=FAST_RETRY)
    ids = []
    for page in fhir.search("Patient", count=5):
        ids += [r["id"] for r in page.matches]
        sb.expire_tokens()  # the cached token is now rejected by the server
    assert len(set(ids)) == 20
    assert sb.stats["token_requests_by_client"][client.settings.client_id] == 4


def test_short_lived_tokens_are_renewed(sb: Any) -> None:
    sb.token_lifetime = 1
    client = make_client(sb)
    fhir = FhirClient(client.new_session(), sb.fhir_base, retry=FAST_RETRY)
    sb.faults.add("/fhir/Patient", delay=0.4, times=None)
    ids = all_ids(fhir.search("Patient", count=5))
    assert len(set(ids)) == 20
    assert sb.stats["token_requests_by_client"][client.settings.client_id] >= 2


# -- transient failures -----------------------------------------------------------------------


def test_429_with_retry_after_is_honoured(fhir: FhirClient, sb: Any) -> None:
    sb.faults.add("/fhir/Patient", status=429, retry_after=0.3, times=2)
    started = time.monotonic()
    ids = all_ids(fhir.search("Patient", count=50))
    assert len(ids) == 20
    assert time.monotonic() - started >= 0.6


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried(fhir: FhirClient, sb: Any, status: int) -> None:
    sb.faults.add("/fhir/Patient", status=status, times=2)
    assert len(all_ids(fhir.search("Patient", count=50))) == 20


def test_dropped_connection_is_retried(fhir: FhirClient, sb: Any) -> None:
    rule = sb.faults.add("/fhir/Patient", drop=True)
    assert len(all_ids(fhir.search("Patient", count=10))) == 20
    assert rule.hits == 1


def test_truncated_body_is_retried(fhir: FhirClient, sb: Any) -> None:
    sb.faults.add("/fhir/Patient", drop_after_bytes=200)
    assert len(all_ids(fhir.search("Patient", count=10))) == 20


def test_persistent_5xx_fails_quoting_diagnostics(fhir: FhirClient, sb: Any) -> None:
    sb.faults.add("/fhir/Patient", status=503, body="database is down", times=None)
    with pytest.raises(FhirError, match="HTTP 503.*database is down") as info:
        list(fhir.search("Patient"))
    assert info.value.status_code == 503
    assert info.value.transient


def test_persistent_drops_fail_clearly(fhir: FhirClient, sb: Any) -> None:
    sb.faults.add("/fhir/Patient", drop=True, times=None)
    with pytest.raises(ApiError, match="could not reach .* even after retrying") as info:
        list(fhir.search("Patient"))
    assert not isinstance(info.value, FhirError)  # no answer is not a FHIR server's answer


# -- errors ------------------------------------------------------------------------------------


def test_operation_outcome_400_quotes_diagnostics(fhir: FhirClient, sb: Any) -> None:
    before = sb.stats["fhir_searches"]
    with pytest.raises(FhirError) as info:
        list(fhir.search("Patient", {"birthdate": "2000"}))
    message = str(info.value)
    assert "HTTP 400" in message
    assert "birthdate" in message
    assert info.value.status_code == 400
    assert info.value.diagnostics and "birthdate" in info.value.diagnostics
    # A 400 is not retried.
    assert sb.stats["fhir_searches"] - before == 1


def test_bad_include_is_a_clear_error(fhir: FhirClient) -> None:
    with pytest.raises(FhirError, match="_include"):
        list(fhir.search("Observation", {"_include": "Observation:performer"}))


def test_unknown_resource_type_is_a_clear_error(fhir: FhirClient) -> None:
    with pytest.raises(FhirError, match="HTTP 4"):
        list(fhir.search("Medication"))


def test_no_bundle_is_a_clear_error(fhir: FhirClient, sb: Any) -> None:
    sb.faults.add("/fhir/Patient", status=200, body_kind="json", body={"resourceType": "Patient"})
    with pytest.raises(FhirError, match="expected a Bundle .* got 'Patient'.*base URL"):
        list(fhir.search("Patient"))


def test_read(fhir: FhirClient) -> None:
    assert fhir.read("Patient", "pat-0001")["id"] == "pat-0001"


# -- RestClient directly -----------------------------------------------------------------------


def test_rest_client_check_false_returns_error_response(sb: Any, session: requests.Session) -> None:
    rest = RestClient(session, sb.fhir_base, retry=FAST_RETRY)
    response = rest.request("GET", "Patient", params={"nope": "1"}, check=False)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_rest_client_does_not_retry_post_after_5xx(sb: Any, session: requests.Session) -> None:
    rest = RestClient(session, sb.fhir_base, retry=FAST_RETRY)
    sb.faults.add("/fhir/Patient", status=500, times=None)
    before = sb.stats["requests_by_kind"].get("fhir_search", 0)
    with pytest.raises(FhirError, match="HTTP 500"):
        rest.request("POST", "Patient/_search", data={"_count": "1"})
    assert sb.stats["requests_by_kind"]["fhir_search"] - before == 1


def test_rest_client_retries_post_after_429(sb: Any, session: requests.Session) -> None:
    rest = RestClient(session, sb.fhir_base, retry=FAST_RETRY)
    sb.faults.add("/fhir/Patient", status=429, retry_after=0.1)
    response = rest.request("POST", "Patient/_search", data={"_count": "1"}, check=False)
    assert response.status_code != 429


@settings(max_examples=200, deadline=None)
@given(
    entries=st.integers(min_value=0, max_value=40),
    nested=st.integers(min_value=0, max_value=3),
    limit=st.integers(min_value=0, max_value=120),
    braces_in_strings=st.booleans(),
)
def test_the_entry_limit_holds_on_both_parse_paths(
    entries: int, nested: int, limit: int, braces_in_strings: bool
) -> None:
    """A page with few enough ``{`` skips the per-object hook; either way the answer is
    json.loads's, and the limit fails exactly the pages with more entries than it allows."""
    from airflow_provider_backendauth.core.errors import ResponseTooLargeError
    from airflow_provider_backendauth.core.fhir.search import _bundle_loader

    text = "{{}}" if braces_in_strings else "x"
    resource: dict[str, Any] = {"resourceType": "Patient", "note": text}
    for _ in range(nested):
        resource = {"resourceType": "Basic", "wrapped": resource}
    page = json.dumps(
        {"resourceType": "Bundle", "entry": [{"resource": resource} for _ in range(entries)]}
    ).encode()
    loads = _bundle_loader(limit, "search", "https://fhir.example/Patient")
    if entries > limit:
        with pytest.raises(ResponseTooLargeError, match="max_page_entries"):
            loads(page)
    else:
        assert loads(page) == json.loads(page)
