"""``BackendAuthHttpOperator``: one REST call (or a paginated series) with a backend token.

Modelled on the HTTP provider's ``HttpOperator`` (same parameter names), but authenticated
by a ``backendauth`` connection: the bearer token is obtained with a signed client assertion,
cached, renewed on expiry or a 401, and sent only to the connection's own origin(s).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_backendauth._compat import BaseOperator
from airflow_provider_backendauth.core.errors import ConfigurationError
from airflow_provider_backendauth.operators._common import fails_fast

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Context

    from airflow_provider_backendauth.core.fhir.rest import RestClient

# Methods whose ``data`` goes into the query string, as in HttpHook.
_QUERY_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_REQUEST_KEYS = ("endpoint", "data", "json", "headers", "extra_options")


def merge_request(current: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The next page's request: ``overrides`` (from ``pagination_function``) over ``current``.

    Dicts are merged (the override's items win), anything else replaced, as in the HTTP
    provider. Unknown keys are an error, so a typo does not loop over the same page.
    """
    unknown = sorted(set(overrides) - set(_REQUEST_KEYS))
    if unknown:
        raise ConfigurationError(
            f"pagination_function returned unknown key(s) {unknown}; allowed: {_REQUEST_KEYS}"
        )
    merged = dict(current)
    for key, value in overrides.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = {**base, **value}
        elif value is not None:
            merged[key] = value
    return merged


def default_result(response: requests.Response) -> Any:
    """The parsed JSON body when the response is JSON, else its text."""
    from airflow_provider_backendauth.core.http.bodies import json_of, text_of

    content_type = response.headers.get("Content-Type", "")
    if "json" in content_type:
        try:
            return json_of(response)
        except ValueError:
            pass
    return text_of(response)


