"""Who may see and change which folders inside a Client (R-SHARE-1, R-SEC-3).

The permission model, decided here once for every protocol (REST, WebDAV, tus, the
chunk protocol, the change feed and snapshots that ``allset sync`` reads):

* owners and admins see and change everything of their Client: their view is ``FULL``
  and costs no query;
* a member sees only the folders granted to them ("read" or "write"), everything below
  those, and — as bare navigation — the folders above a grant, whose listings show only
  the entries that lead to a grant;
* a write grant allows writes *inside* the granted folder (creating, replacing, moving,
  deleting its entries), not on the granted folder itself: renaming or deleting it is a
  change to its parent, which the member was not given;
* what a member cannot see answers 404, exactly like a path that does not exist (no
  existence leak); what they can see but not change answers 403 ``read-only``.

Grants name folders by node id, so a grant follows its folder through moves and is
inactive while the folder (or one above it) is in the trash. A member's view is read
once per façade call in one query (``load_view``); the decisions themselves are pure
functions of that view and a path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, literal, select

from allset.core.errors import Forbidden, InvalidInput, NotFound
from allset.core.ids import is_id, new_id
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.db.models import FolderGrant, User, utcnow
from allset.files import sql

if TYPE_CHECKING:
    from allset.files.service import FileService

NONE, NAV, READ, WRITE = 0, 1, 2, 3
ACCESS_LEVELS = {"read": READ, "write": WRITE}
GRANTS = sql._table(FolderGrant)


class ReadOnly(Forbidden):
    """The caller can see this, but was given it to read only (R-SHARE-1)."""

    title = "Read-only"
    slug = "read-only"


@dataclass(frozen=True, slots=True)
class AccessView:
    """What one caller may see: everything (``full``), or these granted folders."""

    full: bool
    grants: tuple[tuple[tuple[str, ...], int], ...] = ()

    def level(self, parts: Sequence[str]) -> int:
        """NONE, NAV (a folder above a grant), READ or WRITE for the path ``parts``;
        nested grants give the stronger of the two."""
        if self.full:
            return WRITE
        best = NONE
        n = len(parts)
        here = tuple(parts)
        for folder, lvl in self.grants:
            k = len(folder)
            if k <= n:
                if here[:k] == folder and lvl > best:
                    best = lvl
            elif folder[:n] == here and best < NAV:
                best = NAV
        return best

    def level_of(self, path: str) -> int:
        """``level`` for a path as text ("/a/b", or "a/b" relative to the root)."""
        return self.level([x for x in path.split("/") if x])

    @property
    def can_write_somewhere(self) -> bool:
        return self.full or any(lvl == WRITE for _, lvl in self.grants)


FULL = AccessView(True)


def need_visible(view: AccessView, rp: RemotePath) -> int:
    lvl = view.level(rp.parts)
    if lvl == NONE:
        raise NotFound(f"Nothing at {rp}.")
    return lvl


def need_read(view: AccessView, rp: RemotePath) -> None:
    """Content (a file's bytes, versions, a copy's source) needs a grant, not navigation."""
    if need_visible(view, rp) < READ:
        raise Forbidden(
            f"{rp} is shown to you only as the way to the folders shared with you; "
            "ask an owner or admin of your Client for access to it.",
        )


def need_write(view: AccessView, rp: RemotePath) -> None:
    """Creating, replacing, moving or deleting the entry ``rp`` changes its folder, so
    that folder must be writable: 404 if the caller cannot see ``rp``, else 403."""
    if view.full:
        return
    if not rp.is_root and view.level(rp.parent.parts) == WRITE:
        return
    if view.level(rp.parts) == NONE:
        raise NotFound(f"Nothing at {rp}.")
    if view.level(rp.parts) == WRITE:
        raise ReadOnly(f"{rp} is a folder shared with you; you may change what is inside it only.")
    raise ReadOnly(f"{rp} is shared with you read-only.")


def need_some_write(view: AccessView) -> None:
    """Sending chunks only makes sense before a commit into a writable folder."""
    if not view.can_write_somewhere:
        raise ReadOnly("You have no folder you may write to in this Client.")


def nav_names(view: AccessView, parts: Sequence[str]) -> set[str]:
    """In a NAV folder, the names of the entries that lead to a grant."""
    n = len(parts)
    here = tuple(parts)
    return {folder[n] for folder, _ in view.grants if len(folder) > n and folder[:n] == here}


# ---- loading a view -------------------------------------------------------------------
def node_paths(
    conn: Connection, tenant_id: str, node_ids: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """The live path of each node, in one recursive query (SQLite and PostgreSQL); a node
    that is in the trash, or under a trashed folder, is left out."""
    ids = sorted(set(node_ids))
    if not ids:
        return {}
    n = sql.NODES
    start = (
        select(
            n.c.id.label("start"),
            n.c.parent_id,
            n.c.name,
            n.c.trashed_at,
            literal(0).label("depth"),
        )
        .where(n.c.tenant_id == tenant_id, n.c.id.in_(ids))
        .cte("up", recursive=True)
    )
    above = n.alias("above")
    up = start.union_all(
        select(
            start.c.start,
            above.c.parent_id,
            above.c.name,
            above.c.trashed_at,
            start.c.depth + 1,
        ).where(
            above.c.id == start.c.parent_id, above.c.tenant_id == tenant_id, start.c.depth < 10_000
        )
    )
    chains: dict[str, list[tuple[int, str | None, str, Any]]] = {}
    for s_id, parent_id, name, trashed_at, depth in conn.execute(
        select(up.c.start, up.c.parent_id, up.c.name, up.c.trashed_at, up.c.depth)
    ):
        chains.setdefault(s_id, []).append((int(depth), parent_id, name, trashed_at))
    out: dict[str, tuple[str, ...]] = {}
    for s_id, chain in chains.items():
        chain.sort()
        if any(t is not None for _, _, _, t in chain) or chain[-1][1] is not None:
            continue  # trashed somewhere, or not reaching the root
        out[s_id] = tuple(name for _, parent, name, _ in reversed(chain) if parent is not None)
    return out


def load_view(conn: Connection, p: Principal) -> AccessView:
    """The caller's view: FULL for owners and admins (no query), else their grants with
    the folders' current paths (one query)."""
    if p.is_manager:
        return FULL
    rows = conn.execute(
        select(GRANTS.c.node_id, GRANTS.c.access).where(
            GRANTS.c.tenant_id == p.tenant_id, GRANTS.c.user_id == p.id
        )
    ).all()
    if not rows:
        return AccessView(False)
    paths = node_paths(conn, p.tenant_id, [r.node_id for r in rows])
    grants = tuple(
        sorted(
            (paths[r.node_id], ACCESS_LEVELS.get(r.access, READ))
            for r in rows
            if r.node_id in paths
        )
    )
    return AccessView(False, grants)


