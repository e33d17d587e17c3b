"""tus uploads held by one request at a time, whichever process serves it: the part
file's ``flock`` (files.resumable) seen through the app and through a second runtime on
the same data dir and database, which is what a second worker process is to this one
(flock belongs to the open file, so two runtimes in one process exclude each other
exactly as two processes do). The two-process tests with real servers and kill -9 are
tests/system/test_tus_processes.py. On SQLite and PostgreSQL."""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from test_tus import OFFSET, TUS, create, digest, meta, patch

from allset.core.errors import Locked
from allset.db.models import utcnow
from allset.files import resumable
from allset.runtime import Runtime, build_runtime
from allset.server.app import build_app
from conftest import Account, problem


@pytest.fixture
def other(runtime: Runtime) -> Iterator[Runtime]:
    """A second runtime on the same data dir and database: another worker process."""
    rt = build_runtime(runtime.settings)
    yield rt
    rt.close()


def upload_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def chunk_files(rt: Runtime) -> set[Path]:
    return {f for v in rt.settings.volume_paths for f in (v / "chunks").rglob("*") if f.is_file()}


def test_a_second_patch_is_refused_at_once_in_any_process(
    client: TestClient, alice: Account, runtime: Runtime, other: Runtime
) -> None:
    """One behaviour for a second request whether it lands in the same process or
    another: 423 Locked with a problem+json saying to retry, nothing written."""
    url = create(client, alice, 10, filename="held.bin").headers["location"]
    uid = upload_id(url)
    held = runtime.resumables.open_append(alice.principal, uid, 0, None)
    try:
        same = patch(client, alice, url, 0, b"zz")
        assert same.status_code == 423, same.text
        assert "retry" in problem(same)["detail"]
        assert client.delete(url, auth=alice.auth, headers=TUS).status_code == 423
        with pytest.raises(Locked):
            other.resumables.open_append(alice.principal, uid, 0, None)
        with pytest.raises(Locked):
            other.resumables.terminate(alice.principal, uid)
        held.write(b"abc")
        assert held.finish().offset == 3
    except BaseException:
        held.interrupted()
        raise
    # Let go: the other process continues from the offset this one recorded.
    more = other.resumables.open_append(alice.principal, uid, 3, None)
    more.write(b"defghij")
    done = more.finish()
    assert done.done and done.result["sha256"]
    got = client.get("/api/v1/files/held.bin", auth=alice.auth)
    assert got.content == b"abcdefghij"


def test_another_clients_busy_upload_is_404_not_423(
    client: TestClient, alice: Account, bob: Account, runtime: Runtime
) -> None:
    url = create(client, alice, 10, filename="mine.bin").headers["location"]
    held = runtime.resumables.open_append(alice.principal, upload_id(url), 0, None)
    try:
        assert patch(client, bob, url, 0, b"x").status_code == 404
        assert client.delete(url, auth=bob.auth, headers=TUS).status_code == 404
    finally:
        held.interrupted()


def test_concatenation_refused_while_a_part_is_held(
    client: TestClient, alice: Account, runtime: Runtime, other: Runtime
) -> None:
    urls = []
    for piece in (b"first ", b"second"):
        url = create(client, alice, len(piece), {"Upload-Concat": "partial"}).headers["location"]
        assert patch(client, alice, url, 0, piece).status_code == 204
        urls.append(url)
    final_headers = {
        **TUS,
        "Upload-Concat": "final;" + " ".join(urls),
        "Upload-Metadata": meta(filename="joined.txt"),
    }
    # An empty PATCH at the end of a part holds it as long as a long one would.
    held = other.resumables.open_append(alice.principal, upload_id(urls[1]), 6, None)
    try:
        refused = client.post("/tus/", auth=alice.auth, headers=final_headers)
        assert refused.status_code == 423, refused.text
    finally:
        held.interrupted()
    joined = client.post("/tus/", auth=alice.auth, headers=final_headers)
    assert joined.status_code == 201, joined.text
    assert client.get("/api/v1/files/joined.txt", auth=alice.auth).content == b"first second"


