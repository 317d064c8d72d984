"""Benchmarks of the client against the fastest baseline, on loopback: ``make bench``.

    .venv/bin/python benchmarks/run.py            # full: 20 MB .. 2 GB, 5 repetitions (minutes)
    .venv/bin/python benchmarks/run.py --quick    # smoke run: small sizes, 3 repetitions

1. Bulk downloads. The same files, N at a time, fetched by
   - ``BulkDownloader``, timed as a user runs it (a fresh ``python`` process: start-up and
     imports included) and in-process (a new downloader per run, in this process);
   - N ``curl`` processes, one connection each (the files split between them), and one
     ``curl --parallel --parallel-max N`` (a single-threaded event loop);
   all writing to the same disk (one temporary directory). Servers: nginx with static files
   (plain NDJSON; the same files pre-compressed and served with ``Content-Encoding: gzip``
   by ``gzip_static``; ``.ndjson.gz`` files served as they are, which the clients gunzip),
   and the project's sandbox (plain, up to ``--sandbox-max-mb``).
2. FHIR search paging against the sandbox: ``FhirSearch`` vs a plain ``requests`` loop over
   the same ``next`` links.

Each contender runs ``--repeat`` times (>= 5 for real figures), in an order that rotates
every repetition, so background load hits all of them alike; the table shows the median and
the best (minimum time) MB/s, CPU ms per MB (user + system, from ``wait4`` for child
processes and ``getrusage`` for in-process runs) and the fresh process's peak RSS. "vs
baseline" is the median MB/s over the fastest baseline's median. A full run (not ``--quick``)
also writes the table into ``benchmarks/README.md`` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from download_child import StaticToken, download
from load import IDLE_FRACTION, Load, add_arguments, check, span
from servers import MB, FileSet, Nginx, SandboxProcess, fhir_like_block, make_files, nginx, sandbox

from airflow_provider_backendauth.core.bulk.client import BulkExportClient
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.bulk.poll_settings import PollSettings
from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.counting import byte_counter
from airflow_provider_backendauth.core.fhir.search import FHIR_JSON, FhirClient
from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions
from airflow_provider_backendauth.core.http.requests_auth import BackendAuth
from airflow_provider_backendauth.core.http.sessions import plain_session

HERE = Path(__file__).resolve().parent
CHILD = HERE / "download_child.py"
README = HERE / "README.md"
FAKE_TOKEN = "-bench-token-starting-with-a-dash"  # nginx ignores it; keeps --token=... honest
RESOURCES_PER_PATIENT = 8.1  # what the sandbox's seeded data averages (all four types)
MODES = {
    "plain": "plain NDJSON",
    "te": "gzip (Content-Encoding)",
    "gzfile": "gzip files (.ndjson.gz)",
}
SEARCH_MODE = "search"  # FHIR search pages (Bundle JSON); not a download mode


# --- what is measured --------------------------------------------------------------------


@dataclass
class Case:
    """One set of files on one server, fetched by every contender."""

    server: str
    mode: str
    size_mb: float
    urls: list[str]
    manifest: dict[str, Any]
    token: str
    origin: str
    expected_bytes: int | None
    manifest_file: Path = field(default=Path())
    status_url: str = ""  # a sandbox export's, to delete it afterwards
    load: str = ""  # the 1-minute load average before -> after its rounds
    fhir_base: str = ""  # searches: the FHIR base and what to search
    search: tuple[str, int] = ("", 0)

    @property
    def label(self) -> str:
        if self.mode == SEARCH_MODE:
            return f"{self.server} {self.files_label}"
        return f"{self.server} {MODES[self.mode]} {self.size_mb:g} MB"

    @property
    def files_label(self) -> str:
        if self.mode == SEARCH_MODE:
            return f"FHIR search: {self.search[0]}, {self.search[1]} per page"
        return MODES[self.mode]


@dataclass
class Sample:
    seconds: float
    cpu_seconds: float
    bytes: int
    rss_kb: int | None = None


def cpu_of(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def names_for(case: Case) -> list[str]:
    return [f"Observation.{i:03d}.ndjson" for i in range(len(case.urls))]


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# The fresh process runs with compiled bytecode, as a pip-installed package has it (pip
# compiles on install; an Airflow image ships its .pyc files). This machine sets
# PYTHONDONTWRITEBYTECODE and installs the project editable, so without a cache of its own
# every child would recompile everything it imports (about 0.35 s more per process). The cache
# lives in the run's work directory and is filled by the warm-up round.
CHILD_ENV: dict[str, str] = {}


def child_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def startup_ms(repeat: int) -> float:
    """Median milliseconds for a fresh child to start and import what it needs, then exit:
    the fixed cost the fresh-process rows include."""
    times = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(CHILD), "--imports-only"], env=CHILD_ENV, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:]) * 1000  # the first one compiled the bytecode


def ours_fresh(case: Case, folder: Path, parallel: int) -> Sample:
    command = [
        sys.executable, str(CHILD), "--manifest", str(case.manifest_file), "--dest",
        str(folder), f"--token={case.token}", "--origin", case.origin,
        "--parallel", str(parallel),
    ]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=CHILD_ENV or None)
    assert child.stdout is not None
    output = child.stdout.read()
    # wait4, not wait(): the child's own CPU time and nothing else's.
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{case.label}: the download child failed ({child.returncode})")
    report = json.loads(output.strip().splitlines()[-1])
    return Sample(seconds, cpu_of(usage), int(report["bytes"]), int(report["vmhwm_kb"]))


def ours_inprocess(case: Case, folder: Path, parallel: int) -> Sample:
    manifest = BulkManifest.from_json(case.manifest)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    nbytes, _ = download(manifest, folder, case.token, case.origin, parallel)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return Sample(seconds, cpu_of(after) - cpu_of(before), nbytes)


def _curl_config(case: Case, folder: Path, pairs: Sequence[tuple[str, str]], path: Path) -> Path:
    lines = [
        f'header = "Authorization: Bearer {case.token}"',
        'header = "Accept: application/fhir+ndjson"',
    ]
    for url, name in pairs:
        lines += [f'url = "{url}"', f'output = "{folder / name}"']
    path.write_text("\n".join(lines) + "\n")
    return path


CURL = ["curl", "--silent", "--no-progress-meter", "--show-error", "--fail"]


def _run_all(commands: list[list[str]]) -> tuple[float, float]:
    """Start the commands together; (seconds until the last one ends, their CPU seconds).

    No peak RSS: a child's ``ru_maxrss`` keeps the high-water mark of the moment between
    fork and exec (this process's size), which dwarfs curl's own."""
    started = time.perf_counter()
    children = [subprocess.Popen(c, stdin=subprocess.DEVNULL) for c in commands]
    cpu, failed = 0.0, []
    for child in children:
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            failed.append(child.returncode)
        cpu += cpu_of(usage)
    seconds = time.perf_counter() - started
    if failed:
        raise SystemExit(f"a baseline process failed with exit codes {failed}")
    return seconds, cpu


def curl_processes(case: Case, folder: Path, parallel: int) -> Sample:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = list(zip(case.urls, names_for(case), strict=True))
    commands = []
    for worker in range(parallel):
        mine = pairs[worker::parallel]
        if not mine:
            continue
        if case.mode == "gzfile":
            # curl cannot gunzip a body without Content-Encoding: pipe each file to gzip -d,
            # which is what a shell user does.
            auth = f"Authorization: Bearer {case.token}"
            script = " && ".join(
                f"curl -sSf -H '{auth}' '{url}' | gzip -dc > '{folder / name}'"
                for url, name in mine
            )
            commands.append(["bash", "-o", "pipefail", "-c", script])
        else:
            config = _curl_config(case, folder, mine, folder.parent / f"{folder.name}.{worker}.rc")
            commands.append(
                [*CURL, "--config", str(config)] + (["--compressed"] if case.mode == "te" else [])
            )
    seconds, cpu = _run_all(commands)
    return Sample(seconds, cpu, size_of(folder))


def curl_parallel(case: Case, folder: Path, parallel: int) -> Sample:
    folder.mkdir(parents=True, exist_ok=True)
    pairs = list(zip(case.urls, names_for(case), strict=True))
    config = _curl_config(case, folder, pairs, folder.parent / f"{folder.name}.rc")
    command = [*CURL, "--parallel", "--parallel-max", str(parallel), "--config", str(config)]
    if case.mode == "te":
        command.append("--compressed")
    seconds, cpu = _run_all([command])
    return Sample(seconds, cpu, size_of(folder))


def search_ours(case: Case, folder: Path, parallel: int) -> Sample:
    """``FhirSearch`` as a user runs it: a session whose ``BackendAuth`` attaches the token,
    every page parsed into a ``SearchPage``. ``bytes`` counts the matched resources."""
    session = plain_session()  # what BackendAuthClient.new_session() starts from
    session.auth = BackendAuth(StaticToken(case.token), [case.origin])
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    search = FhirClient(session, case.fhir_base).search(case.search[0], count=case.search[1])
    matched = sum(len(page.matches) for page in search)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    session.close()
    return Sample(seconds, cpu_of(after) - cpu_of(before), matched)


def search_plain(case: Case, folder: Path, parallel: int) -> Sample:
    """The baseline: a ``requests`` loop over the same ``next`` links, JSON parsed, matches
    counted; nothing else."""
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {case.token}", "Accept": FHIR_JSON})
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    url: str | None = f"{case.fhir_base}/{case.search[0]}"
    params: dict[str, Any] | None = {"_count": case.search[1]}
    matched = 0
    while url:
        response = session.get(url, params=params, timeout=60)
        response.raise_for_status()
        bundle = response.json()
        matched += sum(
            1 for e in bundle.get("entry") or [] if e.get("search", {}).get("mode") == "match"
        )
        links = [link["url"] for link in bundle.get("link") or [] if link["relation"] == "next"]
        url, params = (links[0] if links else None), None
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    session.close()
    return Sample(seconds, cpu_of(after) - cpu_of(before), matched)


Contender = Callable[[Case, Path, int], Sample]
CONTENDERS: dict[str, Contender] = {
    "BulkDownloader, fresh process": ours_fresh,
    "BulkDownloader, in-process": ours_inprocess,
    "{n} curl processes": curl_processes,
    "curl --parallel": curl_parallel,
    "FhirSearch": search_ours,
    "requests paging loop": search_plain,
}
BASELINES = ("{n} curl processes", "curl --parallel", "requests paging loop")


def applies(name: str, case: Case) -> bool:
    if (case.mode == SEARCH_MODE) != (name in ("FhirSearch", "requests paging loop")):
        return False
    # curl --parallel has no way to gunzip a gzip file without a content encoding.
    return not (name == "curl --parallel" and case.mode == "gzfile")


def measure(case: Case, work: Path, args: argparse.Namespace, warm_up: bool) -> dict[str, list]:
    names = [n for n in CONTENDERS if applies(n, case)]
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    rounds = args.repeat + (1 if warm_up else 0)
    for rep in range(rounds):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate: every contender in every slot
            slug = re.sub(r"\W+", "-", name)
            folder = work / "out" / f"{rep}-{slug}"
            try:
                sample = CONTENDERS[name](case, folder, args.parallel)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                for rc in folder.parent.glob(f"{folder.name}*.rc"):
                    rc.unlink()
            expected = case.expected_bytes if case.expected_bytes is not None else sample.bytes
            case.expected_bytes = expected
            if sample.bytes != expected:
                raise SystemExit(
                    f"{case.label}: {name.format(n=args.parallel)} wrote {sample.bytes} bytes, "
                    f"expected {expected}"
                )
            if warm_up and rep == 0:
                continue  # the first round fills caches (.pyc, page cache); not counted
            samples[name].append(sample)
    return samples


# --- the cases -----------------------------------------------------------------------------


def nginx_case(server: Nginx, files: FileSet, mode: str, size_mb: float) -> Case:
    urls = [server.url + path for path in files.paths[mode]]
    manifest = {
        "transactionTime": "2026-01-01T00:00:00Z",
        "request": f"{server.url}/$export",
        "requiresAccessToken": True,
        "output": [{"type": "Observation", "url": u, "count": files.lines} for u in urls],
        "error": [],
    }
    return Case("nginx", mode, size_mb, urls, manifest, FAKE_TOKEN, server.url, files.total_bytes)


def sandbox_case(sb: SandboxProcess, size_mb: float, files: int, patients: int) -> Case:
    resources = RESOURCES_PER_PATIENT * patients
    sb.control(
        "POST",
        "settings",
        {
            "bulk_resource_padding_bytes": max(0, int(size_mb * MB / resources) - 400),
            "bulk_lines_per_file": max(1, int(resources / files)),
        },
    )
    token = sb.token()
    http = AuthorizedSessions(requests.Session, StaticToken(token), [sb.url], timeout=120)
    client = BulkExportClient(
        http, sb.fhir_base, poll_settings=PollSettings(poll_interval_min=0.2, poll_interval_max=1)
    )
    status_url = client.kickoff(BulkExportRequest.create("system"))
    manifest = client.wait(status_url)
    urls = [e.url for e in manifest.output]
    return Case(
        "sandbox", "plain", size_mb, urls, manifest.raw, token, sb.url, None, Path(), status_url
    )


def search_case(sb: SandboxProcess, resource_type: str, count: int) -> Case:
    """A search through every ``resource_type``; its size is the Bundles' bytes."""
    token = sb.token()
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "Accept": FHIR_JSON})
    url: str | None = f"{sb.fhir_base}/{resource_type}?_count={count}"
    nbytes = 0
    while url:
        response = session.get(url, timeout=60)
        response.raise_for_status()
        nbytes += len(response.content)
        links = [k["url"] for k in response.json().get("link") or [] if k["relation"] == "next"]
        url = links[0] if links else None
    session.close()
    return Case(
        "sandbox", SEARCH_MODE, nbytes / MB, [], {}, token, sb.url, None,
        fhir_base=sb.fhir_base, search=(resource_type, count),
    )  # fmt: skip


