"""Housekeeping that keeps promises: retention purge, chunk collection, scrub, and the
removal of expired WebDAV locks.

Collection never deletes what it cannot prove unused: a chunk goes only when no version
references it, no upload holds a lease on it, no commit of any process is between its
chunk rows and its COMMIT (the interlock, files/leases.py), and (for files found on disk
without a database row) it is older than the grace period.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, select, update

from allset.blobstore.backend import ObjectMissing, split_key
from allset.blobstore.replicated import ScrubReport
from allset.core.principal import Principal
from allset.db.engine import Database
from allset.db.models import (
    Chunk,
    DavLock,
    Event,
    LinkTraffic,
    Node,
    Tenant,
    Version,
    VersionChunk,
    utcnow,
)
from allset.files.service import FileService

if TYPE_CHECKING:
    from allset.files.resumable import Resumables

log = logging.getLogger("allset.maintenance")
INTERLOCK_WAIT = 10.0
"""Seconds the collector waits for commits to let it through before it gives up until
the next run (uploads come first)."""


@dataclass
class MaintenanceReport:
    trashed_purged: int = 0
    versions_purged: int = 0
    chunks_freed: int = 0
    bytes_freed: int = 0
    orphan_files: int = 0
    temp_files: int = 0
    expired_uploads: int = 0
    expired_dav_locks: int = 0
    details: dict[str, Any] = field(default_factory=dict)


def purge_expired(svc: FileService, now: datetime | None = None) -> MaintenanceReport:
    """Trash and superseded versions older than the retention period are destroyed."""
    now = now or utcnow()
    cutoff = now - svc.retention
    report = MaintenanceReport()
    with svc.db.write() as s:
        for node in list(
            s.scalars(
                select(Node)
                .where(Node.trashed_at.is_not(None), Node.trashed_at < cutoff)
                .limit(10_000)
            )
        ):
            report.trashed_purged += svc._destroy_subtree(s, node.tenant_id, node.id)
        old = list(
            s.scalars(
                select(Version.id)
                .where(Version.superseded_at.is_not(None), Version.superseded_at < cutoff)
                .limit(50_000)
            )
        )
        for i in range(0, len(old), 500):
            batch = old[i : i + 500]
            s.execute(delete(VersionChunk).where(VersionChunk.version_id.in_(batch)))
            s.execute(delete(Version).where(Version.id.in_(batch)))
        report.versions_purged = len(old)
        if report.trashed_purged or report.versions_purged:
            s.add(
                Event(
                    tenant_id=None,
                    actor="retention",
                    kind="retention.purge",
                    detail={"nodes": report.trashed_purged, "versions": report.versions_purged},
                )
            )
    return report


def collect_chunks(
    svc: FileService, report: MaintenanceReport | None = None, only_tenant: str | None = None
) -> MaintenanceReport:
    """Free chunks that no version references any more, and give their bytes back to the
    quota; ``only_tenant`` limits the pass to one Client (after it emptied its trash)."""
    report = report or MaintenanceReport()
    only = [Chunk.tenant_id == only_tenant] if only_tenant else []
    with svc.db.read() as s:
        candidates = list(
            s.execute(
                select(Chunk.tenant_id, Chunk.hash, Chunk.size)
                .where(*only)
                .where(
                    ~exists().where(
                        VersionChunk.tenant_id == Chunk.tenant_id, VersionChunk.hash == Chunk.hash
                    )
                )
                .limit(100_000)
            )
        )
    for tenant_id, digest, size in candidates:
        # The interlock with commits of every process (files/leases.py), then this
        # process's leases; each chunk on its own so that commits wait milliseconds.
        with (
            svc.leases.collecting(INTERLOCK_WAIT) as ours,
            svc.leases.unheld(tenant_id, digest) as unused_here,
        ):
            if not ours:
                log.warning("chunk collection postponed: commits kept the interlock busy")
                break
            if not unused_here:
                continue
            with svc.db.write() as s:
                row = s.scalar(
                    select(Chunk)
                    .where(Chunk.tenant_id == tenant_id, Chunk.hash == digest)
                    .with_for_update()
                )
                if row is None:
                    continue
                referenced = s.scalar(
                    select(
                        exists().where(
                            VersionChunk.tenant_id == tenant_id, VersionChunk.hash == digest
                        )
                    )
                )
                if referenced:
                    continue
                s.delete(row)
                s.execute(
                    update(Tenant)
                    .where(Tenant.id == tenant_id)
                    .values(used_bytes=Tenant.used_bytes - size)
                )
            # The row is gone (committed) before the bytes: a crash in between leaves an
            # orphan file, never a row pointing at nothing.
            svc.store.delete(tenant_id, digest)
            report.chunks_freed += 1
            report.bytes_freed += size
    return report


def purge_trash(svc: FileService, p: Principal, node_id: str | None = None) -> int:
    """Destroy one trashed item (or the whole trash) and free its space at once, as users
    expect from emptying a trash, rather than at the next maintenance cycle."""
    count = svc.trash_purge(p, node_id)
    collect_chunks(svc, only_tenant=p.tenant_id)
    return count


def collect_orphans(
    svc: FileService, grace_seconds: float, report: MaintenanceReport | None = None
) -> MaintenanceReport:
    """Files on the volumes with no chunk row: writes that never committed (crash)."""
    report = report or MaintenanceReport()
    report.temp_files += svc.store.cleanup_temporary()
    for key in list(svc.store.keys()):
        tenant_id, digest = split_key(key)
        if not _orphan(svc, key, grace_seconds):  # most files: no lock needed to see it
            continue
        with (
            svc.leases.collecting(INTERLOCK_WAIT) as ours,
            svc.leases.unheld(tenant_id, digest) as unused_here,
        ):
            if not ours:
                log.warning("orphan collection postponed: commits kept the interlock busy")
                break
            if not unused_here or not _orphan(svc, key, grace_seconds):
                continue
            svc.store.delete_key(key)
            report.orphan_files += 1
    if report.orphan_files or report.temp_files:
        log.info(
            "reclaimed %d orphan chunk files and %d temp files",
            report.orphan_files,
            report.temp_files,
        )
    return report


def _orphan(svc: FileService, key: str, grace_seconds: float) -> bool:
    """No chunk row, and older than the grace period (an upload of another process may
    still be about to commit a younger one)."""
    tenant_id, digest = split_key(key)
    with svc.db.read() as s:
        if s.get(Chunk, (tenant_id, digest)) is not None:
            return False
    try:
        return svc.store.age_seconds(key) >= grace_seconds
    except ObjectMissing:  # gone meanwhile
        return False


def expire_dav_locks(db: Database, now: datetime | None = None) -> int:
    """Delete the WebDAV locks past their timeout (every read ignores them already; this
    keeps the table to the live ones). A lock refreshed meanwhile has a later expiry and
    stays: the condition is evaluated by the DELETE itself."""
    with db.write_conn() as conn:
        done = conn.execute(delete(DavLock).where(DavLock.expires_at <= (now or utcnow())))
    return int(done.rowcount or 0)


def purge_link_traffic(db: Database, now: datetime | None = None, keep_days: int = 7) -> int:
    """Day counts of public-link traffic (R-SHARE-5) matter for their own day only; a
    week is kept for whoever looks into an alert."""
    oldest = ((now or utcnow()) - timedelta(days=keep_days)).date().isoformat()
    with db.write_conn() as conn:
        done = conn.execute(delete(LinkTraffic).where(LinkTraffic.day < oldest))
    return int(done.rowcount or 0)


def run_all(
    svc: FileService, grace_seconds: float, resumables: Resumables | None = None
) -> MaintenanceReport:
    report = purge_expired(svc)
    if resumables is not None:
        report.expired_uploads = resumables.expire()
    report.expired_dav_locks = expire_dav_locks(svc.db)
    purge_link_traffic(svc.db)
    collect_chunks(svc, report)
    collect_orphans(svc, grace_seconds, report)
    return report


def scrub(svc: FileService, repair: bool) -> ScrubReport:
    """Verify every copy of every chunk the database knows (R-STORE-4)."""

    def expected() -> Any:
        last = ("", "")
        while True:
            with svc.db.read() as s:
                rows = list(
                    s.execute(
                        select(Chunk.tenant_id, Chunk.hash)
                        .where(
                            (Chunk.tenant_id > last[0])
                            | ((Chunk.tenant_id == last[0]) & (Chunk.hash > last[1]))
                        )
                        .order_by(Chunk.tenant_id, Chunk.hash)
                        .limit(1000)
                    )
                )
            if not rows:
                return
            for r in rows:
                yield (r[0], r[1])
            last = (rows[-1][0], rows[-1][1])

    return svc.store.scrub(expected(), repair)
