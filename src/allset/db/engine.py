"""Engines and sessions for SQLite (embedded) and PostgreSQL, and schema migration.

SQLite is opened in WAL mode with ``synchronous=FULL`` (a commit is fsynced before it
returns: an acknowledged upload survives power loss). Writers begin with ``BEGIN
IMMEDIATE`` so two writers never fail mid-transaction with "database is locked"; readers
use plain deferred transactions and never block writers.

Within the process, SQLite writers also queue on a Python lock. SQLite's own busy
handler waits by sleeping with a growing back-off (up to 100 ms), so under 8 concurrent
uploads most writers slept while the lock was already free (p99 1.5 s in the benchmark);
a lock hands over at once. The busy timeout still covers other processes (the CLI).

Writers that queue on that lock at the same time share one transaction (``write_group``,
group commit): one COMMIT (one fsync) makes them all durable. Eight small uploads then
wait for one commit instead of queueing for eight.

Between processes (worker processes of ``serve --workers``, the CLI) the writer who holds
that Python lock also takes an exclusive ``flock`` beside the database file before its
BEGIN, for the same reason: the kernel hands it over at once, where SQLite's busy
handler would have slept.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from allset.core.flock import FileLock
from allset.db.prepared import DriverConn, Params, Prepared

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0010"
"""The newest migration's revision (``tests/integration/test_schema.py`` checks it is
alembic's head): a database already there is not migrated, and a serving process then
never imports alembic (~10 MB of its memory, in every worker)."""
CHANGED = "allset.changed_tenants"
"""Key in a connection's ``info`` of the Clients whose tree a write transaction changed;
see ``mark_changed`` and ``Database.on_commit``."""


def mark_changed(conn: Connection, tenant_id: str) -> None:
    """Note that this transaction changed ``tenant_id``'s tree: once it commits, the
    ``Database.on_commit`` listeners hear of it (change feed long-polls wake up)."""
    conn.info.setdefault(CHANGED, set()).add(tenant_id)


GROUP_MEMO = "allset.group_memo"


def group_memo(conn: Connection) -> dict[Any, Any] | None:
    """Inside a group transaction (``write_group`` on SQLite), a dict that lives exactly
    as long as that transaction: what an earlier writer of the group found, a later one
    may reuse (the folder an upload went into, for the next upload into it). Cleared
    whenever the group starts again without a writer that failed. None elsewhere.
    Writers of a group only add rows (uploads): none may remove what another remembered."""
    memo: dict[Any, Any] | None = conn.info.get(GROUP_MEMO)
    return memo


def _take_changed(conn: Connection) -> set[str]:
    changed: set[str] = conn.info.pop(CHANGED, None) or set()
    return changed


T = TypeVar("T")


@dataclass
class _GroupItem(Generic[T]):
    """One writer's work in a group commit, and what became of it."""

    fn: Callable[[Connection], T]
    done: bool = False
    result: T | None = None
    error: BaseException | None = None


