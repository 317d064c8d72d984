"""Fault injection: rules that make the next matching requests fail in a chosen way.

A rule matches by path prefix (and optionally method and origin). While it has uses left it
can, in this order: expire every access token, wait, drop the connection without answering,
answer with a status of its own (OAuth JSON, OperationOutcome, plain text or empty body, with
``Retry-After``), or let the request through and cut the response body after K bytes.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

from .httpd import Request, Response
from .responses import (
    dumps,
    format_seconds,
    http_date,
    json_response,
    oauth_error,
    outcome_response,
    text_response,
)

BODY_KINDS = ("auto", "oauth", "operation_outcome", "text", "json", "empty")
_ids = itertools.count(1)


@dataclass
class FaultRule:
    """One fault. Build it with ``Faults.add(...)``; the fields are the rule's parameters.

    Matching: ``path`` is a prefix of the decoded request path (``"/"`` matches everything),
    ``method`` (e.g. ``"GET"``) and ``origin`` (``"main"`` or ``"foreign"``) narrow it when set.
    ``times`` is how many matching requests it affects; ``None`` means until removed.
    """

    path: str = "/"
    method: str | None = None
    origin: str | None = None
    times: int | None = 1
    status: int | None = None
    body: Any = None
    body_kind: str = "auto"
    error: str = "temporarily_unavailable"
    issue_code: str = "transient"
    severity: str = "error"
    retry_after: float | None = None
    retry_after_http_date: bool = False
    delay: float = 0.0
    drop: bool = False
    drop_after_bytes: int | None = None
    hold_after_bytes: int | None = None
    expire_tokens: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    id: str = ""
    hits: int = 0
    # Set by ``Faults.release`` (or removing/clearing the rule): held responses go on.
    released: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"fault-{next(_ids)}"
        if self.body_kind not in BODY_KINDS:
            raise ValueError(f"body_kind must be one of {BODY_KINDS}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None (always)")
        if self.method is not None:
            self.method = self.method.upper()
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.drop_after_bytes is not None and self.drop_after_bytes < 0:
            raise ValueError("drop_after_bytes must be >= 0")
        if self.hold_after_bytes is not None and self.hold_after_bytes < 0:
            raise ValueError("hold_after_bytes must be >= 0")
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after needs a status (e.g. 429 or 503)")

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, request: Request) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        if self.origin is not None and request.server_name != self.origin:
            return False
        return request.path.startswith(self.path)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.compare}

    def error_response(self, request: Request) -> Response:
        """The canned answer for a rule with a ``status``."""
        assert self.status is not None
        kind = self.body_kind
        if kind == "auto":
            if request.path.startswith("/auth"):
                kind = "oauth"
            elif request.path.startswith(("/fhir", "/storage")):
                kind = "operation_outcome"
            else:
                kind = "json" if isinstance(self.body, dict | list) else "text"
        description = self.body if isinstance(self.body, str) else "injected fault"
        response: Response
        if kind == "oauth":
            if isinstance(self.body, dict):
                response = json_response(self.status, self.body)
            else:
                response = oauth_error(self.status, self.error, description)
        elif kind == "operation_outcome":
            if isinstance(self.body, dict):
                response = Response(self.status, dumps(self.body), "application/fhir+json")
            else:
                response = outcome_response(
                    self.status, description, code=self.issue_code, severity=self.severity
                )
        elif kind == "json":
            response = json_response(self.status, self.body if self.body is not None else {})
        elif kind == "text":
            response = text_response(
                self.status, self.body if isinstance(self.body, str) else "injected fault"
            )
        else:
            response = Response(self.status)
        if self.retry_after is not None:
            value = (
                http_date(time.time() + self.retry_after)
                if self.retry_after_http_date
                else format_seconds(self.retry_after)
            )
            response.header("Retry-After", value)
        return response


class Faults:
    """The rule list of one sandbox: ``sb.faults``. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._holding: dict[str, FaultRule] = {}  # hold rules, also once used up

    def add(self, path: str = "/", **params: Any) -> FaultRule:
        """Add a rule; see ``FaultRule`` for the parameters. ``count`` is an alias of ``times``.

        Examples::

            sb.faults.add("/auth/token", status=503)                    # once
            sb.faults.add("/fhir/Patient", status=429, retry_after=1, times=2)
            sb.faults.add("/fhir/_bulk/files", drop_after_bytes=1000)   # cut a download
            sb.faults.add("/fhir", delay=2.0, times=None)               # always slow
            sb.faults.add("/fhir", status=401, body_kind="text", body="Access Denied")
            rule = sb.faults.add("/fhir/_bulk/files", hold_after_bytes=1000)  # stall a
            sb.faults.release(rule)                                     # download, go on
        """
        if "count" in params:
            params["times"] = params.pop("count")
        rule = FaultRule(path=path, **params)
        with self._lock:
            self._rules.append(rule)
            if rule.hold_after_bytes is not None:
                self._holding[rule.id] = rule
        return rule

    def release(self, rule: FaultRule | str) -> bool:
        """Let the responses a ``hold_after_bytes`` rule stalled go on (and stop the rule)."""
        rule_id = rule if isinstance(rule, str) else rule.id
        with self._lock:
            held = self._holding.pop(rule_id, None)
            if held is None:
                return False
            self._rules = [r for r in self._rules if r.id != rule_id]
        held.released.set()
        return True

    def remove(self, rule: FaultRule | str) -> bool:
        rule_id = rule if isinstance(rule, str) else rule.id
        if self.release(rule_id):
            return True
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules = []
            held, self._holding = list(self._holding.values()), {}
        for rule in held:
            rule.released.set()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def take(self, request: Request) -> FaultRule | None:
        """Consume one use of the first rule matching ``request``."""
        with self._lock:
            for rule in self._rules:
                if not rule.exhausted and rule.matches(request):
                    rule.hits += 1
                    if rule.exhausted:
                        self._rules.remove(rule)
                    return rule
        return None
