"""The nightly Group export on a production-shaped deployment, with the failures it must
survive: ``scripts/stack.py`` (Postgres, Redis, CeleryExecutor with two workers, scheduler,
DAG processor, triggerer, API server), the sandbox as the FHIR server and moto's S3 server
as the destination.

One DAG run goes through, in this order and each at a point chosen by the sandbox (no
sleeps racing the system):
- the export waits deferred (the sandbox answers 202 until released); the triggerer is
  SIGKILLed and started again, and the restarted one resumes polling (no second kick-off);
- the downloads are mapped tasks spread over both workers; the first file requested is held
  mid-body by the sandbox until the worker running it has been SIGKILLed (its whole process
  group, as when a machine dies); the task is retried on the other worker and downloads it
  again; the finished files are not fetched again;
- the sandbox expires every token once mid-download, and tokens live 20 s throughout.
Then: every resource in S3 exactly once, no partial object and no pending upload, no
CopyObject, token requests bounded by the processes that ran and the token lifetime; and the
four ready views' Delta tables in S3 (mapped per resource type over the workers), one row
per resource (Observation: per component, none here), each version committed once. And
the export's Asset events (one per resource type) made the scheduler run the DAG scheduled
on the group's Patient Asset (tests/stack/dags/patients_refreshed.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from backendauth_sandbox import Sandbox
from backendauth_sandbox.testing import generate_client_key
from tests.conftest import REPO
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAG_ID = "nightly_group_export_s3"
TOKEN_LIFETIME = 20
TYPES = ("Patient", "Observation", "Condition", "Encounter")
STACK = [sys.executable, str(REPO / "scripts" / "stack.py")]


def wait_until(what: str, check: Callable[[], Any], timeout: float, poll: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


class Deployment:
    """The running stack: its state file, REST API and process groups."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state = json.loads((directory / "stack.json").read_text())
        self.api = f"http://127.0.0.1:{self.state['ports']['api']}"
        token = requests.get(f"{self.api}/auth/token", timeout=30).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def reload(self) -> None:
        self.state = json.loads((self.directory / "stack.json").read_text())

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = requests.request(
            method, f"{self.api}/api/v2/{path}", headers=self.headers, timeout=30, **kwargs
        )
        answer.raise_for_status()
        return answer.json()

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.rest("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        )

    def command(self, *args: str) -> None:
        subprocess.run(
            [*STACK, *args, "--dir", str(self.directory)],
            check=True,
            timeout=120,
            env=stack_env(),
        )
        self.reload()

    def component_of(self, pid: int) -> str | None:
        """The component whose process group or process tree ``pid`` belongs to."""
        import psutil

        try:
            process = psutil.Process(pid)
            lineage = {pid, os.getpgid(pid), *(p.pid for p in process.parents())}
        except (psutil.Error, ProcessLookupError):
            return None
        return next((n for n, p in self.state["pids"].items() if p in lineage), None)

    def log(self, name: str) -> str:
        return (self.directory / "logs" / f"{name}.log").read_text(errors="replace")


def stack_env() -> dict[str, str]:
    # The stack gets its own Airflow configuration, not this test session's.
    return {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Sandbox, S3Server, str, Deployment]]:
    key = generate_client_key("EC-P384")
    with (
        Sandbox(
            patients=20,
            seed=11,
            token_lifetime=TOKEN_LIFETIME,
            bulk_job_seconds=0.2,
            bulk_gzip=False,
        ) as sb,
        S3Server() as s3,
    ):
        client_id = f"stack-{uuid.uuid4().hex[:8]}"
        sb.register_client(client_id, key.public_jwks, vendor="smart")
        bucket = s3.create_bucket(f"stack-{uuid.uuid4().hex[:8]}")
        fhir = json.dumps(
            {
                "conn_type": "backendauth",
                "host": sb.fhir_base,
                "login": client_id,
                "password": key.private_pem,
                "extra": {"scope": "system/*.rs"},
            }
        )
        dags = tmp_path / "dags"
        dags.mkdir()
        for name in ("nightly_group_export_s3.py", "patients_refreshed.py"):
            shutil.copy(Path(__file__).parent / "dags" / name, dags)
        directory = tmp_path / "stack"
        settings = {
            "AIRFLOW_CONN_BACKENDAUTH_FHIR": fhir,
            "AIRFLOW_CONN_AWS_DEFAULT": s3.connection_json(),
            "BACKENDAUTH_OUTPUT": f"s3://aws_default@{bucket}",
            # The DAG scheduled on the export's Patient Asset names the server by it.
            "BACKENDAUTH_FHIR_BASE": sb.fhir_base,
            # A dead worker's task is noticed after 10 s (default 300 s).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # A dead triggerer's triggers move to a live one after 10 s (default 30 s).
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        }
        up = [*STACK, "up", "--dir", str(directory), "--dags", str(dags)]
        for name, value in settings.items():
            up += ["--set", f"{name}={value}"]
        subprocess.run(up, check=True, env=stack_env(), timeout=420)
        deployment = Deployment(directory)
        try:
            yield sb, s3, bucket, deployment
        finally:
            pids = list(deployment.state["pids"].values())
            subprocess.run(
                [*STACK, "down", "--dir", str(directory)], check=False, env=stack_env(), timeout=120
            )
            # Down means down: no process of any component is left.
            assert not [p for p in pids if _group_alive(p)]
            assert not directory.exists()


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def holding_component(deployment: Deployment, sandbox_port: int) -> str:
    """The stack component whose process holds a connection to the sandbox (the stalled
    download): found by the connection, not by guessing."""
    import psutil

    me = os.getpid()
    for conn in psutil.net_connections(kind="tcp"):
        if (
            conn.raddr
            and conn.raddr.port == sandbox_port
            and conn.status == psutil.CONN_ESTABLISHED
            and conn.pid not in (None, me)
        ):
            name = deployment.component_of(conn.pid)
            if name and name.startswith("worker-"):
                return name
    raise AssertionError("no worker holds a connection to the sandbox")