def normalise_url(url: str) -> str:
    """Accept the ``postgresql://`` users write and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(
        url,
        pool_size=8,
        max_overflow=32,
        pool_timeout=60,
        connect_args={"check_same_thread": False, "timeout": 60},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Straight on the driver's connection: through ``exec_driver_sql`` this one
        # statement cost ~80 us of SQLAlchemy's execution machinery per transaction,
        # a third of a whole credential check.
        try:
            conn.connection.driver_connection.execute(begin)
        except sqlite3.Error as exc:  # as SQLAlchemy would have raised it
            raise DBAPIError.instance(begin, None, exc, sqlite3.Error) from exc

    return engine


class Database:
    """Owns the engines; ``write()`` and ``read()`` give transactional sessions."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url, immediate=True)
            self.read_engine = _sqlite_engine(self.url, immediate=False)
        else:
            self.engine = create_engine(self.url, pool_size=10, max_overflow=30, pool_pre_ping=True)
            self.read_engine = self.engine
        self._writer_lock: threading.Lock | None = threading.Lock() if self.is_sqlite else None
        self._writer_file: FileLock | None = None
        self._file: str | None = None  # the SQLite database file, when it is one
        if self.is_sqlite:
            path = make_url(self.url).database or ""
            if path and path != ":memory:" and not path.startswith("file:"):
                self._file = path
                self._writer_file = FileLock(Path(path + "-writer.lock"))
        self._driver = threading.local()  # each thread's own connection for read_one
        self._group: list[_GroupItem[Any]] = []
        self._group_lock = threading.Lock()
        self._group_conn: Connection | None = None  # see ``_try_group``
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        # Called after a write transaction that marked Clients as changed has committed
        # (never before: a woken reader must find the change). Set by files/.
        self.on_commit: list[Callable[[set[str]], None]] = []

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """The right to write: this process's lock, then the one shared with others."""
        if self._writer_lock is None:  # PostgreSQL: writers run concurrently
            yield
            return
        with (
            self._writer_lock,
            self._writer_file.exclusive() if self._writer_file else nullcontext(),
        ):
            yield

    def _committed(self, changed: set[str]) -> None:
        for listener in self.on_commit:
            listener(changed)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction, committed on success and rolled back on error."""
        changed: set[str] = set()
        with self._writer(), self._write() as session, session.begin():
            # ``info`` lives with the pooled DBAPI connection: forget what a failed
            # transaction on it marked before.
            _take_changed(session.connection())
            yield session
            changed = _take_changed(session.connection())
        if changed:
            self._committed(changed)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def write_conn(self) -> Iterator[Connection]:
        """As ``write()`` but a bare Core connection: for hot paths where the ORM's
        bookkeeping cost more than the statements themselves (see files/sql.py)."""
        changed: set[str] = set()
        with self._writer(), self.engine.connect() as conn:
            _take_changed(conn)  # what a failed transaction on this connection marked
            with conn.begin():
                yield conn
            changed = _take_changed(conn)
        if changed:
            self._committed(changed)

    def write_group(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction, as ``write_conn`` would, but possibly in
        one shared with other writers waiting at the same moment (SQLite: group commit).

        If ``fn`` raises, none of its statements are kept and the exception is raised
        here; the others still commit (see ``_run_group``), so ``fn`` may run more than
        once and must only act on the connection it is given. When the shared COMMIT
        fails, every writer of the group gets that error and nothing of the group is
        stored. Each writer's item joins the queue before it waits for the lock, so
        whoever holds the lock next takes it along; a writer whose item was done by
        another returns as soon as it gets the lock. ``fn`` may run on another thread
        and must not open a write transaction itself. PostgreSQL runs writers
        concurrently already: there each gets its own transaction."""
        if self._writer_lock is None:
            with self.write_conn() as conn:
                return fn(conn)
        item: _GroupItem[T] = _GroupItem(fn)
        with self._group_lock:
            self._group.append(item)
        with self._writer_lock:
            if not item.done:
                with self._writer_file.exclusive() if self._writer_file else nullcontext():
                    # Taken once the other processes' writer is done, not before: the
                    # writers that queued here meanwhile join this group (2 workers,
                    # 8 small uploads at once: ~1.5 -> ~2 per COMMIT).
                    with self._group_lock:
                        batch, self._group = self._group, []
                    self._run_group(batch)
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def _run_group(self, batch: list[_GroupItem[Any]]) -> None:
        """Optimistic: the writers run one after the other in one transaction, without
        savepoints (they cost more than the statements of a small file). If one raises,
        the transaction is rolled back, that writer gets its error, and the others run
        again without it: each pass settles at least one writer."""
        todo = list(batch)
        try:
            for _ in range(len(batch)):
                failed = self._try_group(todo)
                if failed is None:
                    break
                index, exc = failed
                todo.pop(index).error = exc
                if not todo:
                    break
        except BaseException as exc:  # BEGIN or COMMIT failed: nothing of it is stored
            for item in todo:
                item.error, item.result = exc, None
            raise
        finally:
            for item in batch:
                item.done = True

    def _try_group(self, todo: list[_GroupItem[Any]]) -> tuple[int, Exception] | None:
        # One connection for every group, kept out of the pool: only the holder of the
        # writer locks uses it, and checking a connection out and in again was ~0.1 ms
        # of the time those locks are held, per group (the other processes wait).
        conn = self._group_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._group_conn = self.engine.connect()
        try:
            _take_changed(conn)  # what a failed transaction on this connection marked
            transaction = conn.begin()
            conn.info[GROUP_MEMO] = {}
            for index, item in enumerate(todo):
                try:
                    item.result = item.fn(conn)
                except Exception as exc:
                    conn.info.pop(GROUP_MEMO, None)
                    transaction.rollback()
                    return index, exc
            conn.info.pop(GROUP_MEMO, None)
            transaction.commit()
            changed = _take_changed(conn)
        except BaseException:  # BEGIN, COMMIT or a rollback failed: a new one next time
            self._group_conn = None
            with contextlib.suppress(Exception):
                conn.close()
            raise
        if changed:
            self._committed(changed)
        return None

    @contextmanager
    def read_conn(self) -> Iterator[Connection]:
        with self.read_engine.connect() as conn, conn.begin():
            yield conn

    def read_one(self, statement: Prepared, params: Params) -> Any:
        """One prepared read statement, on its own snapshot (as in its own read
        transaction). On a SQLite file it runs on this thread's own driver connection in
        autocommit mode, outside SQLAlchemy's pool: checking a connection out, BEGIN,
        COMMIT and the check-in cost ~0.2 ms, twice the statement, on every credential
        check (an event loop's, for every request). Several calls need not agree with
        each other; statements that must, share ``read_conn``."""
        if self._file is None:
            with self.read_conn() as pooled:
                return statement.run(pooled, params)
        conn: DriverConn | None = getattr(self._driver, "conn", None)
        if conn is None:
            raw = sqlite3.connect(
                self._file, timeout=60, isolation_level=None, check_same_thread=True
            )
            raw.execute("PRAGMA query_only=ON")  # reads only, whatever a caller passes
            raw.execute("PRAGMA busy_timeout=60000")
            conn = DriverConn(self.read_engine.dialect, raw)
            self._driver.conn = conn
        return statement.run(conn, params)

    @contextmanager
    def consistent_read_conn(self) -> Iterator[Connection]:
        """A read transaction in which every statement sees the same committed state
        (a snapshot plus the change-feed cursor read beside it must agree). SQLite's
        WAL readers already do; PostgreSQL's default READ COMMITTED takes a new snapshot
        per statement, so ask for REPEATABLE READ."""
        with self.read_engine.connect() as plain:
            conn = (
                plain
                if self.is_sqlite
                else plain.execution_options(isolation_level="REPEATABLE READ")
            )
            with conn.begin():
                yield conn

    def insert(self, table: Any) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_nothing`` on both engines."""
        return sqlite_insert(table) if self.is_sqlite else pg_insert(table)

    def revision(self) -> str | None:
        """The schema's revision as alembic recorded it; None for an empty database."""
        with self.engine.connect() as conn:
            try:
                found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except DBAPIError:  # no such table: never migrated
                return None
        return str(found) if found is not None else None

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        if self.revision() == HEAD_REVISION:
            return
        from alembic import command  # noqa: PLC0415 (lazily: see HEAD_REVISION)
        from alembic.config import Config  # noqa: PLC0415

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection_url"] = self.url
        with self.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()

    def dispose(self) -> None:
        if self._group_conn is not None:
            with contextlib.suppress(Exception):
                self._group_conn.close()
            self._group_conn = None
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