# ---- managing grants (owners and admins) ---------------------------------------------
def require_manager(p: Principal) -> None:
    """Only owners and admins manage the Client's users and their access (R-SHARE-1)."""
    if p.is_operator:
        raise NotFound("Not found.")
    if not p.is_manager:
        raise Forbidden("Only an owner or an admin of your Client can do this.")


def _member(conn: Connection, p: Principal, user_id: str) -> Any:
    """A user of the caller's Client; any other id (another Client's too) is 404."""
    row = (
        conn.execute(
            select(User.__table__.c.id, User.__table__.c.email, User.__table__.c.role).where(
                User.__table__.c.id == user_id, User.__table__.c.tenant_id == p.tenant_id
            )
        ).first()
        if is_id(user_id)
        else None
    )
    if row is None:
        raise NotFound("No such user in your Client.")
    return row


def _grant_json(
    grant_id: str, path: tuple[str, ...] | None, access: str, by: str, at: Any
) -> dict[str, Any]:
    return {
        "id": grant_id,
        "path": str(RemotePath(path)) if path is not None else None,
        "access": access,
        "granted_by": by,
        "created_at": at.isoformat(),
        "active": path is not None,
    }


def grants_of(svc: FileService, p: Principal, user_id: str) -> list[dict[str, Any]]:
    """A user's grants with their folders' current paths; ``active`` is false (and
    ``path`` null) while the folder is in the trash."""
    svc._writable(p)
    if user_id != p.id:
        require_manager(p)
    with svc.db.read_conn() as c:
        _member(c, p, user_id)
        rows = c.execute(
            select(GRANTS).where(GRANTS.c.tenant_id == p.tenant_id, GRANTS.c.user_id == user_id)
        ).all()
        paths = node_paths(c, p.tenant_id, [r.node_id for r in rows])
    out = [
        _grant_json(r.id, paths.get(r.node_id), r.access, r.granted_by, r.created_at) for r in rows
    ]
    out.sort(key=lambda g: (g["path"] is None, g["path"] or ""))
    return out


