"""An upload in progress: stream in, chunk, store on every replica, then commit.

Ordering is the data-safety argument (R-STORE-4):

1. Each chunk is durable on every replica *before* the database learns of it.
2. The commit is one database transaction: quota charge, chunk rows, version, node.
   Until it commits, no listing or read can see the file, so nothing is ever visible
   half-written, and a crash before it leaves only unreferenced chunks that the
   collector reclaims.
3. On any failure, chunks this upload wrote and nobody else uses are deleted at once,
   so a refused upload leaves nothing behind (R-STORE-8).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.exc import OperationalError

from allset.blobstore.chunker import MIN_SIZE, StreamChunker
from allset.core.errors import (
    AllsetError,
    Conflict,
    DigestMismatch,
    InvalidInput,
    PreconditionFailed,
    QuotaExceeded,
    StorageUnavailable,
)
from allset.core.ids import new_id
from allset.core.paths import RemotePath
from allset.core.principal import Principal
from allset.core.units import format_size
from allset.db.engine import group_memo
from allset.db.models import utcnow
from allset.db.prepared import Record
from allset.files import access, sql
from allset.files.entries import Entry, entry_of
from allset.files.hashing import HASH_POOL, PARALLEL_HASH_MIN, OrderedSha256, sha256_hex
from allset.files.locks import NO_TOKENS, LockProof, check_write
from allset.files.service import check_etag

if TYPE_CHECKING:
    from allset.files.service import FileService


# Bytes of chunks written but not yet confirmed durable, per upload: enough to overlap
# chunking and hashing with the fsyncs (each chunk is two fsyncs per replica, ~5-20 ms
# here; with 4 chunks in flight a 512 MiB PUT waited on them for a third of its time;
# 8 MiB -> 16 MiB: 165-213 -> 215-245 MB/s, 2026-11-29), few enough to bound memory
# (this plus one chunk of at most 4 MiB).
MAX_PENDING_BYTES = 16 * 1024 * 1024
# Chunks being hashed ahead of the one to store next (both cores busy, memory bounded).
MAX_HASHING_CHUNKS = 4
# Seconds an aborted upload waits for the interlock to delete what it wrote; after that
# the orphan collector deletes it (files/leases.py).
ABORT_WAIT = 2.0


# The largest chunk a client may send (the chunker cuts at 4 MiB; room for older clients).
MAX_CHUNK = 8 * 1024 * 1024


def quota_error(used: int, quota: int, needed: int, inflight: int = 0) -> QuotaExceeded:
    pending = f" ({format_size(inflight)} more are being uploaded right now)" if inflight else ""
    return QuotaExceeded(
        f"Not enough space: {format_size(used)} of {format_size(quota)} used{pending}, and this "
        f"upload needs {format_size(needed)} more. Delete files or empty the trash, or ask "
        "for a larger quota.",
        used_bytes=used,
        quota_bytes=quota,
        needed_bytes=needed,
        in_flight_bytes=inflight,
    )


class Upload:
    """Blocking; one thread at a time. Adapters call ``write`` repeatedly, then ``commit``."""

    def __init__(
        self,
        svc: FileService,
        principal: Principal,
        path: RemotePath,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
        mtime: datetime | None = None,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        reserved: int = 0,
        credit: int = 0,
        if_absent: bool = False,
        parents: bool = False,
        admit_at_commit: bool = False,
        locks: LockProof = NO_TOKENS,
    ) -> None:
        self.svc = svc
        self.p = principal
        self.tenant = principal.tenant_id
        self.path = path
        self.if_match, self.if_none_match = if_match, if_none_match
        self.mtime = mtime
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        # if_absent: refuse (412) if anything, file or folder, is at the path at commit;
        # parents: create missing parent folders in the commit's transaction.
        self.if_absent = if_absent
        self.parents = parents
        # The lock tokens the request presents: checked in the commit's transaction.
        self.locks = locks
        self.parent_row: Record | None = None  # the folder found by ``apply``
        # Quota admission in the commit's transaction instead of before the body is read:
        # for bodies already in memory (``store_bytes``), where failing early saves nothing.
        self._admit_at_commit = admit_at_commit
        # Small mode (``begin_upload`` with a known size below the chunker's minimum):
        # the body is kept here and stored whole by ``commit``.
        self._small: bytearray | None = bytearray() if admit_at_commit else None
        self.size = 0
        # Streaming state, not made for a small body (~0.1 ms, a twentieth of its CPU):
        # its one hash is both the chunk's and the file's (``_sha``).
        self._hash: OrderedSha256 | None = None if admit_at_commit else OrderedSha256()
        self._chunker: StreamChunker | None = None if admit_at_commit else StreamChunker()
        self._sha: str | None = None
        self._refs: list[tuple[str, int, int]] = []
        self._offset = 0
        self._leased: dict[str, int] = {}
        self._written: set[str] = set()
        self._reserved = reserved
        self._credit = credit
        self._pending: deque[tuple[str, int, list[Future[None]]]] = deque()
        self._pending_bytes = 0
        self._new_bytes = 0
        self._done = False
        self.committing = False  # from ``commit`` on, it takes no more bytes
        self._hashing: deque[tuple[Future[str], bytes]] = deque()

    # ---- streaming -----------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hashing runs beside chunking: the whole-file SHA-256 and the SHA-256 of each
        chunk are computed in worker threads (hashlib releases the GIL, and so does the
        chunker's loop), so a big upload uses both cores instead of doing three passes
        on one."""
        if self._small is not None:
            if len(self._small) + len(data) >= MIN_SIZE:
                raise InvalidInput(
                    "The body is longer than its announced Content-Length; nothing was stored."
                )
            self._small += data
            return
        assert self._hash is not None
        assert self._chunker is not None
        self.size += len(data)
        # Shared with a hashing thread: it must not change meanwhile. bytes cannot; a
        # bytearray is handed over by its producer (pump_request), who keeps none.
        data = data if isinstance(data, bytes | bytearray) else bytes(data)
        self._hash.update(data)
        for chunk in self._chunker.feed(data):
            self._queue_chunk(chunk)

    def _queue_chunk(self, chunk: bytes) -> None:
        if len(chunk) < PARALLEL_HASH_MIN:
            self._drain_hashed(0)
            self._add_chunk(chunk, hashlib.sha256(chunk).hexdigest())
            return
        self._hashing.append((HASH_POOL.submit(sha256_hex, chunk), chunk))
        self._drain_hashed(MAX_HASHING_CHUNKS)

    def _drain_hashed(self, keep: int) -> None:
        """Store hashed chunks in order, leaving at most ``keep`` hashing."""
        while self._hashing and (len(self._hashing) > keep or self._hashing[0][0].done()):
            job, chunk = self._hashing.popleft()
            self._add_chunk(chunk, job.result())

    def _add_chunk(self, chunk: bytes, digest: str) -> None:
        self._refs.append((digest, self._offset, len(chunk)))
        self._offset += len(chunk)
        if digest in self._leased:
            return
        leases, store = self.svc.leases, self.svc.store
        with leases.locked(self.tenant, digest):
            shared = leases.held(self.tenant, digest)
            leases.take(self.tenant, digest)
            self._leased[digest] = len(chunk)
            # Already stored, durably: marked so by an upload in flight, or complete on
            # every replica while no other upload holds it (a write in progress holds
            # its lease until its directory is synced; the collector deletes only
            # unleased chunks, under this lock). A file stat, not a database query:
            # a query per chunk was a fifth of a big upload's event-loop-bound thread.
            if leases.is_durable(self.tenant, digest) or (
                not shared and store.has_all(self.tenant, digest)
            ):
                return
            # Quota: bytes new to this Client, beyond what was reserved at the start.
            # (Stored but not yet referenced, e.g. an orphan, counts as known here; the
            # commit's CHARGE counts it exactly.)
            self._new_bytes += len(chunk)
            # ``credit``: bytes a resumable upload's row already holds for this upload.
            need = self._new_bytes - self._reserved - self._credit
            if need > 0:
                with self.svc.db.read_conn() as c:
                    used, quota, held = c.execute(
                        sql.TENANT_USAGE, {"tenant_id": self.tenant}
                    ).one()
                # Bytes promised to unfinished resumable uploads, except the one being
                # committed through this Upload (its credit).
                held = int(held) - self._credit
                inflight = leases.try_reserve(self.tenant, need, used + held, quota)
                if inflight is not None:
                    raise quota_error(used, quota, need, inflight + held)
                self._reserved += need
            self._pending.append((digest, len(chunk), store.put_async(self.tenant, digest, chunk)))
            self._pending_bytes += len(chunk)
            self._written.add(digest)
        while self._pending_bytes > MAX_PENDING_BYTES:
            self._settle_one()

    def adopt(self, digests: list[str]) -> None:
        """Build this upload from chunks already stored (the chunk protocol): each one is
        read back, verified and hashed in order, and leased so that no collector takes it
        before the commit."""
        leases, store = self.svc.leases, self.svc.store
        assert self._hash is not None, "adopt is for streaming uploads"
        with self.svc.db.read_conn() as c:
            usable = self.svc.usable_chunks(c, self.p, digests)
        for digest in digests:
            if digest not in usable:  # said exactly as for a chunk the server lacks
                raise InvalidInput(
                    f"Chunk {digest} is not on the server; send it first (PUT /chunks/…).",
                    missing=[digest],
                )
        for digest in digests:
            with leases.locked(self.tenant, digest):
                if digest not in self._leased:
                    leases.take(self.tenant, digest)
                    self._leased[digest] = 0
            if not store.has_any(self.tenant, digest):
                raise InvalidInput(
                    f"Chunk {digest} is not on the server; send it first (PUT /chunks/…).",
                    missing=[digest],
                )
            data = store.get(self.tenant, digest)  # verified against its hash
            self._leased[digest] = len(data)
            self._refs.append((digest, self._offset, len(data)))
            self._offset += len(data)
            self.size += len(data)
            self._hash.update(data)

    def _put_whole(self, data: bytes) -> None:
        """A body smaller than the chunker's minimum cut, whole: one chunk, stored in the
        calling thread with no read transaction. The commit checks everything
        ``begin_upload`` and ``_add_chunk`` would have checked first."""
        self.size = len(data)
        digest = self._sha = hashlib.sha256(data).hexdigest()
        if not data:
            return
        self._refs.append((digest, 0, len(data)))
        self._offset = len(data)
        leases = self.svc.leases
        with leases.locked(self.tenant, digest):
            leases.take(self.tenant, digest)  # the collector leaves it alone from here on
            self._leased[digest] = len(data)
            if leases.is_durable(self.tenant, digest):  # an upload in flight stored it
                return
            self._written.add(digest)  # before the write: abort removes a partial one
        self.svc.store.put(self.tenant, digest, data)
        leases.mark_durable(self.tenant, digest)

    def read_back(self, start: int) -> Iterator[bytes]:
        """The bytes written from offset ``start`` on, from where they are now: the chunks
        cut so far (made durable first, read back verified) and the chunker's buffer.
        For a resumable upload that must keep them elsewhere (``resumable.Appender``)."""
        assert self._chunker is not None, "read_back is for streaming uploads"
        self._drain_hashed(0)
        while self._pending:
            self._settle_one()
        for digest, offset, length in self._refs:
            if offset + length > start:
                data = self.svc.store.get(self.tenant, digest)
                yield data[max(0, start - offset) :]
        yield self._chunker.buffered()[max(0, start - self._offset) :]

    def _settle_one(self) -> None:
        digest, size, futures = self._pending.popleft()
        self._pending_bytes -= size
        self.svc.store.wait(futures)
        # On every replica now: other uploads in flight may reuse it without rewriting.
        self.svc.leases.mark_durable(self.tenant, digest)

    # ---- ending --------------------------------------------------------------------
    def commit(self, keep_on_error: bool = False) -> tuple[Entry, bool]:
        """Make the file visible; returns its entry and whether it was newly created.

        On failure the upload is aborted, unless ``keep_on_error``: then its chunks stay
        (leased) so that ``read_back`` still works, and the caller must ``abort``."""
        self.committing = True
        try:
            if self._small is not None:
                data, self._small = bytes(self._small), None
                self._put_whole(data)
            for chunk in self._chunker.finish() if self._chunker else ():
                self._queue_chunk(chunk)
            self._drain_hashed(0)
            while self._pending:  # every chunk durable on every replica before the commit
                self._settle_one()
            sha = self.verified_digest()
            result = self._commit_with_retry(sha)
        except BaseException:
            if not keep_on_error:
                self.abort()
            raise
        self._release(delete_unused=False)
        return result

    def verified_digest(self) -> str:
        """The whole content's SHA-256, once it is checked against what the sender
        announced (size and SHA-256): DigestMismatch otherwise."""
        sha = self._hash.hexdigest() if self._hash is not None else self._sha
        assert sha is not None, "a small body's digest is known once it is stored"
        if self.expected_size is not None and self.size != self.expected_size:
            raise DigestMismatch(
                f"Received {self.size} bytes but {self.expected_size} were announced; "
                "the upload was incomplete and nothing was stored.",
                received_bytes=self.size,
            )
        if self.expected_sha256 is not None and sha != self.expected_sha256:
            raise DigestMismatch(
                "The content does not match the SHA-256 you sent; nothing was stored.",
                received_sha256=sha,
            )
        return sha

    def _commit_with_retry(self, sha: str) -> tuple[Entry, bool]:
        """Two first uploads to one path race on the unique (parent, name) index; the loser
        retries and becomes a new version of the winner's file, as if it came second."""
        for attempt in range(3):
            try:
                return self._commit_tx(sha)
            except (DBIntegrityError, OperationalError) as exc:
                transient = isinstance(exc, DBIntegrityError) or getattr(
                    exc.orig, "sqlstate", ""
                ) in ("40P01", "40001")  # PostgreSQL deadlock / serialization failure
                if attempt == 2 or not transient:
                    raise
        raise AssertionError("unreachable")

    def _commit_tx(self, sha: str) -> tuple[Entry, bool]:
        # Group commit: concurrent uploads share one transaction (see Database.write_group).
        with self.svc.leases.committing():  # before the transaction: see files/leases.py
            return self.svc.db.write_group(lambda c: self._apply_grouped(c, sha))

    def _apply_grouped(self, c: Connection, sha: str) -> tuple[Entry, bool]:
        """``apply`` in a group transaction: an upload into a folder that an earlier
        upload of the same transaction found (and touched) reuses it, as a batch commit
        does: two statements fewer, in the part of the commit that writers of every
        process wait for. Within one transaction uploads only add entries, so the
        folder found is still there."""
        folders = group_memo(c)
        where = self.path.parent
        known = folders.get(where) if folders is not None else None
        result = self.apply(c, sha, parent=known, touch=known is None)
        if folders is not None and self.parent_row is not None:
            folders[where] = self.parent_row
        return result

    def apply(
        self, c: Connection, sha: str, parent: Record | None = None, touch: bool = True
    ) -> tuple[Entry, bool]:
        """The commit's statements on a write transaction the caller holds (its own, or
        a savepoint in a batch's): quota charge, chunk rows, node, version, event.

        A batch passes ``parent`` when an earlier item of the same transaction already
        found that folder, and ``touch=False`` when it already updated its mtime: two
        statements fewer per file, in a loop where statements are the cost."""
        svc, p, rp, tenant = self.svc, self.p, self.path, self.tenant
        # Checked again in the commit's transaction: a grant withdrawn while the bytes
        # travelled stops the commit (R-SHARE-1).
        access.need_write(svc.view(c, p), rp)
        mtime = self.mtime or utcnow()
        if parent is None:
            if self.parents:
                parent = svc.ensure_dir(c, p, rp.parent)
            else:
                parent = svc.lookup_dir(c, tenant, rp.parent)
        self.parent_row = parent
        node = sql.child(c, tenant, parent.id, rp.name)
        if node is not None and self.if_absent:
            raise PreconditionFailed(
                f"Something already exists at {rp} (if_absent): it was created "
                "elsewhere; nothing was overwritten.",
                current_etag=entry_of(node, rp).etag,
            )
        if node is not None and node.kind != "file":
            raise Conflict(f"{rp} is a folder; a file cannot replace it.", is_folder=True)
        check_etag(entry_of(node, rp).etag if node else None, self.if_match, self.if_none_match)
        # A document open in an editor (a live WebDAV lock) is not overwritten by anyone
        # else (R-SHARE-1, R-STORE-2); checked here, in the commit's own transaction, so a
        # LOCK granted while the bytes travelled cannot slip in between check and commit
        # (files/locks.py).
        check_write(c, p, self.locks, rp)
        # Which of our chunks are new to this Client? Only those are charged. Insert-or-
        # ignore tells in one statement (no SELECT first): a concurrent upload of the
        # same bytes may add the same rows meanwhile (PostgreSQL, READ COMMITTED), and
        # only the rows this transaction really added are charged. Sorted: concurrent
        # commits take the row locks in the same order (no deadlock).
        digests = sorted(self._leased)
        now = utcnow()
        new: list[str] = []
        insert_chunks = sql.insert_new_chunks(svc.db.is_sqlite)
        for i in range(0, len(digests), 500):
            rows = [
                {"tenant_id": tenant, "hash": d, "size": self._leased[d], "created_at": now}
                for d in digests[i : i + 500]
            ]
            new.extend(insert_chunks.run(c, rows).scalars())
        for d in new:  # (raising here undoes the inserts with the rest of the commit)
            # Every added row, even of bytes this upload wrote: a collector in another
            # process may have taken them since (files/leases.py, the interlock).
            if not svc.store.has_all(tenant, d):
                raise StorageUnavailable("A chunk vanished during the upload; send it again.")
        charge = sum(self._leased[d] for d in new)
        if charge:
            if self._admit_at_commit:
                # R-STORE-8 as in ``begin_upload``, in the charge's own statement:
                # unfinished resumable uploads and uploads in flight count too.
                inflight = svc.leases.inflight(tenant)
                params = {"tenant_id": tenant, "charge": charge}
                done = sql.CHARGE_ADMIT.run(c, {**params, "other": inflight - self._credit})
            else:  # admitted (reserved) before the body was read
                done = sql.CHARGE.run(c, {"tenant_id": tenant, "charge": charge})
            if done.rowcount != 1:
                used, quota, held = c.execute(sql.TENANT_USAGE, {"tenant_id": tenant}).one()
                other = int(held) - self._credit + svc.leases.inflight(tenant)
                raise quota_error(used, quota, charge, max(other, 0))
        created = node is None
        vid = new_id()
        if node is None:
            node_id, created_at, previous = new_id(), now, None
            sql.INSERT_NODE.run(
                c,
                {
                    "id": node_id,
                    "tenant_id": tenant,
                    "parent_id": parent.id,
                    "name": rp.name,
                    "kind": "file",
                    "version_id": vid,  # inserted right below (no foreign key to wait for)
                    "size": self.size,
                    "sha256": sha,
                    "mtime": mtime,
                    "created_at": now,
                    "updated_at": now,
                    "trashed_at": None,
                    "trashed_path": "",
                    "trashed_by": "",
                },
            )
        else:
            node_id, created_at, previous = node.id, node.created_at, node.version_id
        vid = sql.new_version(
            c,
            tenant_id=tenant,
            actor_id=p.id,
            node_id=node_id,
            previous=previous,
            size=self.size,
            sha256=sha,
            mtime=mtime,
            refs=self._refs,
            now=now,
            vid=vid,
            node_is_current=created,
        )
        if touch:
            sql.touch(c, parent.id, now)
        sql.record_event(
            c,
            tenant_id=tenant,
            actor=p.email,
            kind="put",
            node_id=node_id,
            path=str(rp),
            detail={"size": self.size, "sha256": sha, "version": vid},
            now=now,
        )
        entry = Entry(
            id=node_id,
            name=rp.name,
            path=str(rp),
            kind="file",
            size=self.size,
            sha256=sha,
            mtime=mtime,
            created_at=created_at,
            version=vid,
        )
        return entry, created

    def finish(self) -> None:
        """Let go of the chunks' leases after ``apply`` committed (batch commits)."""
        if not self._done:
            self._release(delete_unused=False)

    def abort(self) -> None:
        """Forget the upload; chunks only it wrote are deleted now (nothing stays stored)."""
        if not self._done:
            self._release(delete_unused=True)

    def _release(self, delete_unused: bool) -> None:
        self._done = True
        leases = self.svc.leases
        # Writes still running must end before their chunks can be judged or deleted.
        concurrent.futures.wait([f for _, _, fs in self._pending for f in fs])
        concurrent.futures.wait([job for job, _ in self._hashing])
        self._hashing.clear()
        if self._hash is not None:
            self._hash.wait()
        self._pending.clear()
        self._pending_bytes = 0
        doomed = []
        for digest in self._leased:
            with leases.locked(self.tenant, digest):
                left = leases.drop(self.tenant, digest)
                if delete_unused and digest in self._written and left == 0:
                    doomed.append(digest)
        if doomed:
            self._delete_unreferenced(doomed)
        if self._reserved:
            leases.unreserve(self.tenant, self._reserved)
            self._reserved = 0
        self._leased.clear()

    def _delete_unreferenced(self, digests: list[str]) -> None:
        """Delete chunks this aborted upload wrote, unless something references them by
        now. As the collector does (files/leases.py): under the interlock, since an
        upload of another process may have written the same bytes and be committing them;
        if commits keep the interlock busy, the orphan collector deletes them later."""
        leases, store = self.svc.leases, self.svc.store
        if leases.committing_here():  # (a batch's transaction): the collector will
            return
        with leases.collecting(ABORT_WAIT) as ours:
            if not ours:
                return
            for digest in digests:
                with leases.unheld(self.tenant, digest) as unused_here:
                    if not unused_here:  # reused here meanwhile
                        continue
                    with self.svc.db.read_conn() as c:
                        committed, _, _, _ = c.execute(
                            sql.KNOWN_CHUNK_AND_USAGE, {"tenant_id": self.tenant, "hash": digest}
                        ).one()
                    if not committed:
                        with contextlib.suppress(OSError):  # else the collector will
                            store.delete(self.tenant, digest)


