"""The change feed (R-SYNC-1): a Client's tree changes in order, and a way to wait for
the next one.

Every tree change is already an ``events`` row written in the same transaction as the
change (``sql.record_event``), so the feed is a query, not a second source of truth:
"this Client's tree events after id N". The cursor a client keeps is an event id; ids
become visible in order per Client (``sql.lock_feed``), so a cursor never skips one.

Waiting (long-poll) is a wake-up plus a re-check, never a second channel of data:

* in this process, ``Database.on_commit`` tells the ``ChangeNotifier`` which Clients a
  committed transaction changed, and it wakes their waiters on their event loops;
* other processes of the data dir (server workers, the operator CLI) send the Client
  ids they changed to this one's wake-up socket (``files.wakeups``), which feeds the
  same ``ChangeNotifier``;
* the waiters also re-read the database every ``RECHECK_SECONDS``, so a wake-up that
  was lost (a datagram dropped, a writer that sends none) only delays the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, select

from allset.core.errors import InvalidInput
from allset.core.principal import Principal
from allset.files import sql
from allset.files.access import NONE, AccessView

if TYPE_CHECKING:
    from allset.files.service import FileService

# The kinds FileService writes for tree changes; other kinds (trash.purge, user.create,
# ...) are audit records a sync client has no use for.
TREE_KINDS = ("put", "mkdir", "trash", "move", "copy", "restore-version", "restore")
# ``access``: a member's grants changed (R-SHARE-1); only that member's feed shows it, so
# their sync client takes a new snapshot of what they may now see.
FEED_KINDS = (*TREE_KINDS, "access")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
MAX_WAIT_SECONDS = 60
RECHECK_SECONDS = 1.0

_CHANGES = (
    select(
        sql.EVENTS.c.id,
        sql.EVENTS.c.kind,
        sql.EVENTS.c.path,
        sql.EVENTS.c.detail,
        sql.EVENTS.c.at,
    )
    .where(
        sql.EVENTS.c.tenant_id == bindparam("tenant_id"),
        sql.EVENTS.c.id > bindparam("since"),
        sql.EVENTS.c.kind.in_(FEED_KINDS),
    )
    .order_by(sql.EVENTS.c.id)
    .limit(bindparam("n"))
)
_LATEST = select(func.max(sql.EVENTS.c.id)).where(
    sql.EVENTS.c.tenant_id == bindparam("tenant_id"), sql.EVENTS.c.kind.in_(FEED_KINDS)
)


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    kind: str
    path: str
    source: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "source": self.source,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Feed:
    cursor: int
    changes: list[Change]
    more: bool


def latest_change(conn: Connection, tenant_id: str) -> int:
    """The id of the Client's latest tree event (0 if none): a cursor that misses
    nothing committed before this transaction's snapshot.

    Only tree events count: audit events are written without the feed lock, so on
    PostgreSQL a later audit id may be visible before an earlier tree id commits."""
    return int(conn.scalar(_LATEST, {"tenant_id": tenant_id}) or 0)


def read_changes(svc: FileService, p: Principal, since: int | None, limit: int) -> Feed:
    """This Client's tree changes after ``since`` in id order, at most ``limit``.

    ``cursor`` is the id of the last change returned or, when none, the Client's latest
    tree event id read in the same transaction: storing it and asking again later gives
    exactly what happened in between. ``since=None`` (a client starting out) answers no
    changes, only that cursor."""
    svc._writable(p)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT:,}.")
    if since is not None and since < 0:
        raise InvalidInput("since is a cursor from an earlier answer: 0 or more.")
    with svc.db.consistent_read_conn() as c:
        if since is None:
            return Feed(latest_change(c, p.tenant_id), [], False)
        rows = c.execute(_CHANGES, {"tenant_id": p.tenant_id, "since": since, "n": limit + 1}).all()
        if not rows:
            return Feed(latest_change(c, p.tenant_id), [], False)
        view = svc.view(c, p)
    more = len(rows) > limit
    changes = [
        ch
        for r in rows[:limit]
        if (ch := _as_seen(view, p, r.id, r.kind, r.path, r.detail or {}, r.at)) is not None
    ]
    # The cursor passes changes the caller may not see: they are skipped, not pending.
    return Feed(rows[:limit][-1].id, changes, more)


def _as_seen(
    view: AccessView,
    p: Principal,
    id: int,
    kind: str,
    path: str,
    detail: dict[str, Any],
    at: datetime,
) -> Change | None:
    """A change as the caller may see it (R-SHARE-1), or None: a member sees changes at
    paths they may see; a move out of their sight is a ``trash`` of its source, one into
    it has no source; ``access`` changes only reach the member they concern."""
    source = detail.get("source")
    if kind == "access":
        if view.full or detail.get("user_id") != p.id:
            return None
        return Change(id, kind, path or "/", None, at)
    if view.full:
        return Change(id, kind, path, source, at)
    here = view.level_of(path) > NONE
    there = source is not None and view.level_of(source) > NONE
    if here:
        return Change(id, kind, path, source if there else None, at)
    if there and kind == "move":
        return Change(id, "trash", str(source), None, at)
    return None


class _Waiter:
    __slots__ = ("event", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()


class ChangeNotifier:
    """Wakes coroutines waiting for a Client's next change. Thread-safe: ``notify`` is
    called from worker threads after a commit; waiters live on event loops."""

    def __init__(self, recheck_seconds: float = 0) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[_Waiter]] = {}
        # How often waiters re-read the database without a wake-up; 0: RECHECK_SECONDS
        # (read at each wait, so that tests may change it).
        self.recheck_seconds = recheck_seconds

    def subscribe(self, tenant_id: str) -> _Waiter:
        """Subscribe *before* reading the feed: a change committed between the read and
        the wait then still wakes the waiter (no lost wake-up)."""
        w = _Waiter()
        with self._lock:
            self._waiters.setdefault(tenant_id, set()).add(w)
        return w

    def unsubscribe(self, tenant_id: str, w: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(tenant_id)
            if waiters is not None:
                waiters.discard(w)
                if not waiters:
                    del self._waiters[tenant_id]

    def notify(self, tenant_ids: set[str]) -> None:
        with self._lock:
            woken = [w for t in tenant_ids for w in self._waiters.get(t, ())]
        for w in woken:
            try:
                w.loop.call_soon_threadsafe(w.event.set)
            except RuntimeError:  # that loop is closed: its request is gone
                continue

    def waiting(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._waiters.values())


async def long_poll(
    notifier: ChangeNotifier,
    tenant_id: str,
    fetch: Callable[[], Awaitable[Feed]],
    wait: float,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> Feed:
    """``fetch`` until it returns changes or ``wait`` seconds have passed; between
    fetches, sleep until a commit of this or another process wakes the Client's waiters,
    or at most the notifier's re-check interval (a lost wake-up). Bounded by the
    deadline, and ends early when ``gone()`` says the client hung up (a stopped sync must
    not hold a request — and a server shutdown — for the rest of its wait)."""
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        raise InvalidInput(f"wait must be between 0 and {MAX_WAIT_SECONDS} seconds.")
    deadline = time.monotonic() + wait
    recheck = notifier.recheck_seconds or RECHECK_SECONDS
    while True:
        w = notifier.subscribe(tenant_id)
        try:
            feed = await fetch()
            left = deadline - time.monotonic()
            if feed.changes or left <= 0 or (gone is not None and await gone()):
                return feed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.event.wait(), timeout=min(recheck, left))
        finally:
            notifier.unsubscribe(tenant_id, w)