class BackendAuthHttpOperator(BaseOperator):
    """Call a REST endpoint of an API secured by SMART Backend Services / signed-JWT auth.

    Transient failures (connection errors, 429 with ``Retry-After``, 5xx) are retried with
    backoff; errors quote the server's OperationOutcome. The return value (pushed to XCom) is
    the parsed JSON body (or text), a list of them when paginating, or what
    ``response_filter`` returns; it must stay small. Any access token the process obtained is
    replaced by ``[redacted]`` in it (an API that echoes the request's headers).

    Args:
        endpoint: path relative to the connection's base URL, or an absolute URL (which gets
            the token only if its origin is the base URL's or an ``allowed_hosts`` entry).
            Templated.
        method: HTTP method (default ``GET``; the HTTP provider defaults to POST).
        data: query parameters for GET/HEAD/DELETE/OPTIONS, else the form/body. Templated.
        json: a JSON body. Templated.
        headers: extra headers. Templated. An ``Authorization`` header here is replaced.
        pagination_function: called with each response; returns the next request's overrides
            (keys ``endpoint``, ``data``, ``json``, ``headers``, ``extra_options``) or None
            to stop. Dicts are merged into the previous request's, other values replace them.
        response_check: ``check(response(s), **context) -> bool``; False fails the task.
            Receives the list of responses when paginating.
        response_filter: ``filter(response(s), **context) -> value`` to return instead.
        extra_options: ``requests`` options (``timeout``, ``verify``, ``allow_redirects``...)
            and ``check_response`` (default True: fail on 4xx/5xx).
        backendauth_conn_id: the ``backendauth`` connection.
        log_response: log the start of each response body (beware of personal data in logs).
        retry_args: ``tenacity.Retrying`` arguments replacing the default retry behaviour
            (whose attempts come from the connection's ``retries`` extra).
        max_pages: stop paginating after this many responses (a safety net).
        max_xcom_bytes: fail with ``XComResultTooLargeError`` when the JSON of the return value
            is larger (None: no limit). Use ``response_filter`` to keep what matters.
    """

    conn_id_field = "backendauth_conn_id"
    template_fields: Sequence[str] = ("endpoint", "data", "json", "headers")
    template_fields_renderers = {"headers": "json", "data": "py", "json": "json"}
    ui_color = "#cfe3f7"

    def __init__(
        self,
        *,
        endpoint: str = "",
        method: str = "GET",
        data: dict[str, Any] | str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        pagination_function: Callable[[requests.Response], Mapping[str, Any] | None] | None = None,
        response_check: Callable[..., bool] | None = None,
        response_filter: Callable[..., Any] | None = None,
        extra_options: dict[str, Any] | None = None,
        backendauth_conn_id: str = "backendauth_default",
        log_response: bool = False,
        retry_args: dict[str, Any] | None = None,
        max_pages: int | None = 1000,
        max_xcom_bytes: int | None = 1_048_576,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.method = method.upper()
        self.data = data
        self.json = json
        self.headers = headers or {}
        self.pagination_function = pagination_function
        self.response_check = response_check
        self.response_filter = response_filter
        self.extra_options = extra_options or {}
        self.backendauth_conn_id = backendauth_conn_id
        self.log_response = log_response
        self.retry_args = retry_args
        self.max_pages = max_pages
        self.max_xcom_bytes = max_xcom_bytes

    @fails_fast
    def execute(self, context: Context) -> Any:
        from airflow_provider_backendauth.hooks.backendauth import BackendAuthHook

        hook = BackendAuthHook(self.backendauth_conn_id)
        rest = hook.client.rest_client(retry_args=self.retry_args)
        request: dict[str, Any] = {
            "endpoint": self.endpoint,
            "data": self.data,
            "json": self.json,
            "headers": dict(self.headers),
            "extra_options": dict(self.extra_options),
        }
        response = self._send(rest, request)
        if self.pagination_function is None:
            return self.process_response(context, response)
        responses = [response]
        while True:
            overrides = self.pagination_function(response)
            if not overrides:
                break
            if self.max_pages is not None and len(responses) >= self.max_pages:
                self.log.warning(
                    "Stopping after max_pages=%d responses although pagination_function asked "
                    "for more.",
                    self.max_pages,
                )
                break
            next_request = merge_request(request, overrides)
            if next_request == request:
                raise ConfigurationError(
                    "pagination_function asked for the same request again; stopping to avoid "
                    "an endless loop. Return None when there are no more pages."
                )
            request = next_request
            response = self._send(rest, request)
            responses.append(response)
        self.log.info("Fetched %d pages from %s", len(responses), self.endpoint or "the base URL")
        return self.process_response(context, responses)

    def _send(self, rest: RestClient, request: Mapping[str, Any]) -> requests.Response:
        options = dict(request.get("extra_options") or {})
        check = bool(options.pop("check_response", True))
        options.pop("stream", None)  # the body is read (bounded) for the result and the log
        kwargs: dict[str, Any] = {**options, "headers": dict(request.get("headers") or {})}
        data = request.get("data")
        if data:
            kwargs["params" if self.method in _QUERY_METHODS else "data"] = data
        if request.get("json") is not None:
            kwargs["json"] = request["json"]
        from airflow_provider_backendauth.core.http.bodies import body_of, text_of

        response = rest.request(self.method, request.get("endpoint") or "", check=check, **kwargs)
        self.log.info(
            "%s %s answered %d (%d bytes)",
            self.method,
            response.url,
            response.status_code,
            len(body_of(response)),
        )
        if self.log_response:
            from airflow_provider_backendauth.core.redact import redact

            # The answer may echo the request (and its token), or carry control characters.
            shown = redact(text_of(response)[:1000])
            self.log.info("Response body (first 1000 characters): %s", shown)
        return response

    def process_response(
        self, context: Context, response: requests.Response | list[requests.Response]
    ) -> Any:
        """Apply ``response_check`` and ``response_filter``; return the XCom value."""
        from airflow_provider_backendauth.core.errors import ResponseCheckError
        from airflow_provider_backendauth.operators._common import call_with_context

        if self.response_check is not None and not call_with_context(
            self.response_check, response, context
        ):
            raise ResponseCheckError(
                f"response_check returned False for {self.method} {self.endpoint!r}."
            )
        if self.response_filter is not None:
            result = call_with_context(self.response_filter, response, context)
        elif isinstance(response, list):
            result = [default_result(r) for r in response]
        else:
            result = default_result(response)
        from airflow_provider_backendauth.core.redact import redact_values

        # XCom never holds an access token, even from an answer that echoes the request.
        result = redact_values(result)
        self._check_size(result)
        return result

    def _check_size(self, result: Any) -> None:
        from airflow_provider_backendauth.core.errors import XComResultTooLargeError

        if self.max_xcom_bytes is None:
            return
        try:
            size = len(jsonlib.dumps(result, default=str).encode("utf-8"))
        except (TypeError, ValueError):
            return  # not JSON; Airflow's XCom serialisation decides
        if size > self.max_xcom_bytes:
            raise XComResultTooLargeError(
                f"The result is {size} bytes of JSON, more than max_xcom_bytes="
                f"{self.max_xcom_bytes}. XCom is for small values: use response_filter to keep "
                "what downstream tasks need, or write the data to storage in a task of its own."
            )
