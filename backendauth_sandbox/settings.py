"""Runtime switches of the sandbox.

Every field can be passed to ``Sandbox(...)`` and changed while the server runs
(``sb.settings.bulk_gzip = False`` or ``POST /_sandbox/settings``): handlers read them on every
request, so a test can flip behaviour mid-run without restarting the server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

NEXT_LINK_STYLES = ("absolute", "relative", "path")
BULK_FILE_ORIGINS = ("same", "foreign", "redirect")
BULK_ERROR_FILE_SEVERITIES = ("warning", "error", "fatal")


@dataclass
class SandboxSettings:
    """Behaviour switches; see the sandbox README for what each one emulates."""

    token_lifetime: int = 300
    clock_skew_seconds: int = 30
    smart_config_relative_token_endpoint: bool = False
    # Each access token is good for one FHIR/REST request (HelseID's CPPA API rule).
    single_use_tokens: bool = False
    # DPoP (RFC 9449; which clients must or may use it is per client, at registration):
    # every proof must carry the server's current nonce; a nonce is retired after this many
    # proofs (None: never); a proof is accepted for this many seconds after its iat.
    dpop_nonce: bool = False
    dpop_nonce_rotate_after: int | None = None
    dpop_proof_max_age: int = 60

    search_default_count: int = 50
    search_max_count: int = 1000
    search_next_link: str = "absolute"

    bulk_job_seconds: float = 1.0
    bulk_retry_after: float | None = None
    bulk_retry_after_http_date: bool = False
    bulk_retry_after_epoch: bool = False
    bulk_complete_after_polls: int = 0
    # The X-Progress of a 202 status answer ("{percent}" is replaced); None: "in-progress:
    # N% exported". Raw: tests send control characters through it.
    bulk_progress_text: str | None = None
    bulk_manifest_page_size: int | None = None
    bulk_error_counts: bool = False
    bulk_requires_access_token: bool = True
    bulk_gzip: bool = True
    bulk_error_file: str | None = None
    bulk_lines_per_file: int | None = None
    bulk_file_origin: str = "same"
    bulk_reject_concurrent: bool = False
    bulk_resource_padding_bytes: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for a value the server could not honour."""
        if self.token_lifetime < 0:
            raise ValueError("token_lifetime must be >= 0")
        if self.search_next_link not in NEXT_LINK_STYLES:
            raise ValueError(f"search_next_link must be one of {NEXT_LINK_STYLES}")
        if self.bulk_file_origin not in BULK_FILE_ORIGINS:
            raise ValueError(f"bulk_file_origin must be one of {BULK_FILE_ORIGINS}")
        if (
            self.bulk_error_file is not None
            and self.bulk_error_file not in BULK_ERROR_FILE_SEVERITIES
        ):
            raise ValueError(f"bulk_error_file must be None or one of {BULK_ERROR_FILE_SEVERITIES}")
        if self.bulk_lines_per_file is not None and self.bulk_lines_per_file < 1:
            raise ValueError("bulk_lines_per_file must be >= 1")
        if self.bulk_resource_padding_bytes < 0:
            raise ValueError("bulk_resource_padding_bytes must be >= 0")
        if self.bulk_manifest_page_size is not None and self.bulk_manifest_page_size < 1:
            raise ValueError("bulk_manifest_page_size must be None or >= 1")
        if self.bulk_complete_after_polls < 0:
            raise ValueError("bulk_complete_after_polls must be >= 0")
        if self.dpop_nonce_rotate_after is not None and self.dpop_nonce_rotate_after < 1:
            raise ValueError("dpop_nonce_rotate_after must be None or >= 1")
        if self.dpop_proof_max_age < 1:
            raise ValueError("dpop_proof_max_age must be >= 1")
        if self.bulk_job_seconds < 0:
            raise ValueError("bulk_job_seconds must be >= 0")
        if not 1 <= self.search_default_count <= self.search_max_count:
            raise ValueError("need 1 <= search_default_count <= search_max_count")

    def update(self, **changes: Any) -> None:
        """Apply several changes at once, all or nothing."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        candidate = dataclasses.replace(self, **changes)  # validates in __post_init__
        for name in changes:
            setattr(self, name, getattr(candidate, name))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
