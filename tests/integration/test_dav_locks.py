"""WebDAV locks shared by every server process (server/dav/locks.py), on SQLite and
PostgreSQL: two independent applications, each on its own ``Runtime`` (engines, pools,
WsgiDAV apps and lock managers of its own) over the same data dir and database, stand
for two worker processes. A lock taken through one must be honoured, refreshed and
released through the other, expire in both, and stay within its Client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient
from wsgidav.lock_man.lock_storage import LockStorageDict

from allset.db.models import DavLock, Event, utcnow
from allset.files import access
from allset.files.maintenance import expire_dav_locks
from allset.runtime import Runtime, build_runtime
from allset.server.app import build_app
from allset.server.dav.locks import DbLockStorage
from conftest import Account, problem
from serverproc import ServerProcess

DISCOVER = b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><lockdiscovery/></prop></propfind>'


def lockinfo(scope: str = "exclusive", owner: str = "tester") -> bytes:
    return (
        f'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><{scope}/></lockscope>'
        f"<locktype><write/></locktype><owner>{owner}</owner></lockinfo>"
    ).encode()


def dav(c: TestClient, method: str, path: str, who: Account, **kw: object) -> httpx.Response:
    return c.request(method, "/dav" + path, auth=who.auth, **kw)  # type: ignore[arg-type]


def lock(
    c: TestClient,
    path: str,
    who: Account,
    *,
    depth: str = "0",
    timeout: int = 600,
    scope: str = "exclusive",
) -> httpx.Response:
    headers = {"Depth": depth, "Timeout": f"Second-{timeout}"}
    return dav(c, "LOCK", path, who, content=lockinfo(scope), headers=headers)


def token_of(r: httpx.Response) -> str:
    assert r.status_code in (200, 201), r.text
    return r.headers["lock-token"].strip("<>")


def with_token(token: str) -> dict[str, str]:
    return {"If": f"(<{token}>)"}


def discovered(c: TestClient, path: str, who: Account) -> dict[str, str]:
    """token -> timeout of the locks PROPFIND shows on ``path``."""
    r = dav(c, "PROPFIND", path, who, headers={"Depth": "0"}, content=DISCOVER)
    assert r.status_code == 207, r.text
    found = {}
    for active in ElementTree.fromstring(r.content).iter("{DAV:}activelock"):
        token = active.findtext("{DAV:}locktoken/{DAV:}href") or ""
        found[token] = active.findtext("{DAV:}timeout") or ""
    return found


def lock_rows(rt: Runtime, tenant_id: str) -> int:
    with rt.db.read() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(DavLock).where(DavLock.tenant_id == tenant_id)
            )
            or 0
        )


@dataclass
class Pair:
    """Two applications on one data dir and database, as two worker processes."""

    a: TestClient
    b: TestClient
    rt_a: Runtime
    rt_b: Runtime


@pytest.fixture
def pair(runtime: Runtime) -> Iterator[Pair]:
    other = build_runtime(runtime.settings)
    try:
        with (
            TestClient(build_app(runtime, tls=False), base_url="https://testserver") as a,
            TestClient(build_app(other, tls=False), base_url="https://testserver") as b,
        ):
            yield Pair(a, b, runtime, other)
    finally:
        other.close()


def test_a_lock_taken_through_one_process_holds_in_the_other(pair: Pair, alice: Account) -> None:
    a, b = pair.a, pair.b
    assert dav(a, "PUT", "/doc.txt", alice, content=b"v1").status_code == 201
    token = token_of(lock(a, "/doc.txt", alice))

    assert token in discovered(b, "/doc.txt", alice)
    assert dav(b, "PUT", "/doc.txt", alice, content=b"no token").status_code == 423
    assert dav(b, "DELETE", "/doc.txt", alice).status_code == 423
    moved = dav(b, "MOVE", "/doc.txt", alice, headers={"Destination": "/dav/gone.txt"})
    assert moved.status_code == 423
    assert lock(b, "/doc.txt", alice).status_code == 423  # one exclusive lock at a time
    ok = dav(b, "PUT", "/doc.txt", alice, content=b"v2", headers=with_token(token))
    assert ok.status_code == 204, ok.text
    assert dav(a, "GET", "/doc.txt", alice).content == b"v2"

    unlock = dav(b, "UNLOCK", "/doc.txt", alice, headers={"Lock-Token": f"<{token}>"})
    assert unlock.status_code == 204
    assert discovered(a, "/doc.txt", alice) == {}
    assert dav(a, "PUT", "/doc.txt", alice, content=b"v3").status_code == 204
    assert dav(b, "GET", "/doc.txt", alice).content == b"v3"
    assert lock_rows(pair.rt_a, alice.tenant_id) == 0


def test_a_new_file_locked_through_one_process(pair: Pair, alice: Account) -> None:
    """The Windows redirector's save: LOCK an unmapped name (an empty file is created),
    then PUT through whichever process the next connection reaches."""
    token = token_of(lock(pair.a, "/new.xlsx", alice))
    assert dav(pair.b, "PUT", "/new.xlsx", alice, content=b"other").status_code == 423
    put = dav(pair.b, "PUT", "/new.xlsx", alice, content=b"PK", headers=with_token(token))
    assert put.status_code == 204, put.text
    assert dav(pair.a, "GET", "/new.xlsx", alice).content == b"PK"


def test_refresh_through_the_other_process(pair: Pair, alice: Account) -> None:
    dav(pair.a, "PUT", "/r.txt", alice, content=b"x")
    token = token_of(lock(pair.a, "/r.txt", alice, timeout=60))
    assert int(discovered(pair.b, "/r.txt", alice)[token].removeprefix("Second-")) <= 60

    refresh = dav(
        pair.b,
        "LOCK",
        "/r.txt",
        alice,
        headers={**with_token(token), "Timeout": "Second-3600"},
    )
    assert refresh.status_code == 200, refresh.text
    left = int(discovered(pair.a, "/r.txt", alice)[token].removeprefix("Second-"))
    assert 60 < left <= 3600
    # Refreshing with a token that is not this path's lock is refused (412) everywhere.
    bad = dav(pair.a, "LOCK", "/r.txt", alice, headers={"If": "(<opaquelocktoken:0xnope>)"})
    assert bad.status_code == 412


def test_expired_locks_are_ignored_then_deleted(pair: Pair, alice: Account) -> None:
    """Expiry is the database's clock comparison, the same in every process; an expired
    lock is deleted when a lookup by token meets it, or by the maintenance run."""
    for name in ("one.txt", "two.txt"):
        dav(pair.a, "PUT", f"/{name}", alice, content=b"x")
    short = token_of(lock(pair.a, "/one.txt", alice, timeout=1))
    other = token_of(lock(pair.a, "/two.txt", alice, timeout=1))
    assert dav(pair.b, "PUT", "/one.txt", alice, content=b"y").status_code == 423
    deadline = time.monotonic() + 30
    while discovered(pair.b, "/one.txt", alice) or discovered(pair.b, "/two.txt", alice):
        assert time.monotonic() < deadline, "a one-second lock did not expire in 30 s"
        time.sleep(0.2)
    assert lock_rows(pair.rt_a, alice.tenant_id) == 2  # ignored, not yet deleted

    assert dav(pair.b, "PUT", "/one.txt", alice, content=b"y").status_code == 204
    # Unlocking with the expired token: WsgiDAV looks the token up, which deletes it.
    gone = dav(pair.a, "UNLOCK", "/one.txt", alice, headers={"Lock-Token": f"<{short}>"})
    assert gone.status_code == 409
    assert lock_rows(pair.rt_a, alice.tenant_id) == 1
    refresh = dav(pair.a, "LOCK", "/two.txt", alice, headers=with_token(other))
    assert refresh.status_code == 412  # an expired lock is not revived
    # The If header failed before any lookup by token: the maintenance run deletes it.
    assert expire_dav_locks(pair.rt_b.db) == 1
    assert lock_rows(pair.rt_a, alice.tenant_id) == 0

    # Maintenance deletes a lock whose time has come, and never a live one.
    due = token_of(lock(pair.b, "/one.txt", alice, timeout=600))
    live = token_of(lock(pair.b, "/two.txt", alice, timeout=600))
    with pair.rt_a.db.write() as s:
        s.execute(update(DavLock).where(DavLock.token == due).values(expires_at=DavLock.created_at))
    assert expire_dav_locks(pair.rt_a.db) == 1
    assert lock_rows(pair.rt_a, alice.tenant_id) == 1
    assert discovered(pair.a, "/two.txt", alice).keys() == {live}


def test_depth_infinity_folder_lock_covers_everything_inside(pair: Pair, alice: Account) -> None:
    a, b = pair.a, pair.b
    for folder in ("/proj", "/proj/sub"):
        assert dav(a, "MKCOL", folder, alice).status_code == 201
    dav(a, "PUT", "/proj/a.txt", alice, content=b"a")
    dav(a, "PUT", "/proj/sub/b.txt", alice, content=b"b")
    token = token_of(lock(a, "/proj/", alice, depth="infinity"))

    assert dav(b, "PUT", "/proj/sub/b.txt", alice, content=b"no").status_code == 423
    assert dav(b, "PUT", "/proj/new.txt", alice, content=b"no").status_code == 423
    assert dav(b, "DELETE", "/proj/a.txt", alice).status_code == 423
    assert dav(b, "MKCOL", "/proj/sub/more", alice).status_code == 423
    moved = dav(b, "MOVE", "/proj/sub/b.txt", alice, headers={"Destination": "/dav/b.txt"})
    assert moved.status_code == 423
    assert lock(b, "/proj/sub/b.txt", alice).status_code == 423  # covered by the parent's
    assert lock(b, "/", alice, depth="infinity").status_code == 423  # a lock below it
    assert token in discovered(b, "/proj/", alice)

    ok = dav(b, "PUT", "/proj/sub/b.txt", alice, content=b"b2", headers=with_token(token))
    assert ok.status_code == 204, ok.text
    assert dav(b, "PUT", "/elsewhere.txt", alice, content=b"free").status_code == 201
    # A depth-0 lock on a folder covers its membership, not its members' contents.
    dav(a, "MKCOL", "/flat", alice)
    dav(a, "PUT", "/flat/old.txt", alice, content=b"x")
    flat = token_of(lock(a, "/flat/", alice, depth="0"))
    assert dav(b, "PUT", "/flat/old.txt", alice, content=b"y").status_code == 204
    assert dav(b, "PUT", "/flat/new.txt", alice, content=b"x").status_code == 423
    added = dav(b, "PUT", "/flat/new.txt", alice, content=b"x", headers=with_token(flat))
    assert added.status_code == 201, added.text


def test_delete_and_move_destroy_the_resources_locks(pair: Pair, alice: Account) -> None:
    """RFC 4918 §9.6.1, §9.9: the locks of a deleted or moved resource go with it; kept
    in the database, they would otherwise refuse a new file of that name until they
    expire, in every process and across restarts."""
    a, b = pair.a, pair.b
    dav(a, "MKCOL", "/dir", alice)
    for name in ("/gone.txt", "/moved.txt", "/dir/inner.txt"):
        dav(a, "PUT", name, alice, content=b"x")
    gone = token_of(lock(a, "/gone.txt", alice))
    assert dav(b, "DELETE", "/gone.txt", alice, headers=with_token(gone)).status_code == 204
    assert dav(a, "PUT", "/gone.txt", alice, content=b"new").status_code == 201

    moved = token_of(lock(a, "/moved.txt", alice))
    move = dav(
        b,
        "MOVE",
        "/moved.txt",
        alice,
        headers={**with_token(moved), "Destination": "/dav/there.txt"},
    )
    assert move.status_code == 201, move.text
    assert dav(a, "PUT", "/moved.txt", alice, content=b"new").status_code == 201
    assert dav(a, "PUT", "/there.txt", alice, content=b"free").status_code == 204

    inner = token_of(lock(a, "/dir/inner.txt", alice))
    # A folder with a locked member: that member is refused without its token (207,
    # RFC 4918 §9.6.1) and stays.
    refused = dav(b, "DELETE", "/dir/", alice)
    assert refused.status_code == 207 and "423" in refused.text
    assert dav(a, "GET", "/dir/inner.txt", alice).content == b"x"
    assert dav(b, "UNLOCK", "/dir/inner.txt", alice, headers={"Lock-Token": f"<{inner}>"})
    # A folder locked as a whole: deleted with the token, its lock goes with it.
    whole = token_of(lock(a, "/dir/", alice, depth="infinity"))
    refused = dav(b, "DELETE", "/dir/", alice)
    assert refused.status_code == 207 and "423" in refused.text
    assert dav(a, "GET", "/dir/inner.txt", alice).content == b"x"
    assert dav(b, "DELETE", "/dir/", alice, headers=with_token(whole)).status_code == 204
    assert lock_rows(pair.rt_a, alice.tenant_id) == 0
    assert dav(a, "MKCOL", "/dir", alice).status_code == 201
    assert dav(a, "PUT", "/dir/inner.txt", alice, content=b"new").status_code == 201


def test_granting_a_lock_is_atomic_across_processes(pair: Pair, alice: Account) -> None:
    """Exclusive LOCKs of one file raced through both processes: exactly one wins each
    round. WsgiDAV alone checks and grants under a lock of one process only."""
    rounds, racers = 4, 8
    for n in range(rounds):
        path = f"/race{n}.txt"
        dav(pair.a, "PUT", path, alice, content=b"x")
        statuses: list[int] = []
        start = threading.Barrier(racers)

        def race(
            c: TestClient,
            path: str = path,
            start: threading.Barrier = start,
            out: list[int] = statuses,
        ) -> None:
            start.wait(timeout=60)
            out.append(lock(c, path, alice).status_code)

        threads = [
            threading.Thread(target=race, args=(pair.a if i % 2 else pair.b,))
            for i in range(racers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(statuses) == [200] + [423] * (racers - 1), statuses
    assert lock_rows(pair.rt_a, alice.tenant_id) == rounds


def test_another_client_can_neither_see_nor_break_the_lock(
    pair: Pair, alice: Account, bob: Account
) -> None:
    a, b = pair.a, pair.b
    for who in (alice, bob):
        dav(a, "PUT", "/same.txt", who, content=b"mine")
    token = token_of(lock(a, "/same.txt", alice))

    # Bob's file of the same name, through either process, is his own: unlocked.
    assert discovered(b, "/same.txt", bob) == {}
    assert dav(b, "PUT", "/same.txt", bob, content=b"bob writes").status_code == 204
    # Alice's token means nothing in Bob's space: no unlock, no refresh, no write.
    stolen = {"Lock-Token": f"<{token}>"}
    assert dav(b, "UNLOCK", "/same.txt", bob, headers=stolen).status_code == 409
    assert dav(b, "LOCK", "/same.txt", bob, headers=with_token(token)).status_code == 412
    put = dav(b, "PUT", "/same.txt", bob, content=b"b", headers=with_token(token))
    assert put.status_code == 412
    # Bob may lock his own file; Alice's lock stands untouched.
    bobs = token_of(lock(b, "/same.txt", bob))
    assert dav(a, "PUT", "/same.txt", alice, content=b"no token").status_code == 423
    assert discovered(b, "/same.txt", alice).keys() == {token}
    assert discovered(a, "/same.txt", bob).keys() == {bobs}
    # Nor can Bob's token open Alice's file.
    put = dav(a, "PUT", "/same.txt", alice, content=b"a", headers=with_token(bobs))
    assert put.status_code == 412


def test_locks_survive_a_restart(runtime: Runtime, alice: Account) -> None:
    """Decided in server/dav/locks.py: a client keeps sending its token after a restart
    (an editor saving its open document), so the lock must still be there until it
    expires, both to accept that token and to keep others out."""
    with TestClient(build_app(runtime, tls=False), base_url="https://testserver") as before:
        dav(before, "PUT", "/kept.txt", alice, content=b"v1")
        token = token_of(lock(before, "/kept.txt", alice))
    runtime.close()  # the whole server goes; a new one starts on the same data dir

    again = build_runtime(runtime.settings)
    try:
        with TestClient(build_app(again, tls=False), base_url="https://testserver") as after:
            assert dav(after, "PUT", "/kept.txt", alice, content=b"x").status_code == 423
            put = dav(after, "PUT", "/kept.txt", alice, content=b"v2", headers=with_token(token))
            assert put.status_code == 204
            unlock = dav(after, "UNLOCK", "/kept.txt", alice, headers={"Lock-Token": f"<{token}>"})
            assert unlock.status_code == 204
            assert dav(after, "PUT", "/kept.txt", alice, content=b"v3").status_code == 204
    finally:
        again.close()


def test_two_server_processes_on_one_data_dir(server: ServerProcess, tmp_path: Path) -> None:
    """The same as above with two real ``allset-server`` processes on one data dir and
    database (what ``serve --workers 2`` will run), over TLS on loopback."""
    email, password = server.make_account("lockco", "owner@lockco.example")
    second = ServerProcess(server.data_dir, env=server.env)
    second.log_path = tmp_path / "second-server.log"
    second.start()
    try:
        with server.client(auth=(email, password)) as a, second.client(auth=(email, password)) as b:
            assert a.put("/dav/shared.txt", content=b"v1").status_code == 201
            r = a.request(
                "LOCK",
                "/dav/shared.txt",
                content=lockinfo(),
                headers={"Depth": "0", "Timeout": "Second-600"},
            )
            token = token_of(r)
            assert b.put("/dav/shared.txt", content=b"no token").status_code == 423
            assert b.delete("/dav/shared.txt").status_code == 423
            ok = b.put("/dav/shared.txt", content=b"v2", headers=with_token(token))
            assert ok.status_code == 204, ok.text
            unlock = b.request("UNLOCK", "/dav/shared.txt", headers={"Lock-Token": f"<{token}>"})
            assert unlock.status_code == 204
            assert a.put("/dav/shared.txt", content=b"v3").status_code == 204
            assert b.get("/dav/shared.txt").content == b"v3"
    finally:
        second.stop()


def test_storage_interface_semantics(runtime: Runtime, alice: Account, bob: Account) -> None:
    """``DbLockStorage`` as WsgiDAV's LockManager calls it, including a root far longer
    than a PostgreSQL index entry may be (a deep path of accented names, percent-encoded)."""
    mine = DbLockStorage(runtime.db, alice.tenant_id)
    theirs = DbLockStorage(runtime.db, bob.tenant_id)
    deep = "/" + "/".join([quote("dossier été")] * 200)
    assert len(deep) > 4000

    def new(path: str, depth: str = "0", timeout: float = 600) -> str:
        made = mine.create(
            path,
            {
                "root": path,
                "type": "write",
                "scope": "exclusive",
                "depth": depth,
                "owner": b"<owner xmlns='DAV:'>t</owner>",
                "timeout": timeout,
                "principal": alice.email,
            },
        )
        assert made["root"] == path.rstrip("/") and made["expire"] > time.time()
        return str(made["token"])

    top = new("/a/")
    inner = new("/a/b/c", timeout=-1)
    long = new(deep + "/", depth="infinity")
    got = mine.get(inner)
    assert got is not None and got["timeout"] == LockStorageDict.LOCK_TIME_OUT_MAX  # infinite
    assert mine.get_lock_list("/a", include_root=True, include_children=False, token_only=True) == [
        top
    ]
    assert mine.get_lock_list("/a", include_root=False, include_children=True, token_only=True) == [
        inner
    ]
    assert sorted(
        mine.get_lock_list("/", include_root=True, include_children=True, token_only=True)
    ) == sorted([top, inner, long])
    assert (
        mine.get_lock_list("/ab", include_root=True, include_children=True, token_only=True) == []
    )
    assert [lk["token"] for lk in mine.around(deep + "/x/y", below=False)] == [long]
    assert theirs.get(top) is None and not theirs.delete(top)
    assert (
        theirs.get_lock_list("/", include_root=True, include_children=True, token_only=True) == []
    )
    assert mine.refresh(top, timeout=30)["timeout"] == 30
    assert mine.delete(top) and mine.get(top) is None and not mine.delete(top)
    mine.clear()
    assert mine.get(inner) is None and mine.get(long) is None


# ---- the Client's own view of its locks (REST /api/v1/locks) --------------------------
def rest_locks(c: TestClient, who: tuple[str, str]) -> list[dict[str, object]]:
    r = c.get("/api/v1/locks", auth=who)
    assert r.status_code == 200, r.text
    locks: list[dict[str, object]] = r.json()["locks"]
    return locks


def test_admins_see_and_break_a_lock_an_editor_left_behind(pair: Pair, alice: Account) -> None:
    """A member's editor crashed holding a lock: everyone else gets 423 until the owner
    breaks it through the API (from the other process, too); the member sees only their
    own locks and cannot break the owner's; tokens are never shown."""
    a, b, rt = pair.a, pair.b, pair.rt_a
    member_email, member_pw = "editor@alice.example", "a long enough password"
    member_id = rt.accounts.create_user(alice.tenant, member_email, "member", member_pw, "t")["id"]
    member = (member_email, member_pw)
    assert a.post("/api/v1/mkdir", json={"path": "/team"}, auth=alice.auth).status_code == 201
    access.set_grant(rt.files, alice.principal, member_id, "/team", "write")
    assert a.put("/dav/team/plan%20v2.docx", content=b"draft", auth=member).status_code == 201
    dav(a, "PUT", "/own.txt", alice, content=b"mine")
    r = a.request(
        "LOCK",
        "/dav/team/plan%20v2.docx",
        content=lockinfo(owner="<href>mailto:editor@alice.example</href>"),
        headers={"Depth": "0", "Timeout": "Second-3600"},
        auth=member,
    )
    theirs = token_of(r)
    mine = token_of(lock(a, "/own.txt", alice))

    listed = rest_locks(b, alice.auth)
    assert {(lk["path"], lk["user"], lk["scope"]) for lk in listed} == {
        ("/team/plan v2.docx", member_email, "exclusive"),
        ("/own.txt", alice.email, "exclusive"),
    }
    assert next(lk for lk in listed if lk["user"] == member_email)["owner"] == (
        "mailto:editor@alice.example"
    )
    text = b.get("/api/v1/locks", auth=alice.auth).text
    assert theirs not in text and mine not in text
    assert [lk["path"] for lk in rest_locks(a, member)] == ["/team/plan v2.docx"]
    owners_lock = next(lk["id"] for lk in listed if lk["path"] == "/own.txt")
    members_lock = next(lk["id"] for lk in listed if lk["path"] != "/own.txt")
    assert problem(a.delete(f"/api/v1/locks/{owners_lock}", auth=member))["status"] == 404

    put = a.put("/dav/team/plan%20v2.docx", content=b"owner's edit", auth=alice.auth)
    assert put.status_code == 423
    broken = b.delete(f"/api/v1/locks/{members_lock}", auth=alice.auth)
    assert broken.status_code == 200, broken.text
    assert broken.json()["path"] == "/team/plan v2.docx"
    put = a.put("/dav/team/plan%20v2.docx", content=b"owner's edit", auth=alice.auth)
    assert put.status_code == 204
    late = a.put("/dav/team/plan%20v2.docx", content=b"x", auth=member, headers=with_token(theirs))
    assert late.status_code == 412  # the holder's token is gone
    assert [lk["path"] for lk in rest_locks(a, alice.auth)] == ["/own.txt"]
    assert b.delete(f"/api/v1/locks/{members_lock}", auth=alice.auth).status_code == 404
    with rt.db.read_conn() as c:
        kinds = c.execute(
            select(Event.actor, Event.path).where(
                Event.tenant_id == alice.tenant_id, Event.kind == "lock.break"
            )
        ).all()
    assert [tuple(k) for k in kinds] == [(alice.email, "/team/plan v2.docx")]


def test_lock_listing_leaves_out_expired_locks_and_other_clients(
    pair: Pair, alice: Account, bob: Account
) -> None:
    a, rt = pair.a, pair.rt_a
    for name in ("old.txt", "live.txt"):
        dav(a, "PUT", f"/{name}", alice, content=b"x")
    lock(a, "/old.txt", alice)
    token_of(lock(a, "/live.txt", alice))
    with rt.db.write_conn() as c:
        c.execute(
            update(DavLock)
            .where(DavLock.tenant_id == alice.tenant_id, DavLock.root == "/old.txt")
            .values(expires_at=utcnow() - timedelta(seconds=5))
        )
    listed = rest_locks(a, alice.auth)
    assert [lk["path"] for lk in listed] == ["/live.txt"]
    assert rest_locks(a, bob.auth) == []
    assert a.delete(f"/api/v1/locks/{listed[0]['id']}", auth=bob.auth).status_code == 404
    assert [lk["path"] for lk in rest_locks(a, alice.auth)] == ["/live.txt"]
    assert problem(a.delete("/api/v1/locks/not-a-lock", auth=alice.auth))["status"] == 404
