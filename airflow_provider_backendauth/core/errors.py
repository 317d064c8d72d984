"""The provider's exception hierarchy: every error a caller of this provider can see.

One base class, specific subclasses, and messages that tell the user what to check. No
message ever contains a private key, a signed assertion or an access token.

Which class says what went wrong, not which module raised it: ``ApiError`` is any failed
HTTP API call (the generic REST client raises it); ``FhirError`` only a server that answered
in FHIR (an OperationOutcome) or broke a FHIR rule; ``BulkExportError`` anything in a Bulk
Data export. Limits are named for what they bound: ``ResponseTooLargeError`` an HTTP
answer, ``XComResultTooLargeError`` what a task would push to XCom, ``DecodeLimitError`` a
downloaded file.

Not here, on purpose: exceptions that never leave their module (a retry loop's "try again"
signal, a FHIRPath error the view compiler turns into ``ViewDefinitionError``), the CLI's
exit signal, and ``core.http.deadline.DeadlineExceededError``, which is a
``requests.Timeout`` so requests' and tenacity's timeout handling treat it as one (this
module imports no HTTP library, so importing it stays cheap).
"""

from __future__ import annotations

import warnings
from typing import Any

from airflow_provider_backendauth.core.redact import redact


class BackendAuthError(Exception):
    """Base class for every error raised by this provider.

    Two questions every subclass answers, so adapters can act without knowing the class:

    - ``retryable``: trying the same call again later may succeed (5xx, 429, network errors,
      an OperationOutcome saying ``transient``).
    - ``retry_cannot_help``: only a change by a person can fix it (the connection, the key,
      the client's registration or scopes). Airflow operators turn these into
      ``AirflowFailException`` so a task does not spend its retries on them.
    """

    retryable: bool = False

    def __init__(self, message: Any = "", *args: Any) -> None:
        # Every message may quote server text: redact it here, once, for every path.
        super().__init__(redact(message) if isinstance(message, str) else message, *args)

    @property
    def retry_cannot_help(self) -> bool:
        return False


class ConfigurationError(BackendAuthError, ValueError):
    """The connection or operator configuration is wrong; detected before any network call.

    Also a ``ValueError``: operators raise it for bad arguments at DAG parse time, where
    that is what Python code expects.
    """

    @property
    def retry_cannot_help(self) -> bool:
        return True


class KeyLoadError(ConfigurationError):
    """The private key could not be read or does not fit the chosen algorithm."""


class InsecureURLError(ConfigurationError):
    """A URL is not HTTPS (and is neither loopback nor explicitly allowed as plain HTTP)."""


class ViewDefinitionError(ConfigurationError):
    """A SQL-on-FHIR ViewDefinition is invalid, or a resource breaks what it declares.

    Raised by ``core.views.compile_view`` before any row for everything knowable from the
    view alone (structure, column names, FHIRPath syntax, functions, constants), and while
    rows are produced for what depends on the data (a ``collection: false`` column meeting
    several values, a ``where`` path that is not boolean). The message names the column or
    path and what is wrong; it never quotes resource content.
    """


class MalformedResourceError(BackendAuthError, ValueError):
    """An input to a ViewDefinition is not a FHIR resource (not a JSON object, or no
    ``resourceType``). The message gives its position in the input, never its content."""

    @property
    def retry_cannot_help(self) -> bool:
        return True


class DiscoveryError(BackendAuthError):
    """The server's `.well-known/smart-configuration` could not be fetched or is unusable."""


class TokenRequestError(BackendAuthError):
    """The token endpoint refused or failed to answer the client-assertion grant.

    Attributes:
        status_code: the HTTP status, or None when no answer arrived.
        error: the OAuth `error` code when the server sent one (e.g. `invalid_client`).
        error_description: the server's own explanation, when it sent one.
        retryable: whether trying again later may succeed (5xx, 429, network errors).
        retry_after: seconds the server asked us to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.error_description = redact(error_description) if error_description else None
        self.retryable = retryable
        self.retry_after = retry_after

    @property
    def retry_cannot_help(self) -> bool:
        # The server answered and refused the grant: the registration, key or claims must
        # change. No answer at all (status None) may be a network problem.
        return not self.retryable and self.status_code is not None


class InvalidClientError(TokenRequestError):
    """The server did not accept the client's identity or its signed assertion."""


