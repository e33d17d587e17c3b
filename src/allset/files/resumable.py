"""Resumable uploads (the tus protocol's storage side), over the same Upload as every PUT.

The bytes of an unfinished upload are staged in ``DATA/tus/<id>.part``. The database row
records ``offset``: the number of bytes that are fsynced in that file. That is the only
offset ever announced, so after a crash the file may be longer than the offset (a write
that was never acknowledged) and is cut back before the next append: nothing is counted
twice and nothing acknowledged is lost.

Usually the bytes also flow, as they arrive, into a live ``Upload`` (chunking, replicas),
and the part file is only written when a PATCH ends before the last byte (see
``Appender``); the last byte then needs only the commit. Otherwise (after a restart,
for concatenation) the part file is streamed through ``begin_upload`` when the last byte
arrives. Either way it is the same commit as a REST PUT (quota, versions, the commit
transaction), so conflicts and versions follow the same rules. Until then the upload's
declared length counts against the Client's quota (``sql.TENANT_USAGE``), and an upload
left alone expires (24 h by default) and its bytes are reclaimed by maintenance.

Concatenation: "partial" uploads are never committed on their own; a "final" upload names
finished parts and is committed by streaming them in order.

Several processes may serve one upload in turn (``serve --workers``: consecutive requests
land anywhere). Every request that writes or deletes a part file (a PATCH for its whole
length, the commit, termination, expiry) holds an exclusive ``flock`` on that file, taken
without waiting: a second one, from this process or another, is refused at once (423
Locked, tusd's answer, which tus clients retry), so bytes never interleave and only one
request at a time owns an upload. Holding it, the request reads the row afresh: it
continues from the recorded offset whichever process recorded it. The live ``Upload`` is
a cache of one process, used only while it holds exactly the recorded bytes, otherwise
dropped for the part file, exactly as after a restart. The kernel releases the lock of a
process that dies, even by kill -9, and the next PATCH resumes from the part file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from io import BufferedRandom
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from allset.core.durable import fsync_dir
from allset.core.errors import (
    AllsetError,
    ChecksumMismatch,
    Conflict,
    Gone,
    InvalidInput,
    Locked,
    NotFound,
    TooLarge,
)
from allset.core.ids import is_id, new_id
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.db.models import ResumableUpload, utcnow
from allset.files import access, sql
from allset.files.entries import Entry
from allset.files.locks import NO_TOKENS, check_write
from allset.files.service import FileService
from allset.files.upload import Upload, begin_upload, quota_error

log = logging.getLogger("allset.resumable")

BLOCK = 1 << 20
MAX_LIVE = 64  # tus uploads chunked as they arrive at once; others fall back to the file
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}


@dataclass(frozen=True)
class ResumableInfo:
    id: str
    length: int
    offset: int
    expires_at: datetime
    meta: dict[str, str]
    concat: str
    parts: list[str]
    path: str
    done: bool
    result: dict[str, Any] = field(default_factory=dict)


def _info(row: ResumableUpload) -> ResumableInfo:
    return ResumableInfo(
        id=row.id,
        length=row.length,
        offset=row.offset,
        expires_at=row.expires_at,
        meta=dict(row.meta or {}),
        concat=row.concat,
        parts=list(row.parts or []),
        path=row.path,
        done=row.state == "done",
        result=dict(row.result or {}),
    )


def destination(meta: dict[str, str]) -> RemotePath:
    """``path`` (the destination folder, default the root) + ``filename``."""
    name = meta.get("filename", "").strip()
    if not name:
        raise InvalidInput("Upload-Metadata must include 'filename' (base64), the file's name.")
    if "/" in name:
        raise InvalidInput("'filename' is a name, not a path; put the folder in 'path'.")
    folder = meta.get("path", "/") or "/"
    return parse_path(folder.rstrip("/") + "/" + name)


class Resumables:
    def __init__(self, files: FileService, root: Path, expiry: timedelta, max_size: int) -> None:
        self.files = files
        self.db = files.db
        self.root = root
        self.expiry = expiry
        self.max_size = max_size
        self._lock = threading.Lock()  # guards the two below (this process only)
        # Fast path: the Upload fed as PATCH bodies arrive, so the last byte needs only the
        # commit. Memory only; whenever it might disagree with the part file it is dropped
        # and the part file is streamed instead (after a restart, a discarded body, bytes
        # another process appended...).
        self._live: dict[str, Upload] = {}
        self._feeding: set[str] = set()  # ids whose live Upload a PATCH here is feeding
        root.mkdir(parents=True, exist_ok=True)

    def part_path(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.part"

    # ---- creation --------------------------------------------------------------------
    def create(
        self,
        p: Principal,
        length: int | None,
        meta: dict[str, str],
        concat: str = "",
        parts: list[str] | None = None,
    ) -> ResumableInfo:
        self.files._writable(p)
        parts = parts or []
        path = ""
        if concat == "final":
            length = self._check_parts(p, parts)
        elif length is None or length < 0:
            raise InvalidInput("Upload-Length is required: the total size in bytes.")
        if length > self.max_size:
            raise TooLarge(
                f"This server accepts uploads of at most {self.max_size:,} bytes.",
                max_size=self.max_size,
            )
        if concat != "partial":
            rp = destination(meta)
            self._check_destination(p, rp)
            path = str(rp)
        now = utcnow()
        with self.db.read_conn() as c:
            used, quota, reserved = c.execute(sql.TENANT_USAGE, {"tenant_id": p.tenant_id}).one()
        inflight = self.files.leases.inflight(p.tenant_id) + int(reserved)  # Decimal on PG
        if concat != "final" and used + inflight + length > quota:
            raise quota_error(used, quota, length, inflight)
        upload_id = new_id()
        part = self.part_path(upload_id)
        if concat != "final":
            part.touch()
            fsync_dir(self.root)
        with self.db.write() as s:
            s.add(
                ResumableUpload(
                    id=upload_id,
                    tenant_id=p.tenant_id,
                    user_id=p.id,
                    length=length,
                    offset=0,
                    path=path,
                    meta=meta,
                    concat=concat,
                    parts=parts,
                    state="open",
                    result={},
                    created_at=now,
                    expires_at=now + self.expiry,
                )
            )
        return self.status(p, upload_id)

    def _check_parts(self, p: Principal, parts: list[str]) -> int:
        if not parts:
            raise InvalidInput("Upload-Concat: final needs the URLs of its partial uploads.")
        total = 0
        with self.db.read() as s:
            for pid in parts:
                row = s.get(ResumableUpload, pid) if is_id(pid) else None
                if row is None or row.tenant_id != p.tenant_id or row.state != "open":
                    raise NotFound(f"No partial upload {pid!r}.")
                if row.concat != "partial":
                    raise InvalidInput(f"Upload {pid} is not a partial upload.")
                if row.offset != row.length:
                    raise InvalidInput(
                        f"Partial upload {pid} is not finished ({row.offset} of {row.length} "
                        "bytes); finish it before concatenating."
                    )
                total += row.length
        return total

    def _check_destination(self, p: Principal, rp: RemotePath) -> None:
        """Fail at creation, not after gigabytes: the folder must exist, the name not be
        a folder, and no live WebDAV lock cover it (423: a document open in an editor is
        not overwritten; tus requests carry no lock token). The commit checks the lock
        again; refused there, the staged bytes stay, like any refused commit, so that a
        retry (tus clients retry a 423) commits once the lock is gone."""
        if rp.is_root:
            raise Conflict("The root folder cannot be replaced by a file.")
        with self.db.read_conn() as c:
            access.need_write(self.files.view(c, p), rp)  # R-SHARE-1, before any byte
            parent = self.files.lookup_dir(c, p.tenant_id, rp.parent)
            node = sql.child(c, p.tenant_id, parent.id, rp.name)
            if node is None or node.kind == "file":
                check_write(c, p, NO_TOKENS, rp)
        if node is not None and node.kind != "file":
            raise Conflict(f"{rp} is a folder; a file cannot replace it.", is_folder=True)

    # ---- status ----------------------------------------------------------------------
    def _row(self, s: Any, p: Principal, upload_id: str) -> ResumableUpload:
        row = s.get(ResumableUpload, upload_id) if is_id(upload_id) else None
        if row is None or row.tenant_id != p.tenant_id or row.expires_at <= utcnow():
            raise NotFound("No such upload (finished long ago, expired, or never created).")
        return row  # type: ignore[no-any-return]

    def status(self, p: Principal, upload_id: str) -> ResumableInfo:
        self.files._writable(p)
        with self.db.read() as s:
            return _info(self._row(s, p, upload_id))

    # ---- the part file's lock ---------------------------------------------------------
    def _lock_part(self, upload_id: str) -> BufferedRandom | None:
        """The upload's part file, open for writing and held under an exclusive ``flock``
        until it is closed, or None if there is no part file (a final upload, or one
        finished or ended meanwhile: the caller re-reads the row to tell which).

        Never waits: if another request holds it, Locked. flock belongs to the open file,
        so two threads of this process exclude each other exactly as two processes do,
        and the kernel drops it when its holder dies, even by kill -9."""
        path = self.part_path(upload_id)
        try:
            part = path.open("r+b")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(part.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Opened just before its holder deleted it (the upload was committed or
            # ended)? Then this lock guards a file nobody will look at again.
            try:
                same = os.path.samestat(os.fstat(part.fileno()), path.stat())
            except FileNotFoundError:
                same = False
        except BlockingIOError:
            part.close()
            raise Locked(
                "Another request is writing to this upload right now; retry when it ends "
                "(ask for the offset with HEAD)."
            ) from None
        except BaseException:
            part.close()
            raise
        if not same:
            part.close()
            return None
        return part

    @contextlib.contextmanager
    def _holding(self, upload_ids: list[str]) -> Iterator[set[str]]:
        """Hold the locks of these uploads' part files (all, or Locked); yields the ids
        whose part file exists."""
        held: dict[str, BufferedRandom] = {}
        try:
            for upload_id in dict.fromkeys(upload_ids):  # a part named twice: locked once
                part = self._lock_part(upload_id)
                if part is not None:
                    held[upload_id] = part
            yield set(held)
        finally:
            for part in held.values():
                part.close()

    # ---- appending -------------------------------------------------------------------
    def open_append(
        self, p: Principal, upload_id: str, offset: int, checksum: tuple[str, bytes] | None
    ) -> Appender:
        """Take the upload for one PATCH: its part file's lock, held until the Appender
        ends, and its row read under that lock (another process may have advanced it)."""
        self.status(p, upload_id)  # another Client's upload is 404, never 423 (R-STORE-3)
        part = self._lock_part(upload_id)
        try:
            info = self.status(p, upload_id)
            if info.concat == "final":
                raise Conflict("A final (concatenated) upload takes no bytes of its own.")
            if info.done:
                raise Conflict("This upload is complete.", upload_offset=info.offset)
            if part is None:  # open, yet its bytes are gone: removed by hand
                raise Gone("The staged bytes of this upload are missing; upload the file again.")
            if offset != info.offset:
                raise Conflict(
                    f"Upload-Offset is {offset} but the server has {info.offset} bytes; resume "
                    f"from {info.offset} (ask with HEAD).",
                    upload_offset=info.offset,
                )
            return Appender(self, p, info, checksum, part)
        except BaseException:
            if part is not None:
                part.close()
            raise

    def _record_offset(self, p: Principal, upload_id: str, offset: int) -> ResumableInfo:
        with self.db.write() as s:
            row = self._row(s, p, upload_id)
            row.offset = offset
            row.expires_at = utcnow() + self.expiry  # activity extends the life
            return _info(row)

    # ---- committing ------------------------------------------------------------------
    def commit(self, p: Principal, upload_id: str) -> ResumableInfo:
        """Stream the staged bytes into the tree, as one new file version (once: a second
        call finds it done and answers the same result). Holds the lock of every part
        file it reads (a final upload's parts), so nobody appends to, ends or consumes
        them meanwhile."""
        info = self.status(p, upload_id)
        if info.done:
            return info
        final = info.concat == "final"
        with self._holding(info.parts if final else [upload_id]) as present:
            info = self.status(p, upload_id)  # under the lock: perhaps done meanwhile
            if not info.done:
                if final:
                    self._check_parts(p, info.parts)  # not consumed by another final since
                elif info.offset != info.length:
                    raise Conflict(f"The upload has {info.offset} of {info.length} bytes.")
                elif upload_id not in present:
                    raise Gone("The staged bytes of this upload are missing; upload it again.")
                self._commit(p, info)
            return self.status(p, upload_id)

    def _take_live(self, upload_id: str) -> Upload | None:
        with self._lock:
            return self._live.pop(upload_id, None)

    def drop_live(self, upload_id: str) -> None:
        upload = self._take_live(upload_id)
        if upload is not None:
            upload.abort()

    def live_for(self, p: Principal, info: ResumableInfo) -> Upload | None:
        """The Upload to feed for a PATCH at ``info.offset``, if the fast path applies.
        The caller holds the part file's lock, and ``info`` was read under it."""
        if info.concat or not info.path:
            return None
        with self._lock:
            live = self._live.get(info.id)
            if live is not None and live.size == info.offset:
                self._feeding.add(info.id)
                return live
        if live is not None:
            # Behind the recorded offset: another process appended since. Offsets only
            # grow, so it can never catch up; the part file has every byte.
            self.drop_live(info.id)
            return None
        if info.offset != 0:
            return None  # the bytes so far are only in the part file (a restart)
        with self._lock:
            full = len(self._live) >= MAX_LIVE
        if full:
            self._sweep_live()
        with self._lock:
            if len(self._live) >= MAX_LIVE:
                return None  # each holds up to ~8 MiB of chunker buffer: bounded memory
        try:
            # No up-front reservation: the row already holds ``length`` of quota (credit).
            live = begin_upload(self.files, p, parse_path(info.path), credit=info.length)
        except AllsetError:
            return None  # e.g. the folder went away: the commit will say so clearly
        with self._lock:
            self._live[info.id] = live
            self._feeding.add(info.id)
        return live

    def _fed(self, upload_id: str) -> None:
        with self._lock:
            self._feeding.discard(upload_id)

    def _sweep_live(self) -> None:
        """Let go of the live Uploads that can never be fed again: their upload was
        committed, ended or advanced by another process. Otherwise a process would keep
        them (each up to ~8 MiB) until the next request for the same upload landed here,
        and after MAX_LIVE of them lose the fast path. Their chunks are left to the
        orphan collector, not deleted: another process may be committing the same bytes
        from the part file right now, and this one does not hold its lock."""
        with self._lock:
            idle = {
                i: (live, live.size) for i, live in self._live.items() if i not in self._feeding
            }
        if not idle:
            return
        with self.db.read_conn() as c:
            rows = {
                r.id: (r.offset, r.state)
                for r in c.execute(
                    select(ResumableUpload.id, ResumableUpload.offset, ResumableUpload.state).where(
                        ResumableUpload.id.in_(list(idle))
                    )
                )
            }
        stale = [i for i, (_, size) in idle.items() if rows.get(i) != (size, "open")]
        dropped: list[Upload] = []
        with self._lock:
            for i in stale:
                live, size = idle[i]
                if i not in self._feeding and self._live.get(i) is live and live.size == size:
                    dropped.append(self._live.pop(i))
        for live in dropped:
            live.finish()  # lets go of its leases and quota credit; deletes nothing
        if dropped:
            log.info("let go of stale live uploads", extra={"count": len(dropped)})

    def _commit(self, p: Principal, info: ResumableInfo) -> Entry:
        rp = parse_path(info.path)
        sources = (
            [self.part_path(pid) for pid in info.parts]
            if info.concat == "final"
            else [self.part_path(info.id)]
        )
        # A live Upload holding every byte was committed by the last PATCH itself
        # (Appender._commit_live); one still here disagrees with the part file.
        self.drop_live(info.id)
        upload = begin_upload(self.files, p, rp, expected_size=info.length, credit=info.length)
        try:
            for src in sources:
                with src.open("rb") as f:
                    for _ in range(info.length // BLOCK + 2):
                        block = f.read(BLOCK)
                        if not block:
                            break
                        upload.write(block)
        except BaseException:
            upload.abort()
            raise
        entry, _ = upload.commit()
        return self._done(info, entry, sources)

    def _done(self, info: ResumableInfo, entry: Entry, sources: list[Path]) -> Entry:
        result = {
            "path": entry.path,
            "size": entry.size,
            "sha256": entry.sha256,
            "version": entry.version,
        }
        with self.db.write() as s:
            row = s.get(ResumableUpload, info.id)
            if row is not None:
                row.state, row.result = "done", result
                row.offset = info.length  # already, unless committed straight from a PATCH
            for pid in info.parts:  # consumed: a part belongs to one final upload
                s.execute(delete(ResumableUpload).where(ResumableUpload.id == pid))
        for src in sources:
            src.unlink(missing_ok=True)
        return entry

    # ---- ending ----------------------------------------------------------------------
    def terminate(self, p: Principal, upload_id: str) -> None:
        """tus termination: the upload and its bytes are gone at once (423 while another
        request is writing to it: it would otherwise go on into a deleted file)."""
        self.status(p, upload_id)  # another Client's upload is 404, never 423 (R-STORE-3)
        with self._holding([upload_id]):
            with self.db.write() as s:
                row = self._row(s, p, upload_id)
                s.delete(row)
            self.drop_live(upload_id)
            self.part_path(upload_id).unlink(missing_ok=True)

    def expire(self, now: datetime | None = None) -> int:
        """Maintenance: forget expired uploads and delete their bytes; also part files
        that no row claims (a crash between creating the file and the row). An upload a
        request holds, in any process, is left for the next run: its PATCH extends its
        life."""
        now = now or utcnow()
        with self.db.read() as s:
            ids = list(
                s.scalars(select(ResumableUpload.id).where(ResumableUpload.expires_at <= now))
            )
        expired = 0
        for upload_id in ids:
            try:
                with self._holding([upload_id]):
                    with self.db.write() as s:
                        row = s.get(ResumableUpload, upload_id)
                        if row is None or row.expires_at > now:
                            continue  # ended, or extended, since it was listed
                        s.delete(row)
                    self.drop_live(upload_id)
                    self.part_path(upload_id).unlink(missing_ok=True)
                    expired += 1
            except Locked:
                continue
        with self.db.read() as s:
            known = set(s.scalars(select(ResumableUpload.id)))
        for part in self.root.glob("*.part"):
            old = False
            with contextlib.suppress(FileNotFoundError):  # committed since it was listed
                old = part.stat().st_mtime < now.timestamp() - 3600
            if part.stem not in known and old:
                with contextlib.suppress(Locked), self._holding([part.stem]) as present:
                    if present:
                        part.unlink(missing_ok=True)
        if expired:
            log.info("expired resumable uploads", extra={"count": expired})
        return expired


class Appender:
    """One PATCH, holding the part file's lock from ``open_append`` until it ends. Without
    a live Upload the bytes go to the part file as they arrive.

    With one (the usual case: the upload began at offset 0 in this process) they go
    only to the Upload, which chunks and stores them as they arrive; the part file is
    written at the end of the PATCH, and only if the upload is not complete then, from
    where the bytes are by then (stored chunks, read back verified, and the chunker's
    buffer). A complete upload is committed straight from the Upload and never touches
    the part file: writing every byte a third time, even only into the page cache, put
    tus at 0.7 of a plain PUT on this machine (each fresh page of cache costs a fault).
    A crash mid-PATCH loses only what was never acknowledged: the part file and the
    recorded offset still agree, and the chunks stored meanwhile are orphans that the
    collector reclaims."""

    def __init__(
        self,
        owner: Resumables,
        p: Principal,
        info: ResumableInfo,
        checksum: tuple[str, bytes] | None,
        part: BufferedRandom,
    ) -> None:
        self.owner, self.p, self.info = owner, p, info
        self.checksum = checksum
        self._hash = CHECKSUMS[checksum[0]]() if checksum else None
        self.written = 0
        self._file = part  # open and locked: closing it lets the next request in
        self._live: Upload | None = None
        self._recorded: int | None = None
        try:
            self._live = owner.live_for(p, info)
            # Bytes beyond the acknowledged offset were never acknowledged: cut them.
            # Only if there are any: ext4 takes a truncation to 0 for a file being
            # replaced and writes its blocks out at close (auto_da_alloc).
            if os.fstat(self._file.fileno()).st_size != info.offset:
                self._file.truncate(info.offset)
            self._file.seek(info.offset)
        except BaseException:
            self._close()
            raise

    def write(self, data: bytes | bytearray) -> None:
        if self.info.offset + self.written + len(data) > self.info.length:
            raise InvalidInput(
                f"More bytes than the announced Upload-Length ({self.info.length}).",
                upload_length=self.info.length,
            )
        if self._live is not None:
            try:
                self._live.write(data)
            except BaseException:
                # Its bytes are nowhere else: this PATCH is lost, the offset stays.
                self._drop_live()
                raise
        else:
            self._file.write(data)
        if self._hash is not None:
            self._hash.update(data)
        self.written += len(data)

    def finish(self) -> ResumableInfo:
        """All of this request's body arrived: make it durable, then announce it."""
        try:
            if (
                self.checksum
                and self._hash is not None
                and (self._hash.digest() != self.checksum[1])
            ):
                self._drop_live()  # it holds the rejected bytes
                self._file.truncate(self.info.offset)
                raise ChecksumMismatch(
                    f"The body does not match Upload-Checksum ({self.checksum[0]}); its "
                    f"{self.written} bytes were discarded. Resume from offset "
                    f"{self.info.offset}.",
                    upload_offset=self.info.offset,
                )
            if (
                self._live is not None
                and self.info.offset + self.written == self.info.length
                and not self.info.concat
            ):
                done = self._commit_live()
                if done is not None:
                    return done
            info = self._durable()
            if info.offset == info.length and not info.concat:
                # The last byte, without a live Upload holding them all (after a restart,
                # or bytes sent through another process): commit from the part file now,
                # still holding the lock. A refusal is raised with every byte acknowledged.
                self.owner._commit(self.p, info)
                return self.owner.status(self.p, info.id)
            return info
        finally:
            self._close()

    def _commit_live(self) -> ResumableInfo | None:
        """The last byte arrived and the live Upload holds them all: commit it at once.
        If the commit is refused (a folder now in the way...), None: the bytes are then
        written to the part file as for an early end, acknowledged, and the caller's
        commit from the part file says why, so that a retry can still succeed."""
        live = self._live
        assert live is not None
        info = replace(self.info, offset=self.info.length)
        try:
            entry, _ = live.commit(keep_on_error=True)
        except AllsetError:
            return None
        self.owner._take_live(info.id)
        self._live = None
        self.owner._done(info, entry, [self.owner.part_path(info.id)])
        self._recorded = info.length
        return self.owner.status(self.p, info.id)

    def interrupted(self) -> ResumableInfo | None:
        """The client went away mid-body: keep what arrived (that is the point of tus),
        unless a checksum was announced, which a partial body cannot satisfy."""
        try:
            if self.checksum:
                self._drop_live()
                self._file.truncate(self.info.offset)
                return None
            return self._durable() if self.written else None
        finally:
            self._close()

    def _durable(self) -> ResumableInfo:
        if self._live is not None:  # this PATCH's bytes are in the Upload: copy them out
            for piece in self._live.read_back(self.info.offset):
                self._file.write(piece)
        self._file.flush()
        os.fdatasync(self._file.fileno())
        info = self.owner._record_offset(self.p, self.info.id, self.info.offset + self.written)
        self._recorded = info.offset
        return info

    def _drop_live(self) -> None:
        if self._live is not None:
            self._live = None
            self.owner.drop_live(self.info.id)

    def _close(self) -> None:
        # The live Upload must hold exactly the acknowledged bytes, or go: decided while
        # the lock is still held, so the next request of any thread sees the outcome.
        try:
            recorded = self.info.offset if self._recorded is None else self._recorded
            if self._live is not None and (self._live.size != recorded or self._live.committing):
                self._drop_live()
        finally:
            self.owner._fed(self.info.id)
            with contextlib.suppress(OSError):
                self._file.close()  # releases the lock
