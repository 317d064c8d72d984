"""Thread-safe request counters that tests read to prove what a client did."""

from __future__ import annotations

import copy
import threading
from collections import Counter, deque
from typing import Any

_MAX_REMEMBERED = 200


class Stats:
    """Counters for everything a test may want to assert on.

    ``snapshot()`` returns a plain, JSON-serialisable dict (also served by
    ``GET /_sandbox/stats``); its keys are documented in the sandbox README.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counters: Counter[str] = Counter()
            self._by_path: Counter[str] = Counter()
            self._by_kind: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._token_by_client: Counter[str] = Counter()
            self._token_fail_by_error: Counter[str] = Counter()
            self._token_fail_reasons: deque[str] = deque(maxlen=_MAX_REMEMBERED)
            self._dpop_fail_reasons: deque[str] = deque(maxlen=_MAX_REMEMBERED)
            self._foreign_auth_headers: list[str] = []
            self._foreign_dpop_headers: list[str] = []
            self._foreign_by_path: Counter[str] = Counter()

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def request(self, path: str, kind: str) -> None:
        with self._lock:
            self._counters["requests"] += 1
            self._by_path[path] += 1
            self._by_kind[kind] += 1

    def response(self, status: int) -> None:
        with self._lock:
            self._by_status[str(status)] += 1
            if status == 401:
                self._counters["unauthorized"] += 1

    def token_request(self, client_id: str) -> None:
        with self._lock:
            self._counters["token_requests"] += 1
            self._token_by_client[client_id] += 1

    def token_failure(self, error: str, reason: str) -> None:
        with self._lock:
            self._counters["token_failures"] += 1
            self._token_fail_by_error[error] += 1
            self._token_fail_reasons.append(reason)

    def dpop_failure(self, error: str, reason: str, counter: str | None = None) -> None:
        with self._lock:
            self._counters["dpop_failures"] += 1
            if counter:
                self._counters[counter] += 1
            self._dpop_fail_reasons.append(f"{error}: {reason}")

    def foreign_request(
        self, path: str, authorization: str | None, dpop: str | None = None
    ) -> None:
        with self._lock:
            self._counters["foreign_requests"] += 1
            self._foreign_by_path[path] += 1
            if authorization is not None:
                self._foreign_auth_headers.append(authorization)
            if dpop is not None:
                self._foreign_dpop_headers.append(dpop)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "requests": c["requests"],
                "requests_by_path": dict(self._by_path),
                "requests_by_kind": dict(self._by_kind),
                "responses_by_status": dict(self._by_status),
                "unauthorized": c["unauthorized"],
                "token_requests": c["token_requests"],
                "token_requests_by_client": dict(self._token_by_client),
                "tokens_issued": c["tokens_issued"],
                "token_failures": c["token_failures"],
                "token_failures_by_error": dict(self._token_fail_by_error),
                "token_failure_reasons": list(self._token_fail_reasons),
                "faults_applied": c["faults_applied"],
                "responses_held": c["responses_held"],
                "responses_released": c["responses_released"],
                "dpop": {
                    "proofs_accepted": c["dpop_proofs_accepted"],
                    "failures": c["dpop_failures"],
                    "nonce_challenges": c["dpop_nonce_challenges"],
                    "nonces_rotated": c["dpop_nonces_rotated"],
                    "tokens_issued": c["dpop_tokens_issued"],
                    "failure_reasons": list(self._dpop_fail_reasons),
                },
                "fhir_searches": c["fhir_searches"],
                "fhir_reads": c["fhir_reads"],
                "bulk_kickoffs": c["bulk_kickoffs"],
                "bulk_status_polls": c["bulk_status_polls"],
                "bulk_cancels": c["bulk_cancels"],
                "bulk_rejected_concurrent": c["bulk_rejected_concurrent"],
                "bulk_manifest_pages": c["bulk_manifest_pages"],
                "file_downloads": c["file_downloads"],
                "file_bytes_sent": c["file_bytes_sent"],
                "foreign_origin": {
                    "requests": c["foreign_requests"],
                    "requests_by_path": dict(self._foreign_by_path),
                    "file_downloads": c["foreign_file_downloads"],
                    "authorization_headers": copy.copy(self._foreign_auth_headers),
                    "dpop_headers": copy.copy(self._foreign_dpop_headers),
                },
            }
