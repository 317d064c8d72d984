"""What killed earlier tries left is found with one listing per folder for a whole download
run, not one per file (an export of thousands of files made that quadratic), and only the
run's own files' leftovers are dropped."""

from __future__ import annotations

import pathlib
from collections import Counter
from typing import Any, ClassVar

import pytest

from airflow_provider_backendauth.core.bulk.request import BulkExportRequest
from airflow_provider_backendauth.core.storage.leftovers import Leftovers, discard_leftovers
from airflow_provider_backendauth.core.storage.paths import partial_name
from tests.support.bulkkit import BulkEnv, partials

pytest_plugins = ("tests.support.bulk_fixtures",)


class CountingPath(type(pathlib.Path())):  # type: ignore[misc]
    """A local path that counts every directory listing made through it (the paths the
    downloader derives from the destination keep the class)."""

    listings: ClassVar[Counter[str]] = Counter()

    def iterdir(self) -> Any:
        CountingPath.listings[str(self)] += 1
        return super().iterdir()


@pytest.fixture
def counting() -> Counter[str]:
    CountingPath.listings.clear()
    return CountingPath.listings


def export_patients(bulk_env: BulkEnv, lines_per_file: int, destination: pathlib.Path) -> int:
    """Export the sandbox's 20 Patients in files of ``lines_per_file`` lines; returns how
    many files were downloaded."""
    bulk_env.sb.settings.update(bulk_lines_per_file=lines_per_file)
    job = bulk_env.job(
        CountingPath(destination), state_dir=destination.with_name(f"{destination.name}-state")
    )
    job.start(BulkExportRequest.create("system", types="Patient"), since_key="s")
    manifest = job.wait()
    job.accept_manifest(manifest)
    return len(job.download(manifest))


def test_listings_do_not_grow_with_the_number_of_files(
    bulk_env: BulkEnv, counting: Counter[str]
) -> None:
    listings = {}
    for lines_per_file in (10, 1):  # 2 files, then 20
        out = bulk_env.tmp / f"out-{lines_per_file}"
        assert export_patients(bulk_env, lines_per_file, out) == 20 // lines_per_file
        assert not partials(out)
        listings[lines_per_file] = counting[str(out)]
    # The job's sweep of its folders, and one look for each file's leftovers for the whole
    # run (that look used to be one listing per file: 3 and 21 here).
    assert listings == {10: 2, 1: 2}, counting


def test_leftovers_drops_only_the_files_asked_about(tmp_path: pathlib.Path) -> None:
    killed = [tmp_path / partial_name("a.ndjson") for _ in range(2)]
    # Another writer's temporary files in the same folder, and a name that only starts alike.
    other = [tmp_path / partial_name("a.ndjson.bak"), tmp_path / partial_name("b.ndjson")]
    for path in (*killed, *other):
        path.write_bytes(b"half")
    leftovers = Leftovers()
    assert leftovers.discard(tmp_path / "a.ndjson") == "2 temporary file(s), 8 bytes"
    assert leftovers.discard(tmp_path / "a.ndjson") is None  # nothing twice
    for name in ("c", "d", "e"):
        assert leftovers.discard(tmp_path / name) is None
    assert leftovers.listings == 1
    assert not any(path.exists() for path in killed)
    assert all(path.exists() for path in other)
    # Temporary files made after the listing (this run's own writers) are never leftovers.
    mine = tmp_path / partial_name("f.ndjson")
    mine.write_bytes(b"in progress")
    assert leftovers.discard(tmp_path / "f.ndjson") is None
    assert mine.exists()


def test_discard_leftovers_lists_for_its_one_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / partial_name("cut.ndjson")).write_bytes(b"half")
    (tmp_path / partial_name("other.ndjson")).write_bytes(b"x")
    assert discard_leftovers(tmp_path / "cut.ndjson") == "1 temporary file(s), 4 bytes"
    assert discard_leftovers(tmp_path / "cut.ndjson") is None
    assert [p.name.split(".partial-")[0] for p in tmp_path.iterdir()] == [".other.ndjson"]


class PagingS3:
    """The two S3 calls ``Leftovers`` makes, answering ListMultipartUploads in pages of 2 as
    S3 does past 1,000 (moto's server answers every upload in one page, so cannot show it)."""

    protocol = "s3"

    def __init__(self, keys: list[str]) -> None:
        self.uploads = [{"Key": key, "UploadId": f"u{i}"} for i, key in enumerate(sorted(keys))]
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def split_path(self, path: str) -> tuple[str, str, None]:
        bucket, _, key = path.partition("/")
        return bucket, key, None

    def call_s3(self, method: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, kwargs))
        if method == "abort_multipart_upload":
            self.uploads = [u for u in self.uploads if u["UploadId"] != kwargs["UploadId"]]
            return {}
        listed = [u for u in self.uploads if u["Key"].startswith(kwargs["Prefix"])]
        start = 0
        if "KeyMarker" in kwargs:
            marker = (kwargs["KeyMarker"], kwargs["UploadIdMarker"])
            start = next(i for i, u in enumerate(listed) if (u["Key"], u["UploadId"]) == marker) + 1
        page = listed[start : start + 2]
        truncated = start + 2 < len(listed)
        answer: dict[str, Any] = {"Uploads": page, "IsTruncated": truncated}
        if truncated:
            answer.update(NextKeyMarker=page[-1]["Key"], NextUploadIdMarker=page[-1]["UploadId"])
        return answer


class S3Path:
    def __init__(self, fs: PagingS3, path: str) -> None:
        self.fs, self.path, self.protocol = fs, path, "s3"
        self.name = path.rsplit("/", 1)[1]

    def __str__(self) -> str:
        return f"s3://{self.path}"

    @property
    def parent(self) -> S3Path:
        return S3Path(self.fs, self.path.rsplit("/", 1)[0])


def test_s3_listing_pages_are_followed() -> None:
    fs = PagingS3(["out/a", "out/b", "out/c", "out/deeper/z", "out/z", "out/z"])
    leftovers = Leftovers()
    assert leftovers.discard(S3Path(fs, "b/out/z")) == "2 incomplete multipart upload(s)"
    assert leftovers.discard(S3Path(fs, "b/out/a")) == "1 incomplete multipart upload(s)"
    assert leftovers.listings == 3  # 6 uploads in pages of 2, listed once for both files
    assert [u["Key"] for u in fs.uploads] == ["out/b", "out/c", "out/deeper/z"]