def drop_sandbox_case(sb: SandboxProcess, case: Case) -> None:
    http = AuthorizedSessions(requests.Session, StaticToken(case.token), [sb.url], timeout=60)
    BulkExportClient(http, sb.fhir_base).cancel(case.status_url)


# --- the table -------------------------------------------------------------------------------


@dataclass
class Row:
    case: Case
    contender: str
    mb_s_median: float
    mb_s_best: float
    cpu_ms_per_mb: float
    rss_mib: float | None
    ratio: float | None = None


def rows_for(case: Case, samples: dict[str, list[Sample]], parallel: int) -> list[Row]:
    rows = []
    # Searches: the MB are the Bundles' JSON, as the server sent it.
    decoded_mb = (case.size_mb * MB if case.mode == SEARCH_MODE else case.expected_bytes or 0) / MB
    for name, runs in samples.items():
        seconds = [s.seconds for s in runs]
        rss = [s.rss_kb for s in runs if s.rss_kb is not None]
        rows.append(
            Row(
                case,
                name.format(n=parallel),
                decoded_mb / statistics.median(seconds),
                decoded_mb / min(seconds),
                statistics.median(s.cpu_seconds for s in runs) * 1000 / decoded_mb,
                max(rss) / 1024 if rss else None,
            )
        )
    baselines = [r for r, n in zip(rows, samples, strict=True) if n in BASELINES]
    fastest = max(r.mb_s_median for r in baselines)
    for row in rows:
        row.ratio = row.mb_s_median / fastest
    return rows


