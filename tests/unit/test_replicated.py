"""R-STORE-4: every chunk on every replica; reads verify and repair; scrub finds all."""

from __future__ import annotations

import hashlib

import pytest

from allset.blobstore.backend import chunk_key
from allset.blobstore.memory import MemoryBackend
from allset.blobstore.replicated import RepairEvent, ReplicatedStore
from allset.core.errors import IntegrityError, StorageUnavailable


def setup() -> tuple[ReplicatedStore, MemoryBackend, MemoryBackend, list[RepairEvent]]:
    a, b = MemoryBackend("a"), MemoryBackend("b")
    events: list[RepairEvent] = []
    return ReplicatedStore([a, b], on_repair=events.append), a, b, events


def test_put_writes_every_replica() -> None:
    store, a, b, _ = setup()
    d = hashlib.sha256(b"data").hexdigest()
    store.put("t", d, b"data")
    assert a.get(chunk_key("t", d)) == b"data" == b.get(chunk_key("t", d))
    assert store.has_all("t", d)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_read_skips_bad_copy_and_repairs_it(damage: str) -> None:
    store, a, _b, events = setup()
    d = hashlib.sha256(b"payload").hexdigest()
    store.put("t", d, b"payload")
    k = chunk_key("t", d)
    if damage == "corrupt":
        a.corrupt(k)
    else:
        a.delete(k)
    assert store.get("t", d) == b"payload"
    assert a.get(k) == b"payload"  # repaired
    assert [(e.replica, e.problem, e.repaired) for e in events] == [("a", damage, True)]


def test_all_copies_bad_is_an_error_not_wrong_bytes() -> None:
    store, a, b, _ = setup()
    d = hashlib.sha256(b"z").hexdigest()
    store.put("t", d, b"z")
    a.corrupt(chunk_key("t", d))
    b.corrupt(chunk_key("t", d))
    with pytest.raises(IntegrityError):
        store.get("t", d)


def test_scrub_reports_then_repairs() -> None:
    store, a, b, _ = setup()
    digests = []
    for i in range(5):
        data = f"chunk {i}".encode()
        d = hashlib.sha256(data).hexdigest()
        store.put("t", d, data)
        digests.append(d)
    a.corrupt(chunk_key("t", digests[0]))
    b.delete(chunk_key("t", digests[3]))
    report = store.scrub([("t", d) for d in digests], repair=False)
    assert report.checked == 5
    assert {(p.replica, p.problem, p.repaired) for p in report.problems} == {
        ("a", "corrupt", False),
        ("b", "missing", False),
    }
    report = store.scrub([("t", d) for d in digests], repair=True)
    assert all(p.repaired for p in report.problems) and len(report.problems) == 2
    assert store.scrub([("t", d) for d in digests], repair=False).ok


class _FullDisk(MemoryBackend):
    def put(self, key: str, data: bytes | memoryview) -> None:
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("size", [10, 200_000])  # written in turn / in parallel
def test_a_replica_that_cannot_write_fails_the_put(size: int) -> None:
    good, full = MemoryBackend("a"), _FullDisk("b")
    store = ReplicatedStore([good, full])
    data = bytes(size)
    d = hashlib.sha256(data).hexdigest()
    with pytest.raises(StorageUnavailable, match=r"b: .*No space left"):
        store.put("t", d, data)
    assert not store.has_all("t", d)  # never reported as stored
