"""Pure (no network) parts of the bulk export client: requests, answer interpretation,
polling delays, the manifest, file names, state files, error files."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_backendauth.core.bulk.adaptive_limit import AdaptiveLimit
from airflow_provider_backendauth.core.bulk.files import (
    ErrorReport,
    FileResult,
    plan_files,
    scan_error_files,
    summarize,
)
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.protocol import (
    Complete,
    Failed,
    KickoffAccepted,
    KickoffBusy,
    KickoffFailed,
    KickoffRetry,
    Pending,
    RetryLater,
    interpret_kickoff,
    interpret_status,
    is_retryable_error,
    poll_delay,
)
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.bulk.state import (
    BulkStateStore,
    FileMarker,
    JobRecord,
    export_key,
    job_key,
)
from airflow_provider_backendauth.core.errors import BulkExportError, ConfigurationError
from airflow_provider_backendauth.core.names import safe_type_name
from airflow_provider_backendauth.core.urls import display_url, redirect_target, with_query


def outcome(code: str = "processing", severity: str = "error", text: str = "boom") -> bytes:
    return json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": text}],
        }
    ).encode()


# --- the request ----------------------------------------------------------------------


class TestRequest:
    def test_levels_and_paths(self) -> None:
        assert BulkExportRequest.create("system").path == "$export"
        assert BulkExportRequest.create("patient").path == "Patient/$export"
        assert BulkExportRequest.create("group", group_id="g 1/x").path == "Group/g%201%2Fx/$export"

    def test_get_query_has_every_parameter(self) -> None:
        request = BulkExportRequest.create(
            "group",
            group_id="g1",
            types="Patient, Observation",
            since=datetime(2024, 1, 2, 3, 4, 5),
            until="2024-12-31T00:00:00Z",
            elements=["id", "meta"],
            type_filters=["Observation?category=vital-signs,laboratory", "Patient?active=true"],
            include_associated_data="LatestProvenanceResources",
            output_format="application/fhir+ndjson",
            extra_params={"organizeOutputBy": "Patient"},
        )
        assert request.http_method == "GET"
        assert request.query() == [
            ("_outputFormat", "application/fhir+ndjson"),
            ("_since", "2024-01-02T03:04:05+00:00"),
            ("_until", "2024-12-31T00:00:00Z"),
            ("_type", "Patient,Observation"),
            ("_elements", "id,meta"),
            ("_typeFilter", "Observation?category=vital-signs,laboratory"),
            ("_typeFilter", "Patient?active=true"),
            ("includeAssociatedData", "LatestProvenanceResources"),
            ("organizeOutputBy", "Patient"),
        ]
        url = request.url("https://h/fhir/")
        assert url.startswith("https://h/fhir/Group/g1/$export?_outputFormat=")
        assert "_type=Patient%2CObservation" in url

    def test_patients_make_a_post_with_parameters(self) -> None:
        request = BulkExportRequest.create(
            "patient", patients="p1, Patient/p2", types=["Patient"], since="2024-01-01T00:00:00Z"
        )
        assert request.http_method == "POST"
        assert request.url("https://h/fhir") == "https://h/fhir/Patient/$export"
        params = request.parameters()
        assert params["resourceType"] == "Parameters"
        assert {"name": "_since", "valueInstant": "2024-01-01T00:00:00Z"} in params["parameter"]
        assert {"name": "_type", "valueString": "Patient"} in params["parameter"]
        refs = [
            p["valueReference"]["reference"] for p in params["parameter"] if "valueReference" in p
        ]
        assert refs == ["Patient/p1", "Patient/p2"]

    def test_explicit_post_without_patients(self) -> None:
        assert BulkExportRequest.create("system", method="post").http_method == "POST"

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"level": "everything"}, "not one of"),
            ({"level": "group"}, "needs group_id"),
            ({"level": "system", "group_id": "g"}, "only used with level='group'"),
            ({"level": "patient", "patients": "p1", "method": "GET"}, "only be sent in a POST"),
            ({"level": "system", "patients": "p1"}, "patient- and group-level"),
            ({"level": "system", "method": "PUT"}, "GET or POST"),
        ],
    )
    def test_invalid_requests(self, kwargs: dict[str, str], message: str) -> None:
        level = kwargs.pop("level")
        with pytest.raises(ConfigurationError, match=message):
            BulkExportRequest.create(level, **kwargs)  # type: ignore[arg-type]

    def test_round_trip(self) -> None:
        request = BulkExportRequest.create(
            "group", group_id="g", types="A,B", patients=["p"], extra_params={"x": ["1", "2"]}
        )
        assert BulkExportRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
        assert "Group/g" in request.describe()


# --- kick-off and status answers (sans-IO) ---------------------------------------------


class TestInterpretKickoff:
    url = "https://h/fhir/$export"

    def test_accepted_resolves_relative_location(self) -> None:
        result = interpret_kickoff(
            202, {"content-location": "jobs/1"}, b"", request_url="https://h/fhir/$export"
        )
        assert result == KickoffAccepted("https://h/fhir/jobs/1")

    def test_accepted_without_location_fails(self) -> None:
        result = interpret_kickoff(202, {}, b"", request_url=self.url)
        assert isinstance(result, KickoffFailed)
        assert "Content-Location" in result.diagnostics

    def test_busy(self) -> None:
        result = interpret_kickoff(
            429,
            {"Retry-After": "7"},
            outcome("too-costly", text="one at a time"),
            request_url=self.url,
        )
        assert result == KickoffBusy(7.0, "error/too-costly: one at a time")

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b""), (503, outcome("processing")), (400, outcome("transient")), (502, b"<html>")],
    )
    def test_retry(self, status: int, body: bytes) -> None:
        assert isinstance(interpret_kickoff(status, {}, body, request_url=self.url), KickoffRetry)

    @pytest.mark.parametrize(
        ("status", "body", "quoted"),
        [
            (400, outcome("invalid", text="_type: Foo is unknown"), "_type: Foo is unknown"),
            (500, outcome("exception", "fatal", "database on fire"), "database on fire"),
            (403, b"Forbidden", "Forbidden"),
            (200, b"{}", "instead of 202"),
        ],
    )
    def test_failed_quotes_the_server(self, status: int, body: bytes, quoted: str) -> None:
        result = interpret_kickoff(status, {}, body, request_url=self.url)
        assert isinstance(result, KickoffFailed)
        assert quoted in result.diagnostics


class TestInterpretStatus:
    def test_pending_with_progress_and_seconds(self) -> None:
        result = interpret_status(202, {"X-Progress": "50% done", "Retry-After": "12"}, b"")
        assert result == Pending(12.0, "50% done")

    def test_pending_with_http_date(self) -> None:
        now = time.time()
        date = email.utils.formatdate(now + 90, usegmt=True)
        result = interpret_status(202, {"retry-after": date}, b"", now=now)
        assert isinstance(result, Pending)
        assert result.retry_after is not None
        assert 88 <= result.retry_after <= 91

    def test_throttled_is_a_wait_not_an_error(self) -> None:
        assert interpret_status(429, {"Retry-After": "3"}, b"") == Pending(3.0, None, True)

    def test_complete(self) -> None:
        manifest = {"transactionTime": "t", "output": [], "error": []}
        result = interpret_status(200, {}, json.dumps(manifest).encode())
        assert result == Complete(manifest)

    def test_complete_but_not_a_manifest(self) -> None:
        result = interpret_status(200, {}, b"<html>hi</html>")
        assert isinstance(result, Failed)
        assert "manifest" in result.diagnostics

    @pytest.mark.parametrize(
        ("status", "body"),
        [(500, b""), (503, outcome("processing")), (400, outcome("transient")), (504, b"")],
    )
    def test_retry_later(self, status: int, body: bytes) -> None:
        result = interpret_status(status, {"Retry-After": "2"}, body)
        assert isinstance(result, RetryLater)
        assert result.retry_after == 2.0
        assert f"HTTP {status}" in result.reason

    @pytest.mark.parametrize(
        ("status", "body", "quoted"),
        [
            (500, outcome("exception", "fatal", "export crashed"), "export crashed"),
            (404, outcome("not-found", text="no job"), "cancelled, has expired"),
            (400, outcome("invalid", text="bad"), "bad"),
            (401, b"", "scopes"),
        ],
    )
    def test_failed(self, status: int, body: bytes, quoted: str) -> None:
        result = interpret_status(status, {}, body)
        assert isinstance(result, Failed)
        assert quoted in result.diagnostics
        assert result.status_code == status

    def test_tokens_in_error_text_are_redacted(self) -> None:
        body = b"invalid access_token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
        result = interpret_status(400, {}, body)
        assert isinstance(result, Failed)
        assert "eyJ" not in result.diagnostics

    def test_retryable_rule(self) -> None:
        assert is_retryable_error(500, b"")
        assert is_retryable_error(503, outcome("exception", "fatal"))
        assert not is_retryable_error(500, outcome("exception", "fatal"))
        assert not is_retryable_error(400, b"")


class TestPollDelay:
    def test_retry_after_is_clamped(self) -> None:
        assert poll_delay(0.0, previous=None, minimum=1, maximum=60) == 1
        assert poll_delay(30, previous=None, minimum=1, maximum=60) == 30
        assert poll_delay(7200, previous=None, minimum=1, maximum=60) == 60

    def test_backoff_without_retry_after(self) -> None:
        delays = []
        previous = None
        for _ in range(12):
            previous = poll_delay(None, previous=previous, minimum=2, maximum=20)
            delays.append(previous)
        assert delays[0] == 2
        assert delays == sorted(delays)
        assert delays[-1] == 20


# --- manifest and files -----------------------------------------------------------------


def manifest(**overrides: object) -> BulkManifest:
    body: dict[str, object] = {
        "transactionTime": "2024-05-01T00:00:00Z",
        "request": "https://h/fhir/$export",
        "requiresAccessToken": True,
        "output": [
            {"type": "Patient", "url": "https://h/f/1", "count": 3},
            {"type": "Patient", "url": "https://h/f/2"},
            {"type": "../../etc/passwd", "url": "https://h/f/3", "count": -1},
            {"type": "patient", "url": "https://h/f/4"},
        ],
        "error": [{"type": "OperationOutcome", "url": "https://h/f/e"}],
        "deleted": [{"type": "Bundle", "url": "https://h/f/d", "count": 2}],
    }
    body.update(overrides)
    return BulkManifest.from_json(body)


class TestManifest:
    def test_parse(self) -> None:
        m = manifest()
        assert m.transaction_time == "2024-05-01T00:00:00Z"
        assert m.requires_access_token is True
        assert [e.count for e in m.output] == [3, None, None, None]
        assert len(m.entries) == 6

    def test_missing_requires_access_token_means_true(self) -> None:
        body = {"transactionTime": "t", "output": []}
        assert BulkManifest.from_json(body).requires_access_token is True
        body["requiresAccessToken"] = False
        assert BulkManifest.from_json(body).requires_access_token is False

    @pytest.mark.parametrize(
        "body",
        [{}, {"output": {}}, {"output": [{"type": "X"}]}, {"output": [], "error": "x"}],
    )
    def test_malformed(self, body: dict[str, object]) -> None:
        with pytest.raises(BulkExportError):
            BulkManifest.from_json(body)

    def test_file_names_are_safe_and_unique(self) -> None:
        names = [f.name for f in plan_files(manifest())]
        assert names == [
            "Patient.000.ndjson",
            "Patient.001.ndjson",
            "etc_passwd.000.ndjson",
            "patient.002.ndjson",  # case-insensitive filesystems: no clash with Patient.000
            "error/OperationOutcome.000.ndjson",
            "deleted/Bundle.000.ndjson",
        ]

    @pytest.mark.parametrize(
        ("hostile", "safe"),
        [
            ("../../../x", "x"),
            ("/abs/path", "abs_path"),
            ("a\\b", "a_b"),
            ("", "Unknown"),
            ("..", "Unknown"),
            ("C:\\Windows", "C_Windows"),
            ("Pat\u0000ient", "Pat_ient"),
            ("x" * 300, "x" * 64),
        ],
    )
    def test_safe_type_name(self, hostile: str, safe: str) -> None:
        assert safe_type_name(hostile) == safe


class TestStreamingHelpers:
    def test_adaptive_limit_halves_and_recovers(self) -> None:
        limit = AdaptiveLimit(8)
        limit.throttled()
        assert limit.limit == 4
        limit.throttled()
        limit.throttled()
        limit.throttled()
        assert limit.limit == 1
        assert limit.lowest == 1
        for _ in range(10):
            limit.succeeded()
        assert 1 < limit.limit <= 8

    def test_adaptive_limit_blocks_at_the_limit(self) -> None:
        limit = AdaptiveLimit(1)
        limit.acquire()
        acquired = threading.Event()

        def second() -> None:
            limit.acquire()
            acquired.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not acquired.wait(0.2)
        limit.release()
        assert acquired.wait(2)
        thread.join()


class TestUrls:
    def test_display_url_hides_query_and_userinfo(self) -> None:
        url = "https://user:pw@store.example:8443/b/Patient.ndjson?X-Amz-Signature=secret"
        assert display_url(url) == "https://store.example:8443/b/Patient.ndjson"

    def test_with_query(self) -> None:
        assert with_query("https://h/x", [("a", "1")]) == "https://h/x?a=1"
        assert with_query("https://h/x?b=2", [("a", "1 2")]) == "https://h/x?b=2&a=1+2"
        assert with_query("https://h/x", []) == "https://h/x"

    def test_redirect_rules(self) -> None:
        assert redirect_target("https://a/x/y", "/z").url == "https://a/z"
        assert redirect_target("http://a/x", "https://b/y").url == "https://b/y"
        with pytest.raises(BulkExportError, match="plain HTTP"):
            redirect_target("https://a/x", "http://b/y", error=BulkExportError)
        with pytest.raises(BulkExportError, match="not an absolute http"):
            redirect_target("https://a/x", "file:///etc/passwd", error=BulkExportError)


# --- durable state ----------------------------------------------------------------------


class TestStateStore:
    def test_keys_are_stable_and_discriminating(self) -> None:
        a = export_key(
            connection="c", base_url="https://h/", level="group", group_id="g", types=["B", "A"]
        )
        b = export_key(
            connection="c", base_url="https://h", level="group", group_id="g", types=["A", "B"]
        )
        assert a == b
        assert a != export_key(
            connection="c", base_url="https://h", level="group", group_id="g2", types=["A", "B"]
        )
        assert job_key(dag_id="d", task_id="t", run_id="r") != job_key(
            dag_id="d", task_id="t", run_id="r", map_index=0
        )

    def test_since_job_and_markers(self, tmp_path: Path) -> None:
        store = BulkStateStore(tmp_path)
        assert store.load_since("k") is None
        store.save_since("k", "2024-01-01T00:00:00Z", export={"level": "system"})
        assert BulkStateStore(str(tmp_path)).load_since("k") == "2024-01-01T00:00:00Z"

        assert store.load_job("j") is None
        record = JobRecord("https://h/status/1", "kicked_off", "k", {"level": "system"}, "d")
        store.save_job("j", record)
        loaded = store.load_job("j")
        assert loaded is not None
        assert loaded.status_url == "https://h/status/1"
        assert loaded.active
        store.update_job("j", loaded, state="done")
        again = store.load_job("j")
        assert again is not None
        assert not again.active

        store.mark_file_done("j", FileMarker("error/X.000.ndjson", "error", "X", 3, 30))
        marker = store.file_marker("j", "error/X.000.ndjson")
        assert marker is not None
        assert (marker.count, marker.bytes) == (3, 30)
        store.clear_markers("j", ["error/X.000.ndjson"])
        assert store.file_marker("j", "error/X.000.ndjson") is None
        # Nothing half-written is left behind.
        assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]

    def test_unreadable_state_is_ignored(self, tmp_path: Path) -> None:
        store = BulkStateStore(tmp_path)
        path = tmp_path / "_bulk_state" / "jobs" / "j.json"
        path.parent.mkdir(parents=True)
        path.write_text("{not json")
        assert store.load_job("j") is None


# --- error files and the summary ----------------------------------------------------------


class TestErrorFilesAndSummary:
    def test_scan(self, tmp_path: Path) -> None:
        path = tmp_path / "e.ndjson"
        lines = [
            outcome("processing", "error", "Observation/1 is broken"),
            outcome("informational", "warning", "only a warning"),
            outcome("exception", "fatal", "fatal thing"),
            b"",
            b"not json",
        ]
        path.write_bytes(b"\n".join(lines) + b"\n")
        report = scan_error_files([path])
        assert (report.files, report.outcomes, report.errors, report.warnings) == (1, 3, 3, 1)
        assert report.unreadable == 1
        assert any("Observation/1 is broken" in s for s in report.samples)

    def test_summary(self) -> None:
        results = [
            FileResult("Patient.000.ndjson", "output", "Patient", 3, 300),
            FileResult("Patient.001.ndjson", "output", "Patient", 2, 200, skipped=True),
            FileResult("deleted/Bundle.000.ndjson", "deleted", "Bundle", 4, 40),
        ]
        summary = summarize(
            manifest(),
            results,
            ErrorReport(files=1, outcomes=2, warnings=2),
            destination="file:///d",
            manifest_name="manifest.json",
        )
        assert summary["output"] == {
            "Patient": {
                "files": ["Patient.000.ndjson", "Patient.001.ndjson"],
                "count": 5,
                "bytes": 500,
            }
        }
        assert summary["deleted"] == {"files": 1, "count": 4}
        assert summary["error"]["count"] == 2
        assert summary["resumed_files"] == 1
        assert summary["transactionTime"] == "2024-05-01T00:00:00Z"
        assert "http" not in json.dumps(summary["output"])
        json.dumps(summary)  # XCom-serialisable


def test_format_instant_naive_is_utc() -> None:
    from airflow_provider_backendauth.core.bulk.request import format_instant

    assert format_instant(datetime(2024, 1, 1)) == "2024-01-01T00:00:00+00:00"
    aware = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert format_instant(aware) == "2024-01-01T00:00:00+00:00"
    assert format_instant("  ") is None


def testrange_start() -> None:
    from airflow_provider_backendauth.core.bulk.wire import range_start

    assert range_start("bytes 100-199/200") == 100
    assert range_start(" bytes 0-9/*") == 0
    assert range_start("bytes */200") is None
    assert range_start(None) is None


def test_partial_file_commits_atomically_and_restarts(tmp_path: Path) -> None:
    from airflow_provider_backendauth.core.bulk.partial_file import PartialFile

    target = tmp_path / "x" / "Patient.000.ndjson"
    partial = PartialFile(target)
    partial.write(b'{"a":1}\n{"b"')
    assert partial.offset == 12
    assert not target.exists()
    partial.restart()
    assert partial.offset == 0
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # temp file gone
    partial.write(b'{"a":1}\n')
    partial.commit()
    assert target.read_bytes() == b'{"a":1}\n'
    empty = PartialFile(tmp_path / "Empty.000.ndjson")
    empty.commit()
    assert (tmp_path / "Empty.000.ndjson").read_bytes() == b""