class DpopError(TokenRequestError):
    """The token endpoint wants DPoP (RFC 9449) proofs the client did not send, or refused
    the ones it sent: a DPoP matter, not a wrong key or client id."""


class InvalidScopeError(TokenRequestError):
    """The requested scope is not allowed for this client."""


class ApiError(BackendAuthError):
    """An HTTP API call failed: an error answer, no answer, or an unusable one (any REST API;
    ``FhirError`` when the server answered in FHIR).

    Attributes:
        status_code: the HTTP status of the failing response, when there was one.
        diagnostics: the server's own explanation (redacted), when it sent one.
        retryable: trying again later may succeed (429, 5xx, a ``transient`` outcome).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        diagnostics: str | None = None,
        retryable: bool = False,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.diagnostics = redact(diagnostics) if diagnostics else diagnostics
        # ``transient`` is the older name of the same idea, still accepted.
        self.retryable = retryable or bool(transient)

    @property
    def transient(self) -> bool:
        """Deprecated alias of ``retryable``."""
        return self.retryable

    @property
    def retry_cannot_help(self) -> bool:
        # The token was refused even after a renewal, or the client lacks the grant.
        return self.status_code in (401, 403)


class FhirError(ApiError):
    """A FHIR server answered with an OperationOutcome error, or broke a FHIR rule (a search
    page that is not a Bundle, a ``next`` link to another server); ``diagnostics`` carries
    the OperationOutcome's issues if any."""


class ResponseCheckError(ApiError):
    """A user-supplied ``response_check`` rejected an answer."""


class ResponseTooLargeError(ApiError):
    """An answer's decoded body exceeded its size limit (a decompression bomb, or a page far
    larger than expected). Retrying gets the same answer: raise the named setting instead."""

    @property
    def retry_cannot_help(self) -> bool:
        return True


class XComResultTooLargeError(BackendAuthError):
    """More results than a task may push to XCom; write them to storage instead."""

    @property
    def retry_cannot_help(self) -> bool:
        return True


class BulkExportError(FhirError):
    """A FHIR Bulk Data export failed (kick-off, status, manifest or download)."""


class DecodeLimitError(BulkExportError):
    """A file decodes to more than a limit allows. Not retried: the next try would be the same."""


class CorruptBodyError(BulkExportError):
    """A downloaded body is not what it claims (cut short, corrupt gzip or deflate): worth
    downloading again."""

    def __init__(self, message: str, **details: Any) -> None:
        details.setdefault("retryable", True)
        super().__init__(message, **details)


class UnsafeURLError(ApiError):
    """A server sent a URL the provider will not follow: ambiguous (parsers would disagree on
    its host), not http(s), a downgrade to plain HTTP, or outside the allowed origins."""


class StorageError(BackendAuthError, OSError):
    """Writing to the output storage failed (e.g. an S3 part upload the store refused).

    Also an ``OSError``, like the storage library's own errors, so code that treats storage
    problems as not the FHIR server's keeps doing so. ``retryable`` unless the store denied
    access (a person must fix the credentials or the bucket policy).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

    @property
    def retry_cannot_help(self) -> bool:
        return not self.retryable


class TableError(BackendAuthError):
    """A table could not be written as asked: a value that does not fit its column, a
    malformed resource or input line, an ``ansi/type`` tag not understood, or a table whose
    log this provider cannot continue. Nothing was committed; a retry with the same input
    fails the same way, so a person must fix the view or the data."""

    @property
    def retry_cannot_help(self) -> bool:
        return True


# Older names that public code may import; each still works, with a DeprecationWarning.
_DEPRECATED_NAMES = {"ResultTooLargeError": "XComResultTooLargeError"}


def __getattr__(name: str) -> Any:
    new = _DEPRECATED_NAMES.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{name} is deprecated; use {new} (same class)", DeprecationWarning, stacklevel=2)
    return globals()[new]
