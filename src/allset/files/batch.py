"""Many chunks or many commits per request: the sync client's way of moving thousands
of small files without paying a request, a thread hand-off and an fsync for each.

Same guarantees as one at a time (``files.upload``):

* each chunk is checked against its name before it is stored, and stored durably on
  every replica before it is acknowledged (R-STORE-4, R-STORE-7);
* each committed file is proven: its chunks are read back and verified, its whole
  SHA-256 is checked (R-STORE-7); items are independent, one failure (a stale
  ``base_version``, a quota refusal) leaves the others committed;
* the chunk download checks the Client has every chunk before the first byte goes out
  (R-STORE-3: another Client's chunk does not exist).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.exc import OperationalError

from allset.core.errors import AllsetError, DigestMismatch, InvalidInput, NotFound, TooLarge
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.core.units import format_size
from allset.db.prepared import Record
from allset.files import access, sql
from allset.files.entries import Entry
from allset.files.locks import NO_TOKENS, LockProof
from allset.files.service import EMPTY_SHA256
from allset.files.upload import MAX_CHUNK, Upload

if TYPE_CHECKING:
    from allset.files.service import FileService

MAX_BATCH_BODY = 64 * 1024 * 1024
MAX_BATCH_FRAMES = 100_000
MAX_FETCH_CHUNKS = 10_000
MAX_FETCH_BYTES = 256 * 1024 * 1024
MAX_COMMIT_ITEMS = 1000
MAX_COMMIT_CHUNKS = 100_000  # chunks named by all items of one batch commit together
# Items per write transaction: one fsync for many commits, yet the single SQLite writer
# is not held for longer than ~50 ms at a time.
COMMIT_GROUP = 100
FRAME_HEADER = 36  # 32-byte SHA-256 + 4-byte big-endian length


# ---- chunk upload ----------------------------------------------------------------------


class FrameReader:
    """Parses ``digest(32) | length(4, big-endian) | bytes`` frames as the body arrives,
    in bounded memory, enforcing the batch limits as it goes. Pure: no I/O."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.received_bytes = 0
        self.frames = 0

    def feed(self, piece: bytes) -> list[tuple[bytes, memoryview]]:
        """Complete frames in ``piece`` and what came before it: (digest, data)."""
        self.received_bytes += len(piece)
        if self.received_bytes > MAX_BATCH_BODY:
            raise TooLarge(
                f"A chunk batch is at most {format_size(MAX_BATCH_BODY)}; send several.",
                limit_bytes=MAX_BATCH_BODY,
            )
        self._buf += piece
        out: list[tuple[bytes, memoryview]] = []
        view = memoryview(self._buf)
        pos = 0
        while len(view) - pos >= FRAME_HEADER:
            length = int.from_bytes(view[pos + 32 : pos + 36], "big")
            if length > MAX_CHUNK:
                raise TooLarge(
                    f"Frame {self.frames + 1} announces {length:,} bytes; a chunk is at most "
                    f"{MAX_CHUNK:,} bytes.",
                    limit_bytes=MAX_CHUNK,
                )
            end = pos + FRAME_HEADER + length
            if end > len(view):
                break
            self.frames += 1
            if self.frames > MAX_BATCH_FRAMES:
                raise TooLarge(
                    f"A chunk batch holds at most {MAX_BATCH_FRAMES:,} frames.",
                    limit_frames=MAX_BATCH_FRAMES,
                )
            # Copied out: the buffer is compacted below while these are still in use.
            out.append((bytes(view[pos : pos + 32]), memoryview(bytes(view[pos + 36 : end]))))
            pos = end
        view.release()
        del self._buf[:pos]
        return out

    def finish(self) -> None:
        """The body ended: it must end on a frame boundary."""
        if self._buf:
            raise InvalidInput(
                f"The body ends inside frame {self.frames + 1} ({len(self._buf)} bytes of it "
                "arrived); nothing of that frame was stored. Each frame is a 32-byte SHA-256, "
                "a 4-byte big-endian length, then that many bytes.",
                received_frames=self.frames,
            )


