"""SQLite transactions are opened by our own BEGIN (on the driver's connection, for speed):
a failing BEGIN must still surface as SQLAlchemy's error, which the server turns into a
clean answer, not as a raw driver exception (a 500)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from allset.db.engine import Database


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
