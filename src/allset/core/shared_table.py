"""A fixed-size table of small records shared by every process that maps one file.

Why it exists: the server's worker processes must share a few counters that change on
every request and are only worth keeping for minutes (sign-in throttles, per-Client
bandwidth buckets). The database would cost a round trip on the hot path; this costs a
keyed hash and one ``fcntl`` lock on a few hundred bytes.

Layout: a 4 KiB header (magic, layout, boot id, a random secret, a checksum) and then
``sets`` sets of ``ways`` slots. A key goes to one set, chosen by a keyed BLAKE2b digest
of it (the header's secret is the key), and lives in any slot of that set:
set-associative, so a lookup never probes beyond its own set and a set is the unit of
locking. The keyed digest means raw emails and IP addresses are never written to disk,
and nobody without the secret can choose keys that crowd one set to evict a victim's
record. A slot is ``digest (16 bytes), stamp (float64), values (float64 x fields)``; an
all-zero digest marks an empty slot.

Full set: the new key takes the slot touched least recently (``stamp``, this machine's
monotonic clock). Records here are only ever rate-limiting hints, so forgetting the
oldest is always safe and an update never fails for lack of room.

Concurrency: a record changes only under ``fcntl.lockf`` on its set's byte range
(released by the kernel if a process dies holding it) plus a thread lock per stripe of
sets (POSIX record locks belong to the process, not the thread). Reads of a key that is
absent skip the lock: a writer adding it concurrently is simply ordered after the read.

Lifetime: the file outlives a server restart (one worker restarting must not wipe the
others' state) but not a reboot: values are ``time.monotonic()`` readings, which are
system-wide on Linux and restart at boot, so a header whose boot id differs is
reinitialised, as is one that is truncated, corrupt or of another layout. Users treat
the values as untrusted anyway (the file is writable by the server's user): non-finite
values read as an absent record.

A table without a path is private to the process (an anonymous mapping, thread locks
only), for tools and tests that run one process.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

log = logging.getLogger("allset.shared_table")

MAGIC = b"ALLSETST"
VERSION = 1
HEADER_SIZE = 4096
_HEADER = struct.Struct("<8sIIII16s32s")  # magic, version, sets, ways, fields, boot, secret
_DIGEST = 16
_STRIPES = 64
_ZERO = bytes(_DIGEST)

Values = tuple[float, ...]


def boot_id() -> bytes:
    """This boot of the machine (Linux); elsewhere a constant, so no reboot is detected
    and only the users' sanity checks on values guard against a restarted clock."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return uuid.UUID(f.read().strip()).bytes
    except (OSError, ValueError):
        return bytes(16)


class SharedTable:
    """``get``/``update`` records of ``fields`` floats by key; see the module docstring.

    Open a file-backed table with ``SharedTable.open`` (one mapping per file per process,
    shared by every handle) and ``close`` each handle; ``SharedTable.private`` makes one
    for this process alone."""

    def __init__(self, mapping: _Mapping) -> None:
        self._m = mapping
        self.sets, self.ways, self.fields = mapping.sets, mapping.ways, mapping.fields
        self.slot_size = mapping.slot.size
        self.set_size = self.slot_size * self.ways
        self._closed = False

    @classmethod
    def open(cls, path: Path, *, sets: int, ways: int = 8, fields: int) -> SharedTable:
        return cls(_Mapping.acquire(path, sets, ways, fields))

    @classmethod
    def private(cls, *, sets: int, ways: int = 8, fields: int) -> SharedTable:
        return cls(_Mapping(None, sets, ways, fields))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._m.release()

    @property
    def path(self) -> Path | None:
        return self._m.path

    def key(self, name: str) -> bytes:
        """The table's key for ``name`` (a keyed digest: ``name`` is never stored)."""
        return hashlib.blake2b(
            name.encode("utf-8", "surrogatepass"), key=self._m.secret, digest_size=_DIGEST
        ).digest()

    def _set_of(self, key: bytes) -> int:
        return int.from_bytes(key[8:16], "little") % self.sets

    def _find(self, base: int, key: bytes) -> int:
        """Offset of ``key``'s slot in the set at ``base``, or -1."""
        blob = self._m.mm[base : base + self.set_size]
        pos = blob.find(key)
        while pos >= 0 and pos % self.slot_size:
            pos = blob.find(key, pos + 1)
        return -1 if pos < 0 else base + pos

    def _values(self, off: int) -> Values | None:
        record = self._m.slot.unpack_from(self._m.mm, off)
        values: Values = record[2:]
        return values if math.isfinite(sum(values)) else None  # any NaN or inf shows

    def get(self, key: bytes) -> Values | None:
        """The record for ``key``, or None."""
        s = self._set_of(key)
        base = HEADER_SIZE + s * self.set_size
        if self._find(base, key) < 0:  # the common case, without a lock
            return None
        m = self._m
        with m.stripes[s % len(m.stripes)]:
            m.lock(base, self.set_size)
            try:
                off = self._find(base, key)
                return None if off < 0 else self._values(off)
            finally:
                m.unlock(base, self.set_size)

    def update(self, key: bytes, change: Callable[[Values | None], Values | None]) -> Values | None:
        """Replace ``key``'s record by ``change(record or None)`` under the set's lock and
        return it; ``change`` returning None removes the record. ``change`` must be quick
        (every process waits for this set meanwhile) and return ``fields`` finite floats."""
        s = self._set_of(key)
        base = HEADER_SIZE + s * self.set_size
        m = self._m
        with m.stripes[s % len(m.stripes)]:
            m.lock(base, self.set_size)
            try:
                off = self._find(base, key)
                new = change(None if off < 0 else self._values(off))
                if new is None:
                    if off >= 0:
                        m.mm[off : off + self.slot_size] = bytes(self.slot_size)
                    return None
                if off < 0:
                    off = self._victim(base)
                m.slot.pack_into(m.mm, off, key, time.monotonic(), *new)
                return new
            finally:
                m.unlock(base, self.set_size)

    def occupied(self) -> int:
        """How many slots hold a record (a glance without locks: for tests and metrics)."""
        head, mm = self._m.head, self._m.mm
        return sum(
            head.unpack_from(mm, off)[0] != _ZERO
            for off in range(HEADER_SIZE, self._m.size, self.slot_size)
        )

    def _victim(self, base: int) -> int:
        """An empty slot of the set, else the one touched least recently."""
        best, best_stamp = base, math.inf
        for i in range(self.ways):
            off = base + i * self.slot_size
            digest, stamp = self._m.head.unpack_from(self._m.mm, off)
            if digest == _ZERO or not math.isfinite(stamp):
                return off  # free, or garbage: reuse it first
            if stamp < best_stamp:
                best, best_stamp = off, stamp
        return best


