"""Sorted folder pages (by name, size or modification time, either way) with keyset paging.

Why keyset and not OFFSET: a folder of 10,000+ entries is paged 200 at a time, and
``OFFSET 9800`` makes the database walk 9,800 rows to throw them away, while entries
added or removed between two pages shift every later page (duplicates, gaps). A cursor
that names the last row shown — (folder-or-file, sort key, name) — stays right while the
folder changes and costs the same on page 50 as on page 1.

Folders always come first (as in every file manager), then files; the name breaks ties,
and it is unique among a folder's live entries, so the order is total and the cursor
exact. The cursor is opaque to callers (base64url JSON) and checked when read back:
bad input is an ``InvalidInput`` naming the problem, never a server error.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, or_, select

from allset.core.errors import InvalidInput
from allset.files.sql import NODES

SORTS = ("name", "size", "mtime")

_RANK = case((NODES.c.kind == "dir", 0), else_=1)
_KEYS: dict[str, Any] = {"name": NODES.c.name, "size": NODES.c.size, "mtime": NODES.c.mtime}


def encode_cursor(sort: str, kind: str, name: str, size: int, mtime: datetime) -> str:
    """The cursor after an entry: its rank, its sort key and its name."""
    key: Any = {"name": name, "size": size, "mtime": mtime.isoformat()}[sort]
    raw = json.dumps([sort, 0 if kind == "dir" else 1, key, name], ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[int, Any, str]:
    """(rank, key, name) from ``encode_cursor``'s output for the same ``sort``."""
    problem = InvalidInput(
        "The cursor 'after' comes from a listing's next-page link with the same sort; "
        "start again from the first page."
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        s, rank, key, name = json.loads(raw.decode())
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise problem from exc
    if s != sort or rank not in (0, 1) or not isinstance(name, str) or "\x00" in name:
        raise problem
    if sort == "name" and key != name:
        raise problem
    if sort == "size" and (not isinstance(key, int) or isinstance(key, bool) or key < 0):
        raise problem
    if sort == "mtime":
        try:
            key = datetime.fromisoformat(key)
        except (TypeError, ValueError) as exc:
            raise problem from exc
        if key.tzinfo is None:
            raise problem
    return rank, key, name


def page_query(
    tenant_id: str,
    parent_id: str,
    sort: str,
    desc: bool,
    after: tuple[int, Any, str] | None,
    limit: int,
    only: set[str] | None = None,
) -> Select[Any]:
    """One page of a folder's live entries in (folders first, key, name) order, after the
    cursor position; ``only`` restricts to these names (a member's way to their grants)."""
    key = _KEYS[sort]
    conds: list[ColumnElement[bool]] = [
        NODES.c.tenant_id == tenant_id,
        NODES.c.parent_id == parent_id,
        NODES.c.trashed_at.is_(None),
    ]
    if only is not None:
        conds.append(NODES.c.name.in_(sorted(only)) if only else false())
    if after is not None:
        rank, value, name = after

        def beyond(col: Any, v: Any) -> ColumnElement[bool]:
            return col < v if desc else col > v  # type: ignore[no-any-return]

        same_rank = (
            beyond(NODES.c.name, name)
            if sort == "name"
            else or_(beyond(key, value), and_(key == value, beyond(NODES.c.name, name)))
        )
        kind_rank: Any = _RANK
        conds.append(or_(kind_rank > rank, and_(kind_rank == rank, same_rank)))
    order = [key.desc(), NODES.c.name.desc()] if desc else [key, NODES.c.name]
    if sort == "name":
        order = order[:1]
    return (
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
        .where(*conds)
        .order_by(_RANK, *order)
        .limit(limit)
    )
