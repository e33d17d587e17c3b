"""FileService: the façade over the tree, versions, trash and chunk store."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from allset.blobstore.replicated import ReplicatedStore
from allset.core.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from allset.core.ids import is_id, new_id
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.db.engine import Database
from allset.db.models import Node, Version, utcnow
from allset.db.prepared import Record
from allset.files import access, listing, props, sql, trash
from allset.files.entries import ChunkRef, Entry, Readable, entry_of
from allset.files.events import ChangeNotifier
from allset.files.leases import ChunkLeases
from allset.files.locks import NO_TOKENS, LockProof, check_write, release_passed

log = logging.getLogger("allset.files")

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Usage:
    used: int
    quota: int
    inflight: int


_N = TypeVar("_N", Node, Row[Any])


def _folder_or_conflict(node: _N | None, path: RemotePath) -> _N:
    if node is None:
        raise Conflict(f"The folder {path} does not exist; create it first.", missing=str(path))
    if node.kind != "dir":
        raise Conflict(f"{path} is a file, not a folder.")
    return node


def check_etag(entry_etag: str | None, if_match: str | None, if_none_match: str | None) -> None:
    """RFC 9110 preconditions for writes; ``entry_etag`` is None when nothing exists."""
    if if_match is not None:
        tags = [t.strip() for t in if_match.split(",")]
        if entry_etag is None or ("*" not in tags and entry_etag not in tags):
            raise PreconditionFailed(
                "The file changed since you read it (If-Match does not match)."
                if entry_etag
                else "There is no file at this path (If-Match given).",
                current_etag=entry_etag,
            )
    if if_none_match is not None and entry_etag is not None:
        tags = [t.strip() for t in if_none_match.split(",")]
        if "*" in tags or entry_etag in tags:
            raise PreconditionFailed(
                "A file already exists at this path (If-None-Match).", current_etag=entry_etag
            )


class FileService:
    def __init__(
        self,
        db: Database,
        store: ReplicatedStore,
        leases: ChunkLeases,
        retention_days: int,
        recheck_seconds: float = 0,
    ) -> None:
        self.db = db
        self.store = store
        self.leases = leases
        self.possession = access.Possession()
        self.retention = timedelta(days=retention_days)
        self._roots: dict[str, str] = {}
        # Wakes change-feed long-polls once a transaction that changed a tree commits.
        self.changes = ChangeNotifier(recheck_seconds)
        db.on_commit.append(self.changes.notify)

    # ---- tree walking --------------------------------------------------------------
    def _root_id(self, conn: Connection, tenant_id: str) -> str:
        """A Client's root folder never changes, so its id is cached."""
        root_id = self._roots.get(tenant_id)
        if root_id is None:
            root_id = conn.scalar(
                select(sql.NODES.c.id).where(
                    sql.NODES.c.tenant_id == tenant_id, sql.NODES.c.parent_id.is_(None)
                )
            )
            if root_id is None:  # a Client always has a root; missing means "not yours"
                raise NotFound("Not found.")
            self._roots[tenant_id] = root_id
        return root_id

    def _root(self, s: Session, tenant_id: str) -> Node:
        node = s.get(Node, self._root_id(s.connection(), tenant_id))
        if node is None:
            raise NotFound("Not found.")
        return node

    def lookup(self, conn: Connection, tenant_id: str, path: RemotePath) -> Record | None:
        """The live node at ``path`` as a Core row (one statement whatever the depth)."""
        _, params = sql.path_query(tenant_id, self._root_id(conn, tenant_id), path.parts)
        return sql.path_lookup(len(path.parts)).run(conn, params).first()

    def _child(self, s: Session, tenant_id: str, parent_id: str, name: str) -> Node | None:
        return s.scalar(
            select(Node).where(
                Node.tenant_id == tenant_id,
                Node.parent_id == parent_id,
                Node.name == name,
                Node.trashed_at.is_(None),
            )
        )

    def _resolve(self, s: Session, tenant_id: str, path: RemotePath) -> Node | None:
        if path.is_root:
            return self._root(s, tenant_id)
        _, params = sql.path_query(tenant_id, self._root_id(s.connection(), tenant_id), path.parts)
        node: Node | None = s.scalar(sql.node_at(len(path.parts)), params)
        return node

    def _need_row(self, conn: Connection, tenant_id: str, path: RemotePath) -> Record:
        """``_need`` for Core callers: the node's row, or the same 404."""
        node = self.lookup(conn, tenant_id, path)
        if node is None:
            raise NotFound(f"Nothing at {path}.")
        return node

    def _need(self, s: Session, tenant_id: str, path: RemotePath) -> Node:
        node = self._resolve(s, tenant_id, path)
        if node is None:
            raise NotFound(f"Nothing at {path}.")
        return node

    def _need_dir(self, s: Session, tenant_id: str, path: RemotePath) -> Node:
        return _folder_or_conflict(self._resolve(s, tenant_id, path), path)

    def lookup_dir(self, conn: Connection, tenant_id: str, path: RemotePath) -> Record:
        """``_need_dir`` for Core callers: the folder's row, or the same 409."""
        return _folder_or_conflict(self.lookup(conn, tenant_id, path), path)

    def ensure_dir(self, conn: Connection, p: Principal, path: RemotePath) -> Record:
        """The folder at ``path``, creating missing ones (Core, inside the caller's write
        transaction): ``mkdir -p`` for commits with ``parents``. A file in the way is
        a 409. Each folder made is a ``mkdir`` event, like ``mkdir``'s."""
        found = self.lookup(conn, p.tenant_id, path)
        if found is not None:
            return _folder_or_conflict(found, path)
        node = self.lookup(conn, p.tenant_id, RemotePath(()))
        assert node is not None
        for i, part in enumerate(path.parts):
            here = RemotePath(path.parts[: i + 1])
            child = sql.child(conn, p.tenant_id, node.id, part)
            if child is None:
                now = utcnow()
                node_id = new_id()
                sql.INSERT_NODE.run(
                    conn,
                    {
                        "id": node_id,
                        "tenant_id": p.tenant_id,
                        "parent_id": node.id,
                        "name": part,
                        "kind": "dir",
                        "version_id": None,
                        "size": 0,
                        "sha256": "",
                        "mtime": now,
                        "created_at": now,
                        "updated_at": now,
                        "trashed_at": None,
                        "trashed_path": "",
                        "trashed_by": "",
                    },
                )
                sql.touch(conn, node.id, now)
                sql.record_event(
                    conn,
                    tenant_id=p.tenant_id,
                    actor=p.email,
                    kind="mkdir",
                    node_id=node_id,
                    path=str(here),
                    detail={},
                    now=now,
                )
                child = sql.child(conn, p.tenant_id, node.id, part)
                assert child is not None
            elif child.kind != "dir":
                raise Conflict(f"{here} is a file, not a folder.")
            node = child
        return node

    def _path_of(self, s: Session, node: Node) -> RemotePath:
        parts: list[str] = []
        cur: Node | None = node
        for _ in range(10_000):  # bounded: a cycle would be a bug, not a hang
            if cur is None or cur.parent_id is None:
                break
            parts.append(cur.name)
            cur = s.get(Node, cur.parent_id)
        return RemotePath(tuple(reversed(parts)))

    def _event(
        self, s: Session, p: Principal, kind: str, node: Node, path: RemotePath, **detail: Any
    ) -> None:
        sql.record_event(
            s.connection(),
            tenant_id=p.tenant_id,
            actor=p.email,
            kind=kind,
            node_id=node.id,
            path=str(path),
            detail=detail,
        )

    def _writable(self, p: Principal) -> None:
        if p.is_operator:  # R-STORE-6: the operator does not touch Client data
            raise NotFound("Not found.")

    def view(self, conn: Connection, p: Principal) -> access.AccessView:
        """What ``p`` may see and change (R-SHARE-1): every entry point checks it, so
        the REST API, WebDAV, tus and sync all get the same answer."""
        return access.load_view(conn, p)

    # ---- reading -------------------------------------------------------------------
    def stat(self, p: Principal, path: str | RemotePath) -> Entry:
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        with self.db.read_conn() as c:
            access.need_visible(self.view(c, p), rp)
            return entry_of(self._need_row(c, p.tenant_id, rp), rp)

    def list_dir(
        self, p: Principal, path: str | RemotePath, after: str = "", limit: int = 200
    ) -> tuple[Entry, list[Entry], str | None]:
        """One page of a folder, ordered by name; ``after`` is the last name of the previous
        page (a cursor that stays correct while entries come and go)."""
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        limit = max(1, min(limit, MAX_PAGE))
        if "\x00" in after:  # no name has one, and PostgreSQL refuses it in a query
            raise InvalidInput("The cursor 'after' is a name from a listing; names have no NUL.")
        with self.db.read_conn() as c:
            view = self.view(c, p)
            level = access.need_visible(view, rp)
            node = self.lookup(c, p.tenant_id, rp)
            if node is None:
                raise NotFound(f"Nothing at {rp}.")
            if node.kind != "dir":
                return entry_of(node, rp), [], None
            rows: list[Record] = sql.LIST_PAGE.run(
                c,
                {"tenant_id": p.tenant_id, "parent_id": node.id, "after": after, "n": limit + 1},
            ).all()
            if level == access.NAV:  # a folder above a grant: only the way to the grants
                names = access.nav_names(view, rp.parts)
                rows = [r for r in rows if r.name in names]
            more = len(rows) > limit
            rows = rows[:limit]
            prefix = "/" + "".join(part + "/" for part in rp.parts)
            entries = [entry_of(r, prefix + r.name) for r in rows]
            return entry_of(node, rp), entries, (rows[-1].name if more else None)

    def list_sorted(
        self,
        p: Principal,
        path: str | RemotePath,
        sort: str = "name",
        desc: bool = False,
        after: str = "",
        limit: int = 200,
    ) -> tuple[Entry, list[Entry], str | None]:
        """One page of a folder, folders first, by ``sort`` (name, size or mtime) either
        way; ``after`` is the previous page's cursor (``files.listing``: keyset, so page
        50 of a 10,000-entry folder costs what page 1 does). Same access checks as
        ``list_dir``: a member sees only what leads to their grants."""
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        if sort not in listing.SORTS:
            raise InvalidInput(f"Sort by one of {', '.join(listing.SORTS)}, not {sort!r}.")
        limit = max(1, min(limit, MAX_PAGE))
        cursor = listing.decode_cursor(after, sort) if after else None
        with self.db.read_conn() as c:
            view = self.view(c, p)
            level = access.need_visible(view, rp)
            node = self.lookup(c, p.tenant_id, rp)
            if node is None:
                raise NotFound(f"Nothing at {rp}.")
            if node.kind != "dir":
                return entry_of(node, rp), [], None
            only = access.nav_names(view, rp.parts) if level == access.NAV else None
            stmt = listing.page_query(p.tenant_id, node.id, sort, desc, cursor, limit + 1, only)
            rows = c.execute(stmt).all()
            more = len(rows) > limit
            rows = rows[:limit]
            prefix = "/" + "".join(part + "/" for part in rp.parts)
            entries = [entry_of(r, prefix + r.name) for r in rows]
            nxt = None
            if more:
                last = rows[-1]
                nxt = listing.encode_cursor(sort, last.kind, last.name, last.size, last.mtime)
            return entry_of(node, rp), entries, nxt

    def open_read(
        self, p: Principal, path: str | RemotePath, version: str | None = None
    ) -> Readable:
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        with self.db.read_conn() as c:
            access.need_read(self.view(c, p), rp)
            node = self._need_row(c, p.tenant_id, rp)
            if node.kind != "file":
                raise Conflict(f"{rp} is a folder; list it with /api/v1/tree{rp}.", is_folder=True)
            entry = entry_of(node, rp)
            vid = version or node.version_id
            v = sql.VERSION_BY_ID.run(c, {"id": vid}).first() if vid and is_id(vid) else None
            if v is None or v.node_id != node.id or v.tenant_id != p.tenant_id:
                raise NotFound(f"No version {version!r} of {rp}.")
            if version:
                entry = Entry(
                    id=node.id,
                    name=node.name,
                    path=str(rp),
                    kind="file",
                    size=v.size,
                    sha256=v.sha256,
                    mtime=v.mtime,
                    created_at=node.created_at,
                    version=v.id,
                )
            chunks = tuple(ChunkRef(*ref) for ref in self._refs_of(c, v.id))
            return Readable(entry, p.tenant_id, chunks)

    def plan_read(
        self, r: Readable, start: int = 0, end: int | None = None
    ) -> list[tuple[ChunkRef, int, int]]:
        """The chunks covering ``[start, end)`` with the slice of each to send; the pieces
        can then be read (and verified) in parallel by ``read_piece``."""
        end = r.entry.size if end is None else min(end, r.entry.size)
        plan = []
        for c in r.chunks:
            if c.offset + c.size <= start:
                continue
            if c.offset >= end:
                break
            plan.append((c, max(0, start - c.offset), min(c.size, end - c.offset)))
        return plan

    def read_piece(self, tenant_id: str, ref: ChunkRef, lo: int, hi: int) -> bytes:
        """One verified chunk, sliced. Blocking; thread-safe."""
        data = self.store.get(tenant_id, ref.digest)
        return data if (lo == 0 and hi == ref.size) else data[lo:hi]

    def usage(self, p: Principal) -> Usage:
        """In flight = uploads streaming now + unfinished resumable uploads."""
        with self.db.read_conn() as c:
            row = c.execute(sql.TENANT_USAGE, {"tenant_id": p.tenant_id}).first()
        if row is None:
            raise NotFound("Not found.")
        used, quota, reserved = row
        return Usage(used, quota, self.leases.inflight(p.tenant_id) + int(reserved))

    # ---- folders -------------------------------------------------------------------
    def mkdir(
        self,
        p: Principal,
        path: str | RemotePath,
        parents: bool = False,
        *,
        locks: LockProof = NO_TOKENS,
    ) -> Entry:
        """``locks``: the lock tokens the request presents (files/locks.py); a new folder
        inside a folder locked with depth infinity is refused (423) without its token."""
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        if rp.is_root:
            raise AlreadyExists("The root folder always exists.")
        with self.db.write() as s:
            # With ``parents`` every folder made is then inside the same write grant.
            access.need_write(self.view(s.connection(), p), rp)
            parent = (
                self._mkdirs(s, p, rp.parent)
                if parents
                else self._need_dir(s, p.tenant_id, rp.parent)
            )
            existing = self._child(s, p.tenant_id, parent.id, rp.name)
            if existing is not None:
                if parents and existing.kind == "dir":
                    return entry_of(existing, rp)
                raise AlreadyExists(f"{rp} already exists.")
            check_write(s.connection(), p, locks, rp)
            node = self._new_dir(s, p, parent, rp)
            return entry_of(node, rp)

    def _new_dir(self, s: Session, p: Principal, parent: Node, rp: RemotePath) -> Node:
        now = utcnow()
        node = Node(
            id=new_id(),
            tenant_id=p.tenant_id,
            parent_id=parent.id,
            name=rp.name,
            kind="dir",
            size=0,
            sha256="",
            mtime=now,
            created_at=now,
            updated_at=now,
        )
        s.add(node)
        parent.mtime = parent.updated_at = now
        s.flush()
        self._event(s, p, "mkdir", node, rp)
        return node

    def _mkdirs(self, s: Session, p: Principal, rp: RemotePath) -> Node:
        node = self._root(s, p.tenant_id)
        for i, part in enumerate(rp.parts):
            child = self._child(s, p.tenant_id, node.id, part)
            if child is None:
                child = self._new_dir(s, p, node, RemotePath(rp.parts[: i + 1]))
            elif child.kind != "dir":
                raise Conflict(f"{RemotePath(rp.parts[: i + 1])} is a file, not a folder.")
            node = child
        return node

    # ---- delete, move, copy --------------------------------------------------------
    def delete(
        self,
        p: Principal,
        path: str | RemotePath,
        if_match: str | None = None,
        *,
        locks: LockProof = NO_TOKENS,
    ) -> Entry:
        """Move to the trash; nothing is destroyed until the retention period ends.

        A path under a live WebDAV lock, or a folder with one below it, is refused (423)
        unless its holder presents the token (``locks``); then the locks go with it."""
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        if rp.is_root:
            raise Forbidden("The root folder cannot be deleted.")
        with self.db.write() as s:
            access.need_write(self.view(s.connection(), p), rp)
            node = self._need(s, p.tenant_id, rp)
            entry = entry_of(node, rp)
            check_etag(entry.etag, if_match, None)
            passed = check_write(s.connection(), p, locks, rp, subtree=True)
            self._trash(s, p, node, rp)
            release_passed(s.connection(), p.tenant_id, passed)
            return entry

    def _trash(self, s: Session, p: Principal, node: Node, rp: RemotePath) -> None:
        now = utcnow()
        node.trashed_at = now
        node.trashed_path = str(rp)
        node.trashed_by = p.id
        parent = s.get(Node, node.parent_id)
        if parent is not None:
            parent.mtime = parent.updated_at = now
        s.flush()
        self._event(s, p, "trash", node, rp)

    def _prepare_target(
        self, s: Session, p: Principal, src: Node, dst: RemotePath, overwrite: bool
    ) -> tuple[Node, bool]:
        parent = self._need_dir(s, p.tenant_id, dst.parent)
        existing = self._child(s, p.tenant_id, parent.id, dst.name)
        replaced = False
        if existing is not None:
            if existing.id == src.id:
                return parent, False
            if not overwrite:
                raise AlreadyExists(f"{dst} already exists; pass overwrite to replace it.")
            # Replacing never destroys: the old destination goes to the trash.
            self._trash(s, p, existing, dst)
            replaced = True
        return parent, replaced

    def _check_not_inside(self, s: Session, src: Node, dst_parent: Node) -> None:
        cur: Node | None = dst_parent
        for _ in range(10_000):
            if cur is None:
                return
            if cur.id == src.id:
                raise Conflict("A folder cannot be moved or copied into itself.")
            cur = s.get(Node, cur.parent_id) if cur.parent_id else None

    def move(
        self,
        p: Principal,
        src: str | RemotePath,
        dst: str | RemotePath,
        overwrite: bool = False,
        *,
        locks: LockProof = NO_TOKENS,
    ) -> tuple[Entry, bool]:
        """Both ends are checked against WebDAV locks (files/locks.py): the source (and
        anything below it) and the destination, which a lock on a parent may cover."""
        sp = src if isinstance(src, RemotePath) else parse_path(src)
        dp = dst if isinstance(dst, RemotePath) else parse_path(dst)
        self._writable(p)
        if sp.is_root or dp.is_root:
            raise Forbidden("The root folder cannot be moved or replaced.")
        with self.db.write() as s:
            view = self.view(s.connection(), p)
            access.need_write(view, sp)  # both ends writable: nothing crosses what p sees
            access.need_write(view, dp)
            node = self._need(s, p.tenant_id, sp)
            conn = s.connection()
            passed = check_write(conn, p, locks, sp, subtree=True)
            passed += check_write(conn, p, locks, dp, subtree=True)
            parent, replaced = self._prepare_target(s, p, node, dp, overwrite)
            self._check_not_inside(s, node, parent)
            release_passed(conn, p.tenant_id, passed)
            old_parent = s.get(Node, node.parent_id)
            now = utcnow()
            node.parent_id, node.name, node.updated_at = parent.id, dp.name, now
            for d in (old_parent, parent):
                if d is not None:
                    d.mtime = d.updated_at = now
            s.flush()
            self._event(s, p, "move", node, dp, source=str(sp))
            return entry_of(node, dp), replaced

    def copy(
        self,
        p: Principal,
        src: str | RemotePath,
        dst: str | RemotePath,
        overwrite: bool = False,
        recursive: bool = True,
        *,
        locks: LockProof = NO_TOKENS,
    ) -> tuple[Entry, bool]:
        """Copies share chunks with the original: no bytes are stored twice (dedup).
        ``recursive=False`` copies a folder without its content (WebDAV Depth: 0)."""
        sp = src if isinstance(src, RemotePath) else parse_path(src)
        dp = dst if isinstance(dst, RemotePath) else parse_path(dst)
        self._writable(p)
        if dp.is_root:
            raise Forbidden("The root folder cannot be replaced.")
        # New references to stored chunks: under the collector's interlock like any commit
        # (files/leases.py), or a collector could free a chunk the copy is about to use.
        with self.leases.committing(), self.db.write() as s:
            view = self.view(s.connection(), p)
            access.need_read(view, sp)  # a folder seen only for navigation hides content
            access.need_write(view, dp)
            node = self._need(s, p.tenant_id, sp)
            if sp == dp:
                raise Conflict("Source and destination are the same.")
            check_write(s.connection(), p, locks, dp, subtree=True)  # reading is never locked
            parent, replaced = self._prepare_target(s, p, node, dp, overwrite)
            self._check_not_inside(s, node, parent)
            budget = [200_000 if recursive else 1]
            copied = self._copy_node(s, p, node, parent, dp.name, budget, recursive)
            parent.mtime = parent.updated_at = utcnow()
            s.flush()
            self._event(s, p, "copy", copied, dp, source=str(sp))
            return entry_of(copied, dp), replaced

    def _copy_node(
        self,
        s: Session,
        p: Principal,
        node: Node,
        parent: Node,
        name: str,
        budget: list[int],
        recursive: bool = True,
    ) -> Node:
        budget[0] -= 1
        if budget[0] < 0:
            raise InvalidInput(
                "Copy aborted: more than 200,000 entries; copy sub-folders separately."
            )
        now = utcnow()
        new = Node(
            id=new_id(),
            tenant_id=p.tenant_id,
            parent_id=parent.id,
            name=name,
            kind=node.kind,
            size=node.size,
            sha256=node.sha256,
            mtime=node.mtime,
            created_at=now,
            updated_at=now,
        )
        s.add(new)
        s.flush()
        self._copy_properties(s, node.id, new.id)
        if node.kind == "file" and node.version_id:
            v = s.get(Version, node.version_id)
            assert v is not None
            # The copy's first version shares the original's chunks (no byte stored twice).
            self._new_version(s, p, new, v.size, v.sha256, v.mtime, self._refs_of(s, v.id))
        elif node.kind == "dir" and recursive:
            for child in list(
                s.scalars(
                    select(Node).where(
                        Node.tenant_id == p.tenant_id,
                        Node.parent_id == node.id,
                        Node.trashed_at.is_(None),
                    )
                )
            ):
                self._copy_node(s, p, child, new, child.name, budget)
        return new

    # ---- versions ------------------------------------------------------------------
    def versions(self, p: Principal, path: str | RemotePath) -> list[dict[str, Any]]:
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        with self.db.read() as s:
            access.need_read(self.view(s.connection(), p), rp)
            node = self._need(s, p.tenant_id, rp)
            if node.kind != "file":
                raise Conflict(f"{rp} is a folder; folders have no versions.")
            rows = s.scalars(
                select(Version)
                .where(Version.tenant_id == p.tenant_id, Version.node_id == node.id)
                .order_by(Version.created_at.desc())
            )
            return [
                {
                    "version": v.id,
                    "size": v.size,
                    "sha256": v.sha256,
                    "mtime": v.mtime.isoformat(),
                    "created_at": v.created_at.isoformat(),
                    "current": v.id == node.version_id,
                    "expires_at": (v.superseded_at + self.retention).isoformat()
                    if v.superseded_at
                    else None,
                }
                for v in rows
            ]

    def restore_version(
        self,
        p: Principal,
        path: str | RemotePath,
        version: str,
        *,
        locks: LockProof = NO_TOKENS,
    ) -> Entry:
        """Restoring makes a *new* version with the old content, so nothing is lost; a
        document locked by an editor is refused (423) like any other write."""
        rp = path if isinstance(path, RemotePath) else parse_path(path)
        self._writable(p)
        with self.leases.committing(), self.db.write() as s:  # new references: see copy
            access.need_write(self.view(s.connection(), p), rp)
            node = self._need(s, p.tenant_id, rp)
            v = s.get(Version, version) if is_id(version) else None
            if v is None or v.node_id != node.id or v.tenant_id != p.tenant_id:
                raise NotFound(f"No version {version!r} of {rp}.")
            check_write(s.connection(), p, locks, rp)
            self._new_version(s, p, node, v.size, v.sha256, v.mtime, self._refs_of(s, v.id))
            self._event(s, p, "restore-version", node, rp, version=version)
            return entry_of(node, rp)

    def _refs_of(self, s: Session | Connection, version_id: str) -> list[tuple[str, int, int]]:
        """A version's manifest: (hash, offset, size) in file order."""
        conn = s.connection() if isinstance(s, Session) else s
        return [(h, o, n) for h, o, n in sql.MANIFEST.run(conn, {"version_id": version_id}).all()]

    def _new_version(
        self,
        s: Session,
        p: Principal,
        node: Node,
        size: int,
        sha256: str,
        mtime: datetime,
        refs: list[tuple[str, int, int]],
    ) -> None:
        now = utcnow()
        vid = sql.new_version(
            s.connection(),
            tenant_id=p.tenant_id,
            actor_id=p.id,
            node_id=node.id,
            previous=node.version_id,
            size=size,
            sha256=sha256,
            mtime=mtime,
            refs=refs,
            now=now,
        )
        # Written by Core above: tell the ORM object without scheduling a second UPDATE.
        for key, value in (
            ("version_id", vid),
            ("size", size),
            ("sha256", sha256),
            ("mtime", mtime),
            ("updated_at", now),
        ):
            set_committed_value(node, key, value)

    # ---- trash (files/trash.py) ----------------------------------------------------
    trash_list = trash.trash_list
    _trashed = trash._trashed
    trash_restore = trash.trash_restore
    trash_purge = trash.trash_purge
    _destroy_subtree = trash._destroy_subtree

    def read_chunk(self, p: Principal, digest: str) -> bytes:
        """One verified chunk of a file this Client has (the chunk protocol's download);
        another Client's chunks do not exist for it (R-STORE-3)."""
        self._writable(p)
        with self.db.read_conn() as c:
            known = c.scalars(
                sql.EXISTING_CHUNKS, {"tenant_id": p.tenant_id, "hashes": [digest]}
            ).first()
            if known is not None and not self.chunks_visible(c, p, [digest]):
                known = None
        if known is None:
            raise NotFound("This Client has no such chunk.")
        return self.store.get(p.tenant_id, digest)

    def chunks_visible(self, conn: Connection, p: Principal, digests: list[str]) -> bool:
        """May ``p`` fetch these chunks? Owners and admins: any of the Client's. A member:
        only chunks of a file (any version) they may read (R-SHARE-1)."""
        return set(digests) <= self.readable_chunks(conn, p, digests)

    def usable_chunks(self, conn: Connection, p: Principal, digests: list[str]) -> set[str]:
        """Which of these chunks ``p`` may build a file from: those they may read, and
        (members) those whose bytes they sent (``access.Possession``)."""
        return self.readable_chunks(conn, p, digests) | self.possession.held(p, digests)

    def readable_chunks(self, conn: Connection, p: Principal, digests: list[str]) -> set[str]:
        view = self.view(conn, p)
        if view.full:
            return set(digests)
        holders: dict[str, set[str]] = {}
        vc, v = sql.VERSION_CHUNKS, sql.VERSIONS
        for i in range(0, len(digests), 500):
            for h, node_id in conn.execute(
                select(vc.c.hash, v.c.node_id)
                .join(v, v.c.id == vc.c.version_id)
                .where(vc.c.tenant_id == p.tenant_id, vc.c.hash.in_(digests[i : i + 500]))
                .distinct()
            ):
                holders.setdefault(node_id, set()).add(h)
        seen: set[str] = set()
        for node_id, parts in access.node_paths(conn, p.tenant_id, holders).items():
            if view.level(parts) >= access.READ:
                seen |= holders[node_id]
        return seen

    # ---- dead properties, WebDAV PROPPATCH (files/props.py) ----------------------
    properties = props.properties
    set_properties = props.set_properties
    properties_of = props.properties_of
    folder_properties = props.folder_properties
    _copy_properties = props._copy_properties

    def count_live_files(self, tenant_id: str) -> int:
        with self.db.read() as s:
            return int(
                s.scalar(
                    select(func.count()).where(
                        Node.tenant_id == tenant_id, Node.kind == "file", Node.trashed_at.is_(None)
                    )
                )
                or 0
            )
