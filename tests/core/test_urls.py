"""The URL check's fast path skips re-parsing only URLs on which every parser agrees."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_backendauth.core.errors import UnsafeURLError
from airflow_provider_backendauth.core.urls import _PLAIN_URL, _stacks_disagree, parse_url

_PIECES = st.sampled_from(
    [*list("\\@:/?#[]%.-_ \t\r\n\x00\x7fAaZz09x"), "127.0.0.1", "example.org", "0x7f", "%2e", "::1"]
)
_URLS = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}{rest}",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.lists(_PIECES, max_size=10).map("".join),
    st.lists(_PIECES, max_size=10).map("".join),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_URLS)
@example("http://127.0.0.1:8080/fhir/Observation?_cursor=eyJwIjpb&x=@y#z")
@example("https://fhir.example.org/R4/Patient?next=http://evil.example/")
@example("http://0x7f.1/")
@example("http://999.1.1.1/")
@example("http://a:0/")
def test_the_fast_path_only_takes_urls_every_parser_reads_alike(url: str) -> None:
    if not _PLAIN_URL.fullmatch(url):
        return
    try:
        parsed = parse_url(url)  # the fast path runs after its other checks (port range...)
    except UnsafeURLError:
        return
    assert _stacks_disagree(parsed) is None