def begin_upload(svc: FileService, p: Principal, path: RemotePath, **kw: object) -> Upload:
    """Check what can be checked before any byte is read (fail fast on a 10 GB body).

    A body announced below the chunker's minimum cut is one chunk: nothing is checked
    here, the body is kept in memory and stored whole in the calling thread, and every
    check (access, parent folder, preconditions, quota) is made once, in the commit's
    transaction, instead of in two read transactions before it. Small files are bound
    by per-file CPU, and those transactions were a third of it."""
    svc._writable(p)
    if path.is_root:
        raise Conflict("The root folder cannot be replaced by a file.")
    expected = kw.get("expected_size")
    if isinstance(expected, int) and 0 <= expected < MIN_SIZE and not kw.get("credit"):
        return Upload(svc, p, path, admit_at_commit=True, **kw)  # type: ignore[arg-type]
    with svc.db.read_conn() as c:
        access.need_write(svc.view(c, p), path)  # before any byte is read (R-SHARE-1)
        if kw.get("parents"):  # missing folders are made at commit; a file in the way is 409
            found = svc.lookup(c, p.tenant_id, path.parent)
            parent = found if found is not None and found.kind == "dir" else None
        else:
            parent = svc.lookup_dir(c, p.tenant_id, path.parent)
        node = sql.child(c, p.tenant_id, parent.id, path.name) if parent is not None else None
        if node is not None and kw.get("if_absent"):
            raise PreconditionFailed(
                f"Something already exists at {path} (if_absent); nothing was overwritten.",
                current_etag=entry_of(node, path).etag,
            )
        if node is not None and node.kind != "file":
            raise Conflict(f"{path} is a folder; a file cannot replace it.", is_folder=True)
        check_etag(
            entry_of(node, path).etag if node else None,
            kw.get("if_match"),  # type: ignore[arg-type]
            kw.get("if_none_match"),  # type: ignore[arg-type]
        )
        # Early, before a big body travels for nothing; the commit checks again.
        check_write(c, p, kw.get("locks") or NO_TOKENS, path)  # type: ignore[arg-type]
        used, quota, held = c.execute(sql.TENANT_USAGE, {"tenant_id": p.tenant_id}).one()
        # Unfinished resumable uploads hold quota too; one being committed through this
        # Upload already holds its own (credit), which must not count twice.
        held = int(held) - int(kw.get("credit") or 0)  # type: ignore[call-overload]
        expected = kw.get("expected_size")
        reserved = 0
        if isinstance(expected, int) and expected > 0:
            # Admission control: a body of known length reserves its size up front, so
            # concurrent uploads are admitted in order instead of all starving each other.
            inflight = svc.leases.try_reserve(p.tenant_id, expected, used + held, quota)
            if inflight is not None:
                raise quota_error(used, quota, expected, inflight + held)
            reserved = expected
    try:
        return Upload(svc, p, path, reserved=reserved, **kw)  # type: ignore[arg-type]
    except BaseException:
        svc.leases.unreserve(p.tenant_id, reserved)
        raise


