"""One contract suite for every Backend implementation (memory, local; S3 later)."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from allset.blobstore import local
from allset.blobstore.backend import Backend, ObjectMissing, chunk_key
from allset.blobstore.local import LocalBackend
from allset.blobstore.memory import MemoryBackend
from lockholder import OtherProcess


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    factories: dict[str, Callable[[], Backend]] = {
        "memory": MemoryBackend,
        "local": lambda: LocalBackend(tmp_path / "vol", "vol"),
    }
    return factories[request.param]()


def key(data: bytes, tenant: str = "t1") -> str:
    return chunk_key(tenant, hashlib.sha256(data).hexdigest())


def test_put_get_roundtrip(backend: Backend) -> None:
    k = key(b"abc")
    backend.put(k, b"abc")
    assert backend.get(k) == b"abc"
    assert backend.exists(k)


def test_missing_raises(backend: Backend) -> None:
    with pytest.raises(ObjectMissing):
        backend.get(key(b"nope"))
    assert not backend.exists(key(b"nope"))


def test_put_is_idempotent_and_delete_too(backend: Backend) -> None:
    k = key(b"x" * 1000)
    backend.put(k, b"x" * 1000)
    backend.put(k, memoryview(b"x" * 1000))
    assert backend.get(k) == b"x" * 1000
    backend.delete(k)
    backend.delete(k)
    assert not backend.exists(k)


def test_keys_lists_everything_partitioned_by_tenant(backend: Backend) -> None:
    ks = {key(b"a", "t1"), key(b"a", "t2"), key(b"b", "t1")}
    for k in ks:
        backend.put(k, b"a" if k.endswith(hashlib.sha256(b"a").hexdigest()) else b"b")
    assert set(backend.keys()) == ks


def test_concurrent_writers_of_same_key(backend: Backend) -> None:
    data = bytes(range(256)) * 4096
    k = key(data)
    threads = [threading.Thread(target=backend.put, args=(k, data)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert backend.get(k) == data


def test_age_is_measured(backend: Backend) -> None:
    k = key(b"age")
    backend.put(k, b"age")
    assert 0 <= backend.age_seconds(k) < 60
    with pytest.raises(ObjectMissing):
        backend.age_seconds(key(b"other"))


def temp_files(vol: Path) -> list[Path]:
    """Temporary writes, not the markers of running processes (``<boot>.boot``)."""
    return [f for f in (vol / "tmp").iterdir() if f.suffix != ".boot"]


def test_local_leaves_no_temp_files_and_cleans_old_ones(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "vol", "vol")
    b.put(key(b"q"), b"q")
    assert temp_files(tmp_path / "vol") == []
    stale = tmp_path / "vol" / "tmp" / "deadboot-xyz.tmp"
    stale.write_bytes(b"partial")
    assert b.cleanup_temporary() == 1
    assert not stale.exists()


def test_local_keeps_temp_files_of_other_running_processes(tmp_path: Path) -> None:
    """Worker processes share the volumes: a sibling's write in progress is not abandoned
    while the sibling runs (its marker is locked), and is reclaimed once it has died."""
    b = LocalBackend(tmp_path / "vol", "vol")
    b.put(key(b"q"), b"q")  # this process's own marker
    tmp = tmp_path / "vol" / "tmp"
    marker = tmp / "sib-ling.boot"  # boot ids are URL-safe base64: "-" happens
    marker.touch()
    writing = tmp / "sib-ling-7.tmp"
    writing.write_bytes(b"half")
    sibling = OtherProcess(marker, "shared")
    try:
        assert b.cleanup_temporary() == 0
        assert writing.exists() and marker.exists()
    finally:
        sibling.release()
    assert b.cleanup_temporary() == 1
    assert not writing.exists() and not marker.exists()
    assert len(list(tmp.glob("*.boot"))) == 1  # ours, still held


def test_local_rejects_malformed_keys(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "vol", "vol")
    for bad in ("../x/abc", "t1/../../etc", "noslash", "t1/a"):
        with pytest.raises(ValueError, match="malformed"):
            b.put(bad, b"x")


def test_put_many_stores_each_object(backend: Backend) -> None:
    datas = [bytes([i]) * (100 + i) for i in range(40)]
    backend.put_many([(key(d), d) for d in datas])
    for d in datas:
        assert backend.get(key(d)) == d
    backend.put_many([(key(datas[0]), memoryview(datas[0]))])  # idempotent
    assert backend.get(key(datas[0])) == datas[0]
    backend.put_many([])


def test_local_put_many_leaves_no_temp_files(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "vol", "vol")
    b.put_many([(key(bytes([i])), bytes([i])) for i in range(10)])
    assert temp_files(tmp_path / "vol") == []
    assert len(list(b.keys())) == 10


def _resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache (mincore(2) on a mapping that touches none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    with path.open("rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
        start = ctypes.c_char.from_buffer(m)  # copy-on-write mapping: nothing is written
        try:
            rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(start)), ctypes.c_size_t(size), vec)
            assert rc == 0, os.strerror(ctypes.get_errno())
        finally:
            del start  # the mapping cannot close while exported
    return sum(v & 1 for v in vec)


@pytest.mark.parametrize(
    "size",
    [
        local.DIRECT_MIN,  # whole blocks only
        local.DIRECT_MIN + 1,  # a one-byte tail written through the page cache
        3 * local._PIECE + 4095,  # several bounce pieces and a tail
        4 * 1024 * 1024 + 12345,  # the chunker's biggest chunk plus a tail
    ],
)
def test_local_big_objects_bypass_the_page_cache_byte_exact(tmp_path: Path, size: int) -> None:
    """Big chunks go to the device with O_DIRECT (a third of a big PUT's CPU was the
    kernel copying them into the page cache): the whole blocks stay out of the cache,
    only the tail's page is cached, and the file is byte-exact, size included."""
    b = LocalBackend(tmp_path / "vol", "vol")
    data = os.urandom(size)
    k = key(data)
    b.put(k, data)
    path = tmp_path / "vol" / "chunks" / k.replace("/", f"/{k.split('/')[1][:2]}/", 1)
    assert path.stat().st_size == size
    assert _resident_pages(path) <= (1 if size % local._ALIGN else 0)
    assert b._direct  # the file system took O_DIRECT: it was not silently dropped
    assert b.get(k) == data
    assert temp_files(tmp_path / "vol") == []


def test_local_many_big_writers_at_once_share_the_bounce_buffers(tmp_path: Path) -> None:
    """More concurrent writers than bounce buffers: the others go through the page cache,
    and every object is still exact."""
    b = LocalBackend(tmp_path / "vol", "vol")
    datas = [os.urandom(local.DIRECT_MIN + 1000 * i + 7) for i in range(3 * local._BOUNCE_MAX)]
    threads = [threading.Thread(target=b.put, args=(key(d), d)) for d in datas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(b.get(key(d)) == d for d in datas)
    assert local._BOUNCE.made <= local._BOUNCE_MAX
