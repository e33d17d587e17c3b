"""Every chunk on every replica (R-STORE-4); reads verified, bad copies repaired.

This is the only place that knows there are several copies. Writes go to all replicas
in parallel and succeed only when all of them are durable, because the database commit
that follows makes the chunk visible and a visible chunk must already be redundant.
Reads take the first copy whose SHA-256 matches the key; any copy that is missing or
wrong is rewritten from the good one and reported, so damage never accumulates.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from allset.blobstore.backend import Backend, ObjectMissing, chunk_key
from allset.core.errors import IntegrityError, StorageUnavailable

log = logging.getLogger("allset.blobstore")

# Objects smaller than this are written to the replicas in turn by the calling thread.
SERIAL_MAX = 64 * 1024


def _run_here(
    put: Callable[[str, bytes | memoryview], None], key: str, data: bytes | memoryview
) -> Future[None]:
    """``put`` in the calling thread, its outcome as a finished Future (for ``wait``)."""
    done: Future[None] = Future()
    try:
        put(key, data)
        done.set_result(None)
    except OSError as exc:
        done.set_exception(exc)
    return done


@dataclass
class RepairEvent:
    key: str
    replica: str
    problem: str  # "missing" | "corrupt"
    repaired: bool


@dataclass
class ScrubReport:
    checked: int = 0
    problems: list[RepairEvent] = field(default_factory=list)
    unrecoverable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unrecoverable


class ReplicatedStore:
    """Stores each chunk on every backend; thread-safe, blocking."""

    def __init__(
        self,
        replicas: list[Backend],
        on_repair: Callable[[RepairEvent], None] | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("at least one replica is required")
        self.replicas = replicas
        # Several chunks per upload in flight, several uploads at once: fsync latency,
        # not CPU, is what these threads wait on.
        self._pool = ThreadPoolExecutor(max_workers=max(8, 8 * len(replicas)))
        self._on_repair = on_repair

    def put(self, tenant_id: str, digest_hex: str, data: bytes | memoryview) -> None:
        """Durable on every replica when it returns. The first replica is written in
        the calling thread while the others are in the pool: one thread hand-off fewer,
        which is a visible part of the CPU cost of a small file. Below ``SERIAL_MAX``
        the replicas are written one after the other, all in the calling thread: the
        hand-off cost more CPU than the fsync latency it hid, and many small uploads
        at once are bound by the server's CPU (A/B on 2,000 x 4 KiB, 8 connections:
        ~4% more files/s, ~5% less CPU per file)."""
        key = chunk_key(tenant_id, digest_hex)
        here = len(self.replicas) if len(data) < SERIAL_MAX else 1
        # Started before the calling thread writes its own; ``wait`` wants replica order.
        others = [self._pool.submit(r.put, key, data) for r in self.replicas[here:]]
        self.wait([*(_run_here(r.put, key, data) for r in self.replicas[:here]), *others])

    def put_async(
        self, tenant_id: str, digest_hex: str, data: bytes | memoryview
    ) -> list[Future[None]]:
        """Start writing to every replica; ``wait`` on the result before relying on it.

        Lets an upload chunk and hash the next piece while earlier ones are fsynced."""
        key = chunk_key(tenant_id, digest_hex)
        return [self._pool.submit(r.put, key, data) for r in self.replicas]

    def put_many(self, tenant_id: str, items: list[tuple[str, bytes | memoryview]]) -> None:
        """Store many chunks on every replica, durable everywhere when it returns: each
        replica writes the whole batch with shared fsyncs (``Backend.put_many``), the
        replicas in parallel."""
        if not items:
            return
        keyed = [(chunk_key(tenant_id, digest), data) for digest, data in items]
        self.wait([self._pool.submit(r.put_many, keyed) for r in self.replicas])

    def wait(self, futures: list[Future[None]]) -> None:
        """Block until every replica write finished; any failure fails the whole chunk."""
        errors = []
        for r, f in zip(self.replicas, futures, strict=True):
            try:
                f.result()
            except OSError as exc:
                errors.append(f"{r.name}: {exc}")
        if errors:
            raise StorageUnavailable("A replica could not store data: " + "; ".join(errors))

    def get(self, tenant_id: str, digest_hex: str) -> bytes:
        key = chunk_key(tenant_id, digest_hex)
        bad: list[tuple[Backend, str]] = []
        good: bytes | None = None
        for replica in self.replicas:
            try:
                data = replica.get(key)
            except ObjectMissing:
                bad.append((replica, "missing"))
                continue
            except OSError as exc:
                log.warning("replica %s unreadable for %s: %s", replica.name, key, exc)
                bad.append((replica, "unreadable"))
                continue
            if hashlib.sha256(data).hexdigest() == digest_hex:
                good = data
                break
            bad.append((replica, "corrupt"))
        if good is None:
            log.error("chunk %s: no replica holds a valid copy", key)
            raise IntegrityError(
                "Stored data failed verification on every copy; the operator has been alerted."
            )
        for replica, problem in bad:
            self._repair(replica, key, good, problem)
        return good

    def _repair(self, replica: Backend, key: str, good: bytes, problem: str) -> None:
        try:
            replica.put(key, good)
            repaired = True
        except OSError as exc:
            log.error("could not repair %s on %s: %s", key, replica.name, exc)
            repaired = False
        log.warning("chunk %s was %s on %s; repaired=%s", key, problem, replica.name, repaired)
        if self._on_repair:
            self._on_repair(RepairEvent(key, replica.name, problem, repaired))

    def has_any(self, tenant_id: str, digest_hex: str) -> bool:
        """At least one copy exists (``get`` repairs the others)."""
        key = chunk_key(tenant_id, digest_hex)
        return any(r.exists(key) for r in self.replicas)

    def has_all(self, tenant_id: str, digest_hex: str) -> bool:
        key = chunk_key(tenant_id, digest_hex)
        return all(r.exists(key) for r in self.replicas)

    def delete(self, tenant_id: str, digest_hex: str) -> None:
        key = chunk_key(tenant_id, digest_hex)
        for r in self.replicas:
            r.delete(key)

    def keys(self) -> Iterator[str]:
        seen: set[str] = set()
        for r in self.replicas:
            for k in r.keys():  # noqa: SIM118 - Backend.keys() is a method, not a dict
                if k not in seen:
                    seen.add(k)
                    yield k

    def age_seconds(self, key: str) -> float:
        ages = []
        for r in self.replicas:
            try:
                ages.append(r.age_seconds(key))
            except ObjectMissing:
                continue
        return min(ages) if ages else 0.0

    def delete_key(self, key: str) -> None:
        for r in self.replicas:
            r.delete(key)

    def cleanup_temporary(self) -> int:
        return sum(r.cleanup_temporary() for r in self.replicas)

    def scrub(self, expected: Iterable[tuple[str, str]], repair: bool) -> ScrubReport:
        """Check every copy of every expected chunk, not just the first good one."""
        report = ScrubReport()
        for tenant_id, digest_hex in expected:
            key = chunk_key(tenant_id, digest_hex)
            report.checked += 1
            good: bytes | None = None
            bad: list[tuple[Backend, str]] = []
            for replica in self.replicas:
                try:
                    data = replica.get(key)
                except (ObjectMissing, OSError):
                    bad.append((replica, "missing"))
                    continue
                if hashlib.sha256(data).hexdigest() == digest_hex:
                    good = good or data
                else:
                    bad.append((replica, "corrupt"))
            if good is None:
                report.unrecoverable.append(key)
                log.error("scrub: chunk %s has no valid copy", key)
                continue
            for replica, problem in bad:
                repaired = False
                if repair:
                    try:
                        replica.put(key, good)
                        repaired = True
                    except OSError as exc:
                        log.error("scrub: could not repair %s on %s: %s", key, replica.name, exc)
                report.problems.append(RepairEvent(key, replica.name, problem, repaired))
                log.warning(
                    "scrub: chunk %s %s on %s; repaired=%s", key, problem, replica.name, repaired
                )
        return report

    def close(self) -> None:
        self._pool.shutdown(wait=True)
