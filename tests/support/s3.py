"""A real S3 HTTP endpoint on 127.0.0.1 (moto in server mode) that logs every S3 operation.

Tests, the stack end-to-end test and the S3 benchmark point the Amazon provider at it with an
``aws``-type connection whose ``endpoint_url`` is this server, and use
``ObjectStoragePath("s3://<conn>@<bucket>/...")`` exactly as a user would against AWS.

Every request is classified into its S3 operation name (``PutObject``, ``UploadPart``,
``CopyObject``, ...) as it reaches the server, so a test can count what the code under test
did per file, independently of the client library.

Faults happen in the server, in front of moto, on the real HTTP exchange (no client library
is patched): ``fail()`` answers matching requests with an S3 error, ``hold()`` returns a
``Gate`` that keeps matching requests waiting at the server until the test lets them pass
(events, no sleeps: a test can count requests in flight at any moment).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials
REGION = "us-east-1"
# The inspection client's requests (``objects()``, ``incomplete_uploads()``) are not logged.
_INSPECTOR = "s3-test-inspector"


@dataclass(frozen=True)
class S3Request:
    operation: str
    bucket: str
    key: str
    bytes: int  # request body size (data uploaded)
    part: int | None = None  # UploadPart's partNumber
    # Requests on the same key still being answered when this one arrived.
    overlapping: int = 0


class Gate:
    """Keeps the requests it matches waiting at the server until ``release``/``open``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._released: set[int | None] = set()
        self._open = False
        self.held: list[int | None] = []  # parts waiting now
        self.passed: list[int | None] = []  # parts let through and answered, in order

    def _wait_turn(self, part: int | None) -> None:
        with self._cond:
            self.held.append(part)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open or part in self._released)
            self.held.remove(part)
            self._cond.notify_all()

    def _answered(self, part: int | None) -> None:
        with self._cond:
            self.passed.append(part)
            self._cond.notify_all()

    def release(self, part: int | None) -> None:
        """Let the request for ``part`` through (now or when it arrives)."""
        with self._cond:
            self._released.add(part)
            self._cond.notify_all()

    def open(self) -> None:
        """Let every request through, from now on."""
        with self._cond:
            self._open = True
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Gate], bool], timeout: float = 60) -> None:
        """Wait until ``predicate(gate)`` holds; the timeout only guards a broken test."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(
                    f"gate never got there: held {self.held}, passed {self.passed}"
                )


@dataclass
class _Fault:
    operation: str
    part: int | None
    status: int  # 0: hold at the gate instead
    code: str
    times: int | None  # None: every matching request
    gate: Gate | None = None
    hits: int = 0

    def matches(self, request: S3Request) -> bool:
        if request.operation != self.operation:
            return False
        if self.part is not None and request.part != self.part:
            return False
        return self.times is None or self.hits < self.times


_ERROR_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>injected by the test server</Message><RequestId>test</RequestId></Error>"
)


def s3_operation(method: str, path: str, query: str, headers: dict[str, str]) -> S3Request:
    """Name the S3 operation of a path-style request (``/bucket/key?query``)."""
    params = parse_qs(query, keep_blank_values=True)
    parts = unquote(path).lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    size = int(headers.get("content-length") or 0)
    part = int(params["partNumber"][0]) if params.get("partNumber", [""])[0].isdigit() else None
    if not key:
        names = {
            ("GET", "uploads"): "ListMultipartUploads",
            ("GET", "list-type"): "ListObjectsV2",
            ("POST", "delete"): "DeleteObjects",
        }
        for (verb, param), name in names.items():
            if method == verb and param in params:
                return S3Request(name, bucket, key, size)
        operation = {
            "GET": "ListObjects",
            "HEAD": "HeadBucket",
            "PUT": "CreateBucket",
            "DELETE": "DeleteBucket",
        }
        return S3Request(operation.get(method, method), bucket, key, size)
    if method == "PUT" and "x-amz-copy-source" in headers:
        name = "UploadPartCopy" if "partNumber" in params else "CopyObject"
    elif method == "PUT":
        name = "UploadPart" if "partNumber" in params else "PutObject"
    elif method == "POST" and "uploads" in params:
        name = "CreateMultipartUpload"
    elif method == "POST" and "uploadId" in params:
        name = "CompleteMultipartUpload"
    elif method == "DELETE":
        name = "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    elif method == "GET":
        name = "ListParts" if "uploadId" in params else "GetObject"
    elif method == "HEAD":
        name = "HeadObject"
    else:
        name = method
    return S3Request(name, bucket, key, size, part)


class S3Server(ThreadedMotoServer):
    """moto's S3 on ``127.0.0.1:<free port>``, in a thread; ``requests`` logs what arrived.

    moto keeps its data in process-wide memory: give each test its own bucket.
    """

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._answering: Counter[tuple[str, str]] = Counter()  # (bucket, key) -> requests
        self.max_in_flight: Counter[str] = Counter()  # operation -> most at once, any key
        self._in_flight: Counter[str] = Counter()

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            headers = {
                k[5:].replace("_", "-").lower(): v
                for k, v in environ.items()
                if k.startswith("HTTP_")
            }
            headers["content-length"] = environ.get("CONTENT_LENGTH") or "0"
            request = s3_operation(
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO", "/"),
                environ.get("QUERY_STRING", ""),
                headers,
            )
            inspecting = _INSPECTOR in environ.get("HTTP_USER_AGENT", "")
            if inspecting or request.bucket.startswith("moto-api"):
                return app(environ, start_response)
            where = (request.bucket, request.key)
            with self._lock:
                fault = next((f for f in self._faults if f.matches(request)), None)
                if fault is not None:
                    fault.hits += 1
                overlapping = self._answering[where]
                self._answering[where] += 1
                self._in_flight[request.operation] += 1
                self.max_in_flight[request.operation] = max(
                    self.max_in_flight[request.operation], self._in_flight[request.operation]
                )
                self.requests.append(S3Request(**{**request.__dict__, "overlapping": overlapping}))
            try:
                if fault is not None and fault.gate is not None:
                    fault.gate._wait_turn(request.part)
                elif fault is not None:
                    environ["wsgi.input"].read(request.bytes)  # the whole request, then no
                    body = _ERROR_BODY.format(code=fault.code).encode()
                    start_response(
                        f"{fault.status} Injected",
                        [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
                    )
                    return [body]
                # moto answers in full here (its answers are small lists, never streams).
                return list(app(environ, start_response))
            finally:
                with self._lock:
                    self._answering[where] -= 1
                    self._in_flight[request.operation] -= 1
                if fault is not None and fault.gate is not None:
                    fault.gate._answered(request.part)

        self._server = make_server(
            self._ip_address, self._port, logged, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request
        super().start()

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    def connection_json(self, *, retries: bool = True) -> str:
        """An ``aws_default``-style connection for ``AIRFLOW_CONN_<ID>``; ``retries=False``:
        botocore makes one attempt per request (an injected error reaches the caller)."""
        extra: dict[str, Any] = {"endpoint_url": self.endpoint_url, "region_name": REGION}
        if not retries:
            extra["config_kwargs"] = {"retries": {"total_max_attempts": 1}}
        return json.dumps(
            {"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra}
        )

    def fail(
        self,
        operation: str,
        *,
        part: int | None = None,
        status: int = 500,
        code: str = "InternalError",
        times: int | None = None,
    ) -> None:
        """Answer matching requests (``part``: UploadPart's number) with an S3 error, the
        first ``times`` of them (all when None), instead of passing them to moto."""
        with self._lock:
            self._faults.append(_Fault(operation, part, status, code, times))

    def hold(self, operation: str, *, part: int | None = None) -> Gate:
        """Keep matching requests waiting at the server until the returned gate lets them."""
        gate = Gate()
        with self._lock:
            self._faults.append(_Fault(operation, part, 0, "", None, gate))
        return gate

    def clear_faults(self) -> None:
        """Remove every fault; requests waiting at a gate are let through."""
        with self._lock:
            faults, self._faults = self._faults, []
            self.max_in_flight.clear()
        for fault in faults:
            if fault.gate is not None:
                fault.gate.open()

    def client(self) -> Any:
        """A boto3 S3 client for this server (for set-up and inspection, not the code under test)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            config=Config(user_agent_extra=_INSPECTOR),
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        self.reset()
        return name

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight.clear()

    def operations(self, bucket: str, keys: Iterable[str] | None = None) -> Counter[str]:
        """How often each operation was made on ``bucket`` (optionally only on ``keys``)."""
        wanted = None if keys is None else set(keys)
        with self._lock:
            return Counter(
                r.operation
                for r in self.requests
                if r.bucket == bucket and (wanted is None or r.key in wanted)
            )

    def by_key(self, bucket: str) -> dict[str, Counter[str]]:
        """The operations made on each key of ``bucket``."""
        out: dict[str, Counter[str]] = {}
        with self._lock:
            for r in self.requests:
                if r.bucket == bucket and r.key:
                    out.setdefault(r.key, Counter())[r.operation] += 1
        return out

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``, with its content."""
        client = self.client()
        out: dict[str, bytes] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                out[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return out

    def incomplete_uploads(self, bucket: str) -> list[str]:
        """Keys with a multipart upload that was neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return [u["Key"] for u in answer.get("Uploads", [])]
