"""Helpers shared by this provider's operators (not public API)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_backendauth.core.fhir.rest import RestClient
    from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook


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


def rest_client_for(
    hook: BackendAuthHook, retry_args: Mapping[str, Any] | None = None
) -> RestClient:
    """A ``RestClient`` over the hook's authenticated session, retrying as the connection's
    ``retries`` and ``timeout`` extras say."""
    from airflow_provider_backendauth.core.fhir.rest import RestClient
    from airflow_provider_backendauth.core.retry import RetryPolicy

    settings = hook.client.settings
    return RestClient(
        hook.get_session(),
        hook.base_url,
        retry=RetryPolicy(attempts=settings.retries + 1),
        timeout=settings.timeout,
        retry_args=retry_args,
    )