def put_chunks(svc: FileService, p: Principal, frames: list[tuple[bytes, memoryview]]) -> int:
    """Verify then store the chunks of some frames, in order; returns how many were new.

    A frame whose bytes do not hash to its digest stops the batch with a 400 naming it:
    nothing of it is stored, the good frames before it are (durably; unreferenced chunks
    are reclaimed by the orphan collector after the grace period if no commit uses them).
    New chunks are written together: ``ReplicatedStore.put_many`` shares the fsyncs."""
    svc._writable(p)
    access.check_some_write(svc, p)
    tenant = p.tenant_id
    good: list[tuple[str, memoryview]] = []
    seen: set[str] = set()
    bad: DigestMismatch | None = None
    for raw, data in frames:
        digest = raw.hex()
        if hashlib.sha256(data).digest() != raw:
            bad = DigestMismatch(
                f"The bytes of chunk {digest} do not hash to its name; nothing of that chunk "
                "was stored (chunks before it in the batch were).",
                digest=digest,
            )
            break
        if digest in seen:
            continue
        seen.add(digest)
        svc.possession.prove(p, [digest])
        if not svc.store.has_all(tenant, digest):
            good.append((digest, data))
    svc.store.put_many(tenant, [(d, data) for d, data in good])
    if bad is not None:
        raise bad
    return len(good)


# ---- chunk download ----------------------------------------------------------------------


def plan_fetch(svc: FileService, p: Principal, digests: list[str]) -> list[int]:
    """The size of each requested chunk, once it is sure this Client has every one
    (else 404 for the whole request, before any byte is sent) and the total is within
    ``MAX_FETCH_BYTES`` (else 413)."""
    svc._writable(p)
    if len(digests) > MAX_FETCH_CHUNKS:
        raise TooLarge(
            f"At most {MAX_FETCH_CHUNKS:,} chunks per fetch.", limit_chunks=MAX_FETCH_CHUNKS
        )
    sizes: dict[str, int] = {}
    wanted = sorted(set(digests))
    with svc.db.read_conn() as c:
        for i in range(0, len(wanted), 500):
            for h, n in c.execute(
                sql.CHUNK_SIZES, {"tenant_id": p.tenant_id, "hashes": wanted[i : i + 500]}
            ):
                sizes[h] = n
        if sizes and not svc.chunks_visible(c, p, list(sizes)):
            sizes = {}  # a member asked for a chunk of a file they may not read: 404
    missing = [d for d in wanted if d not in sizes]
    if missing:
        # Same answer whether another Client has it or nobody does (R-STORE-3).
        raise NotFound(f"This Client has no chunk {missing[0]}.", missing=missing[:100])
    total = sum(sizes[d] for d in digests)
    if total > MAX_FETCH_BYTES:
        raise TooLarge(
            f"These chunks total {format_size(total)}; a fetch returns at most "
            f"{format_size(MAX_FETCH_BYTES)}. Ask for fewer at a time.",
            limit_bytes=MAX_FETCH_BYTES,
        )
    return [sizes[d] for d in digests]


def frame(digest: str, data: bytes) -> bytes:
    return bytes.fromhex(digest) + len(data).to_bytes(4, "big") + data


def read_frames(svc: FileService, p: Principal, digests: list[str]) -> bytes:
    """Some chunks, each verified on read (``ReplicatedStore.get``), as frames."""
    return b"".join(frame(d, svc.store.get(p.tenant_id, d)) for d in digests)


def fetch_groups(digests: list[str], sizes: list[int], group_bytes: int) -> Iterator[list[str]]:
    """Consecutive runs of about ``group_bytes``: one thread hand-off each, and memory
    bounded by the group, not the whole answer."""
    group: list[str] = []
    held = 0
    for d, n in zip(digests, sizes, strict=True):
        group.append(d)
        held += n
        if held >= group_bytes or len(group) >= 256:
            yield group
            group, held = [], 0
    if group:
        yield group


# ---- commit -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitItem:
    path: str
    sha256: str
    chunks: list[str]
    size: int | None = None
    base_version: str | None = None
    mtime: datetime | None = None
    if_absent: bool = False
    parents: bool = False


CommitResult = tuple[Entry, bool] | AllsetError