def test_nightly_export_survives_worker_and_triggerer_kills(
    world: tuple[Sandbox, S3Server, str, Deployment],
) -> None:
    sb, s3, bucket, stack = world
    started = time.monotonic()
    # The export stays "in progress" (202) until this rule goes.
    waiting = sb.faults.add(
        "/fhir/_bulk/jobs", method="GET", status=202, body_kind="empty", times=None
    )
    # The first file requested stalls after 2 KB until released; the second request
    # finds every token expired (the server revoked them mid-export).
    held = sb.faults.add("/fhir/_bulk/files", method="GET", hold_after_bytes=2000, times=1)
    sb.faults.add("/fhir/_bulk/files", method="GET", expire_tokens=True, times=1)

    wait_until("the DAG", lambda: stack.rest("GET", f"dags/{DAG_ID}"), 180, poll=1)
    # The nightly run of 2024-06-01: its files go to bulk/2024-06-01/.
    run = stack.rest(
        "POST", f"dags/{DAG_ID}/dagRuns", json={"logical_date": "2024-06-01T00:00:00Z"}
    )
    run_id = run["dag_run_id"]
    prefix = f"bulk/{(run.get('logical_date') or run['run_after'])[:10]}/"

    def export_state() -> str:
        (ti,) = [t for t in stack.task_instances(run_id) if t["task_id"] == "export"]
        return str(ti["state"])

    # 1. Deferred and polled by the triggerer: kill it, start it again.
    wait_until("the export to be deferred", lambda: export_state() == "deferred", 240, poll=1)
    # (The rule answers the polls, so it counts them: ``hits``.)
    polls = waiting.hits
    wait_until("the triggerer to poll", lambda: waiting.hits > polls, 60)
    stack.command("kill", "triggerer")
    polls = waiting.hits
    stack.command("restart", "triggerer")
    wait_until("the restarted triggerer to poll", lambda: waiting.hits > polls, 180)
    assert export_state() == "deferred"
    sb.faults.remove(waiting)  # the export completes

    # 2. Downloads: all but the held one finish, on both workers; kill the held one's worker.
    wait_until("a held download", lambda: sb.stats["responses_held"] >= 1, 240)

    def others_done() -> bool:
        tis = [t for t in stack.task_instances(run_id) if t["task_id"] == "download"]
        return bool(tis) and sum(t["state"] == "success" for t in tis) == len(tis) - 1

    wait_until("the other downloads", others_done, 240, poll=1)
    workers_used = {
        name for name in stack.state["workers"] if "task_id='download'" in stack.log(name)
    }
    assert workers_used == set(stack.state["workers"])  # spread over both workers
    victim = holding_component(stack, sb.port)
    held_ti = next(
        t
        for t in stack.task_instances(run_id)
        if t["task_id"] == "download" and t["state"] != "success"
    )
    stack.command("kill", victim)
    sb.faults.release(held)

    # 3. The scheduler notices the dead task, the other worker retries it; finalize runs.
    def finished() -> str | None:
        state = stack.rest("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        return state if state in ("success", "failed") else None

    assert wait_until("the run to finish", finished, 300, poll=1) == "success"
    elapsed = time.monotonic() - started

    # 4. The export's Asset events: one per resource type, and the scheduler ran the DAG
    # scheduled on the Patient Asset (its task checks the event's count and path).
    events = [
        e
        for e in stack.rest("GET", "assets/events", params={"source_dag_id": DAG_ID})[
            "asset_events"
        ]
        if (e.get("extra") or {}).get("source") == "bulk-export"
    ]
    assert len(events) == len(TYPES), events
    assert {e["extra"]["resourceType"] for e in events} == set(TYPES)
    assert all(e["extra"]["path"] == f"s3://{bucket}/{prefix.rstrip('/')}" for e in events)

    def consumer_done() -> str | None:
        runs = stack.rest("GET", "dags/patients_refreshed/dagRuns")["dag_runs"]
        states = {r["state"] for r in runs}
        return "success" if "success" in states else ("failed" if "failed" in states else None)

    assert wait_until("the Asset-scheduled DAG", consumer_done, 180, poll=1) == "success"

    tis = stack.task_instances(run_id)
    stats = sb.stats
    ops = s3.operations(bucket)
    processes = sum(t["try_number"] for t in tis) + 2  # each task try, two triggerer runs
    print(
        f"stack e2e: run {elapsed:.0f} s, {stats['token_requests']} token requests for "
        f"{processes} processes, {stats['file_downloads']} file bodies served, "
        f"S3 operations {dict(ops)}",
        file=sys.stderr,
    )
    downloads = [t for t in tis if t["task_id"] == "download"]
    retried = [t for t in downloads if t["try_number"] > 1]
    assert [t["map_index"] for t in retried] == [held_ti["map_index"]]
    assert retried[0]["try_number"] == 2
    survivor = next(w for w in stack.state["workers"] if w != victim)
    retry_line = re.compile(
        rf"task_id='download'.*try_number=2,.*map_index={held_ti['map_index']}\b"
    )
    assert retry_line.search(stack.log(survivor))  # the retry ran on the other worker

    # Every resource exactly once, nothing partial, nothing pending, nothing copied.
    objects = s3.objects(bucket, prefix)
    _check_tables(s3, bucket, sb)
    names = sorted(k[len(prefix) :] for k in objects)
    expected = [*(f"{t}.000.ndjson" for t in TYPES), "manifest.json", "log.ndjson"]
    assert names == sorted(expected), names
    for kind in TYPES:
        ids = [
            json.loads(line)["id"] for line in objects[f"{prefix}{kind}.000.ndjson"].splitlines()
        ]
        assert sorted(ids) == sorted(r.id for r in sb.store.by_type[kind]), kind
    everything = s3.objects(bucket)
    assert not [k for k in everything if ".partial-" in k or "/." in k]
    assert [t["state"] for t in tis if t["task_id"] == "tables"] == ["success"] * 4
    assert s3.incomplete_uploads(bucket) == []
    assert ops["CopyObject"] == 0 and ops["UploadPartCopy"] == 0, ops
    data_keys = [f"{prefix}{t}.000.ndjson" for t in TYPES]
    per_key = s3.by_key(bucket)
    assert all(
        per_key[k]["PutObject"] + per_key[k]["CompleteMultipartUpload"] == 1 for k in data_keys
    )

    assert stats["bulk_kickoffs"] == 1  # the resumed wait and the retry never kicked off again
    file_requests = {p: n for p, n in stats["requests_by_path"].items() if "/_bulk/files/" in p}
    assert len(file_requests) == len(TYPES)
    # Served (authorised) file bodies: each file once, the held one twice (the killed try,
    # then the retry); the 401s after the forced token expiry are not bodies.
    assert stats["file_downloads"] == len(TYPES) + 1, (stats["file_downloads"], file_requests)
    # Tokens: one per process, one more per process alive at the forced expiry, and a
    # renewal per lifetime for the few long-lived ones (triggerer, held download). A
    # token per request would be dozens (polls every 1-2 s, every file request).
    bound = 2 * processes + 3 * math.ceil(elapsed / TOKEN_LIFETIME)
    assert stats["token_requests"] <= bound, (stats["token_requests"], bound)


def _check_tables(s3: S3Server, bucket: str, sb: Sandbox) -> None:
    """One Delta table per view under tables/: version 0 only, its data files all listed,
    one row per resource of the view's type."""
    import io

    import pyarrow.parquet as pq

    views = {
        "patient_demographics": "Patient",
        "observation": "Observation",
        "condition": "Condition",
        "encounter": "Encounter",
    }
    objects = s3.objects(bucket, "tables/")
    for view, kind in views.items():
        log = [k for k in objects if k.startswith(f"tables/{view}/_delta_log/")]
        assert log == [f"tables/{view}/_delta_log/00000000000000000000.json"], log
        actions = [json.loads(line) for line in objects[log[0]].splitlines()]
        added = [a["add"]["path"] for a in actions if "add" in a]
        data = sorted(k for k in objects if k.startswith(f"tables/{view}/part-"))
        assert data == sorted(f"tables/{view}/{name}" for name in added)
        ids = []
        for key in data:
            ids += pq.read_table(io.BytesIO(objects[key]), columns=["id"]).column("id").to_pylist()
        assert sorted(ids) == sorted(r.id for r in sb.store.by_type[kind]), view