def store_bytes(
    svc: FileService, p: Principal, path: RemotePath, data: bytes, **kw: object
) -> tuple[Entry, bool]:
    """A whole body already in memory, in one call, so an adapter pays one thread
    hand-off instead of three (begin, write, commit)."""
    kw.setdefault("expected_size", len(data))
    upload = begin_upload(svc, p, path, **kw)
    try:
        upload.write(data)
    except BaseException:
        upload.abort()
        raise
    return upload.commit()


__all__ = ["AllsetError", "Upload", "begin_upload", "store_bytes"]


def commit_manifest(
    svc: FileService,
    p: Principal,
    path: RemotePath,
    chunks: list[str],
    sha256: str,
    size: int | None = None,
    base_version: str | None = None,
    mtime: datetime | None = None,
    if_absent: bool = False,
    parents: bool = False,
    locks: LockProof = NO_TOKENS,
) -> tuple[Entry, bool]:
    """The chunk protocol's commit: a new version made of chunks the Client already has
    (stored before, or just sent with ``put_chunk``), in order.

    Every chunk is read back and verified, and the whole is hashed: the version is made
    only if it really is the ``sha256`` the client announced (R-STORE-7), whatever the
    client did. ``base_version`` (the version the client's change started from) must
    still be current, or 412: a concurrent change is never overwritten silently.
    ``if_absent``: 412 if anything exists at ``path`` (the client believes it creates
    a new file; a concurrent creation elsewhere must not be overwritten). ``parents``:
    missing parent folders are created in the same transaction.
    """
    if not chunks and sha256 != hashlib.sha256(b"").hexdigest():
        raise InvalidInput("An empty chunk list is an empty file; its sha256 must match.")
    upload = begin_upload(
        svc,
        p,
        path,
        if_match=f'"{base_version}"' if base_version else None,
        mtime=mtime,
        expected_sha256=sha256,
        if_absent=if_absent,
        parents=parents,
        locks=locks,
    )
    # Checked at commit, not reserved up front: most chunks are usually known already,
    # and the commit charges exactly the new ones, atomically.
    upload.expected_size = size
    try:
        upload.adopt(chunks)
    except BaseException:
        upload.abort()
        raise
    return upload.commit()


