"""Hot statements run straight on the SQLite driver (``allset.db.prepared``) must store and
read exactly what SQLAlchemy's own execution does: same column values on disk (dates,
JSON, NULLs), same rows back (types, names), same errors. Each statement is run both ways
on twin rows and the stored rows compared raw (``text()`` reads what the database holds,
no type processing). On PostgreSQL ``Prepared`` hands over to ``Connection.execute``; the
test runs there too, so both engines answer through the same interface."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from allset.accounts import service as accounts_service
from allset.core.errors import Unauthenticated
from allset.core.ids import new_id
from allset.db import prepared as prepared_module
from allset.db.prepared import Prepared
from allset.files import sql
from allset.runtime import Runtime
from conftest import make_account

PARIS = timezone(timedelta(hours=1))


def stored(conn: Connection, table: str, where: str, **key: Any) -> dict[str, Any]:
    """The row as the database holds it."""
    row = conn.execute(text(f"SELECT * FROM {table} WHERE {where}"), key).mappings().one()
    return dict(row)


def same_but(a: dict[str, Any], b: dict[str, Any], *keys: str) -> None:
    assert {k: v for k, v in a.items() if k not in keys} == {
        k: v for k, v in b.items() if k not in keys
    }


def twice(conn: Connection, p: Prepared, core: Any, fast: Any) -> tuple[Any, Any]:
    """Run ``p`` through SQLAlchemy with ``core`` and through ``run`` with ``fast``."""
    return conn.execute(p.statement, core), p.run(conn, fast)  # type: ignore[arg-type]


def test_prepared_statements_store_and_read_what_sqlalchemy_does(runtime: Runtime) -> None:
    acct = make_account(runtime)
    tenant = acct.tenant_id
    when = datetime(2026, 11, 29, 3, 4, 5, 123456, tzinfo=PARIS)  # stored as UTC
    with runtime.db.write_conn() as conn:
        root = sql.path_lookup(0).run(conn, {"tenant_id": tenant, "root_id": ""}).first()
        root_id = conn.execute(
            text("SELECT id FROM nodes WHERE tenant_id = :t AND parent_id IS NULL"), {"t": tenant}
        ).scalar_one()
        assert root is None  # no node has the id ""

        # ---- INSERTs: node, version, version chunks, chunks, event
        ids = {"a": new_id(), "b": new_id()}
        vids = {"a": new_id(), "b": new_id()}

        def node(k: str) -> dict[str, Any]:
            return {
                "id": ids[k],
                "tenant_id": tenant,
                "parent_id": root_id,
                "name": f"é {k}.txt",
                "kind": "file",
                "version_id": vids[k],
                "size": 4096,
                "sha256": "0" * 64,
                "mtime": when,
                "created_at": when,
                "updated_at": when,
                "trashed_at": None,
                "trashed_path": "",
                "trashed_by": "",
            }

        twice(conn, sql.INSERT_NODE, node("a"), node("b"))
        a, b = (stored(conn, "nodes", "id = :i", i=ids[k]) for k in "ab")
        same_but(a, b, "id", "name", "version_id")
        assert a["mtime"] is not None and a["trashed_at"] is None

        def version(k: str) -> dict[str, Any]:
            return {
                "id": vids[k],
                "tenant_id": tenant,
                "node_id": ids[k],
                "size": 4096,
                "sha256": "0" * 64,
                "mtime": when,
                "created_at": when,
                "created_by": acct.principal.id,
                "superseded_at": None,
            }

        twice(conn, sql._INSERT_VERSION, version("a"), version("b"))
        a, b = (stored(conn, "versions", "id = :i", i=vids[k]) for k in "ab")
        same_but(a, b, "id", "node_id")

        digests = [f"{i:064x}" for i in range(3)]
        chunk_rows = [
            {"tenant_id": tenant, "hash": d, "size": 100 + i, "created_at": when}
            for i, d in enumerate(digests)
        ]
        ins = sql.insert_new_chunks(runtime.db.is_sqlite)
        assert sorted(ins.run(conn, chunk_rows[:2]).scalars()) == digests[:2]
        # Already there: nothing returned; the third is new.
        assert sorted(ins.run(conn, chunk_rows[1:]).scalars()) == digests[2:]
        assert sorted(conn.execute(ins.statement, [chunk_rows[0]]).scalars()) == []
        a, b = (stored(conn, "chunks", "hash = :h", h=d) for d in digests[:2])
        same_but(a, b, "hash", "size")

        def refs(k: str) -> list[dict[str, Any]]:
            return [
                {
                    "version_id": vids[k],
                    "seq": i,
                    "tenant_id": tenant,
                    "hash": d,
                    "offset": 0,
                    "size": 100 + i,
                }
                for i, d in enumerate(digests)
            ]

        twice(conn, sql._INSERT_VERSION_CHUNKS, refs("a"), refs("b"))
        for seq in range(3):
            a, b = (
                stored(conn, "version_chunks", "version_id = :v AND seq = :s", v=vids[k], s=seq)
                for k in "ab"
            )
            same_but(a, b, "version_id")

        def event(k: str) -> dict[str, Any]:
            return {
                "tenant_id": tenant,
                "at": when,
                "actor": acct.email,
                "kind": "put",
                "node_id": ids[k],
                "path": f"/é {k}.txt",
                "detail": {"size": 4096, "name": "élan ☃", "list": [1, None, "x"]},
            }

        twice(conn, sql._INSERT_EVENT, event("a"), event("b"))
        a, b = (stored(conn, "events", "node_id = :n", n=ids[k]) for k in "ab")
        same_but(a, b, "id", "node_id", "path")

        # ---- UPDATEs: current version, touch, supersede, quota charge
        later = when + timedelta(minutes=3)

        def current(k: str) -> dict[str, Any]:
            return {
                "node_id": ids[k],
                "vid": vids["a"],
                "size": 7,
                "sha": "f" * 64,
                "mtime": later,
                "now": later,
            }

        core, fast = twice(conn, sql._SET_CURRENT, current("a"), current("b"))
        assert core.rowcount == fast.rowcount == 1
        twice(
            conn,
            sql._TOUCH,
            {"node_id": ids["a"], "now": later},
            {"node_id": ids["b"], "now": later},
        )
        a, b = (stored(conn, "nodes", "id = :i", i=ids[k]) for k in "ab")
        same_but(a, b, "id", "name")
        twice(
            conn,
            sql._SUPERSEDE,
            {"previous": vids["a"], "now": later},
            {"previous": vids["b"], "now": later},
        )
        a, b = (stored(conn, "versions", "id = :i", i=vids[k]) for k in "ab")
        same_but(a, b, "id", "node_id")
        assert a["superseded_at"] is not None

        used = stored(conn, "tenants", "id = :i", i=tenant)["used_bytes"]
        charge = {"tenant_id": tenant, "charge": 10}
        core, fast = twice(conn, sql.CHARGE, charge, charge)
        assert core.rowcount == fast.rowcount == 1
        assert stored(conn, "tenants", "id = :i", i=tenant)["used_bytes"] == used + 20
        too_much = {"tenant_id": tenant, "charge": 1 << 40}
        core, fast = twice(conn, sql.CHARGE, too_much, too_much)
        assert core.rowcount == fast.rowcount == 0
        admit = {"tenant_id": tenant, "charge": 1, "other": 0}
        core, fast = twice(conn, sql.CHARGE_ADMIT, admit, admit)
        assert core.rowcount == fast.rowcount == 1

        # ---- SELECTs: same values, same types, same names
        def same_row(p: Prepared, params: dict[str, Any]) -> Any:
            core_row, fast_row = twice(conn, p, params, params)
            core_row, fast_row = core_row.first(), fast_row.first()
            assert core_row is not None and fast_row is not None
            assert tuple(fast_row) == tuple(core_row)
            assert [type(v) for v in fast_row] == [type(v) for v in core_row]
            assert tuple(fast_row._fields) == tuple(core_row._fields)
            return fast_row

        row = same_row(sql._CHILD, {"tenant_id": tenant, "parent_id": root_id, "name": "é a.txt"})
        assert row.mtime == later and row.mtime.tzinfo == UTC and row.trashed_at is None
        _, params = sql.path_query(tenant, root_id, ["é b.txt"])
        assert same_row(sql.path_lookup(1), params).id == ids["b"]
        cid = acct.app_password[3 : 3 + len(new_id())]
        row = same_row(accounts_service._CREDENTIAL_LOOKUP, {"cid": cid})
        assert row.user_email == acct.email and row.revoked_at is None
        row = same_row(accounts_service._USER_SIGN_IN, {"email": acct.email.lower()})
        assert row.tenant_status == "active" and row.disabled is False
        assert (
            sql._CHILD.run(
                conn, {"tenant_id": tenant, "parent_id": root_id, "name": "nothing"}
            ).first()
            is None
        )

        # ---- errors are SQLAlchemy's
        with pytest.raises(StatementError, match="'now'"):
            sql._TOUCH.run(conn, {"node_id": ids["a"]})  # a parameter is missing
        with pytest.raises(IntegrityError):
            sql.INSERT_NODE.run(conn, {**node("a"), "id": new_id()})  # same live name
        conn.rollback()  # the statements above were only for comparing


def test_read_one_sees_each_commit_and_only_reads(runtime: Runtime) -> None:
    """``Database.read_one`` (a thread's own driver connection on SQLite, outside the
    pool): the same row as a pooled read, every commit seen by the next call (no read
    transaction is left open between calls, which would serve a revoked credential from
    an old snapshot), and no write possible through SQLite's."""
    acct = make_account(runtime)
    cid = acct.app_password[3 : 3 + len(new_id())]
    lookup = accounts_service._CREDENTIAL_LOOKUP
    first = runtime.db.read_one(lookup, {"cid": cid}).first()
    with runtime.db.read_conn() as conn:
        pooled = lookup.run(conn, {"cid": cid}).first()
    assert first is not None and tuple(first) == tuple(pooled)
    assert first.revoked_at is None
    for round_ in range(3):  # the same connection, reused, follows each commit
        with runtime.db.write_conn() as conn:
            conn.execute(
                text("UPDATE credentials SET revoked_at = :t WHERE id = :id"),
                {
                    "t": datetime(2026, 11, 29, round_, tzinfo=UTC) if round_ != 1 else None,
                    "id": cid,
                },
            )
        again = runtime.db.read_one(lookup, {"cid": cid}).first()
        assert (again.revoked_at is None) == (round_ == 1)
    if runtime.db.is_sqlite:  # (PostgreSQL: a pooled read transaction, as before)
        with pytest.raises(OperationalError, match=r"readonly"):
            runtime.db.read_one(sql._TOUCH, {"node_id": new_id(), "now": datetime.now(UTC)})
    # The credential check itself follows it too: revoked means refused, at once.
    with runtime.db.write_conn() as conn:
        conn.execute(text("UPDATE credentials SET revoked_at = NULL WHERE id = :id"), {"id": cid})
    assert runtime.accounts.authenticate_token(acct.app_password, "127.0.0.1").email == acct.email
    with runtime.db.write_conn() as conn:
        conn.execute(
            text("UPDATE credentials SET revoked_at = :t WHERE id = :id"),
            {"t": datetime.now(UTC), "id": cid},
        )
    with pytest.raises(Unauthenticated):
        runtime.accounts.authenticate_token(acct.app_password, "127.0.0.1")


