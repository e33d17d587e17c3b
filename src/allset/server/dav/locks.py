"""WebDAV locks in the database (table ``dav_locks``), so that every server process sees
the same locks: a LOCK taken through one process makes a PUT, DELETE or MOVE without its
token answer 423 in every other, and UNLOCK or a refresh works through any of them.

Two classes, one per Client (the ASGI front builds one WsgiDAV application per Client):

- ``DbLockStorage`` is what WsgiDAV calls a lock storage: the methods of its
  ``LockStorageDict`` (``open``, ``close``, ``cleanup``, ``clear``, ``get``, ``create``,
  ``refresh``, ``delete``, ``get_lock_list``) with the same meaning, on rows of one
  Client only (R-STORE-3): another Client's lock is invisible, its token unknown here, and
  a path means a path of this Client's tree.
- ``SharedLockManager`` is WsgiDAV's ``LockManager`` with its checks made of one query
  each. WsgiDAV's own walks up the path asking the storage once per parent (six queries
  for ``/a/b/c/d/e``); here one indexed query fetches the locks on the path and all its
  parents (and, for depth-infinity operations, below it), and WsgiDAV's rules
  (``lock_conflicts``, ``write_conflicts``) are applied to them in Python. Those rules
  and that query live in ``files/locks.py``: the REST API, the web UI, tus and links
  check the same locks with the same code (``files.locks.check_write``).

Granting a lock is atomic across processes: ``DbLockStorage.create`` checks for
conflicting locks again inside the transaction that inserts the new one, and that
transaction is serialised per Client (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: the
Client's row ``FOR UPDATE``). WsgiDAV's own check-then-create is atomic only within one
process (a ``threading`` lock), so two processes could otherwise both grant an exclusive
lock on one file.

Expiry: a lock past its ``expires_at`` is ignored by every read, deleted when ``get``
meets it (only if it is still expired at that moment: another process may have just
refreshed it) and by the maintenance run (``files.maintenance.expire_dav_locks``).

Locks survive a restart of the server (until they expire), unlike WsgiDAV's in-memory
default. Deliberately: a client that holds a lock sends its token with every write (an
editor saving a document, the Windows redirector writing a file it locked), and WsgiDAV
answers 412 to a token it does not know, so a restart that forgot the locks would fail
the next save of every open document; it would also lift the protection the lock gave
against another user's overwrite while the holder still believes it holds it. RFC 4918
§6.6 lets a server drop a lock before its timeout but does not ask for it. With several
worker processes there is also no moment at which one process could clear the table:
its siblings serve the same locks. A lock whose client vanished goes at its timeout
(the client's, at most WsgiDAV's four weeks), as it did before for a server that stayed
up.

Not shared: WsgiDAV's guard against a LOCK granted while a PUT of the same file is still
receiving its body (``LockManager._active_writes``, CWE-367) stays per process. The
native PUT path of the front (``app.DavFront._native``) never had it, but its commit,
like every upload's outside WsgiDAV, checks the locks again in the commit's own
transaction (``files.locks.check_write``): a LOCK granted while its body travelled makes
it 423 instead of overwriting the newly locked document.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    delete,
    insert,
    select,
    update,
)
from wsgidav.dav_error import (
    HTTP_LOCKED,
    HTTP_PRECONDITION_FAILED,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
    PRECONDITION_CODE_LockTokenMismatch,
)
from wsgidav.lock_man.lock_manager import LockManager, generate_lock_token, validate_lock
from wsgidav.lock_man.lock_storage import LockStorageDict

from allset.db.engine import Database
from allset.db.models import DavLock, Tenant, utcnow
from allset.files.locks import LOCK_COLUMNS as _COLUMNS
from allset.files.locks import (
    Lock,
    as_lock,
    covers,
    has_live_locks,
    is_child_url,
    lock_conflicts,
    locks_around,
    normalize_root,
    root_hash,
    select_locks,
    write_conflicts,
)

_L = DavLock.__table__.c


def _locked(hrefs: list[str]) -> DAVError:
    cond = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
    for href in hrefs:
        cond.add_href(href)
    return DAVError(HTTP_LOCKED, err_condition=cond)


def _granted_seconds(timeout: float | None) -> int:
    """WsgiDAV's rule: none asked means its default (a week); infinite (-1) or more than
    the maximum means the maximum (four weeks)."""
    longest = int(LockStorageDict.LOCK_TIME_OUT_MAX)
    if timeout is None:
        return int(LockStorageDict.LOCK_TIME_OUT_DEFAULT)
    seconds = float(timeout)
    if seconds <= 0 or seconds > longest:
        return longest
    return max(1, int(seconds))


class DbLockStorage:
    """WsgiDAV's lock storage interface over ``dav_locks``, for one Client."""

    def __init__(self, db: Database, tenant_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id

    def __repr__(self) -> str:
        return f"DbLockStorage(tenant={self.tenant_id})"

    # ---- lifecycle: the table outlives every process ---------------------------------
    def open(self) -> None:
        """Nothing to open: each call takes a connection from the pool."""

    def close(self) -> None:
        """Nothing to close (the locks stay: other processes and restarts see them)."""

    def cleanup(self) -> None:
        """Delete this Client's expired locks (maintenance does it for all Clients)."""
        with self.db.write_conn() as conn:
            conn.execute(
                delete(DavLock).where(_L.tenant_id == self.tenant_id, _L.expires_at <= utcnow())
            )

    def clear(self) -> None:
        """Delete every lock of this Client."""
        with self.db.write_conn() as conn:
            conn.execute(delete(DavLock).where(_L.tenant_id == self.tenant_id))

    # ---- one lock --------------------------------------------------------------------
    def get(self, token: str) -> Lock | None:
        """The lock with this token, or None if there is none in this Client or it has
        expired (an expired one is deleted)."""
        with self.db.read_conn() as conn:
            row = conn.execute(
                select(*_COLUMNS).where(_L.tenant_id == self.tenant_id, _L.token == token)
            ).first()
        if row is None:
            return None
        if row.expires_at <= utcnow():
            with self.db.write_conn() as conn:  # unless another process refreshed it since
                conn.execute(
                    delete(DavLock).where(
                        _L.tenant_id == self.tenant_id,
                        _L.token == token,
                        _L.expires_at <= utcnow(),
                    )
                )
            return None
        return as_lock(row)

    def create(self, path: str, lock: Lock) -> Lock:
        """Store a new lock on ``path`` and return it with ``root`` (normalised),
        ``timeout`` (as granted), ``expire`` and ``token`` set, as WsgiDAV's storages do.

        Unlike theirs, it refuses (423, the conflicting roots in the body) a lock that
        conflicts with one granted meanwhile by another process: the check WsgiDAV made
        just before is repeated in this transaction, serialised per Client."""
        if lock.get("token") is not None or lock.get("expire") is not None:
            raise ValueError("create() takes a lock definition, not an existing lock")
        root = normalize_root(path)
        seconds = _granted_seconds(lock.get("timeout"))
        lock["root"] = root
        lock["timeout"] = float(seconds)
        validate_lock(lock)
        token = generate_lock_token()
        with self.db.write_conn() as conn:
            self._serialise(conn)
            now = utcnow()
            live = self._around(conn, root, below=lock["depth"] == "infinity", now=now)
            hrefs = lock_conflicts(live, root, lock["scope"], lock["depth"])
            if hrefs:
                raise _locked(hrefs)
            expires = now + timedelta(seconds=seconds)
            conn.execute(
                insert(DavLock).values(
                    token=token,
                    tenant_id=self.tenant_id,
                    root=root,
                    root_hash=root_hash(root),
                    lock_type=lock["type"],
                    scope=lock["scope"],
                    depth=lock["depth"],
                    owner=lock["owner"],
                    principal=lock["principal"],
                    timeout=seconds,
                    expires_at=expires,
                    created_at=now,
                )
            )
        lock["expire"] = expires.timestamp()
        lock["token"] = token
        return lock

    def refresh(self, token: str, *, timeout: float | None) -> Lock:
        """Give a live lock a new timeout (from now) and return it. A lock that expired
        or was released meanwhile (through any process) is not revived: 412, as WsgiDAV
        answers a refresh with a token that does not match."""
        seconds = _granted_seconds(timeout)
        with self.db.write_conn() as conn:
            now = utcnow()
            mine = and_(_L.tenant_id == self.tenant_id, _L.token == token)
            done = conn.execute(
                update(DavLock)
                .where(mine, _L.expires_at > now)
                .values(timeout=seconds, expires_at=now + timedelta(seconds=seconds))
            )
            if done.rowcount != 1:
                raise DAVError(
                    HTTP_PRECONDITION_FAILED,
                    "The lock has expired or was released.",
                    err_condition=PRECONDITION_CODE_LockTokenMismatch,
                )
            row = conn.execute(select(*_COLUMNS).where(mine)).one()
        return as_lock(row)

    def delete(self, token: str) -> bool:
        """Release a lock; False if this Client has no lock with this token."""
        with self.db.write_conn() as conn:
            done = conn.execute(
                delete(DavLock).where(_L.tenant_id == self.tenant_id, _L.token == token)
            )
        return bool(done.rowcount)

    # ---- locks by path ---------------------------------------------------------------
    def get_lock_list(
        self, path: str, *, include_root: bool, include_children: bool, token_only: bool
    ) -> list[Any]:
        """The live locks rooted at ``path`` (``include_root``) and/or below it
        (``include_children``); their tokens only if ``token_only``. One query."""
        if not (include_root or include_children) or not path.startswith("/"):
            raise ValueError(f"get_lock_list({path!r}): nothing to look for")
        root = normalize_root(path)
        with self.db.read_conn() as conn:
            locks = self._select(
                conn, [root] if include_root else [], root if include_children else None
            )
        return [lock["token"] for lock in locks] if token_only else locks

    def around(self, url: str, *, below: bool) -> list[Lock]:
        """The live locks on ``url`` and on each of its parents, and if ``below`` those
        under it: everything a check of ``url`` needs, in one query. Ordered as WsgiDAV
        would meet them: ``url``, its parents upwards, then those below."""
        root = normalize_root(url)
        with self.db.read_conn() as conn:
            return self._around(conn, root, below=below, now=utcnow())

    def delete_at(self, url: str, *, recursive: bool) -> int:
        """Release the locks rooted at ``url`` (and below it, if ``recursive``)."""
        root = normalize_root(url)
        with self.db.write_conn() as conn:
            tokens = [lk["token"] for lk in self._select(conn, [root], root if recursive else None)]
            if tokens:
                conn.execute(
                    delete(DavLock).where(_L.tenant_id == self.tenant_id, _L.token.in_(tokens))
                )
        return len(tokens)

    # ---- queries ---------------------------------------------------------------------
    def _around(self, conn: Connection, root: str, *, below: bool, now: datetime) -> list[Lock]:
        return locks_around(conn, self.tenant_id, root, below=below, now=now)

    def _select(
        self,
        conn: Connection,
        roots: list[str],
        under: str | None,
        now: datetime | None = None,
    ) -> list[Lock]:
        return select_locks(conn, self.tenant_id, roots, under, now)

    def _serialise(self, conn: Connection) -> None:
        """Make this write transaction the only one changing this Client's locks until it
        ends. SQLite: already so (``BEGIN IMMEDIATE`` holds the database's write lock);
        PostgreSQL: lock the Client's row (held for a few statements; every other writer
        of that row, an upload's quota charge, waits that long)."""
        if conn.dialect.name != "sqlite":
            conn.execute(select(Tenant.id).where(Tenant.id == self.tenant_id).with_for_update())

    def any_live(self) -> bool:
        return has_live_locks(self.db, self.tenant_id)


class SharedLockManager(LockManager):  # type: ignore[misc]
    """WsgiDAV's ``LockManager`` over a ``DbLockStorage``, each check one query.

    Overrides only the methods that walked the path one query per parent; the rest
    (``acquire``, ``refresh``, ``release``, ``write_transaction`` ...) is WsgiDAV's, on
    the storage above. Its ``threading`` lock and ``_active_writes`` still order the
    requests of this process among themselves."""

    storage: DbLockStorage

    def __init__(self, storage: DbLockStorage) -> None:
        super().__init__(storage)

    def _check_lock_permission(
        self,
        url: str,
        lock_type: str,
        lock_scope: str,
        lock_depth: str,
        token_list: list[str],
        principal: str,
    ) -> None:
        """Raise 423 if ``principal`` may not lock ``url`` (before ``storage.create``,
        which checks the database again atomically)."""
        if lock_type != "write" or lock_scope not in ("shared", "exclusive"):
            raise ValueError(f"unknown lock {lock_type}/{lock_scope}")
        url = normalize_root(url)
        hrefs = lock_conflicts(
            self.storage.around(url, below=lock_depth == "infinity"), url, lock_scope, lock_depth
        )
        self._lock.acquire_read()
        try:  # this process's PUTs still receiving their body (WsgiDAV's CWE-367 guard)
            if self._active_writes.get(url):
                hrefs.append(url)
            if lock_depth == "infinity":
                hrefs.extend(
                    w for w, n in self._active_writes.items() if n and is_child_url(url, w)
                )
        finally:
            self._lock.release()
        if hrefs:
            raise _locked(hrefs)

    def _get_write_conflicts(
        self, url: str, depth: str, token_list: list[str], principal: str
    ) -> DAVErrorCondition:
        url = normalize_root(url)
        cond = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
        locks = self.storage.around(url, below=depth == "infinity")
        for href in write_conflicts(locks, url, depth, token_list, principal):
            cond.add_href(href)
        return cond

    def get_indirect_url_lock_list(self, url: str, *, principal: str | None = None) -> list[Lock]:
        """The live locks covering ``url`` (on it, or depth-infinity on a parent), of
        ``principal`` only if given."""
        url = normalize_root(url)
        return [
            lock
            for lock in self.storage.around(url, below=False)
            if covers(lock, url) and (principal is None or principal == lock["principal"])
        ]

    def remove_all_locks_from_url(self, url: str, *, recursive: bool = False) -> None:
        self.storage.delete_at(url, recursive=recursive)

    def has_locks_near(self, url: str) -> bool:
        """Any live lock on ``url``, a parent or below: one query, for the native
        PROPFIND, which leaves lock discovery to WsgiDAV."""
        return bool(self.storage.around(url, below=True))