class _Mapping:
    """One mapping of one table file in this process, shared by its handles."""

    _open: ClassVar[dict[tuple[str, int], _Mapping]] = {}
    _open_lock = threading.Lock()

    def __init__(self, path: Path | None, sets: int, ways: int, fields: int) -> None:
        if sets < 1 or ways < 1 or fields < 1:
            raise ValueError("a shared table needs at least one set, way and field")
        self.path, self.sets, self.ways, self.fields = path, sets, ways, fields
        self.slot = struct.Struct(f"<{_DIGEST}sd{fields}d")
        self.head = struct.Struct(f"<{_DIGEST}sd")
        self.size = HEADER_SIZE + sets * ways * self.slot.size
        self.stripes = [threading.Lock() for _ in range(min(_STRIPES, sets))]
        self.refs = 1
        self.fd = -1
        if path is None:
            self.mm = mmap.mmap(-1, self.size)
            self.secret = os.urandom(32)
        else:
            self.fd, self.mm, self.secret = self._map(path)

    @classmethod
    def acquire(cls, path: Path, sets: int, ways: int, fields: int) -> _Mapping:
        ident = (str(path.absolute()), os.getpid())  # a forked child maps anew
        with cls._open_lock:
            m = cls._open.get(ident)
            if m is not None:
                if (m.sets, m.ways, m.fields) != (sets, ways, fields):
                    raise ValueError(f"{path} is already open with another layout")
                m.refs += 1
                return m
            m = cls._open[ident] = cls(path, sets, ways, fields)
            return m

    def release(self) -> None:
        with self._open_lock:
            self.refs -= 1
            if self.refs > 0:
                return
            if self.path is not None:
                self._open.pop((str(self.path.absolute()), os.getpid()), None)
        self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lock(self, start: int, length: int) -> None:
        if self.fd >= 0:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, length, start)

    def unlock(self, start: int, length: int) -> None:
        if self.fd >= 0:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, length, start)

    def _header(self, secret: bytes) -> bytes:
        fixed = _HEADER.pack(MAGIC, VERSION, self.sets, self.ways, self.fields, boot_id(), secret)
        return fixed + hashlib.blake2b(fixed, digest_size=_DIGEST).digest()

    def _valid_secret(self, header: bytes) -> bytes | None:
        fixed = header[: _HEADER.size]
        if len(header) < _HEADER.size + _DIGEST:
            return None
        if (
            header[_HEADER.size : _HEADER.size + _DIGEST]
            != hashlib.blake2b(fixed, digest_size=_DIGEST).digest()
        ):
            return None
        secret: bytes = _HEADER.unpack(fixed)[6]
        return secret if header[: _HEADER.size + _DIGEST] == self._header(secret) else None

    def _map(self, path: Path) -> tuple[int, mmap.mmap, bytes]:
        """Open (creating or repairing under a whole-file lock) and map the table file."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            # Whole file, exclusively: no other process is inside a set while we look, so a
            # repair never races a writer (lockf's ranges may lie beyond the end of file).
            fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)
            try:
                size = os.fstat(fd).st_size
                secret = self._valid_secret(os.pread(fd, HEADER_SIZE, 0))
                if size < self.size or secret is None:
                    if size:
                        log.warning(
                            "shared table %s was truncated, corrupt, of another layout or "
                            "from an earlier boot: starting it afresh",
                            path,
                        )
                    secret = self._initialise(fd)
                os.fchmod(fd, 0o600)
                mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd, mm, secret

    def _initialise(self, fd: int) -> bytes:
        """Zeros over the whole table, header last (a crash midway leaves it invalid).
        Written, not truncated and left sparse: another process may still map the file
        (a shorter file would fault its reads) and every block is allocated now, so a
        full disk cannot fault a write through the mapping later."""
        zeros = bytes(1 << 20)
        for off in range(0, self.size, len(zeros)):
            os.pwrite(fd, zeros[: min(len(zeros), self.size - off)], off)
        secret = os.urandom(32)
        os.pwrite(fd, self._header(secret), 0)
        return secret