def test_arguments_keep_positions_and_dates_convert_once() -> None:
    """The driver's parameters: constants stay in their places between named values,
    one named value is a one-item list. A date converter remembers only the very object
    it was given last (an equal but different object, or another one in between, is
    converted again), and is shared by every statement: one upload's ``now``, bound to
    columns of several statements, is converted once."""
    build = prepared_module._arg_builder(
        (("a", None, None), (None, None, "dir"), ("b", str.upper, None), (None, None, 7))
    )
    assert build({"a": 1, "b": "x", "c": 3}) == [1, "dir", "X", 7]
    assert prepared_module._arg_builder((("only", str.upper, None),))({"only": "y"}) == ["Y"]
    assert prepared_module._arg_builder(((None, None, "k"),))({}) == ["k"]
    with pytest.raises(KeyError):
        build({"a": 1})

    calls: list[Any] = []

    def upper(v: str) -> str:
        calls.append(v)
        return v.upper()

    once = prepared_module._remembering(upper)
    word, same_value = "".join(["w", "x"]), "".join(["w", "x"])
    assert once(word) == "WX" and once(word) == "WX"
    assert calls == ["wx"]  # the same object: not converted again
    assert once("y") == "Y" and once(same_value) == "WX"
    assert calls == ["wx", "y", "wx"]

    # Shared between statements: the touch and the node insert bind the same date type.
    touch = sql._TOUCH._for(sqlite_dialect())
    insert = sql.INSERT_NODE._for(sqlite_dialect())
    date_procs = {
        id(proc) for c in (touch, insert) for name, proc, _ in c.slots if name in ("now", "mtime")
    }
    assert len(date_procs) == 1
