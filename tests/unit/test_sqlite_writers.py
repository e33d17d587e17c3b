"""SQLite writers: transactions are opened by our own BEGIN (on the driver's connection, for speed):
a failing BEGIN must still surface as SQLAlchemy's error, which the server turns into a
clean answer, not as a raw driver exception (a 500)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from allset.db.engine import Database
from lockholder import OtherProcess


def test_begin_opens_a_real_transaction_and_errors_stay_sqlalchemy(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with db.engine.connect() as conn:
            with conn.begin():
                conn.execute(text("CREATE TABLE t (x INTEGER)"))
                assert conn.connection.driver_connection.in_transaction
            # A transaction the driver already has open makes our BEGIN fail.
            conn.connection.driver_connection.execute("BEGIN")
            with pytest.raises(OperationalError, match="within a transaction"):
                conn.begin()
            conn.connection.driver_connection.execute("ROLLBACK")
        with db.read_conn() as c:
            assert c.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        db.dispose()


def test_sqlite_writers_of_other_processes_wait_for_the_file_lock(tmp_path: Path) -> None:
    """Worker processes share one SQLite file: a writer here waits while another process
    writes (``-writer.lock``, handed over by the kernel instead of SQLite's sleeping busy
    handler), then goes on."""
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with db.write_conn() as c:
            c.execute(text("CREATE TABLE t (x INTEGER)"))
        other = OtherProcess(tmp_path / "x.db-writer.lock", "exclusive")
        done = threading.Event()

        def write() -> None:
            db.write_group(lambda c: c.execute(text("INSERT INTO t VALUES (1)")))
            done.set()

        worker = threading.Thread(target=write)
        worker.start()
        try:
            assert not done.wait(1.0), "wrote while another process held the writer lock"
        finally:
            other.release()
        assert done.wait(30)
        worker.join(timeout=10)
        with db.read_conn() as c:
            assert c.execute(text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        db.dispose()
