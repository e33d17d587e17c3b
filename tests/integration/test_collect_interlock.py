"""Chunk collection and commits across worker processes (docs/design/multi-process.md,
files/leases.py): leases live in one process's memory, so a commit of any process and
the collector exclude each other through a ``flock`` in the data dir, and a commit checks
that the bytes of every chunk row it adds are still on every replica. A collector that
deleted bytes first makes the commit refuse ("send it again"); a commit that came first
makes the collector keep the chunk. Never a file whose bytes are gone (R-STORE-4).

"Another process" here is a real one: a Python subprocess holding the lock file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from allset.blobstore.chunker import MAX_SIZE
from allset.core.errors import NotFound, StorageUnavailable
from allset.core.paths import parse_path
from allset.files import maintenance
from allset.files import upload as upload_module
from allset.files.upload import begin_upload, store_bytes
from allset.runtime import Runtime
from conftest import make_account
from lockholder import OtherProcess


def chunk_files(rt: Runtime) -> list[Path]:
    return [p for v in rt.settings.volume_paths for p in (v / "chunks").rglob("*") if p.is_file()]


def interlock(rt: Runtime) -> Path:
    return rt.settings.data_dir / "run" / "collect.lock"


def test_collector_waits_for_a_commit_of_another_process(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = make_account(runtime)
    p = acct.principal
    store_bytes(runtime.files, p, parse_path("/gone.bin"), os.urandom(300_000))
    runtime.files.delete(p, "/gone.bin")
    runtime.files.trash_purge(p)  # its chunk rows are unreferenced now
    files = chunk_files(runtime)
    assert files
    monkeypatch.setattr(maintenance, "INTERLOCK_WAIT", 0.3)

    other = OtherProcess(interlock(runtime), "shared")  # a commit in flight there
    try:
        report = maintenance.collect_chunks(runtime.files)
        assert report.chunks_freed == 0, "collected while another process was committing"
        assert all(f.exists() for f in files)
    finally:
        other.release()
    report = maintenance.collect_chunks(runtime.files)
    assert report.chunks_freed == len(files) // 2  # two replicas of each
    assert chunk_files(runtime) == []
    assert runtime.files.usage(p).used == 0


def test_commit_waits_for_a_collector_of_another_process(runtime: Runtime) -> None:
    acct = make_account(runtime)
    data = os.urandom(4096)
    other = OtherProcess(interlock(runtime), "exclusive")  # deleting bytes there
    done = threading.Event()
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            store_bytes(runtime.files, acct.principal, parse_path("/new.bin"), data)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=upload)
    worker.start()
    try:
        assert not done.wait(1.0), "committed while another process was collecting"
        with pytest.raises(NotFound):
            runtime.files.stat(acct.principal, "/new.bin")
    finally:
        other.release()
    assert done.wait(60) and not errors, errors
    worker.join(timeout=10)
    assert runtime.files.stat(acct.principal, "/new.bin").size == len(data)


def test_commit_refuses_when_its_written_bytes_were_collected(runtime: Runtime) -> None:
    """The bytes an upload wrote have no row until it commits; a collector of another
    process that found them past the grace period deleted them. Leases of this process
    cannot know: the commit's own check must."""
    acct = make_account(runtime)
    size = 3 * MAX_SIZE  # chunks are cut (and stored) before the end
    up = begin_upload(runtime.files, acct.principal, parse_path("/slow.bin"), expected_size=size)
    up.write(os.urandom(size))
    assert b"".join(up.read_back(size)) == b""  # (waits until what was cut is stored)
    written = chunk_files(runtime)
    assert written
    for f in written:
        f.unlink()
    with pytest.raises(StorageUnavailable, match="send it again"):
        up.commit()
    with pytest.raises(NotFound):
        runtime.files.stat(acct.principal, "/slow.bin")
    assert runtime.files.usage(acct.principal).used == 0


def test_an_aborted_upload_leaves_bytes_a_commit_elsewhere_may_use(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aborted upload deletes the chunks only it wrote, as the collector would, so the
    same interlock: while a commit of another process is in flight (it may have written
    the same bytes), the files stay, and the orphan collection takes them later."""
    acct = make_account(runtime)
    monkeypatch.setattr(upload_module, "ABORT_WAIT", 0.3)
    size = 3 * MAX_SIZE
    up = begin_upload(runtime.files, acct.principal, parse_path("/cut.bin"), expected_size=size)
    up.write(os.urandom(size))
    assert b"".join(up.read_back(size)) == b""
    written = chunk_files(runtime)
    assert written
    other = OtherProcess(interlock(runtime), "shared")
    try:
        up.abort()
        assert all(f.exists() for f in written), "deleted while a commit elsewhere was in flight"
    finally:
        other.release()
    report = maintenance.collect_orphans(runtime.files, grace_seconds=0)
    assert report.orphan_files == len(written) // 2  # keys, each on two replicas
    assert chunk_files(runtime) == []

    # Alone, an abort deletes at once.
    up = begin_upload(runtime.files, acct.principal, parse_path("/cut.bin"), expected_size=size)
    up.write(os.urandom(size))
    assert b"".join(up.read_back(size)) == b""
    assert chunk_files(runtime)
    up.abort()
    assert chunk_files(runtime) == []


def test_copy_and_restore_wait_for_a_collector_of_another_process(runtime: Runtime) -> None:
    """A copy or a restored version adds references to stored chunks without uploading:
    the same interlock as a commit, or a collector elsewhere could free a chunk between
    its last check and the copy's COMMIT (the source's version purged meanwhile)."""
    acct = make_account(runtime)
    p = acct.principal
    store_bytes(runtime.files, p, parse_path("/a.bin"), os.urandom(300_000))
    first = runtime.files.stat(p, "/a.bin").version
    store_bytes(runtime.files, p, parse_path("/a.bin"), os.urandom(300_000))
    for name, action in [
        ("copy", lambda: runtime.files.copy(p, "/a.bin", "/b.bin")),
        ("restore", lambda: runtime.files.restore_version(p, "/a.bin", first)),
    ]:
        other = OtherProcess(interlock(runtime), "exclusive")
        done = threading.Event()
        worker = threading.Thread(target=lambda a=action, d=done: (a(), d.set()))
        worker.start()
        try:
            assert not done.wait(1.0), f"{name} committed while another process collected"
        finally:
            other.release()
        assert done.wait(60), name
        worker.join(timeout=10)
    assert runtime.files.stat(p, "/b.bin").size == 300_000
    assert len(runtime.files.versions(p, "/a.bin")) == 3
