"""The shared table (core.shared_table): one file, several processes, one set of records.

Processes are started with the spawn method (what ``serve --workers`` uses: nothing is
inherited but the file), and every test opens the table through its path as a worker
would."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import struct
from pathlib import Path

from allset.accounts.throttle import LoginThrottle
from allset.accounts.throttle import open_table as open_throttle_table
from allset.core.shared_table import HEADER_SIZE, SharedTable, Values

SPAWN = multiprocessing.get_context("spawn")


def _add_one(record: Values | None) -> Values:
    return ((record or (0.0,))[0] + 1,)


def _count(path: Path, name: str, times: int) -> None:
    """In a child: add one to ``name``'s counter ``times`` times."""
    table = SharedTable.open(path, sets=4, ways=2, fields=1)
    try:
        key = table.key(name)
        for _ in range(times):
            table.update(key, _add_one)
    finally:
        table.close()


def _fill(path: Path, prefix: str, n: int) -> None:
    """In a child: ``n`` records of fresh keys."""
    table = SharedTable.open(path, sets=4, ways=2, fields=1)
    try:
        for i in range(n):
            table.update(table.key(f"{prefix}{i}"), lambda _r: (1.0,))
    finally:
        table.close()


def run(target: object, *args: object) -> None:
    p = SPAWN.Process(target=target, args=args)
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 0, f"child failed: {p.exitcode}"


def test_updates_from_several_processes_are_never_lost(tmp_path: Path) -> None:
    path = tmp_path / "run" / "t.shm"
    table = SharedTable.open(path, sets=4, ways=2, fields=1)
    procs = [SPAWN.Process(target=_count, args=(path, "hits", 2000)) for _ in range(3)]
    for p in procs:
        p.start()
    _count(path, "hits", 2000)  # this process too, at the same time
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert table.get(table.key("hits")) == (8000.0,)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"hits" not in path.read_bytes()  # keys are keyed digests, never in clear
    table.close()


def test_a_full_table_forgets_the_oldest_records(tmp_path: Path) -> None:
    path = tmp_path / "t.shm"
    table = SharedTable.open(path, sets=4, ways=2, fields=1)
    run(_fill, path, "old", 200)  # 8 slots: full many times over
    assert table.occupied() == 8
    table.update(table.key("new"), lambda _r: (7.0,))  # room is always made
    assert table.get(table.key("new")) == (7.0,)
    assert table.occupied() == 8
    # The newest records survived (each set keeps its two latest); the earliest went.
    assert table.get(table.key("old199")) == (1.0,)
    assert sum(table.get(table.key(f"old{i}")) is not None for i in range(200)) == 7
    assert all(table.get(table.key(f"old{i}")) is None for i in range(10))
    table.update(table.key("new"), lambda _r: None)
    assert table.get(table.key("new")) is None
    assert table.occupied() == 7
    table.close()


def test_a_truncated_corrupt_or_foreign_file_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "t.shm"
    first = SharedTable.open(path, sets=4, ways=2, fields=1)
    first.update(first.key("a"), lambda _r: (1.0,))
    first.close()
    size = path.stat().st_size
    good = path.read_bytes()

    def reopen() -> SharedTable:
        table = SharedTable.open(path, sets=4, ways=2, fields=1)
        assert path.stat().st_size == size
        return table

    t = reopen()  # intact: the record is still there
    assert t.get(t.key("a")) == (1.0,)
    t.close()

    header = struct.Struct("<8sIIII16s32s")
    other_boot = bytearray(good[: header.size])
    other_boot[24:40] = os.urandom(16)  # the boot id: the clock has restarted since
    other_boot += hashlib.blake2b(bytes(other_boot), digest_size=16).digest()
    for damage in [
        good[:100],  # truncated in the header
        good[: HEADER_SIZE + 10],  # truncated in the records
        os.urandom(size),  # garbage
        bytes(size),  # zeros
        bytes(other_boot) + good[len(other_boot) :],  # an earlier boot's
    ]:
        path.write_bytes(damage)
        t = reopen()
        assert t.get(t.key("a")) is None
        t.update(t.key("b"), lambda _r: (2.0,))
        assert t.get(t.key("b")) == (2.0,)
        t.close()
    # Another layout under the same name is replaced, not misread.
    t = SharedTable.open(path, sets=8, ways=2, fields=3)
    assert t.get(t.key("b")) is None
    t.close()


def test_garbage_values_never_block_anyone(tmp_path: Path) -> None:
    """The file is only a hint: a record holding nonsense reads as no record."""
    table = open_throttle_table(tmp_path / "throttles.shm")
    throttle = LoginThrottle(table=table)
    for _ in range(5):
        throttle.failure("someone@example.org", "192.0.2.1")
    assert throttle.retry_after("someone@example.org", "192.0.2.1") >= 1
    nan, inf = float("nan"), float("inf")
    for garbage in [(nan, nan, nan), (5.0, inf, 0.0), (5.0, 1e300, 0.0), (-3.0, 1e12, 1e12)]:
        for key, _ in throttle._keys("someone@example.org", "192.0.2.1"):
            table.update(key, lambda _r, g=garbage: g)
        assert throttle.retry_after("someone@example.org", "192.0.2.1") == 0
        throttle.failure("someone@example.org", "192.0.2.1")  # counts afresh
        assert throttle.retry_after("someone@example.org", "192.0.2.1") <= 900
    table.close()


def test_handles_in_one_process_share_one_mapping(tmp_path: Path) -> None:
    path = tmp_path / "t.shm"
    a = SharedTable.open(path, sets=4, ways=2, fields=1)
    b = SharedTable.open(path, sets=4, ways=2, fields=1)
    a.update(a.key("x"), lambda _r: (3.0,))
    a.close()  # b's mapping, file descriptor and locks stay
    assert b.get(b.key("x")) == (3.0,)
    b.update(b.key("x"), _add_one)
    assert b.get(b.key("x")) == (4.0,)
    b.close()
