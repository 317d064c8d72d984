"""Bulk download into S3 against uploading the same files from local disk: ``make bench``.

    .venv/bin/python benchmarks/s3.py            # 200 MB export, 5 repetitions
    .venv/bin/python benchmarks/s3.py --quick    # 20 MB, 3 repetitions
    .venv/bin/python benchmarks/s3.py --server s3rver   # against a second S3 server

An S3 endpoint (moto's server, its own process; or with ``--server s3rver`` the npm
package s3rver, a Node.js S3 server that writes objects to disk, as a second, faster
S3-protocol server) and the sandbox (its own process) on 127.0.0.1. The export's files are
downloaded once to local disk; then, each repetition in a rotating order:

- ``BulkDownloader`` -> ``ObjectStoragePath("s3://aws_default@bucket/...")``: fetch from the
  sandbox and stream into S3 (what the export operator does);
- ``boto3`` ``upload_file`` of the local copies (s3transfer: threads, multipart), N at once;
- ``s3fs`` ``put`` of the local copies;
- ``BulkDownloader`` -> local disk (the download alone).

Each contender's row also gives the median CPU seconds per run of the three processes (this
client, the S3 server, the sandbox): on 2 cores, whichever is near the run's seconds bounds
it. The S3 request counts come from moto's request log (none with s3rver).

The upload baselines only upload (their download is already done), so "vs fastest upload"
near 1 means streaming into S3 costs nothing over an upload alone; "vs download then upload"
compares with doing the two one after the other (above 1: they overlap). On a machine whose
cores the S3 server, the FHIR server and the client share, the first cannot reach 1 (the
stream does the download's work too). ``--parts-in-flight K`` sets the S3 parts of one file
uploading at once. Also counted from the server's request
log: S3 requests per exported file, and the bytes copied server-side per exported byte
(``CopyObject``/``UploadPartCopy``; the goal, and what the commit path now does, is 0).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.support.s3 (the request-logging moto server)
_HOME = tempfile.mkdtemp(prefix="bench-s3-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _HOME)
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)  # Airflow's files of this run

import requests  # noqa: E402
from download_child import StaticToken  # noqa: E402
from load import Load, add_arguments, check, span  # noqa: E402
from servers import MB, sandbox  # noqa: E402

from airflow_provider_backendauth.core.bulk.client import BulkExportClient  # noqa: E402
from airflow_provider_backendauth.core.bulk.compress import GZIP  # noqa: E402
from airflow_provider_backendauth.core.bulk.download import BulkDownloader  # noqa: E402
from airflow_provider_backendauth.core.bulk.files import plan_files  # noqa: E402
from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings  # noqa: E402
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest  # noqa: E402
from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions  # noqa: E402
from airflow_provider_backendauth.core.storage import s3_parts, uploads  # noqa: E402

MOTO_CHILD = """
import sys, json
sys.path.insert(0, sys.argv[1])
from tests.support.s3 import S3Server
import threading, http.server

server = S3Server()
server.start()
print(json.dumps({"endpoint": server.endpoint_url}), flush=True)
# The request log, on demand: one line in, one JSON line out.
for line in sys.stdin:
    if line.strip() == "log":
        print(json.dumps([r.__dict__ for r in server.requests]), flush=True)
    elif line.strip() == "reset":
        server.reset()
        print("[]", flush=True)
