"""The Client's own view of its WebDAV locks: see them, and break the one an editor left
behind (a crash, a closed laptop keeps a document locked until the lock's timeout).

Decided here, for every adapter that shows locks (REST ``/api/v1/locks``, the page
``/admin/locks``, and through the API the Software): who may see and break which lock,
and the audit event. The locks themselves are kept and enforced by the WebDAV adapter
(``server/dav/locks.py``) in the same ``dav_locks`` table.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote

from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as parse_xml
from sqlalchemy import ColumnElement, and_, delete, false, select

from allset.core.errors import NotFound
from allset.core.principal import Principal
from allset.db.engine import Database
from allset.db.models import DavLock, utcnow
from allset.files.access import MANAGERS
from allset.files.sql import record_event

_L = DavLock.__table__.c
_COLUMNS = (
    _L.token,
    _L.root,
    _L.scope,
    _L.depth,
    _L.owner,
    _L.principal,
    _L.created_at,
    _L.expires_at,
)


def lock_id(token: str) -> str:
    """The id a lock is listed and broken by. Not the token: the token is the holder's
    proof when it writes (RFC 4918 §6.5), so it stays with the holder."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _owner_text(owner: bytes) -> str:
    """What the client put in ``<owner>`` (usually its user name, or an ``<href>``), as
    text: tags dropped, at most 200 characters."""
    raw = bytes(owner)
    try:
        text = " ".join(t.strip() for t in parse_xml(raw).itertext() if t.strip())
    except (ParseError, ValueError):  # defusedxml refuses entities with a ValueError
        text = raw.decode("utf-8", "replace")
    return text[:200]


def _lock_view(row: Any) -> dict[str, Any]:
    return {
        "id": lock_id(row.token),
        "path": unquote(row.root) or "/",
        "scope": row.scope,
        "depth": row.depth,
        "user": row.principal,
        "owner": _owner_text(row.owner),
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
    }


def _visible(p: Principal) -> ColumnElement[bool]:
    """Owners and admins see every lock of their Client; a member only the locks taken
    with their own credentials (the paths of the others may be outside their grants).
    Operators see none: lock paths are Client data (R-STORE-6)."""
    if p.is_operator or not p.tenant_id:
        return false()
    mine = _L.tenant_id == p.tenant_id
    return mine if p.role in MANAGERS else and_(mine, _L.principal == p.email)


def client_locks(db: Database, p: Principal) -> list[dict[str, Any]]:
    """The live WebDAV locks ``p`` may see, oldest first."""
    with db.read_conn() as conn:
        rows = conn.execute(
            select(*_COLUMNS)
            .where(_visible(p), _L.expires_at > utcnow())
            .order_by(_L.created_at, _L.token)
        ).all()
    return [_lock_view(r) for r in rows]


def break_lock(db: Database, p: Principal, lock: str) -> dict[str, Any]:
    """Remove a lock whose holder is gone (an editor that crashed keeps a document
    locked until the lock's timeout, up to weeks). The holder's next write with the
    token gets 412 and other users may write again. Recorded as a ``lock.break`` event
    (not in the change feed). A lock ``p`` may not see is NotFound, like a missing one."""
    with db.write_conn() as conn:
        rows = conn.execute(select(*_COLUMNS).where(_visible(p), _L.expires_at > utcnow())).all()
        row = next((r for r in rows if lock_id(r.token) == lock), None)
        if row is None:
            raise NotFound("No such lock: it was released, has expired or was never here.")
        conn.execute(delete(DavLock).where(_L.tenant_id == p.tenant_id, _L.token == row.token))
        view = _lock_view(row)
        record_event(
            conn,
            tenant_id=p.tenant_id,
            actor=p.email,
            kind="lock.break",
            node_id="",
            path=view["path"],
            detail={"holder": view["user"], "scope": view["scope"], "depth": view["depth"]},
        )
    return view
