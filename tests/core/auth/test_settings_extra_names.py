"""Extras are named so that Airflow's secret masker hides only secrets; old names still work."""

from __future__ import annotations

import warnings

import pytest

from airflow_provider_backendauth.core.auth.settings import (
    EXTRA_KEYS,
    RENAMED_EXTRAS,
    ClientSettings,
    DeprecatedExtraWarning,
)

SECRET_EXTRAS = {"private_key_passphrase"}


def _masker_hides(name: str) -> bool:
    try:
        from airflow.sdk._shared.secrets_masker import should_hide_value_for_key
    except ImportError:
        from airflow.sdk.execution_time.secrets_masker import should_hide_value_for_key
    return bool(should_hide_value_for_key(name))


def _settings(**extra: object) -> ClientSettings:
    return ClientSettings.from_connection_fields(host=None, login="c", password=None, extra=extra)


@pytest.mark.parametrize("name", EXTRA_KEYS)
def test_only_secret_extras_are_masked(name):
    """The masker matches substrings such as "token" and "private_key": the token URL showed
    as *** in the edit form and the reuse policy as empty."""
    assert _masker_hides(name) == (name in SECRET_EXTRAS), name


def test_the_old_names_were_masked():
    assert all(_masker_hides(old) for old in RENAMED_EXTRAS)


def test_new_names_are_read_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = _settings(auth_url="https://a/t", reuse_policy="per_request", key_file="/k.pem")
    assert (s.token_url, s.token_reuse, s.private_key_file) == (
        "https://a/t",
        "per_request",
        "/k.pem",
    )


def test_old_names_still_work_with_a_deprecation_warning():
    with pytest.warns(
        DeprecatedExtraWarning, match="'token_url' is deprecated: rename it to 'auth_url'"
    ):
        s = _settings(token_url="https://a/t")
    assert s.token_url == "https://a/t"
    with pytest.warns(DeprecatedExtraWarning, match="'token_reuse'.*'reuse_policy'"):
        assert _settings(token_reuse="per_request").token_reuse == "per_request"
    with pytest.warns(DeprecatedExtraWarning, match="'private_key_file'.*'key_file'"):
        assert _settings(private_key_file="/k.pem").private_key_file == "/k.pem"


def test_new_name_wins_over_the_old_one():
    """An old connection edited in the form keeps its old key next to the new field."""
    with pytest.warns(DeprecatedExtraWarning, match="ignored here because 'auth_url' is also set"):
        s = _settings(token_url="https://old/t", auth_url="https://new/t")
    assert s.token_url == "https://new/t"
    with pytest.warns(DeprecatedExtraWarning, match="rename it"):
        assert _settings(token_url="https://old/t", auth_url="").token_url == "https://old/t"


def test_old_names_are_validated_like_the_new_ones():
    from airflow_provider_backendauth.core.errors import ConfigurationError

    with (
        pytest.warns(DeprecatedExtraWarning),
        pytest.raises(ConfigurationError, match="reuse_policy"),
    ):
        _settings(token_reuse="forever")
