"""Core SQL for the tree's hot paths: path lookup, new versions, events.

Why Core and not the ORM here: a 4 KiB upload spent ~8 ms of CPU in the ORM (identity map,
unit of work, one statement per path component) against ~1 ms for the same statements in
Core. These few functions are the only way the tree is walked and a version is written,
whether the caller holds an ORM ``Session`` (via ``session.connection()``) or a bare
``Connection``; so there is still one place for each concept.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from allset.core.ids import new_id
from allset.db.engine import mark_changed
from allset.db.models import (
    Chunk,
    Event,
    Node,
    ResumableUpload,
    Tenant,
    Version,
    VersionChunk,
    utcnow,
)
from allset.db.prepared import Prepared, Record


def _table(model: Any) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


NODES = _table(Node)
VERSIONS = _table(Version)
VERSION_CHUNKS = _table(VersionChunk)
EVENTS = _table(Event)
TENANTS = _table(Tenant)
CHUNKS = _table(Chunk)
RESUMABLE = _table(ResumableUpload)


@functools.lru_cache(maxsize=64)
def _path_statement(depth: int) -> Select[Any]:
    """Built once per depth (building a statement costs more than running it)."""
    tenant: Any = bindparam("tenant_id")
    cur = NODES.alias("n0")
    joined: Any = cur
    conds: list[Any] = [cur.c.id == bindparam("root_id"), cur.c.tenant_id == tenant]
    for i in range(1, depth + 1):
        nxt = NODES.alias(f"n{i}")
        joined = joined.join(
            nxt,
            and_(
                nxt.c.parent_id == cur.c.id,
                nxt.c.name == bindparam(f"p{i}"),
                nxt.c.trashed_at.is_(None),
                nxt.c.tenant_id == tenant,
            ),
        )
        conds.append(cur.c.kind == "dir")
        cur = nxt
    return select(*cur.c).select_from(joined).where(*conds)


@functools.lru_cache(maxsize=64)
def path_lookup(depth: int) -> Prepared:
    """``_path_statement`` for running as it is (see ``path_query`` for parameters)."""
    return Prepared(_path_statement(depth))


@functools.lru_cache(maxsize=64)
def node_at(depth: int) -> Select[Any]:
    """The ORM's ``Node`` at a path of ``depth`` parts (``path_query``'s parameters):
    built once per depth, since building the subquery cost more than running it."""
    found = _path_statement(depth).subquery()
    return select(Node).where(Node.id == select(found.c.id).scalar_subquery())


VERSION_BY_ID = Prepared(select(VERSIONS).where(VERSIONS.c.id == bindparam("id")))
MANIFEST = Prepared(
    select(VERSION_CHUNKS.c.hash, VERSION_CHUNKS.c.offset, VERSION_CHUNKS.c.size)
    .where(VERSION_CHUNKS.c.version_id == bindparam("version_id"))
    .order_by(VERSION_CHUNKS.c.seq)
)
"""A version's manifest: (hash, offset, size) in file order."""


def path_query(
    tenant_id: str, root_id: str, parts: Sequence[str]
) -> tuple[Select[Any], dict[str, str]]:
    """One SELECT that walks ``parts`` down from the root: a self-join per component,
    each step an index lookup on the live (parent, name) index; every step but the last
    must be a folder. Returns the statement and its parameters."""
    params = {f"p{i}": part for i, part in enumerate(parts, start=1)}
    params.update(tenant_id=tenant_id, root_id=root_id)
    return _path_statement(len(parts)), params


_CHILD = Prepared(
    select(NODES).where(
        NODES.c.tenant_id == bindparam("tenant_id"),
        NODES.c.parent_id == bindparam("parent_id"),
        NODES.c.name == bindparam("name"),
        NODES.c.trashed_at.is_(None),
    )
)


def child(conn: Connection, tenant_id: str, parent_id: str, name: str) -> Record | None:
    """The live entry ``name`` in a folder, or None."""
    return _CHILD.run(conn, {"tenant_id": tenant_id, "parent_id": parent_id, "name": name}).first()


