"""The provider's exception hierarchy.

One base class, specific subclasses, and messages that tell the user what to check. No
message ever contains a private key, a signed assertion or an access token.
"""

from __future__ import annotations


class BackendAuthError(Exception):
    """Base class for every error raised by this provider."""


class ConfigurationError(BackendAuthError):
    """The connection or operator configuration is wrong; detected before any network call."""


class KeyLoadError(ConfigurationError):
    """The private key could not be read or does not fit the chosen algorithm."""


class InsecureURLError(ConfigurationError):
    """A URL is not HTTPS (and is neither loopback nor explicitly allowed as plain HTTP)."""


class DiscoveryError(BackendAuthError):
    """The server's `.well-known/smart-configuration` could not be fetched or is unusable."""


class TokenRequestError(BackendAuthError):
    """The token endpoint refused or failed to answer the client-assertion grant.

    Attributes:
        status_code: the HTTP status, or None when no answer arrived.
        error: the OAuth `error` code when the server sent one (e.g. `invalid_client`).
        error_description: the server's own explanation, when it sent one.
        retryable: whether trying again later may succeed (5xx, 429, network errors).
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
        self.error_description = error_description
        self.retryable = retryable
        self.retry_after = retry_after


class InvalidClientError(TokenRequestError):
    """The server did not accept the client's identity or its signed assertion."""


class InvalidScopeError(TokenRequestError):
    """The requested scope is not allowed for this client."""


class FhirError(BackendAuthError):
    """A FHIR/REST call failed; carries the server's OperationOutcome diagnostics if any.

    Attributes:
        status_code: the HTTP status of the failing response, when there was one.
        diagnostics: the human-readable text of the server's OperationOutcome issues.
        transient: True when the OperationOutcome says `transient` (retry later).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        diagnostics: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.diagnostics = diagnostics
        self.transient = transient


class ResultTooLargeError(FhirError):
    """More results than may be returned to XCom; write them to storage instead."""


class BulkExportError(FhirError):
    """A FHIR Bulk Data export failed (kick-off, status, manifest or download)."""