def put_chunk(svc: FileService, p: Principal, digest: str, data: bytes) -> bool:
    """Store one chunk sent by the client after checking it is what its name says.
    Returns False when the Client already had it. Unreferenced chunks are reclaimed by
    the orphan collector after the grace period if no commit uses them."""
    svc._writable(p)
    access.check_some_write(svc, p)
    if len(data) > MAX_CHUNK:
        raise InvalidInput(f"A chunk is at most {MAX_CHUNK:,} bytes.")
    if hashlib.sha256(data).hexdigest() != digest:
        raise DigestMismatch("The chunk's bytes do not hash to its name; nothing was stored.")
    svc.possession.prove(p, [digest])
    if svc.store.has_all(p.tenant_id, digest):
        return False
    svc.store.put(p.tenant_id, digest, data)
    return True


def missing_chunks(svc: FileService, p: Principal, digests: list[str]) -> list[str]:
    """Which of these chunks this Client does not have (so must send)."""
    svc._writable(p)
    access.check_some_write(svc, p)
    known: set[str] = set()
    with svc.db.read_conn() as c:
        for i in range(0, len(digests), 500):
            known.update(
                c.scalars(
                    sql.EXISTING_CHUNKS, {"tenant_id": p.tenant_id, "hashes": digests[i : i + 500]}
                )
            )
        # A member is told a chunk is there only if they may use it: the answer must not
        # reveal what the Client holds elsewhere (R-SHARE-1, access.Possession).
        usable = svc.usable_chunks(c, p, digests)
    return [
        d
        for d in digests
        if d not in usable or (d not in known and not svc.store.has_all(p.tenant_id, d))
    ]