LIST_PAGE = Prepared(
    select(
        NODES.c.id,
        NODES.c.name,
        NODES.c.kind,
        NODES.c.size,
        NODES.c.sha256,
        NODES.c.mtime,
        NODES.c.created_at,
        NODES.c.version_id,
    )
    .where(
        NODES.c.tenant_id == bindparam("tenant_id"),
        NODES.c.parent_id == bindparam("parent_id"),
        NODES.c.trashed_at.is_(None),
        NODES.c.name > bindparam("after"),
    )
    .order_by(NODES.c.name)
    .limit(bindparam("n"))
)
"""One page of a folder by name: a cursor that stays right while entries come and go.
Prepared: a PROPFIND of a 10,000-entry folder builds 10,000 rows, and SQLAlchemy's own
rows cost ~10 us each to build and ~9 us more to read (half of that request's time)."""


def _insert(table: Table, *without: str) -> Prepared:
    """An INSERT given every column but ``without`` (those the database fills)."""
    return Prepared(insert(table), [c.key for c in table.columns if c.key not in without])


_INSERT_VERSION = _insert(VERSIONS)
_INSERT_VERSION_CHUNKS = _insert(VERSION_CHUNKS)
_SUPERSEDE = Prepared(
    update(VERSIONS)
    .where(VERSIONS.c.id == bindparam("previous"))
    .values(superseded_at=bindparam("now"))
)
_SET_CURRENT = Prepared(
    update(NODES)
    .where(NODES.c.id == bindparam("node_id"))
    .values(
        version_id=bindparam("vid"),
        size=bindparam("size"),
        sha256=bindparam("sha"),
        mtime=bindparam("mtime"),
        updated_at=bindparam("now"),
    )
)
_TOUCH = Prepared(
    update(NODES)
    .where(NODES.c.id == bindparam("node_id"))
    .values(mtime=bindparam("now"), updated_at=bindparam("now"))
)
_INSERT_EVENT = _insert(EVENTS, "id")


def new_version(
    conn: Connection,
    *,
    tenant_id: str,
    actor_id: str,
    node_id: str,
    previous: str | None,
    size: int,
    sha256: str,
    mtime: datetime,
    refs: Sequence[tuple[str, int, int]],
    now: datetime | None = None,
    vid: str | None = None,
    node_is_current: bool = False,
) -> str:
    """Append a version to a file node and make it current; the previous version stays
    (superseded, kept for the retention period). Returns the new version id.

    ``node_is_current``: the caller has just inserted the node already pointing at
    ``vid`` with its size, digest and mtime (a new file: one statement fewer)."""
    now = now or utcnow()
    vid = vid or new_id()
    _INSERT_VERSION.run(
        conn,
        {
            "id": vid,
            "tenant_id": tenant_id,
            "node_id": node_id,
            "size": size,
            "sha256": sha256,
            "mtime": mtime,
            "created_at": now,
            "created_by": actor_id,
            "superseded_at": None,
        },
    )
    if refs:
        _INSERT_VERSION_CHUNKS.run(
            conn,
            [
                {
                    "version_id": vid,
                    "seq": i,
                    "tenant_id": tenant_id,
                    "hash": h,
                    "offset": o,
                    "size": n,
                }
                for i, (h, o, n) in enumerate(refs)
            ],
        )
    if previous:
        _SUPERSEDE.run(conn, {"previous": previous, "now": now})
    if node_is_current:
        return vid
    _SET_CURRENT.run(
        conn,
        {"node_id": node_id, "vid": vid, "size": size, "sha": sha256, "mtime": mtime, "now": now},
    )
    return vid


def touch(conn: Connection, node_id: str, now: datetime) -> None:
    """A folder's mtime changes when its entries do (clients poll it, ETags derive from it)."""
    _TOUCH.run(conn, {"node_id": node_id, "now": now})


def record_event(
    conn: Connection,
    *,
    tenant_id: str,
    actor: str,
    kind: str,
    node_id: str,
    path: str,
    detail: dict[str, Any],
    now: datetime | None = None,
) -> None:
    """Append to the Client's change feed (R-SYNC-1); after the transaction commits,
    long-polling readers of this Client are woken (``mark_changed``)."""
    lock_feed(conn, tenant_id)
    mark_changed(conn, tenant_id)
    _INSERT_EVENT.run(
        conn,
        {
            "tenant_id": tenant_id,
            "actor": actor,
            "kind": kind,
            "node_id": node_id,
            "path": path,
            "detail": detail,
            "at": now or utcnow(),
        },
    )


