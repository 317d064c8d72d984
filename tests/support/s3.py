"""A real S3 HTTP endpoint on 127.0.0.1 (moto in server mode) that logs every S3 operation.

Tests, the stack end-to-end test and the S3 benchmark point the Amazon provider at it with an
``aws``-type connection whose ``endpoint_url`` is this server, and use
``ObjectStoragePath("s3://<conn>@<bucket>/...")`` exactly as a user would against AWS.

Every request is classified into its S3 operation name (``PutObject``, ``UploadPart``,
``CopyObject``, ...) as it reaches the server, so a test can count what the code under test
did per file, independently of the client library.
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


def s3_operation(method: str, path: str, query: str, headers: dict[str, str]) -> S3Request:
    """Name the S3 operation of a path-style request (``/bucket/key?query``)."""
    params = parse_qs(query, keep_blank_values=True)
    parts = unquote(path).lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    size = int(headers.get("content-length") or 0)
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
    return S3Request(name, bucket, key, size)


class S3Server(ThreadedMotoServer):
    """moto's S3 on ``127.0.0.1:<free port>``, in a thread; ``requests`` logs what arrived.

    moto keeps its data in process-wide memory: give each test its own bucket.
    """

    def __init__(self) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()

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
            if not inspecting and not request.bucket.startswith("moto-api"):
                with self._lock:
                    self.requests.append(request)
            return app(environ, start_response)

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

    def connection_json(self) -> str:
        """An ``aws_default``-style connection for ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            }
        )

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
