"""One download as a user runs it: a fresh interpreter that imports the client, downloads a
manifest's files and exits. ``run.py`` times this whole process (start-up and imports
included) and reads its CPU time from ``wait4``; this prints what only the child knows.

    python benchmarks/download_child.py --manifest M --dest DIR --token=T --origin URL
    python benchmarks/download_child.py --imports-only   # start-up and imports alone
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from airflow_provider_backendauth.core.auth.tokens import AccessToken
from airflow_provider_backendauth.core.bulk.download import BulkDownloader
from airflow_provider_backendauth.core.bulk.files import plan_files
from airflow_provider_backendauth.core.bulk.manifest import BulkManifest
from airflow_provider_backendauth.core.http.authorized import AuthorizedSessions
from airflow_provider_backendauth.core.http.sessions import plain_session


class StaticToken:
    """A fixed bearer token (the benchmark measures downloads, not OAuth)."""

    def __init__(self, value: str) -> None:
        self.token = AccessToken(value=value, expires_at=time.time() + 3600)

    def get(self) -> AccessToken:
        return self.token

    def invalidate(self, value: str | None = None) -> None:
        pass


def download(
    manifest: BulkManifest, destination: Any, token: str, origin: str, parallel: int
) -> tuple[int, int]:
    """Download every output file; returns (decoded bytes, lines)."""
    # The sessions a connection makes (BackendAuthClient.new_plain_session), minus the key.
    http = AuthorizedSessions(plain_session, StaticToken(token), [origin], timeout=120)
    downloader = BulkDownloader(http, parallel=parallel)
    results = downloader.download(
        plan_files(manifest), destination, requires_access_token=manifest.requires_access_token
    )
    return sum(r.bytes for r in results), sum(r.count for r in results)


def vmhwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--imports-only", action="store_true", help="exit after the imports")
    for name in ("--manifest", "--dest", "--token", "--origin"):
        parser.add_argument(name)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--object-storage", action="store_true")
    args = parser.parse_args()
    if args.imports_only:
        return
    if None in (args.manifest, args.dest, args.token, args.origin):
        parser.error("--manifest, --dest, --token and --origin are required")
    manifest = BulkManifest.from_json(json.loads(Path(args.manifest).read_text()))
    destination: Any = Path(args.dest)
    if args.object_storage:
        from airflow.sdk import ObjectStoragePath

        destination = ObjectStoragePath(destination.as_uri())
    nbytes, lines = download(manifest, destination, args.token, args.origin, args.parallel)
    print(json.dumps({"bytes": nbytes, "lines": lines, "vmhwm_kb": vmhwm_kb()}))


if __name__ == "__main__":
    main()