def _prepare(
    svc: FileService, p: Principal, item: CommitItem, locks: LockProof
) -> tuple[Upload, str]:
    """Read back and verify the item's chunks and check the whole SHA-256, before any
    transaction (R-STORE-7); the Upload holds leases on the chunks until it ends."""
    path = parse_path(item.path)
    if path.is_root:
        raise InvalidInput("The root folder cannot be replaced by a file.")
    if not item.chunks and item.sha256 != EMPTY_SHA256:
        raise InvalidInput("An empty chunk list is an empty file; its sha256 must match.")
    upload = Upload(
        svc,
        p,
        path,
        if_match=f'"{item.base_version}"' if item.base_version else None,
        mtime=item.mtime,
        expected_size=item.size,
        expected_sha256=item.sha256,
        if_absent=item.if_absent,
        parents=item.parents,
        locks=locks,
    )
    try:
        upload.adopt(item.chunks)
        return upload, upload.verified_digest()
    except BaseException:
        upload.abort()
        raise


def _transient(exc: Exception) -> bool:
    """A unique-index race (two first uploads of a path) or a PostgreSQL deadlock or
    serialization failure: retrying the item sees the winner's row."""
    return isinstance(exc, DBIntegrityError) or getattr(
        getattr(exc, "orig", None), "sqlstate", ""
    ) in ("40P01", "40001")


def commit_batch(
    svc: FileService, p: Principal, items: list[CommitItem], locks: LockProof = NO_TOKENS
) -> list[CommitResult]:
    """Commit many manifests; one result per item, in order: ``(entry, created)`` or the
    error that item met. Items are proven one by one before any transaction, then
    applied ``COMMIT_GROUP`` at a time in one write transaction, each in a savepoint:
    a failed item rolls back only itself, and a group costs one commit (one fsync)
    instead of one per file. An item under a live WebDAV lock gets its own 423 (the
    request's ``locks`` tokens apply to every item), the others go on."""
    svc._writable(p)
    if len(items) > MAX_COMMIT_ITEMS:
        raise TooLarge(f"At most {MAX_COMMIT_ITEMS:,} files per batch commit.")
    if sum(len(i.chunks) for i in items) > MAX_COMMIT_CHUNKS:
        raise TooLarge(
            f"The files of one batch commit name at most {MAX_COMMIT_CHUNKS:,} chunks together."
        )
    results: list[CommitResult | None] = [None] * len(items)
    for start in range(0, len(items), COMMIT_GROUP):
        prepared: list[tuple[int, Upload, str]] = []
        try:
            for i in range(start, min(start + COMMIT_GROUP, len(items))):
                try:
                    upload, sha = _prepare(svc, p, items[i], locks)
                except AllsetError as exc:
                    results[i] = exc
                    continue
                prepared.append((i, upload, sha))
            if prepared:
                _apply_group(svc, p, prepared, results)
        finally:
            for i, upload, _ in prepared:
                if isinstance(results[i], tuple):
                    upload.finish()
                else:
                    upload.abort()  # adopt only read: nothing of the item's is deleted
    done: list[CommitResult] = []
    for r in results:
        assert r is not None
        done.append(r)
    return done


def _apply_group(
    svc: FileService,
    p: Principal,
    prepared: list[tuple[int, Upload, str]],
    results: list[CommitResult | None],
) -> None:
    with svc.leases.committing(), svc.db.write_conn() as c:  # interlock: files/leases.py
        # PostgreSQL: the Client's feed lock first, before any row lock, so two batches
        # of one Client queue instead of deadlocking on each other's chunk rows.
        sql.lock_feed(c, p.tenant_id)
        # Folders found (or made) by items that committed, and whose mtime they already
        # set: valid for the rest of this transaction, since items only add entries. A
        # folder made by an item that rolled back is never cached.
        folders: dict[RemotePath, Record] = {}
        for i, upload, sha in prepared:
            where = upload.path.parent
            for attempt in range(3):
                try:
                    with c.begin_nested():
                        results[i] = upload.apply(
                            c, sha, parent=folders.get(where), touch=where not in folders
                        )
                    if upload.parent_row is not None:
                        folders[where] = upload.parent_row
                    break
                except AllsetError as exc:
                    results[i] = exc
                    break
                except (DBIntegrityError, OperationalError) as exc:
                    if attempt == 2 or not _transient(exc):
                        raise
