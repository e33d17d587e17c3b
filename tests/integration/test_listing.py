"""Sorted folder listings (``FileService.list_sorted``, used by the web interface): every
sort and direction pages through a folder of 10,000+ entries with the keyset cursor and
yields each live entry exactly once, in order, folders first; a member sees only the way
to their grants; bad sorts and cursors are clear ``InvalidInput`` errors. On SQLite and
PostgreSQL (the ``runtime`` fixture is parametrised)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from allset.core.errors import InvalidInput, NotFound
from allset.core.ids import new_id
from allset.core.paths import parse_path
from allset.db.models import Node
from allset.files import access
from allset.files.upload import store_bytes
from allset.runtime import Runtime
from conftest import make_account

N_FILES = 10_050
N_DIRS = 40


def fill(rt: Runtime, tenant_id: str, parent_id: str) -> list[dict[str, Any]]:
    """Insert many entries at once (the façade would take minutes): sizes and times with
    many ties, so the name tie-break is exercised, plus a trashed entry never listed."""
    rnd = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(N_FILES + N_DIRS):
        is_dir = i < N_DIRS
        rows.append(
            {
                "id": new_id(),
                "tenant_id": tenant_id,
                "parent_id": parent_id,
                "name": f"{'d' if is_dir else 'f'}-{rnd.randrange(10**9):09d}-{i}",
                "kind": "dir" if is_dir else "file",
                "size": 0 if is_dir else rnd.randrange(50),
                "sha256": "",
                "mtime": base + timedelta(seconds=rnd.randrange(100)),
                "created_at": base,
                "updated_at": base,
            }
        )
    trashed = dict(rows[-1], id=new_id(), name="zz-trashed", trashed_at=base)
    with rt.db.write() as s:
        s.execute(insert(Node), [*rows, trashed])
    return rows


def expected(rows: list[dict[str, Any]], sort: str, desc: bool) -> list[str]:
    def key(r: dict[str, Any]) -> tuple[Any, Any]:
        return (r[sort], r["name"])

    dirs = sorted((r for r in rows if r["kind"] == "dir"), key=key, reverse=desc)
    files = sorted((r for r in rows if r["kind"] == "file"), key=key, reverse=desc)
    return [r["name"] for r in dirs + files]


@pytest.mark.parametrize(("sort", "desc"), [("name", False), ("size", True), ("mtime", False)])
def test_sorted_paging_through_a_big_folder(runtime: Runtime, sort: str, desc: bool) -> None:
    acct = make_account(runtime)
    p = acct.principal
    big = runtime.files.mkdir(p, "/Big")
    rows = fill(runtime, acct.tenant_id, big.id)
    want = expected(rows, sort, desc)

    seen: list[str] = []
    after = ""
    for _ in range(100):
        folder, entries, after_next = runtime.files.list_sorted(p, "/Big", sort, desc, after, 1000)
        assert folder.kind == "dir" and len(entries) <= 1000
        seen += [e.name for e in entries]
        if after_next is None:
            break
        after = after_next
    assert seen == want  # every live entry once, in order; the trashed one never
    assert len(seen) == N_FILES + N_DIRS
    # An entry deleted between two pages shifts nothing: the cursor names the last row.
    first, entries, nxt = runtime.files.list_sorted(p, "/Big", sort, desc, "", 200)
    assert nxt is not None
    runtime.files.delete(p, entries[-1].path)
    _, following, _ = runtime.files.list_sorted(p, "/Big", sort, desc, nxt, 200)
    assert following[0].name == want[200]
    assert first.path == "/Big"


def test_sort_order_of_small_folder_and_bad_input(runtime: Runtime) -> None:
    acct = make_account(runtime)
    p = acct.principal
    svc = runtime.files
    svc.mkdir(p, "/b-folder")
    for name, data in (("a.txt", b"x" * 30), ("c.txt", b"x"), ("B.txt", b"x" * 300)):
        store_bytes(svc, p, parse_path("/" + name), data)
    names = [e.name for e in svc.list_sorted(p, "/", "size", True)[1]]
    assert names == ["b-folder", "B.txt", "a.txt", "c.txt"]
    names = [e.name for e in svc.list_sorted(p, "/", "size", False)[1]]
    assert names == ["b-folder", "c.txt", "a.txt", "B.txt"]
    names = [e.name for e in svc.list_sorted(p, "/", "name", True)[1]]
    assert names == ["b-folder", "c.txt", "a.txt", "B.txt"]
    # paging one at a time by modification time gives the same as one page
    one_page = [e.name for e in svc.list_sorted(p, "/", "mtime", True)[1]]
    paged, after = [], ""
    while True:
        _, entries, nxt = svc.list_sorted(p, "/", "mtime", True, after, 1)
        paged += [e.name for e in entries]
        if nxt is None:
            break
        after = nxt
    assert paged == one_page and len(paged) == 4

    for bad_sort in ("owner", "", "name; drop table nodes"):
        with pytest.raises(InvalidInput, match="Sort by one of name, size, mtime"):
            svc.list_sorted(p, "/", bad_sort)
    _, _, size_cursor = svc.list_sorted(p, "/", "size", False, "", 1)
    assert size_cursor is not None
    for bad_cursor in ("%%%", "bm90IGpzb24", size_cursor, "WyJuYW1lIiwgMCwgMSwgIngiXQ"):
        with pytest.raises(InvalidInput, match="cursor"):
            svc.list_sorted(p, "/", "name", False, bad_cursor)
    with pytest.raises(NotFound):
        svc.list_sorted(p, "/nowhere", "name")


def test_member_sees_only_the_way_to_their_grant(runtime: Runtime) -> None:
    acct = make_account(runtime)
    owner = acct.principal
    svc = runtime.files
    for path in ("/Team/Sales", "/Team/Legal", "/Team/HR", "/Other"):
        svc.mkdir(owner, path, parents=True)
    user = runtime.accounts.create_user(
        acct.tenant, f"member@{acct.tenant}.example", "member", "member password 42", "test"
    )
    access.set_grant(svc, owner, user["id"], "/Team/Sales", "read")
    m = runtime.accounts.authenticate_basic(
        f"member@{acct.tenant}.example", "member password 42", "127.0.0.1"
    )
    assert [e.name for e in svc.list_sorted(m, "/", "name", True)[1]] == ["Team"]
    assert [e.name for e in svc.list_sorted(m, "/Team", "size")[1]] == ["Sales"]
    # the owner sees everything, sorted
    assert [e.name for e in svc.list_sorted(owner, "/Team", "name", True)[1]] == [
        "Sales",
        "Legal",
        "HR",
    ]
    with pytest.raises(NotFound):
        svc.list_sorted(m, "/Other", "name")
    with pytest.raises(NotFound):
        svc.list_sorted(m, "/Team/Legal", "mtime")
