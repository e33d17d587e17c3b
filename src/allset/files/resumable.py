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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from allset.core.durable import fsync_dir
from allset.core.errors import (
    AllsetError,
    ChecksumMismatch,
    Conflict,
    InvalidInput,
    NotFound,
    TooLarge,
)
from allset.core.ids import is_id, new_id
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.db.models import ResumableUpload, utcnow
from allset.files import access, sql
from allset.files.entries import Entry
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
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        # Fast path: the Upload fed as PATCH bodies arrive, so the last byte needs only the
        # commit. Memory only; whenever it might disagree with the part file it is dropped
        # and the part file is streamed instead (after a restart, a discarded body...).
        self._live: dict[str, Upload] = {}
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
        a folder."""
        if rp.is_root:
            raise Conflict("The root folder cannot be replaced by a file.")
        with self.db.read_conn() as c:
            access.need_write(self.files.view(c, p), rp)  # R-SHARE-1, before any byte
            parent = self.files.lookup_dir(c, p.tenant_id, rp.parent)
            node = sql.child(c, p.tenant_id, parent.id, rp.name)
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

    # ---- appending -------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self, upload_id: str) -> Iterator[None]:
        with self._lock:
            if upload_id in self._busy:
                raise Conflict("Another request is writing to this upload; retry when it ends.")
            self._busy.add(upload_id)
        try:
            yield
        finally:
            with self._lock:
                self._busy.discard(upload_id)

    def open_append(
        self, p: Principal, upload_id: str, offset: int, checksum: tuple[str, bytes] | None
    ) -> Appender:
        info = self.status(p, upload_id)
        if info.concat == "final":
            raise Conflict("A final (concatenated) upload takes no bytes of its own.")
        if info.done:
            raise Conflict("This upload is complete.", upload_offset=info.offset)
        if offset != info.offset:
            raise Conflict(
                f"Upload-Offset is {offset} but the server has {info.offset} bytes; resume "
                f"from {info.offset} (ask with HEAD).",
                upload_offset=info.offset,
            )
        return Appender(self, p, info, checksum)

    def _record_offset(self, p: Principal, upload_id: str, offset: int) -> ResumableInfo:
        with self.db.write() as s:
            row = self._row(s, p, upload_id)
            row.offset = offset
            row.expires_at = utcnow() + self.expiry  # activity extends the life
            return _info(row)

    # ---- committing ------------------------------------------------------------------
    def commit(self, p: Principal, upload_id: str) -> ResumableInfo:
        """Stream the staged bytes into the tree, as one new file version (once: a second
        call finds it done and answers the same result)."""
        with self._exclusive(upload_id):
            info = self.status(p, upload_id)
            if not info.done:
                if info.offset != info.length and info.concat != "final":
                    raise Conflict(f"The upload has {info.offset} of {info.length} bytes.")
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
        """The Upload to feed for a PATCH at ``info.offset``, if the fast path applies."""
        if info.concat or not info.path:
            return None
        with self._lock:
            live = self._live.get(info.id)
        if live is not None:
            if live.size == info.offset:
                return live
            self.drop_live(info.id)
            return None
        if info.offset != 0:
            return None  # the bytes so far are only in the part file (a restart)
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
        return live

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
        """tus termination: the upload and its bytes are gone at once."""
        self.files._writable(p)
        with self._exclusive(upload_id):
            with self.db.write() as s:
                row = self._row(s, p, upload_id)
                s.delete(row)
            self.drop_live(upload_id)
            self.part_path(upload_id).unlink(missing_ok=True)

    def expire(self, now: datetime | None = None) -> int:
        """Maintenance: forget expired uploads and delete their bytes; also part files
        that no row claims (a crash between creating the file and the row)."""
        now = now or utcnow()
        with self._lock:
            busy = set(self._busy)  # a request is writing to it right now: not expired
        with self.db.write() as s:
            ids = [
                i
                for i in s.scalars(
                    select(ResumableUpload.id).where(ResumableUpload.expires_at <= now)
                )
                if i not in busy
            ]
            if ids:
                s.execute(delete(ResumableUpload).where(ResumableUpload.id.in_(ids)))
        for upload_id in ids:
            self.drop_live(upload_id)
            self.part_path(upload_id).unlink(missing_ok=True)
        with self.db.read() as s:
            known = set(s.scalars(select(ResumableUpload.id)))
        for part in self.root.glob("*.part"):
            if part.stem not in known and part.stat().st_mtime < now.timestamp() - 3600:
                part.unlink(missing_ok=True)
        if ids:
            log.info("expired resumable uploads", extra={"count": len(ids)})
        return len(ids)


class Appender:
    """One PATCH. Without a live Upload the bytes go to the part file as they arrive.

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
    ) -> None:
        self.owner, self.p, self.info = owner, p, info
        self.checksum = checksum
        self._hash = CHECKSUMS[checksum[0]]() if checksum else None
        self.written = 0
        self._guard = owner._exclusive(info.id)
        self._guard.__enter__()
        self._live: Upload | None = None
        self._recorded: int | None = None
        try:
            self._live = owner.live_for(p, info)
            self._file = owner.part_path(info.id).open("r+b")
            # Bytes beyond the acknowledged offset were never acknowledged: cut them.
            # Only if there are any: ext4 takes a truncation to 0 for a file being
            # replaced and writes its blocks out at close (auto_da_alloc).
            if os.fstat(self._file.fileno()).st_size != info.offset:
                self._file.truncate(info.offset)
            self._file.seek(info.offset)
        except BaseException:
            self._guard.__exit__(None, None, None)
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
            return self._durable()
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
        with contextlib.suppress(OSError):
            self._file.close()
        # The live Upload must hold exactly the acknowledged bytes, or go.
        recorded = self.info.offset if self._recorded is None else self._recorded
        if self._live is not None and (self._live.size != recorded or self._live.committing):
            self._drop_live()
        self._guard.__exit__(None, None, None)