def size_text(megabytes: float) -> str:
    return f"{megabytes:.0f} MB" if megabytes >= 20 else f"{megabytes:.3g} MB"


def table(rows: Sequence[Row]) -> str:
    header = (
        "| server | files | size | client | MB/s median | MB/s best | CPU ms/MB "
        "| peak RSS MiB | vs fastest baseline | load (1 min) |"
    )
    lines = [header, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rss = f"{r.rss_mib:.0f}" if r.rss_mib is not None else "-"
        size = size_text(r.case.size_mb)
        lines.append(
            f"| {r.case.server} | {r.case.files_label} | {size} | {r.contender} "
            f"| {r.mb_s_median:.0f} | {r.mb_s_best:.0f} | {r.cpu_ms_per_mb:.2f} | {rss} "
            f"| {r.ratio:.2f} | {r.case.load} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for tool, flag in (("curl", "--version"), ("nginx", "-v")):
        try:
            out = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
            versions[tool] = (out.stdout or out.stderr).splitlines()[0]
        except (OSError, IndexError):
            versions[tool] = "?"
    inflaters = []
    for package in ("isal", "zlib-ng"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            inflaters.append(f"{package} {importlib.metadata.version(package)}")
    counter = byte_counter()[0]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        counter += f" {importlib.metadata.version(counter)}"
    return {
        "inflaters": ", ".join(inflaters) or "zlib only",
        "counter": counter,
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "curl": versions["curl"].split(" (")[0],
        "nginx": versions["nginx"].replace("nginx version: ", ""),
    }


def idle_text(*loads: Load) -> str:
    if all(load.idle for load in loads):
        return "an idle machine"
    cores = loads[0].cores
    return f"NOT an idle machine (idle: a 1-minute load <= {IDLE_FRACTION:g} x {cores} cores)"


def write_readme(text: str) -> None:
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    current = README.read_text() if README.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in current:
        current += f"\n{begin}\n{end}\n"
    head, rest = current.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    parser.add_argument("--sizes", help="comma-separated MB (default 20,200,2000)")
    parser.add_argument("--files", type=int, default=16, help="files per export")
    parser.add_argument("--parallel", type=int, default=4, help="N: connections at a time")
    parser.add_argument("--repeat", type=int, help="repetitions (default 5; --quick 3)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {','.join(MODES)}"
    )
    parser.add_argument("--sandbox-max-mb", type=float, default=300)
    parser.add_argument("--patients", type=int, default=100, help="sandbox patients (downloads)")
    parser.add_argument("--skip-sandbox", action="store_true", help="no sandbox downloads")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument(
        "--search-patients",
        type=int,
        help="sandbox patients for the search benchmark (default 4300: ~35k resources)",
    )
    parser.add_argument("--search-counts", default="100", help="page sizes, comma-separated")
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    add_arguments(parser)
    parser.add_argument("--note", help="what else ran on the machine, for the README's figures")
    parser.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the figures into benchmarks/README.md (default: on for full runs)",
    )
    args = parser.parse_args(argv)
    default_sizes = "5,20" if args.quick else "20,200,2000"
    args.size_list = [float(s) for s in (args.sizes or default_sizes).split(",")]
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.search_patients = args.search_patients or (300 if args.quick else 4300)
    args.search_counts = [int(c) for c in args.search_counts.split(",")]
    args.mode_list = [m for m in args.modes.split(",") if m]
    unknown = set(args.mode_list) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}")
    if args.readme is None:
        args.readme = not args.quick and args.sizes is None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed for the baselines (apt-get install -y curl)")
    start_load = check(args.require_idle)
    host = machine()
    host["loadavg_start"] = str(start_load)
    print(
        f"{host['nproc']} CPUs ({host['cpu']}), Python {host['python']}, {host['curl']}, "
        f"{host['nginx']}, installed inflaters: {host['inflaters']}, newline counter: "
        f"{host['counter']}; load average {start_load}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="backendauth-bench-"))
    work.chmod(0o755)  # nginx's workers run as another user when started as root
    CHILD_ENV.update(child_env(work))
    host["startup_ms"] = startup_ms(args.repeat)
    print(
        f"a fresh process's start-up and imports (bytecode compiled): "
        f"{host['startup_ms']:.0f} ms (median)",
        flush=True,
    )
    rows: list[Row] = []
    # The load before each case: the README says whether all were idle. The load after a
    # case is mostly the benchmark's own (four curl processes, the servers), so it is shown
    # in each row's column but does not make the machine "busy".
    loads = [start_load]
    raw: list[dict[str, Any]] = []
    warm = True

    def run_case(case: Case) -> None:
        nonlocal warm
        case.manifest_file = work / "manifest.json"
        case.manifest_file.write_text(json.dumps(case.manifest))
        warm = warm or case.mode == SEARCH_MODE  # the first search warms connections too
        before = check(args.require_idle, case.label)
        print(f"  {case.label}: {args.repeat} rounds, load average {before}...", flush=True)
        samples = measure(case, work, args, warm_up=warm)
        after = Load.now()
        case.load = span(before, after)
        loads.append(before)
        warm = False
        new = rows_for(case, samples, args.parallel)
        for row in new:
            print(
                f"    {row.contender:32} {row.mb_s_median:7.0f} MB/s "
                f"({row.cpu_ms_per_mb:.2f} CPU ms/MB)  {row.ratio:.2f}x",
                flush=True,
            )
        rows.extend(new)
        raw.append(
            {
                "case": case.label,
                "bytes": case.expected_bytes,
                "load_1min": case.load,
                "samples": {
                    n.format(n=args.parallel): [s.__dict__ for s in runs]
                    for n, runs in samples.items()
                },
            }
        )

    try:
        if not args.skip_nginx:
            block = fhir_like_block()
            with nginx(work / "www", work / "nginx") as server:
                print(f"nginx at {server.url}, work dir {work}", flush=True)
                for size in args.size_list:
                    files = make_files(work / "www", f"s{size:g}", size, args.files, block)
                    for mode in args.mode_list:
                        run_case(nginx_case(server, files, mode, size))
                    shutil.rmtree(work / "www" / "source" / f"s{size:g}")
                    for mode in MODES:
                        shutil.rmtree(work / "www" / mode / f"s{size:g}", ignore_errors=True)
        if not args.skip_sandbox:
            with sandbox(args.patients) as sb:
                print(f"sandbox at {sb.url} (own process)", flush=True)
                for size in [s for s in args.size_list if s <= args.sandbox_max_mb]:
                    case = sandbox_case(sb, size, args.files, args.patients)
                    try:
                        run_case(case)
                    finally:
                        drop_sandbox_case(sb, case)
        if not args.skip_search:
            with sandbox(args.search_patients) as sb:
                print(f"sandbox for searches at {sb.url}", flush=True)
                for count in args.search_counts:
                    run_case(search_case(sb, "Observation", count))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    end_load = Load.now()
    host["loadavg_end"] = str(end_load)
    text = table(rows)
    print(
        f"\nBulk downloads ({args.files} files, {args.parallel} at a time) and FHIR search, "
        f"{args.repeat} rounds; load average {start_load} at the start, {end_load} at the end "
        f"on {end_load.cores} cores:"
    )
    print(text)
    check(False, "the end of the run")  # warns again if the run ended on a busy machine
    if args.json:
        args.json.write_text(json.dumps({"machine": host, "cases": raw}, indent=1))
    if args.readme:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        note = f" ({args.note})" if args.note else ""
        write_readme(
            f"Last full run: {when}. Machine: {host['nproc']} CPUs ({host['cpu']}), "
            f"Python {host['python']}, Linux {host['kernel']}, {host['curl']}, "
            f"{host['nginx']}, installed inflaters: {host['inflaters']}, newline counter: "
            f"{host['counter']}; load average {host['loadavg_start']} at the start, "
            f"{host['loadavg_end']} at the end{note}; {idle_text(*loads)} before every case. "
            f"{args.files} files, {args.parallel} at a time, {args.repeat} rotating rounds. "
            f"A fresh process's start-up and imports (bytecode compiled, as installed): "
            f"{host['startup_ms']:.0f} ms, included in its rows. The last column is the "
            f"1-minute load average before and after each case's rounds.\n\n{text}"
        )
        print(f"(written to {README.relative_to(HERE.parent)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
