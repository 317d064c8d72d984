"""FHIR Bulk Data v2 ``$export``: kick-off, status polling, manifest, files, cancel.

Jobs take ``bulk_job_seconds`` and write their files in a background thread meanwhile. Every
bulk setting is captured at kick-off, so flipping a switch mid-test affects the next export,
not one already running.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote

from .bulk_files import (
    ExportCancelled,
    ExportFile,
    ExportPlan,
    gzip_chunks,
    write_export,
)
from .dpop import DpopVerifier
from .fhir_api import authenticate
from .fhir_search import SearchError, parse_date_range, parse_type_filter
from .fhir_store import PATIENT_COMPARTMENT, RESOURCE_TYPES, FhirStore
from .httpd import Request, Response
from .responses import (
    NDJSON,
    fhir_response,
    format_seconds,
    http_date,
    json_response,
    operation_outcome,
    outcome_response,
)
from .settings import SandboxSettings
from .stats import Stats
from .tokens import AccessToken, TokenStore
from .vendor_rules import scope_permits_read

OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
KNOWN_PARAMS = (
    "_outputFormat",
    "_since",
    "_until",
    "_type",
    "_elements",
    "patient",
    "_typeFilter",
    "includeAssociatedData",
    "allowPartialManifests",
    "organizeOutputBy",
)
JOBS_PATH = "/fhir/_bulk/jobs/"
FILES_PATH = "/fhir/_bulk/files/"
STORAGE_PATH = "/storage/"
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


class KickoffError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class ExportJob:
    """One export, from kick-off to deletion."""

    id: str
    client_id: str
    request_url: str
    transaction_time: float
    started: float
    duration: float
    plan: ExportPlan
    complete_after_polls: int
    page_size: int | None  # files per manifest page (allowPartialManifests asked and enabled)
    error_counts: bool
    requires_access_token: bool
    file_origin: str
    directory: str
    files: list[ExportFile] = field(default_factory=list)
    failure: str | None = None
    written: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    polls: int = 0

    def remaining(self) -> float:
        return max(0.0, self.started + self.duration - time.monotonic())

    @property
    def complete(self) -> bool:
        return (
            self.written.is_set()
            and self.remaining() == 0.0
            and self.polls >= self.complete_after_polls
        )

    @property
    def in_progress(self) -> bool:
        return not self.complete and self.failure is None


def _parameters_body(request: Request) -> list[tuple[str, str]]:
    """The ``Parameters`` resource of a POST kick-off as (name, value) pairs."""
    if request.content_type not in ("application/fhir+json", "application/json"):
        raise KickoffError(
            400,
            "a POST kick-off needs a FHIR Parameters body (Content-Type: application/fhir+json)",
        )
    try:
        body = request.json()
    except ValueError:
        raise KickoffError(400, "the kick-off body is not JSON") from None
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise KickoffError(400, "the kick-off body must be a FHIR Parameters resource")
    pairs: list[tuple[str, str]] = []
    for param in body.get("parameter", []):
        name = param.get("name")
        values = [v for k, v in param.items() if k.startswith("value")]
        if not isinstance(name, str) or len(values) != 1:
            raise KickoffError(400, f"malformed Parameters entry: {param!r}")
        value = values[0]
        if isinstance(value, dict):
            value = value.get("reference", "")
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((name, str(value)))
    return pairs


class BulkExports:
    """The bulk endpoints of one sandbox (main origin) and its foreign storage origin."""

    def __init__(
        self,
        store: FhirStore,
        tokens: TokenStore,
        settings: SandboxSettings,
        stats: Stats,
        fhir_base: Callable[[], str],
        foreign_url: Callable[[], str],
        dpop: DpopVerifier,
    ) -> None:
        self.dpop = dpop
        self.store = store
        self.tokens = tokens
        self.settings = settings
        self.stats = stats
        self._fhir_base = fhir_base
        self._foreign_url = foreign_url
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()
        self._root: str | None = None
        self._secret = secrets.token_bytes(16)

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Cancel writers, join them, and remove every file."""
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
            root, self._root = self._root, None
        for job in jobs:
            job.cancelled.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=30)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def _job_directory(self, job_id: str) -> str:
        with self._lock:
            if self._root is None:
                self._root = tempfile.mkdtemp(prefix="backendauth-sandbox-bulk-")
            return os.path.join(self._root, job_id)

    @property
    def jobs(self) -> list[ExportJob]:
        with self._lock:
            return list(self._jobs.values())

    # --- kick-off ------------------------------------------------------------------------

    def kickoff(self, request: Request) -> Response:
        auth = authenticate(self.tokens, request, self.dpop)
        if isinstance(auth, Response):
            return auth
        try:
            return self._kickoff(request, auth)
        except KickoffError as exc:
            return outcome_response(exc.status, str(exc), code=exc.code)
        except SearchError as exc:
            return outcome_response(400, str(exc), code="invalid")

    def _kickoff(self, request: Request, token: AccessToken) -> Response:
        if request.method not in ("GET", "POST"):
            raise KickoffError(405, "$export accepts GET or POST", "not-supported")
        accept = (request.header("Accept") or "").lower()
        if "application/fhir+json" not in accept:
            raise KickoffError(400, "the kick-off needs 'Accept: application/fhir+json'")
        prefer = [p.strip().lower() for p in (request.header("Prefer") or "").split(",")]
        if "respond-async" not in prefer:
            raise KickoffError(400, "the kick-off needs 'Prefer: respond-async'")
        lenient = "handling=lenient" in prefer

        level, group_id = self._level(request.path)
        if request.method == "POST":
            if request.query_string:
                raise KickoffError(
                    400, "with POST, send the parameters in the Parameters body, not the URL"
                )
            pairs = _parameters_body(request)
        else:
            pairs = parse_qsl(request.query_string, keep_blank_values=True)
            if any(name == "patient" for name, _ in pairs):
                raise KickoffError(400, "the patient parameter is only supported with POST")

        types: list[str] | None = None
        since = until = None
        elements: list[str] | None = None
        patients: set[str] | None = None
        filters: dict[str, list[Any]] = {}
        partial_manifests = False
        organize_by: str | None = None
        for name, value in pairs:
            if name not in KNOWN_PARAMS:
                if lenient:
                    continue
                raise KickoffError(400, f"{name}: unsupported $export parameter")
            if name == "_outputFormat" and value not in OUTPUT_FORMATS:
                raise KickoffError(400, f"_outputFormat: '{value}' is not supported (only ndjson)")
            elif name == "_type":
                for item in (v.strip() for v in value.split(",") if v.strip()):
                    if item not in RESOURCE_TYPES:
                        if lenient:
                            continue
                        raise KickoffError(
                            400,
                            f"_type: '{item}' is not supported "
                            f"(supported: {', '.join(RESOURCE_TYPES)})",
                        )
                    types = types if types is not None else []
                    if item not in types:
                        types.append(item)
            elif name == "organizeOutputBy":
                if value != "Patient":
                    if lenient:
                        continue
                    raise KickoffError(
                        400, f"organizeOutputBy: '{value}' is not supported (only Patient)"
                    )
                organize_by = value
            elif name == "allowPartialManifests":
                if value.strip().lower() not in ("true", "false"):
                    raise KickoffError(400, f"allowPartialManifests: '{value}' is not a boolean")
                partial_manifests = value.strip().lower() == "true"
            elif name == "_since":
                since = parse_date_range(value, "_since")[0]
            elif name == "_until":
                until = parse_date_range(value, "_until")[0]
            elif name == "_elements":
                elements = [*(elements or []), *(e.strip() for e in value.split(",") if e)]
            elif name == "_typeFilter":
                for item in value.split(","):
                    resource_type, search = parse_type_filter(item.strip())
                    filters.setdefault(resource_type, []).append(search)
            elif name == "patient":
                if level == "system":
                    raise KickoffError(400, "patient is not applicable to a system-level export")
                pid = value.rpartition("/")[2]
                if self.store.get("Patient", pid) is None:
                    raise KickoffError(400, f"patient: Patient/{pid} does not exist")
                patients = {*(patients or set()), pid}

        export_types = list(
            RESOURCE_TYPES if level == "system" else ("Patient", *PATIENT_COMPARTMENT)
        )
        if types is not None:
            export_types = [t for t in export_types if t in types]
        denied = [t for t in (types or []) if not scope_permits_read(token.scope, t)]
        if denied:
            raise KickoffError(
                403,
                f"the access token's scope does not allow exporting {', '.join(denied)}",
                "forbidden",
            )
        export_types = [t for t in export_types if scope_permits_read(token.scope, t)]

        members: set[str] | None = None
        if level == "group":
            assert group_id is not None
            group = self.store.groups.get(group_id)
            if group is None:
                raise KickoffError(404, f"Group/{group_id} does not exist", "not-found")
            members = set(group)
        if patients is not None:
            members = patients if members is None else members & patients

        settings = self.settings
        if settings.bulk_reject_concurrent:
            busy = [j for j in self.jobs if j.client_id == token.client_id and j.in_progress]
            if busy:
                self.stats.incr("bulk_rejected_concurrent")
                response = outcome_response(
                    429,
                    "an export for this client is already in progress; wait for it or DELETE it",
                    code="too-costly",
                )
                response.header(
                    "Retry-After", self._retry_after(max(1, math.ceil(busy[0].remaining())))
                )
                return response

        job_id = uuid.uuid4().hex
        plan = ExportPlan(
            types=export_types,
            patients=members,
            since=since,
            until=until,
            type_filters=filters,
            elements=elements,
            error_severity=settings.bulk_error_file,
            lines_per_file=settings.bulk_lines_per_file,
            padding_bytes=settings.bulk_resource_padding_bytes,
            seed=self.store.seed,
            organize_by=organize_by,
        )
        job = ExportJob(
            id=job_id,
            client_id=token.client_id,
            request_url=request.url,
            transaction_time=time.time(),
            started=time.monotonic(),
            duration=settings.bulk_job_seconds,
            plan=plan,
            complete_after_polls=settings.bulk_complete_after_polls,
            page_size=settings.bulk_manifest_page_size if partial_manifests else None,
            error_counts=settings.bulk_error_counts,
            requires_access_token=settings.bulk_requires_access_token,
            file_origin=settings.bulk_file_origin,
            directory=self._job_directory(job_id),
        )
        job.thread = threading.Thread(
            target=self._write, args=(job,), name=f"sandbox-bulk-{job_id[:8]}", daemon=True
        )
        with self._lock:
            self._jobs[job_id] = job
        job.thread.start()
        self.stats.incr("bulk_kickoffs")
        response = fhir_response(
            202,
            operation_outcome(
                f"export {job_id} accepted", code="informational", severity="information"
            ),
        )
        response.header("Content-Location", f"{self._fhir_base()}/_bulk/jobs/{job_id}")
        return response

    @staticmethod
    def _level(path: str) -> tuple[str, str | None]:
        if path == "/fhir/$export":
            return "system", None
        if path == "/fhir/Patient/$export":
            return "patient", None
        return "group", path[len("/fhir/Group/") : -len("/$export")]

    def _write(self, job: ExportJob) -> None:
        try:
            job.files = write_export(self.store, job.plan, job.directory, job.cancelled)
        except ExportCancelled:
            return
        except Exception as exc:  # a bug or a full disk: report it as a failed export
            job.failure = f"export failed: {exc}"
            return
        job.written.set()

    # --- status, manifest, cancel --------------------------------------------------------

    def status(self, request: Request) -> Response:
        auth = authenticate(self.tokens, request, self.dpop)
        if isinstance(auth, Response):
            return auth
        job_id = request.path[len(JOBS_PATH) :]
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.client_id != auth.client_id:
            return outcome_response(404, f"no export job '{job_id}'", code="not-found")
        if request.method == "DELETE":
            self.stats.incr("bulk_cancels")
            self._delete(job)
            return fhir_response(
                202,
                operation_outcome(
                    f"export {job_id} deleted", code="informational", severity="information"
                ),
            )
        if request.method not in ("GET", "HEAD"):
            return outcome_response(405, "status URLs accept GET and DELETE", code="not-supported")
        self.stats.incr("bulk_status_polls")
        job.polls += 1  # this poll counts towards bulk_complete_after_polls
        if job.failure is not None:
            return outcome_response(500, job.failure, code="exception", severity="fatal")
        if not job.complete:
            return self._in_progress(job)
        page = request.param("page") or "1"
        manifest = self._manifest(job, int(page) if page.isdigit() else 0)
        if manifest is None:
            return outcome_response(404, f"no manifest page '{page}'", code="not-found")
        response = json_response(200, manifest)
        response.header("Expires", http_date(time.time() + 3600))
        return response

    def _in_progress(self, job: ExportJob) -> Response:
        remaining = job.remaining()
        done = 1.0 if job.duration == 0 else min(1.0, 1 - remaining / job.duration)
        if job.complete_after_polls:
            done = min(done, job.polls / job.complete_after_polls)
        configured = self.settings.bulk_retry_after
        wait = max(1.0, math.ceil(remaining)) if configured is None else configured
        response = Response(202)
        template = self.settings.bulk_progress_text
        percent = str(int(done * 100))
        progress = (
            f"in-progress: {percent}% exported"
            if template is None
            else template.replace("{percent}", percent)
        )
        response.header("X-Progress", progress)
        response.header("Retry-After", self._retry_after(wait))
        return response

    def _retry_after(self, wait: float) -> str:
        """A ``Retry-After`` value in the configured form: delta-seconds, an HTTP-date, or
        the Unix time some servers send (``bulk_retry_after_epoch``)."""
        if self.settings.bulk_retry_after_epoch:
            return str(math.ceil(time.time() + wait))
        if self.settings.bulk_retry_after_http_date:
            return http_date(time.time() + wait)
        return format_seconds(wait)

    def _delete(self, job: ExportJob) -> None:
        job.cancelled.set()
        with self._lock:
            self._jobs.pop(job.id, None)
        if job.thread is not None:
            job.thread.join(timeout=30)
        shutil.rmtree(job.directory, ignore_errors=True)

    def _file_url(self, job: ExportJob, name: str) -> str:
        if job.file_origin == "foreign":
            return self._signed_url(job.id, name)
        return f"{self._fhir_base()}/_bulk/files/{job.id}/{quote(name)}"

    def _signed_url(self, job_id: str, name: str) -> str:
        signature = self._sign(job_id, name)
        return f"{self._foreign_url()}{STORAGE_PATH}{job_id}/{quote(name)}?sig={signature}"

    def _sign(self, job_id: str, name: str) -> str:
        return hmac.new(self._secret, f"{job_id}/{name}".encode(), hashlib.sha256).hexdigest()

    def _manifest(self, job: ExportJob, page: int = 1) -> dict[str, Any] | None:
        """Manifest page ``page`` (1-based): all files, or ``page_size`` output/deleted files
        per page with a ``next`` link when the kick-off asked for partial manifests. Every
        page repeats the other fields and the ``error`` list, as the IG requires."""
        sections: dict[str, list[dict[str, Any]]] = {"output": [], "error": [], "deleted": []}
        for f in job.files:
            entry: dict[str, Any] = {"url": self._file_url(job, f.name)}
            if f.type:  # organized output files hold several types: no "type"
                entry["type"] = f.type
            if f.section == "output":
                entry["count"] = f.count
            if f.count or f.section == "error":
                sections[f.section].append(entry)
        if job.error_counts and sections["output"]:
            # What a reference server does: the error entries carry the output's count.
            for entry in sections["error"]:
                entry["count"] = sections["output"][0]["count"]
        paged = [("output", e) for e in sections["output"]]
        if job.plan.since is not None:
            paged += [("deleted", e) for e in sections["deleted"]]
        size = job.page_size or max(1, len(paged))
        pages = max(1, math.ceil(len(paged) / size))
        if not 1 <= page <= pages:
            return None
        mine = paged[(page - 1) * size : page * size]
        manifest: dict[str, Any] = {
            "transactionTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(job.transaction_time))
            + f".{int(job.transaction_time * 1000) % 1000:03d}Z",
            "request": job.request_url,
            "requiresAccessToken": job.requires_access_token,
            "output": [e for kind, e in mine if kind == "output"],
            "error": sections["error"],
        }
        if job.plan.since is not None:
            manifest["deleted"] = [e for kind, e in mine if kind == "deleted"]
        if job.plan.organize_by is not None:
            manifest["outputOrganizedBy"] = job.plan.organize_by
        if job.page_size is not None:
            self.stats.incr("bulk_manifest_pages")
        if page < pages:
            manifest["link"] = [
                {
                    "relation": "next",
                    "url": f"{self._fhir_base()}/_bulk/jobs/{job.id}?page={page + 1}",
                }
            ]
        return manifest

    # --- files ---------------------------------------------------------------------------

    def _find_file(self, job_id: str, name: str) -> tuple[ExportJob, ExportFile] | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not job.complete:
            return None
        for f in job.files:
            if f.name == name:
                return job, f
        return None

    def serve_file(self, request: Request) -> Response:
        """A file URL on the main origin (token-protected when requiresAccessToken)."""
        job_id, _, name = request.path[len(FILES_PATH) :].partition("/")
        found = self._find_file(job_id, name)
        if found is None:
            return outcome_response(404, f"no export file '{job_id}/{name}'", code="not-found")
        job, export_file = found
        if job.requires_access_token:
            auth = authenticate(self.tokens, request, self.dpop)
            if isinstance(auth, Response):
                return auth
        if request.method not in ("GET", "HEAD"):
            return outcome_response(405, "files are read-only", code="not-supported")
        if job.file_origin == "redirect":
            response = Response(307)
            response.header("Location", self._signed_url(job.id, name))
            return response
        return self._file_response(request, export_file)

    def serve_storage(self, request: Request) -> Response:
        """A file on the foreign origin: authorised by its URL signature, never by a token."""
        job_id, _, name = request.path[len(STORAGE_PATH) :].partition("/")
        signature = request.param("sig") or ""
        if not hmac.compare_digest(signature, self._sign(job_id, name)):
            return Response(403, b"signature mismatch\n", "text/plain")
        found = self._find_file(job_id, name)
        if found is None:
            return Response(404, b"no such object\n", "text/plain")
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"read-only\n", "text/plain")
        self.stats.incr("foreign_file_downloads")
        return self._file_response(request, found[1])

    def _file_response(self, request: Request, export_file: ExportFile) -> Response:
        self.stats.incr("file_downloads")
        size = os.path.getsize(export_file.path)
        byte_range = request.header("Range")
        gzip_ok = "gzip" in (request.header("Accept-Encoding") or "").lower()
        if byte_range is not None:
            # Resuming an interrupted download: ranges are served uncompressed.
            match = _RANGE.match(byte_range.strip())
            start = int(match["start"]) if match else size
            end = min(int(match["end"]), size - 1) if match and match["end"] else size - 1
            if match is None or start >= size or end < start:
                response = Response(416, b"", NDJSON)
                response.header("Content-Range", f"bytes */{size}")
                return response
            response = Response(
                206,
                content_type=NDJSON,
                file_path=export_file.path,
                file_offset=start,
                file_length=end - start + 1,
            )
            response.header("Content-Range", f"bytes {start}-{end}/{size}")
        elif self.settings.bulk_gzip and gzip_ok and request.method == "GET":
            response = Response(200, content_type=NDJSON, stream=gzip_chunks(export_file.path))
            response.header("Content-Encoding", "gzip")
        else:
            response = Response(200, content_type=NDJSON, file_path=export_file.path)
        response.header("Accept-Ranges", "bytes")
        response.header("Vary", "Accept-Encoding")
        response.on_sent = lambda sent: self.stats.incr("file_bytes_sent", sent)
        return response