"""


S3RVER_VERSION = "3.7.1"


class Moto:
    """moto's S3 in a child process (its CPU is not ours), with its request log."""

    name = "moto"
    key, secret = "testing", "testing"

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", MOTO_CHILD, str(HERE.parent)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.endpoint = json.loads(self.process.stdout.readline())["endpoint"]

    def _ask(self, what: str) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(what + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def log(self) -> list[dict[str, Any]]:
        return list(self._ask("log"))

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


class S3rver:
    """s3rver (npm, Node.js) in a child process, objects on a scratch disk; no request log."""

    name = "s3rver"
    key, secret = "S3RVER", "S3RVER"  # its default credentials

    def __init__(self) -> None:
        from servers import free_port

        from tests.support.npm import install_pinned

        cache = HERE.parent / ".cache" / "s3rver"
        binary = install_pinned(
            "s3rver",
            S3RVER_VERSION,
            cache / "node_modules" / ".bin" / "s3rver",
            SystemExit,
            "benchmarks/s3.py --server s3rver",
        )
        self.data = Path(tempfile.mkdtemp(prefix="bench-s3rver-"))
        port = free_port()
        self.process = subprocess.Popen(
            [str(binary), "-d", str(self.data), "-a", "127.0.0.1", "-p", str(port), "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.endpoint, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise SystemExit("s3rver did not start") from None
                time.sleep(0.1)

    def log(self) -> list[dict[str, Any]]:
        return []

    def reset(self) -> None:
        pass

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        shutil.rmtree(self.data, ignore_errors=True)


def boto3_client(server: Moto | S3rver) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.key,
        aws_secret_access_key=server.secret,
        region_name="us-east-1",
    )


def load_range(pairs: list[tuple[Load, Load]]) -> str:
    """The 1-minute load before the first and after the last of a contender's runs, with
    the lowest and highest seen around any of them."""
    seen = [load.one for pair in pairs for load in pair]
    return f"{span(pairs[0][0], pairs[-1][1])} (range {min(seen):.2f}-{max(seen):.2f})"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class CpuMeter:
    """CPU seconds (user + system) spent by this process and by each server's process during
    a run: which of the three bounds a contender on a machine whose cores they share."""

    def __init__(self, servers: dict[str, int]) -> None:
        import psutil

        self.processes = {name: psutil.Process(pid) for name, pid in servers.items()}

    def now(self) -> dict[str, float]:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        seconds = {"client": own.ru_utime + own.ru_stime}
        for name, process in self.processes.items():
            times = process.cpu_times()
            seconds[name] = times.user + times.system
        return seconds

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 MB, 3 repetitions")
    parser.add_argument("--mb", type=float, help="export size in MB (default 200; --quick 20)")
    parser.add_argument("--files", type=int, default=8, help="files per export")
    parser.add_argument("--parallel", type=int, default=4, help="files at a time")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5; --quick 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--parts-in-flight",
        type=int,
        help="S3 parts uploading at once per file (default: core.storage.s3_parts's default)",
    )
    parser.add_argument(
        "--server", choices=("moto", "s3rver"), default="moto", help="the S3 server"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    start_load = check(args.require_idle, "benchmarks/s3.py")
    if args.parts_in_flight:
        s3_parts.DEFAULT_PARTS_IN_FLIGHT = args.parts_in_flight  # read when a file opens
    size_mb = args.mb or (20 if args.quick else 200)
    repeat = args.repeat or (3 if args.quick else 5)

    scratch: Path | None = None
    server: Moto | S3rver = S3rver() if args.server == "s3rver" else Moto()
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
        {
            "conn_type": "aws",
            "login": server.key,
            "password": server.secret,
            "extra": {"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        }
    )
    from airflow.sdk import ObjectStoragePath

    s3 = boto3_client(server)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    try:
        with sandbox(100) as sb:
            resources = 100 * 9  # about 9 resources per sandbox patient
            sb.control(
                "POST",
                "settings",
                {
                    "bulk_resource_padding_bytes": max(0, int(size_mb * MB / resources) - 400),
                    "bulk_lines_per_file": max(1, int(resources / args.files)),
                },
            )
            http = AuthorizedSessions(
                requests.Session, StaticToken(sb.token()), [sb.url], timeout=120
            )
            client = BulkExportClient(
                http,
                sb.fhir_base,
                poll_settings=PollSettings(poll_interval_min=0.2, poll_interval_max=1),
            )
            manifest = client.wait(client.kickoff(BulkExportRequest.create("system")))
            files = plan_files(manifest)
            stored_gzip: list[int] = []  # bytes in S3 after each gzip export
            local = scratch = Path(tempfile.mkdtemp(prefix="bench-s3-local-"))
            BulkDownloader(http, parallel=args.parallel).download(
                files, local, requires_access_token=manifest.requires_access_token
            )
            paths = sorted(p for p in local.rglob("*.ndjson"))
            sizes = [p.stat().st_size for p in paths]
            total = sum(sizes)

            def ours(rep: int) -> None:
                destination = ObjectStoragePath(f"s3://aws_default@{bucket}/ours-{rep}/")
                BulkDownloader(http, parallel=args.parallel).download(
                    files, destination, requires_access_token=manifest.requires_access_token
                )

            gzipped = plan_files(manifest, GZIP)  # the same files, stored as .ndjson.gz

            def ours_gzip(rep: int) -> None:
                destination = ObjectStoragePath(f"s3://aws_default@{bucket}/gzip-{rep}/")
                BulkDownloader(http, parallel=args.parallel).download(
                    gzipped, destination, requires_access_token=manifest.requires_access_token
                )

            def with_boto3(rep: int) -> None:
                from concurrent.futures import ThreadPoolExecutor

                def put(path: Path) -> None:
                    s3.upload_file(str(path), bucket, f"boto3-{rep}/{path.relative_to(local)}")

                with ThreadPoolExecutor(args.parallel) as pool:
                    list(pool.map(put, paths))

            def with_s3fs(rep: int) -> None:
                fs = ObjectStoragePath(f"s3://aws_default@{bucket}/").fs
                fs.put(
                    [str(p) for p in paths],
                    [f"{bucket}/s3fs-{rep}/{p.relative_to(local)}" for p in paths],
                )

            def download_only(rep: int) -> None:
                BulkDownloader(http, parallel=args.parallel).download(
                    files, local / f"dl-{rep}", requires_access_token=manifest.requires_access_token
                )

            def forget(rep: int) -> None:
                shutil.rmtree(local / f"dl-{rep}", ignore_errors=True)
                listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                keys = [
                    {"Key": o["Key"]} for o in listed if o["Key"].split("/")[0].endswith(f"-{rep}")
                ]
                if keys:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})

            contenders: dict[str, Callable[[int], None]] = {
                "BulkDownloader -> S3": ours,
                "BulkDownloader -> S3, gzip": ours_gzip,
                "boto3 upload_file": with_boto3,
                "s3fs put": with_s3fs,
                "BulkDownloader -> disk": download_only,
            }
            names = list(contenders)
            times: dict[str, list[float]] = {n: [] for n in names}
            # The 1-minute load before and after each contender's run: [(before, after)].
            loads: dict[str, list[tuple[Load, Load]]] = {n: [] for n in names}
            meter = CpuMeter({"server": server.process.pid, "sandbox": sb.process.pid})
            cpu: dict[str, list[dict[str, float]]] = {n: [] for n in names}
            ours(-1)  # warm-up: connections, imports, the sandbox's page cache
            ours_gzip(-1)  # and what gzip at rest stores
            stored = s3.list_objects_v2(Bucket=bucket, Prefix="gzip--1/")["Contents"]
            stored_gzip.append(sum(o["Size"] for o in stored if o["Key"].endswith(".gz")))
            server.reset()
            ours(0)
            log = server.log()  # the requests of one measured export into S3
            for rep in range(1, repeat + 1):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for name in order:
                    before, cpu_before = Load.now(), meter.now()
                    times[name].append(timed(lambda n=name, r=rep: contenders[n](r)))
                    loads[name].append((before, Load.now()))
                    cpu[name].append(meter.spent(cpu_before, meter.now()))
                    forget(rep)  # untimed: the server keeps every object
            copies = [r for r in log if r["operation"] in ("CopyObject", "UploadPartCopy")]
            # A copy stores its whole source again: size it by the object it made.
            copied_bytes = sum(
                s3.head_object(Bucket=bucket, Key=r["key"])["ContentLength"] for r in copies
            )
    finally:
        server.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)  # the local copies of the export

    end_load = Load.now()
    # Every request of the measured export (the log was reset just before it): the
    # per-object ones and the bucket-level ones (the listing of leftover uploads per file).
    ours_keys = {r["key"] for r in log if r["key"].startswith("ours-0/")}
    ops = Counter(r["operation"] for r in log)
    copied = len(copies)
    medians = {n: statistics.median(t) for n, t in times.items()}
    baseline = min(medians["boto3 upload_file"], medians["s3fs put"])
    part_size = uploads.DEFAULT_PART_SIZE
    figures = {
        "export_mb": round(total / MB, 1),
        "files": len(paths),
        "file_mb": [round(min(sizes) / MB, 1), round(max(sizes) / MB, 1)],
        "multipart_files": sum(1 for size in sizes if size >= part_size),
        "part_mib": part_size / 2**20,
        "parts_in_flight": s3_parts.DEFAULT_PARTS_IN_FLIGHT,
        "parallel": args.parallel,
        "repeat": repeat,
        "median_s": {n: round(v, 3) for n, v in medians.items()},
        "load_start": str(start_load),
        "load_end": str(end_load),
        "load_1min": {n: load_range(pairs) for n, pairs in loads.items()},
        "mb_per_s": {n: round(total / MB / v, 1) for n, v in medians.items()},
        # Median CPU seconds of each process per run: the client, the S3 server, the sandbox.
        "cpu_s": {
            n: {p: round(statistics.median(run[p] for run in runs), 3) for p in runs[0]}
            for n, runs in cpu.items()
        },
        "ours_vs_fastest_upload": round(baseline / medians["BulkDownloader -> S3"], 2),
        # Downloading and uploading one after the other would take the sum of the two.
        "ours_vs_download_then_upload": round(
            (medians["BulkDownloader -> disk"] + baseline) / medians["BulkDownloader -> S3"], 2
        ),
        "s3_requests_per_file": round(sum(ops.values()) / max(1, len(ours_keys)), 2),
        "s3_operations": dict(ops),
        "server": server.name,
        "stored_bytes_plain": total,
        "stored_bytes_gzip": stored_gzip[-1],
        "copy_requests": copied,
        "server_side_bytes_copied_per_exported_byte": round(copied_bytes / max(1, total), 3),
    }
    print(
        f"\nS3 ({server.name} server) on 127.0.0.1: {figures['export_mb']} MB in {len(paths)} "
        f"files of {figures['file_mb'][0]}-{figures['file_mb'][1]} MB, "
        f"{figures['multipart_files']} multipart ({figures['part_mib']:g} MiB parts, "
        f"{figures['parts_in_flight']} in flight per file); load average {start_load} at the "
        f"start, {end_load} at the end on {end_load.cores} cores"
    )
    print(
        f"{'contender':28} {'median s':>9} {'MB/s':>8}  CPU s: client/{server.name}/sandbox  "
        "load (1 min): first -> last (range)"
    )
    for name in names:
        used = figures["cpu_s"][name]
        print(
            f"{name:28} {medians[name]:9.3f} {figures['mb_per_s'][name]:8.1f}  "
            f"{used['client']:6.2f}/{used['server']:5.2f}/{used['sandbox']:5.2f}        "
            f"{figures['load_1min'][name]}"
        )
    print(
        f"download+stream vs fastest upload-only: {figures['ours_vs_fastest_upload']}x speed, "
        f"vs download to disk then fastest upload: {figures['ours_vs_download_then_upload']}x; "
        f"{figures['s3_requests_per_file']} S3 requests per file {dict(ops)}; "
        f"server-side copies: {copied} "
        f"(bytes copied per exported byte: {figures['server_side_bytes_copied_per_exported_byte']})"
    )
    print(
        f"gzip at rest (compression='gzip'): {stored_gzip[-1] / MB:.1f} MB stored instead of "
        f"{total / MB:.1f} MB ({total / max(1, stored_gzip[-1]):.1f}x smaller), "
        f"{figures['mb_per_s']['BulkDownloader -> S3, gzip']} MB/s of NDJSON into S3 against "
        f"{figures['mb_per_s']['BulkDownloader -> S3']} MB/s plain"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    check(False, "the end of the run")  # warns again if it ended on a busy machine
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(120)
    sys.exit(main())
