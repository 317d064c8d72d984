"""The error hierarchy: names say what went wrong, and older public names still import."""

from __future__ import annotations

import pytest

from airflow_provider_backendauth.core import errors


def test_the_old_xcom_limit_name_still_imports_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="XComResultTooLargeError"):
        from airflow_provider_backendauth.core.errors import ResultTooLargeError
    assert ResultTooLargeError is errors.XComResultTooLargeError
    with pytest.raises(AttributeError):
        _ = errors.NoSuchError  # type: ignore[attr-defined]


def test_transport_errors_are_not_fhir_errors() -> None:
    # A size limit, an unsafe URL: any HTTP API can cause them, FHIR server or not.
    for cls in (errors.ResponseTooLargeError, errors.UnsafeURLError):
        assert issubclass(cls, errors.ApiError)
        assert not issubclass(cls, errors.FhirError)
    # A body to download again is worth retrying; a decoded-size limit is not.
    assert errors.CorruptBodyError("cut short").retryable
    assert not errors.DecodeLimitError("too big").retryable
