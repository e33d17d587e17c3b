"""The trash: listing, restoring and destroying trashed nodes (part of the ``FileService``
façade: ``FileService`` binds these as its methods, so callers see one service)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from allset.core.errors import Conflict, NotFound
from allset.core.ids import is_id
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.db.models import Event, Node, NodeProperty, Version, VersionChunk, utcnow
from allset.files import access
from allset.files.entries import Entry, entry_of
from allset.files.locks import NO_TOKENS, LockProof, check_write

if TYPE_CHECKING:
    from allset.files.service import FileService


def trash_list(svc: FileService, p: Principal) -> list[dict[str, Any]]:
    svc._writable(p)
    with svc.db.read() as s:
        view = svc.view(s.connection(), p)
        rows = [
            n
            for n in s.scalars(
                select(Node)
                .where(Node.tenant_id == p.tenant_id, Node.trashed_at.is_not(None))
                .order_by(Node.trashed_at.desc())
                .limit(10_000)
            )
            if _in_trash_view(view, p, n)
        ]
        return [
            {
                "id": n.id,
                "name": n.name,
                "original_path": n.trashed_path,
                "type": "folder" if n.kind == "dir" else "file",
                "size": n.size,
                "trashed_at": n.trashed_at.isoformat() if n.trashed_at else None,
                "expires_at": (n.trashed_at + svc.retention).isoformat() if n.trashed_at else None,
            }
            for n in rows
        ]


def _in_trash_view(view: access.AccessView, p: Principal, n: Node) -> bool:
    """A member's trash: what they deleted, or what was where they may read."""
    return view.full or n.trashed_by == p.id or view.level_of(n.trashed_path) >= access.READ


def _trashed(svc: FileService, s: Session, p: Principal, node_id: str) -> Node:
    n = s.get(Node, node_id) if is_id(node_id) else None
    if n is None or n.tenant_id != p.tenant_id or n.trashed_at is None:
        raise NotFound("No such item in the trash.")
    view = svc.view(s.connection(), p)
    if not _in_trash_view(view, p, n):
        raise NotFound("No such item in the trash.")
    access.need_write(view, parse_path(n.trashed_path))  # restoring or purging writes there
    return n


def trash_restore(
    svc: FileService, p: Principal, node_id: str, *, locks: LockProof = NO_TOKENS
) -> Entry:
    """Back to where it was; missing folders are recreated and a taken name gets a
    ``(restored N)`` suffix rather than replacing anything. A place under a live WebDAV
    lock (a folder locked with depth infinity, or a name locked before it existed) is
    refused (423) without its token (files/locks.py)."""
    svc._writable(p)
    with svc.db.write() as s:
        n = svc._trashed(s, p, node_id)
        original = parse_path(n.trashed_path)
        parent = svc._mkdirs(s, p, original.parent)
        name = original.name
        stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
        for i in range(1, 1000):
            if svc._child(s, p.tenant_id, parent.id, name) is None:
                break
            name = f"{stem} (restored {i}){dot}{ext}"
        else:
            raise Conflict("Too many items with this name; rename them first.")
        rp = RemotePath((*original.parent.parts, name))
        check_write(s.connection(), p, locks, rp, subtree=True)
        n.parent_id, n.name, n.trashed_at, n.trashed_path, n.updated_at = (
            parent.id,
            name,
            None,
            "",
            utcnow(),
        )
        s.flush()
        svc._event(s, p, "restore", n, rp)
        return entry_of(n, rp)


def trash_purge(svc: FileService, p: Principal, node_id: str | None = None) -> int:
    """Destroy one trashed item (or all): the only user action that frees space."""
    svc._writable(p)
    with svc.db.write() as s:
        if node_id is None:
            view = svc.view(s.connection(), p)
            ids = [
                n.id
                for n in s.scalars(
                    select(Node).where(Node.tenant_id == p.tenant_id, Node.trashed_at.is_not(None))
                )
                if view.full
                or (
                    _in_trash_view(view, p, n)
                    and view.level_of(n.trashed_path.rsplit("/", 1)[0]) == access.WRITE
                )
            ]
        else:
            ids = [svc._trashed(s, p, node_id).id]
        count = 0
        for i in ids:
            count += svc._destroy_subtree(s, p.tenant_id, i)
        if ids:
            s.add(
                Event(
                    tenant_id=p.tenant_id,
                    actor=p.email,
                    kind="trash.purge",
                    detail={"items": len(ids)},
                )
            )
    return count


def _destroy_subtree(svc: FileService, s: Session, tenant_id: str, node_id: str) -> int:
    """Delete rows bottom-up; chunks become unreferenced and the collector frees them."""
    order: list[str] = []
    stack = [node_id]
    while stack:
        nid = stack.pop()
        order.append(nid)
        stack.extend(
            s.scalars(select(Node.id).where(Node.tenant_id == tenant_id, Node.parent_id == nid))
        )
    for nid in reversed(order):
        vids = list(
            s.scalars(
                select(Version.id).where(Version.tenant_id == tenant_id, Version.node_id == nid)
            )
        )
        if vids:
            s.execute(delete(VersionChunk).where(VersionChunk.version_id.in_(vids)))
            s.execute(delete(Version).where(Version.id.in_(vids)))
        s.execute(delete(NodeProperty).where(NodeProperty.node_id == nid))
        access.drop_node_grants(s.connection(), tenant_id, nid)
        s.execute(delete(Node).where(Node.id == nid, Node.tenant_id == tenant_id))
    return len(order)
