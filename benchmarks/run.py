"""Bulk export download benchmarks against the sandbox on loopback.

    .venv/bin/python benchmarks/run.py            # full: 300 MB throughput, 10 MB vs 1 GB memory
    .venv/bin/python benchmarks/run.py --quick    # a quick pass (60 MB, 5 MB vs 100 MB)

1. Throughput: the same multi-hundred-MB export downloaded by ``BulkDownloader`` and by
   ``curl --parallel`` with the same parallelism; prints both and the ratio (goal >= 0.8).
2. Peak memory: the download step of a small and a large export, each in a fresh child
   process; prints each child's RSS high-water mark (VmHWM) and the difference (goal < 50 MB:
   memory must not grow with the export's size).

The sandbox runs in its own process (``python -m backendauth_sandbox``) so
that server and client do not share an interpreter. Everything is written under a temporary
directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from airflow_provider_backendauth.core.auth.tokens import AccessToken
from airflow_provider_backendauth.core.bulk.download import BulkDownloader, plan_files
from airflow_provider_backendauth.core.bulk.export import (
    BulkExportClient,
    BulkExportRequest,
    BulkManifest,
)
from airflow_provider_backendauth.core.bulk.http import BulkHttp

MB = 1_000_000
RESOURCES_PER_PATIENT = 8.1  # what the sandbox's seeded data averages (all four types)
PATIENTS = 100
CLIENT_ID = "bench"


class StaticToken:
    """A token from the sandbox's control API (the benchmark measures downloads, not OAuth)."""

    def __init__(self, value: str) -> None:
        self.token = AccessToken(value=value, expires_at=time.time() + 3600)

    def get(self) -> AccessToken:
        return self.token

    def invalidate(self, value: str | None = None) -> None:
        pass


def http_for(token: str, origin: str) -> BulkHttp:
    return BulkHttp(requests.Session, StaticToken(token), [origin], timeout=60)


# --- the sandbox process --------------------------------------------------------------------


