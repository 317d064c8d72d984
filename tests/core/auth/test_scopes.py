"""Comparing the granted scope with the requested one: SMART v1 and v2 spellings are the same
grant (``system/*.rs`` ~ ``system/*.read``), so a server answering in the other spelling is not
reported as having narrowed the scope; a real narrowing is (the log and the Test button: see
tests/hooks/test_backendauth_hook.py)."""

from __future__ import annotations

import pytest

from airflow_provider_backendauth.core.auth.scopes import missing_scopes


@pytest.mark.parametrize(
    ("requested", "granted", "missing"),
    [
        ("system/*.rs", "system/*.read", []),
        ("system/*.read", "system/*.rs", []),
        ("system/*.cruds", "system/*.*", []),
        ("system/Patient.rs system/Observation.r", "system/*.read", []),
        ("system/*.rs", "system/Patient.read", ["system/*.rs"]),
        ("system/*.cruds", "system/*.read", ["system/*.cruds"]),
        ("system/Patient.rs", "user/Patient.rs", ["system/Patient.rs"]),
        ("nhn:cppa/access", "nhn:cppa/access openid", []),
        ("api", "", ["api"]),
        ("system/*.rs", None, []),
        (None, "system/*.rs", []),
    ],
)
def test_missing_scopes(requested, granted, missing):
    assert missing_scopes(requested, granted) == missing