_FEED_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")


def lock_feed(conn: Connection, tenant_id: str) -> None:
    """PostgreSQL only: one writer of a Client's events at a time, until commit.

    The feed's cursor is an event id (R-SYNC-1), so a Client's events must become
    visible in id order. PostgreSQL hands out sequence values at INSERT but makes rows
    visible at COMMIT: two transactions could commit ids 11 then 10, and a reader that
    saw 11 would move its cursor past 10 forever. Holding this lock from the event's
    INSERT to COMMIT makes id order and commit order the same for each Client. SQLite
    already has a single writer. Re-entrant within a transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(_FEED_LOCK, {"key": "allset.feed." + tenant_id})


# ---- chunks and quota (the upload's commit) ------------------------------------------
_RESERVED = (
    select(func.coalesce(func.sum(RESUMABLE.c.length), 0))
    .where(
        RESUMABLE.c.tenant_id == bindparam("tenant_id"),
        RESUMABLE.c.state == "open",
        RESUMABLE.c.concat != "final",  # its parts hold its bytes
    )
    .scalar_subquery()
)
"""Bytes promised to unfinished resumable (tus) uploads: they count against the quota
until committed or expired, so admission control sees them."""

KNOWN_CHUNK_AND_USAGE = select(
    exists().where(
        CHUNKS.c.tenant_id == bindparam("tenant_id"), CHUNKS.c.hash == bindparam("hash")
    ),
    TENANTS.c.used_bytes,
    TENANTS.c.quota_bytes,
    _RESERVED,
).where(TENANTS.c.id == bindparam("tenant_id"))
"""(is this chunk already stored for the Client, used, quota, reserved) in one round trip."""

TENANT_USAGE = select(TENANTS.c.used_bytes, TENANTS.c.quota_bytes, _RESERVED).where(
    TENANTS.c.id == bindparam("tenant_id")
)
"""(bytes used, quota, bytes reserved by unfinished resumable uploads)"""
EXISTING_CHUNKS = select(CHUNKS.c.hash).where(
    CHUNKS.c.tenant_id == bindparam("tenant_id"),
    CHUNKS.c.hash.in_(bindparam("hashes", expanding=True)),
)
CHUNK_SIZES = select(CHUNKS.c.hash, CHUNKS.c.size).where(
    CHUNKS.c.tenant_id == bindparam("tenant_id"),
    CHUNKS.c.hash.in_(bindparam("hashes", expanding=True)),
)
"""(hash, size) of those of the chunks this Client has: the batch download's check."""
CHARGE = Prepared(
    update(TENANTS)
    .where(
        TENANTS.c.id == bindparam("tenant_id"),
        TENANTS.c.used_bytes + bindparam("charge") <= TENANTS.c.quota_bytes,
    )
    .values(used_bytes=TENANTS.c.used_bytes + bindparam("charge"))
)
"""Charge the quota only if it fits: the check and the charge are one atomic statement."""

CHARGE_ADMIT = Prepared(
    update(TENANTS)
    .where(
        TENANTS.c.id == bindparam("tenant_id"),
        TENANTS.c.used_bytes + bindparam("charge") + _RESERVED + bindparam("other")
        <= TENANTS.c.quota_bytes,
    )
    .values(used_bytes=TENANTS.c.used_bytes + bindparam("charge"))
)
"""CHARGE for an upload not admitted before its body was read (a small one): it must also
fit beside the bytes unfinished resumable uploads hold and ``other`` (bytes in flight,
less the upload's own credit). One statement: the row lock taken by the UPDATE orders
concurrent admissions, so they cannot overshoot together."""

INSERT_NODE = _insert(NODES)


@functools.lru_cache(maxsize=2)
def insert_new_chunks(sqlite: bool) -> Prepared:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING hash: the rows this transaction added."""
    ins = sqlite_insert(CHUNKS) if sqlite else pg_insert(CHUNKS)
    return Prepared(
        ins.on_conflict_do_nothing().returning(CHUNKS.c.hash), [c.key for c in CHUNKS.columns]
    )