@dataclass
class SandboxProcess:
    process: subprocess.Popen[str]
    url: str
    fhir_base: str

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.url}/_sandbox/{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def token(self) -> str:
        body = {"client_id": CLIENT_ID, "scope": "system/*.rs", "lifetime": 7200}
        answer = self.control("POST", "tokens", body)
        return str(answer.get("access_token") or answer.get("token") or answer["value"])


@contextmanager
def sandbox(gzip: bool) -> Iterator[SandboxProcess]:
    command = [
        sys.executable, "-m", "backendauth_sandbox",
        "--patients", str(PATIENTS), "--bulk-job-seconds", "0",
        "--set", f"bulk_gzip={'true' if gzip else 'false'}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        yield SandboxProcess(process, ready["url"], ready["fhir_base"])
    finally:
        process.terminate()
        process.wait(30)


@dataclass
class Export:
    manifest: BulkManifest
    status_url: str
    token: str
    origin: str


def make_export(sb: SandboxProcess, megabytes: float, files: int) -> Export:
    """A system export of about ``megabytes`` MB in about ``files`` files."""
    resources = RESOURCES_PER_PATIENT * PATIENTS
    sb.control(
        "POST",
        "settings",
        {
            "bulk_resource_padding_bytes": max(0, int(megabytes * MB / resources) - 400),
            "bulk_lines_per_file": max(1, int(resources / files)),
        },
    )
    token = sb.token()
    client = BulkExportClient(
        http_for(token, sb.url), sb.fhir_base, poll_interval_min=0.2, poll_interval_max=1
    )
    status_url = client.kickoff(BulkExportRequest.create("system"))
    manifest = client.wait(status_url)
    return Export(manifest, status_url, token, sb.url)


def drop_export(sb: SandboxProcess, export: Export) -> None:
    BulkExportClient(http_for(export.token, sb.url), sb.fhir_base).cancel(export.status_url)


# --- 1. throughput ----------------------------------------------------------------------------


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.ndjson"))


def ours(export: Export, folder: Any, parallel: int) -> tuple[int, float]:
    downloader = BulkDownloader(http_for(export.token, export.origin), parallel=parallel)
    started = time.perf_counter()
    results = downloader.download(plan_files(export.manifest), folder, requires_access_token=True)
    elapsed = time.perf_counter() - started
    return sum(r.bytes for r in results), elapsed


def curl(export: Export, folder: Path, parallel: int, gzip: bool) -> tuple[int, float]:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder.parent / f"{folder.name}.curlrc"
    lines = [
        f'header = "Authorization: Bearer {export.token}"',
        'header = "Accept: application/fhir+ndjson"',
    ]
    for file in plan_files(export.manifest):
        target = folder / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        lines += [f'url = "{file.url}"', f'output = "{target}"']
    config.write_text("\n".join(lines) + "\n")
    command = [
        "curl",
        "--silent",
        "--no-progress-meter",
        "--show-error",
        "--fail",
        "--parallel",
        "--parallel-max",
        str(parallel),
        "--config",
        str(config),
    ]
    if gzip:
        command.append("--compressed")
    started = time.perf_counter()
    subprocess.run(command, check=True)
    elapsed = time.perf_counter() - started
    config.unlink()
    return size_of(folder), elapsed


def throughput(sb: SandboxProcess, work: Path, args: argparse.Namespace) -> dict[str, float]:
    export = make_export(sb, args.throughput_mb, files=args.files)
    best = {"ours": 0.0, "curl": 0.0}
    size = {"ours": 0, "curl": 0}
    try:
        for attempt in range(args.repeat):
            for name in ("curl", "ours") if attempt % 2 else ("ours", "curl"):
                folder = work / f"{name}-{attempt}"
                if name == "ours":
                    nbytes, seconds = ours(export, folder, args.parallel)
                else:
                    nbytes, seconds = curl(export, folder, args.parallel, args.gzip)
                size[name] = nbytes
                best[name] = max(best[name], nbytes / MB / seconds)
                shutil.rmtree(folder)
    finally:
        drop_export(sb, export)
    if size["ours"] != size["curl"]:
        raise SystemExit(f"size mismatch: ours {size['ours']} B, curl {size['curl']} B")
    ratio = best["ours"] / best["curl"]
    print(
        f"\n1. Download throughput, {size['ours'] / MB:.0f} MB in "
        f"{len(export.manifest.output)} files, {args.parallel} in parallel, "
        f"{'gzip' if args.gzip else 'identity'} encoding, best of {args.repeat}:"
    )
    print(f"   BulkDownloader  {best['ours']:8.1f} MB/s")
    print(f"   curl --parallel {best['curl']:8.1f} MB/s")
    print(f"   ratio           {ratio:8.2f}   (goal >= 0.80: {'PASS' if ratio >= 0.8 else 'FAIL'})")
    return {"ours_mb_s": best["ours"], "curl_mb_s": best["curl"], "ratio": ratio}


# --- 2. peak memory -----------------------------------------------------------------------------


def vmhwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_download(args: argparse.Namespace) -> None:
    """The measured step, in a fresh process: download a manifest's files."""
    manifest = BulkManifest.from_json(json.loads(Path(args.manifest).read_text()))
    export = Export(manifest, "", args.token, args.origin)
    destination: Any = Path(args.dest)
    if args.object_storage:
        from airflow.sdk import ObjectStoragePath

        destination = ObjectStoragePath(destination.as_uri())
    nbytes, seconds = ours(export, destination, args.parallel)
    print(json.dumps({"bytes": nbytes, "seconds": seconds, "vmhwm_kb": vmhwm_kb()}))


def memory(sb: SandboxProcess, work: Path, args: argparse.Namespace) -> dict[str, float]:
    peaks: dict[str, dict[str, Any]] = {}
    for label, megabytes in (("small", args.small_mb), ("large", args.large_mb)):
        export = make_export(sb, megabytes, files=args.files)
        manifest_file = work / f"{label}-manifest.json"
        manifest_file.write_text(json.dumps(export.manifest.raw))
        dest = work / f"{label}-files"
        command = [
            sys.executable, __file__, "_download", "--manifest", str(manifest_file),
            "--dest", str(dest), "--token", export.token, "--origin", export.origin,
            "--parallel", str(args.parallel),
        ]  # fmt: skip
        if args.object_storage:
            command.append("--object-storage")
        try:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None
            output = child.stdout.read()
            # wait4 gives this child's own rusage; but its ru_maxrss also counts the moment
            # between fork and exec (a copy of this process), so VmHWM is the figure shown.
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode != 0:
                raise SystemExit(f"the download child failed with exit code {child.returncode}")
        finally:
            drop_export(sb, export)
            shutil.rmtree(dest, ignore_errors=True)
        peaks[label] = json.loads(output.strip().splitlines()[-1])
        peaks[label]["maxrss_kb"] = usage.ru_maxrss
    small, large = peaks["small"], peaks["large"]
    difference = (large["vmhwm_kb"] - small["vmhwm_kb"]) / 1024
    print(f"\n2. Peak memory of the download step (fresh process each, {args.parallel} parallel):")
    for label in ("small", "large"):
        p = peaks[label]
        print(
            f"   {p['bytes'] / MB:8.0f} MB export: VmHWM {p['vmhwm_kb'] / 1024:6.1f} MiB, "
            f"{p['bytes'] / MB / p['seconds']:.0f} MB/s"
        )
    print(
        f"   difference {difference:+.1f} MiB   (goal < 50 MiB: "
        f"{'PASS' if difference < 50 else 'FAIL'})"
    )
    return {
        "small_mib": small["vmhwm_kb"] / 1024,
        "large_mib": large["vmhwm_kb"] / 1024,
        "difference_mib": difference,
    }


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("_download", help=argparse.SUPPRESS)
    for name in ("--manifest", "--dest", "--token", "--origin"):
        child.add_argument(name, required=True)
    child.add_argument("--parallel", type=int, default=4)
    child.add_argument("--object-storage", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--throughput-mb", type=float, default=300)
    parser.add_argument("--small-mb", type=float, default=10)
    parser.add_argument("--large-mb", type=float, default=1000)
    parser.add_argument("--files", type=int, default=16, help="files per export (about)")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="serve files gzip-encoded")
    parser.add_argument(
        "--object-storage",
        action="store_true",
        help="memory run: write through Airflow's ObjectStoragePath (file://) instead of pathlib",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.throughput_mb, args.small_mb, args.large_mb, args.repeat = 60, 5, 100, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "_download":
        child_download(args)
        return 0
    if shutil.which("curl") is None and not args.skip_throughput:
        raise SystemExit("curl is needed for the comparison (apt-get install -y curl)")
    figures: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="backendauth-bench-"))
    try:
        with sandbox(args.gzip) as sb:
            print(f"sandbox at {sb.url} (own process), work dir {work}")
            if not args.skip_throughput:
                figures["throughput"] = throughput(sb, work, args)
            if not args.skip_memory:
                figures["memory"] = memory(sb, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