def test_expiry_leaves_an_upload_a_request_holds(
    client: TestClient, alice: Account, runtime: Runtime, other: Runtime
) -> None:
    """Maintenance in another process skips an upload being written to (its PATCH
    extends its life), and takes it once nobody holds it and it is still expired."""
    url = create(client, alice, 100, filename="slow.bin").headers["location"]
    uid = upload_id(url)
    part = runtime.resumables.part_path(uid)
    held = runtime.resumables.open_append(alice.principal, uid, 0, None)
    try:
        held.write(b"a" * 10)
        assert other.resumables.expire(utcnow() + timedelta(hours=25)) == 0
        assert part.exists()
        assert held.finish().offset == 10
    except BaseException:
        held.interrupted()
        raise
    assert part.read_bytes() == b"a" * 10
    assert other.resumables.expire(utcnow() + timedelta(hours=23)) == 0  # extended
    assert other.resumables.expire(utcnow() + timedelta(hours=25)) == 1
    assert not part.exists()
    assert client.head(url, auth=alice.auth, headers=TUS).status_code == 404


def test_expiry_reclaims_orphan_part_files_nobody_holds(runtime: Runtime) -> None:
    """Part files without a row (a crash between the file and the row), over an hour
    old, are reclaimed, except one another process holds (here the test holds it)."""
    root = runtime.resumables.root
    free, held = root / "orphanfree.part", root / "orphanheld.part"
    for f in (free, held):
        f.write_bytes(b"left over")
        os.utime(f, (time.time() - 7200, time.time() - 7200))
    with held.open("r+b") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        runtime.resumables.expire()
        assert not free.exists() and held.exists()
    runtime.resumables.expire()
    assert not held.exists()


def test_a_process_lets_go_of_uploads_another_moved_on(
    client: TestClient,
    alice: Account,
    runtime: Runtime,
    other: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Process A chunks the first PATCH of an upload as it arrives (a live Upload kept
    for the next PATCH); the next lands in B. A must neither feed its stale Upload nor
    keep it forever: when A needs room for a new one it lets go of it, deleting none of
    its chunks (B may be committing the same bytes from the part file meanwhile; the
    collector reclaims real orphans)."""
    monkeypatch.setattr(resumable, "MAX_LIVE", 1)
    with TestClient(
        build_app(other, tls=False), base_url="https://testserver", raise_server_exceptions=False
    ) as via_b:
        data = random.Random(7).randbytes(10 * 1024 * 1024)
        url = create(client, alice, len(data), filename="moved.bin").headers["location"]
        first = 9 * 1024 * 1024  # over the chunker's maximum: chunks are stored on the way
        assert patch(client, alice, url, 0, data[:first]).status_code == 204
        assert set(runtime.resumables._live) == {upload_id(url)}
        assert patch(via_b, alice, url, first, data[first : first + 1000]).status_code == 204
        stored = chunk_files(runtime)
        assert stored

        fresh = create(client, alice, 10, filename="fresh.bin").headers["location"]
        assert patch(client, alice, fresh, 0, b"12345").status_code == 204
        assert set(runtime.resumables._live) == {upload_id(fresh)}  # the stale one let go
        assert chunk_files(runtime) >= stored

        last = patch(client, alice, url, first + 1000, data[first + 1000 :])
        assert last.status_code == 204, last.text
        assert last.headers["repr-digest"] == digest(data)
        assert via_b.get("/api/v1/files/moved.bin", auth=alice.auth).content == data
        h = {**TUS, "Upload-Offset": "5", "Content-Type": OFFSET}
        r = via_b.patch(fresh, auth=alice.auth, headers=h, content=b"67890")
        assert r.status_code == 204 and r.headers["repr-digest"] == digest(b"1234567890")