def set_grant(
    svc: FileService, p: Principal, user_id: str, path: str, access: str
) -> dict[str, Any]:
    """Give ``user_id`` ``access`` to the folder at ``path`` (replacing an earlier grant
    of that folder). Effective on the user's next request; the user's change feed gets an
    ``access`` change so their sync client takes a new snapshot."""
    require_manager(p)
    if access not in ACCESS_LEVELS:
        raise InvalidInput("access must be 'read' or 'write'.")
    rp = parse_path(path)
    now = utcnow()
    with svc.db.write() as s:
        c = s.connection()
        _member(c, p, user_id)
        node = svc.lookup(c, p.tenant_id, rp)
        if node is None:
            raise NotFound(f"Nothing at {rp}.")
        if node.kind != "dir":
            raise InvalidInput(f"{rp} is a file; access is given to folders.")
        existing = c.execute(
            select(GRANTS.c.id).where(
                GRANTS.c.tenant_id == p.tenant_id,
                GRANTS.c.user_id == user_id,
                GRANTS.c.node_id == node.id,
            )
        ).first()
        if existing is not None:
            grant_id = existing.id
            c.execute(
                GRANTS.update()
                .where(GRANTS.c.id == grant_id)
                .values(access=access, granted_by=p.email, created_at=now)
            )
        else:
            grant_id = new_id()
            c.execute(
                GRANTS.insert().values(
                    id=grant_id,
                    tenant_id=p.tenant_id,
                    user_id=user_id,
                    node_id=node.id,
                    access=access,
                    granted_by=p.email,
                    created_at=now,
                )
            )
        sql.record_event(
            c,
            tenant_id=p.tenant_id,
            actor=p.email,
            kind="access",
            node_id=node.id,
            path=str(rp),
            detail={"user_id": user_id, "access": access},
            now=now,
        )
    return _grant_json(grant_id, rp.parts, access, p.email, now)


def remove_grant(svc: FileService, p: Principal, user_id: str, grant_id: str) -> None:
    """Withdraw a grant: the user's next request no longer sees that folder."""
    require_manager(p)
    with svc.db.write() as s:
        c = s.connection()
        _member(c, p, user_id)
        row = (
            c.execute(
                select(GRANTS.c.id, GRANTS.c.node_id).where(
                    GRANTS.c.id == grant_id,
                    GRANTS.c.tenant_id == p.tenant_id,
                    GRANTS.c.user_id == user_id,
                )
            ).first()
            if is_id(grant_id)
            else None
        )
        if row is None:
            raise NotFound("No such grant.")
        path = node_paths(c, p.tenant_id, [row.node_id]).get(row.node_id)
        c.execute(delete(GRANTS).where(GRANTS.c.id == row.id))
        sql.record_event(
            c,
            tenant_id=p.tenant_id,
            actor=p.email,
            kind="access",
            node_id=row.node_id,
            path=str(RemotePath(path)) if path is not None else "",
            detail={"user_id": user_id, "access": "none"},
        )


def drop_user_grants(conn: Connection, tenant_id: str, user_id: str) -> None:
    """A removed user keeps nothing: called in the removal's transaction."""
    conn.execute(delete(GRANTS).where(GRANTS.c.tenant_id == tenant_id, GRANTS.c.user_id == user_id))


def drop_node_grants(conn: Connection, tenant_id: str, node_id: str) -> None:
    """A folder destroyed for good (trash purge) takes its grants with it."""
    conn.execute(delete(GRANTS).where(GRANTS.c.tenant_id == tenant_id, GRANTS.c.node_id == node_id))


def check_some_write(svc: FileService, p: Principal) -> None:
    """``need_some_write`` for callers without a connection (chunk uploads); free for
    owners and admins."""
    if p.is_manager:
        return
    with svc.db.read_conn() as c:
        need_some_write(load_view(c, p))


class Possession:
    """Chunks a member has shown they hold, by sending their bytes (R-SHARE-1).

    Dedup must not become a way around folder access: a member who learned the SHA-256 of
    a chunk in a folder they cannot read (or read once, before their access was
    withdrawn) could otherwise commit it into a folder of theirs and read it there. So a
    member may build a file only from chunks they may read, or whose bytes they sent
    (proof of possession), and "which chunks are missing" is answered from what they may
    use, never from what the Client holds. Kept in process memory like the chunk leases,
    for a day: a sync or upload commits long before that; after it, the member simply
    sends the chunk again."""

    TTL_SECONDS = 86_400.0
    MAX_ENTRIES = 1_000_000

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def prove(self, p: Principal, digests: Iterable[str]) -> None:
        until = time.monotonic() + self.TTL_SECONDS
        with self._lock:
            if len(self._held) > self.MAX_ENTRIES:
                now = time.monotonic()
                self._held = {k: v for k, v in self._held.items() if v > now}
            for d in digests:
                self._held[(p.id, d)] = until

    def held(self, p: Principal, digests: Iterable[str]) -> set[str]:
        now = time.monotonic()
        with self._lock:
            return {d for d in digests if self._held.get((p.id, d), 0.0) > now}
