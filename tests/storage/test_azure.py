"""Azure Blob specifics, on Azurite: how a file is stored (blocks, one commit, no copy), what
an abandoned upload leaves (uncommitted blocks: invisible, dropped by the next commit of the
name), and that no path publishes a partial blob."""

from __future__ import annotations

import gc

import pytest

from airflow_provider_backendauth.core.storage.atomic import AtomicFile, atomic_writer
from airflow_provider_backendauth.core.storage.leftovers import discard_leftovers
from tests.storage.conftest import Container

pytestmark = pytest.mark.e2e  # real servers (Azurite, fake-gcs-server)

KIB = 2**10
PART = 256 * KIB


def test_small_file_is_one_put_blob(container: Container) -> None:
    with atomic_writer(container.path("out/state.json")) as f:
        f.write(b"{}")
    assert container.server.writes_by_blob(container.name) == {"out/state.json": {"PutBlob": 1}}


def test_large_file_is_blocks_and_one_block_list(container: Container) -> None:
    atomic = AtomicFile(container.path("out/big.ndjson"), part_size=PART)
    atomic.handle.write(b"x" * (3 * PART + 5))
    atomic.commit()
    (ops,) = container.server.writes_by_blob(container.name).values()
    assert ops["PutBlockList"] == 1 and ops["PutBlock"] >= 3, ops
    assert set(ops) == {"PutBlock", "PutBlockList"}  # no PutBlob, no CopyBlob, no delete
    assert container.uncommitted() == {}


def test_discarded_upload_leaves_uncommitted_blocks_until_the_name_is_committed(
    container: Container,
) -> None:
    # Azure has no "abort": the staged blocks of a discarded (or killed) upload stay as
    # uncommitted blocks, which no listing, read or size shows. The next commit of the same
    # name drops them (Put Block List discards every uncommitted block it does not name);
    # Azure also deletes them after a week without a commit. discard_leftovers has nothing to do.
    first = AtomicFile(container.path("out/f.ndjson"), part_size=PART)
    first.handle.write(b"a" * (3 * PART))
    first.discard()
    assert container.blobs() == {}
    assert container.uncommitted() == {"out/f.ndjson": 3}
    assert not container.path("out/f.ndjson").exists()
    assert discard_leftovers(container.path("out/f.ndjson")) is None
    with AtomicFile(container.path("out/f.ndjson"), part_size=PART) as f:
        f.write(b"b" * (2 * PART))
    assert container.blobs() == {"out/f.ndjson": b"b" * (2 * PART)}
    assert container.uncommitted() == {}


def test_upload_dropped_without_commit_publishes_nothing(container: Container) -> None:
    # An AtomicFile that is garbage-collected unfinished (a bug, or a thread torn down) must
    # not publish: adlfs's own finalizer closes, and so commits, an unclosed file.
    atomic = AtomicFile(container.path("out/dropped.ndjson"), part_size=PART)
    atomic.handle.write(b"d" * (2 * PART + 3))
    del atomic
    gc.collect()
    assert container.blobs() == {}
