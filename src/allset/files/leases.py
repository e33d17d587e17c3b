"""Coordination between uploads and chunk collection.

A chunk an upload has written (or matched) but not yet committed is referenced by
nothing in the database, so the collector must be told not to delete it. Each upload
holds a *lease* on every chunk it uses until it commits or aborts; the collector and the
uploads take the same striped lock around "check, then write or delete", so the check
cannot go stale between the two steps. Leases live in the process's memory.

Across worker processes (``serve --workers``) leases are not seen, so two more rules
hold (docs/design/multi-process.md):

- **Interlock.** A commit that adds chunk rows holds ``committing()`` (a shared
  ``flock``) from before its transaction begins until it has committed; the collector
  holds ``collecting()`` (exclusive) from its last check that a chunk is unused until
  its bytes are deleted. The commit re-checks, inside its window, that every chunk row
  it *adds* has its bytes on every replica (``Upload.apply``). So either the commit comes
  first and the collector then sees the reference and keeps the chunk, or the collector
  comes first and the commit sees the bytes gone and refuses ("send it again"): never a
  reference to deleted bytes. Both take the lock before any database transaction, so
  it cannot deadlock with the database's own locks.
- **Grace.** Bytes written by an upload of another process that has not committed yet
  have no row: the collector leaves such files alone for ``gc_grace_seconds`` (as after
  a crash). An upload slower than that in another process is refused at its commit.
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from allset.core.flock import FileLock

_STRIPES = 1024


class ChunkLeases:
    def __init__(self, interlock: Path) -> None:
        self._interlock = FileLock(interlock)
        self._locks = [threading.Lock() for _ in range(_STRIPES)]
        self._counts: Counter[tuple[str, str]] = Counter()
        self._durable: set[tuple[str, str]] = set()
        self._meta = threading.Lock()
        self.inflight_bytes: Counter[str] = Counter()

    @contextmanager
    def locked(self, tenant_id: str, digest: str) -> Iterator[None]:
        lock = self._locks[zlib.crc32(digest.encode()) % _STRIPES]
        with lock:
            yield

    @contextmanager
    def unheld(self, tenant_id: str, digest: str) -> Iterator[bool]:
        """What every deleter of chunk bytes (the collector, the orphan collector, an
        aborted upload) does inside ``collecting()``: hold this process's lock on the
        chunk and learn whether no upload here holds a lease on it. While the lock is
        held no upload here can take one, so True stays true until the deletion is done.
        Uploads of other processes are the interlock's and the grace period's affair."""
        with self.locked(tenant_id, digest):
            yield not self.held(tenant_id, digest)

    def committing(self) -> AbstractContextManager[None]:
        """Held by a commit that may add chunk rows, around its whole transaction."""
        return self._interlock.shared()

    def committing_here(self) -> bool:
        """Whether this thread is inside ``committing()`` (it cannot also collect)."""
        return self._interlock.held_shared()

    def collecting(self, timeout: float) -> AbstractContextManager[bool]:
        """Held by the collector from its last check to the bytes' deletion; yields False
        if commits kept it busy ``timeout`` seconds (collect at the next run)."""
        return self._interlock.exclusive(timeout)

    def take(self, tenant_id: str, digest: str) -> None:
        with self._meta:
            self._counts[(tenant_id, digest)] += 1

    def drop(self, tenant_id: str, digest: str) -> int:
        """Release one lease; returns how many remain."""
        with self._meta:
            key = (tenant_id, digest)
            self._counts[key] -= 1
            left = self._counts[key]
            if left <= 0:
                del self._counts[key]
                self._durable.discard(key)
            return max(left, 0)

    def held(self, tenant_id: str, digest: str) -> bool:
        with self._meta:
            return self._counts.get((tenant_id, digest), 0) > 0

    def mark_durable(self, tenant_id: str, digest: str) -> None:
        """The chunk is on every replica; other uploads in flight may reuse it."""
        with self._meta:
            self._durable.add((tenant_id, digest))

    def is_durable(self, tenant_id: str, digest: str) -> bool:
        with self._meta:
            return (tenant_id, digest) in self._durable

    def try_reserve(self, tenant_id: str, nbytes: int, used: int, quota: int) -> int | None:
        """Reserve ``nbytes`` of quota for data in flight, atomically with the check.

        Returns None when it fits (and reserves it), else the bytes already in flight so
        the caller can say why.
        """
        with self._meta:
            inflight = self.inflight_bytes.get(tenant_id, 0)
            if used + inflight + nbytes > quota:
                return inflight
            self.inflight_bytes[tenant_id] = inflight + nbytes
            return None

    def unreserve(self, tenant_id: str, nbytes: int) -> None:
        with self._meta:
            self.inflight_bytes[tenant_id] -= nbytes
            if self.inflight_bytes[tenant_id] <= 0:
                del self.inflight_bytes[tenant_id]

    def inflight(self, tenant_id: str) -> int:
        with self._meta:
            return self.inflight_bytes.get(tenant_id, 0)
