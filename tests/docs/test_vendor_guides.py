"""One guide per profile in docs/vendors/, consistent with the profile data, with a
connection that really is a valid connection; and every relative link in the docs resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from airflow_provider_backendauth.core.auth.profiles import PROFILES, get_profile
from airflow_provider_backendauth.core.auth.settings import ClientSettings

REPO = Path(__file__).resolve().parents[2]
VENDORS = REPO / "docs" / "vendors"


@pytest.mark.parametrize("name", list(PROFILES))
def test_each_profile_has_a_guide_that_matches_it(name: str) -> None:
    page = (VENDORS / f"{name}.md").read_text(encoding="utf-8")
    profile = PROFILES[name]
    assert f"(`{name}`)" in page.splitlines()[0]
    if profile.token_url:
        assert profile.token_url in page
    assert f"`{profile.algorithms[0]}`" in page
    assert f"backendauth keygen --profile {name}" in page
    for section in ("## Register your key", "## The connection", "## Errors and what they mean"):
        assert section in page, section
    (exported,) = re.findall(rf"export AIRFLOW_CONN_BACKENDAUTH_{name.upper()}='(.+)'", page)
    conn = json.loads(exported)
    settings = ClientSettings.from_connection_fields(
        host=conn["host"], login=conn["login"], password=None, extra=conn["extra"]
    )
    assert get_profile(settings.profile) is profile


def test_the_index_lists_every_guide() -> None:
    index = (VENDORS / "README.md").read_text(encoding="utf-8")
    for name in PROFILES:
        assert f"]({name}.md)" in index


def test_relative_links_in_the_docs_resolve() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken
