"""Helpers shared by this provider's operators (not public API)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast


def call_with_context(func: Callable[..., Any], first: Any, context: Mapping[str, Any]) -> Any:
    """Call ``func(first, **kwargs)`` passing the context entries it asks for by name (all of
    them if it takes ``**kwargs``), as the HTTP provider does for ``response_check``."""
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return func(first)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return func(first, **context)
    names = list(parameters)[1:]
    return func(first, **{name: context[name] for name in names if name in context})


def as_task_failure(exc: BaseException) -> BaseException:
    """The exception a task should end with: ``AirflowFailException`` when retrying cannot
    help (a wrong connection, key, registration or scope), so Airflow does not spend the
    task's retries on it; anything else unchanged."""
    from airflow_provider_backendauth._compat import AirflowFailException
    from airflow_provider_backendauth.core.errors import BackendAuthError

    if isinstance(exc, BackendAuthError) and exc.retry_cannot_help:
        failure = AirflowFailException(f"{exc} (not retried: this needs a fix, not a retry)")
        failure.__cause__ = exc
        return failure
    return exc


_F = TypeVar("_F", bound=Callable[..., Any])


def fails_fast(method: _F) -> _F:
    """Decorate an operator's ``execute``: errors a retry cannot fix end the task at once
    (``AirflowFailException``); transient ones stay retryable."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if args:  # the operator: its OpenLineage failure facet reports this error
                args[0]._task_error = exc
            failure = as_task_failure(exc)
            if failure is exc:
                raise
            raise failure from exc

    return cast(_F, wrapper)


def storage_path(destination: Any) -> Any:
    """The path object for an operator's ``destination``/``state_dir``: URLs become
    ``ObjectStoragePath`` (so Airflow connections apply: ``s3://aws_default@bucket/...``),
    plain paths ``pathlib.Path``; path objects (ObjectStoragePath, UPath, pathlib) pass
    through untouched. The one place operators turn what a DAG author wrote into a path."""
    if not isinstance(destination, str):
        return destination
    text = destination.strip()
    if "://" in text:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(text)
    import pathlib

    return pathlib.Path(text).expanduser()
