"""WebDAV locks honoured by every other way of writing (files/locks.py ``check_write``),
on SQLite and PostgreSQL, through the whole app: a real WebDAV LOCK is taken, then each
REST write path is tried. Without the lock's token it is 423 problem+json naming the
lock, and nothing changed (content, versions, listing); the holder with its token
passes; another user of the same Client with the token does not; after UNLOCK, or
once the lock expired, anyone may write; another Client is untouched and sees nothing.
No silent overwrite of a document open in an editor (R-SHARE-1, R-STORE-2)."""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from allset.core.paths import parse_path
from allset.db.models import DavLock, utcnow
from allset.files import access
from allset.files.locks import FEW_LOCKS, NO_TOKENS, check_write
from allset.runtime import Runtime
from allset.server.dav.locks import DbLockStorage
from conftest import Account, problem

DOC = "/team/doc.txt"
DEEP = "/team/sub/deep.txt"
MEMBER = ("editor@alice.example", "a long enough password")
Auth = tuple[str, str]


def lockinfo(owner: str) -> bytes:
    return (
        '<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
        f"<locktype><write/></locktype><owner>{owner}</owner></lockinfo>"
    ).encode()


def dav_lock(c: TestClient, path: str, who: Auth, depth: str = "0", owner: str = "Alice") -> str:
    r = c.request(
        "LOCK",
        "/dav" + path,
        auth=who,
        content=lockinfo(owner),
        headers={"Depth": depth, "Timeout": "Second-600"},
    )
    assert r.status_code in (200, 201), r.text
    return r.headers["lock-token"].strip("<>")


def dav_unlock(c: TestClient, path: str, who: Auth, token: str) -> None:
    r = c.request("UNLOCK", "/dav" + path, auth=who, headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 204, r.text


def with_token(token: str) -> dict[str, str]:
    return {"If": f"(<{token}>)"}


@dataclass
class World:
    c: TestClient
    rt: Runtime
    owner: Auth  # alice, the owner: she takes the locks through WebDAV
    member: Auth  # a member with write access to /team
    old_version: str  # the first version of DOC
    trashed: str  # the trash id of /team/sub/trashed.txt


@pytest.fixture
def world(client: TestClient, runtime: Runtime, alice: Account) -> World:
    c, owner = client, alice.auth
    uid = runtime.accounts.create_user(alice.tenant, MEMBER[0], "member", MEMBER[1], "t")["id"]
    made = c.post("/api/v1/mkdir", json={"path": "/team/sub", "parents": True}, auth=owner)
    assert made.status_code == 201, made.text
    access.set_grant(runtime.files, alice.principal, uid, "/team", "write")
    files = ((DOC, b"v1"), (DOC, b"v2"), ("/team/free.txt", b"free"), (DEEP, b"deep"))
    for path, body in files:
        assert c.put(f"/api/v1/files{path}", content=body, auth=owner).status_code in (201, 200)
    assert c.put("/api/v1/files/team/sub/trashed.txt", content=b"t", auth=owner).is_success
    assert c.delete("/api/v1/files/team/sub/trashed.txt", auth=owner).status_code == 204
    versions = c.get(f"/api/v1/versions{DOC}", auth=owner).json()["versions"]
    trashed = c.get("/api/v1/trash", auth=owner).json()["items"][0]["id"]
    return World(c, runtime, owner, MEMBER, versions[-1]["version"], trashed)


def state(w: World) -> dict[str, Any]:
    """Everything a refused write must leave as it was."""
    snap = w.c.get("/api/v1/snapshot/", auth=w.owner).json()["entries"]
    return {
        "tree": sorted((e["path"], e.get("sha256"), e.get("version")) for e in snap),
        "doc": w.c.get(f"/api/v1/files{DOC}", auth=w.owner).content,
        "versions": w.c.get(f"/api/v1/versions{DOC}", auth=w.owner).json(),
        "trash": w.c.get("/api/v1/trash", auth=w.owner).json(),
    }


def chunk_commit(w: World, who: Auth, path: str, data: bytes, headers: dict[str, str]) -> Any:
    digest = hashlib.sha256(data).hexdigest()
    assert w.c.put(f"/api/v1/chunks/{digest}", content=data, auth=who).is_success
    body = {"path": path, "sha256": digest, "chunks": [digest], "size": len(data)}
    return w.c.post("/api/v1/commit", json=body, auth=who, headers=headers)


Op = Callable[[World, Auth, dict[str, str]], httpx.Response]

# Each write path, on the locked document (or into the locked folder, for "folder").
OPS: dict[str, tuple[str, Op]] = {
    "put": (
        "file",
        lambda w, a, h: w.c.put(f"/api/v1/files{DOC}", content=b"x", auth=a, headers=h),
    ),
    "put-streamed": (
        "file",
        lambda w, a, h: w.c.put(
            f"/api/v1/files{DOC}", content=b"s" * (300 * 1024), auth=a, headers=h
        ),
    ),
    "commit": ("file", lambda w, a, h: chunk_commit(w, a, DOC, b"via chunks", h)),
    "delete": ("file", lambda w, a, h: w.c.delete(f"/api/v1/files{DOC}", auth=a, headers=h)),
    "move-source": (
        "file",
        lambda w, a, h: w.c.post(
            "/api/v1/move", json={"from": DOC, "to": "/team/moved.txt"}, auth=a, headers=h
        ),
    ),
    "move-destination": (
        "file",
        lambda w, a, h: w.c.post(
            "/api/v1/move",
            json={"from": "/team/free.txt", "to": DOC, "overwrite": True},
            auth=a,
            headers=h,
        ),
    ),
    "copy-destination": (
        "file",
        lambda w, a, h: w.c.post(
            "/api/v1/copy",
            json={"from": "/team/free.txt", "to": DOC, "overwrite": True},
            auth=a,
            headers=h,
        ),
    ),
    "restore-version": (
        "file",
        lambda w, a, h: w.c.post(
            f"/api/v1/versions{DOC}", json={"version": w.old_version}, auth=a, headers=h
        ),
    ),
    "mkdir-inside": (
        "folder",
        lambda w, a, h: w.c.post(
            "/api/v1/mkdir", json={"path": "/team/sub/new"}, auth=a, headers=h
        ),
    ),
    "put-inside": (
        "folder",
        lambda w, a, h: w.c.put("/api/v1/files/team/sub/n.txt", content=b"n", auth=a, headers=h),
    ),
    "trash-restore-inside": (
        "folder",
        lambda w, a, h: w.c.post(f"/api/v1/trash/{w.trashed}/restore", auth=a, headers=h),
    ),
    "delete-locked-folder": (
        "folder",
        lambda w, a, h: w.c.delete("/api/v1/files/team/sub", auth=a, headers=h),
    ),
    "move-locked-folder": (
        "folder",
        lambda w, a, h: w.c.post(
            "/api/v1/move", json={"from": "/team/sub", "to": "/team/moved"}, auth=a, headers=h
        ),
    ),
    "delete-folder": (
        "below",
        lambda w, a, h: w.c.delete("/api/v1/files/team/sub", auth=a, headers=h),
    ),
    "move-folder": (
        "below",
        lambda w, a, h: w.c.post(
            "/api/v1/move", json={"from": "/team/sub", "to": "/team/moved"}, auth=a, headers=h
        ),
    ),
}


def take(w: World, kind: str) -> tuple[str, str]:
    """Lock what ``kind`` needs; returns (locked path, token)."""
    if kind == "folder":
        return "/team/sub", dav_lock(w.c, "/team/sub/", w.owner, depth="infinity")
    if kind == "below":
        return DEEP, dav_lock(w.c, DEEP, w.owner)  # a lock inside the folder written
    return DOC, dav_lock(w.c, DOC, w.owner)


def assert_locked(r: httpx.Response, locked: str, *, user: str | None) -> dict[str, Any]:
    assert r.status_code == 423, r.text
    body = problem(r)
    assert body["type"].endswith("/resource-locked")
    assert body["lock_path"] == locked
    assert body["lock_owner"] == "Alice"
    assert body.get("lock_user") == user
    assert len(body["lock_id"]) == 32 and body["lock_expires_at"]
    assert "Alice" in body["detail"] and "break the lock" in body["detail"]
    return body


@pytest.mark.parametrize("name", list(OPS))
def test_a_rest_write_under_a_lock_is_423_and_changes_nothing(
    world: World, alice: Account, name: str
) -> None:
    kind, op = OPS[name]
    w = world
    locked, token = take(w, kind)
    before = state(w)

    # The holder's own other program (no token), then another user with the token.
    mine = assert_locked(op(w, w.owner, {}), locked, user=alice.email)
    theirs = assert_locked(op(w, w.member, with_token(token)), locked, user=None)
    assert mine["lock_id"] == theirs["lock_id"]
    listed = w.c.get("/api/v1/locks", auth=w.owner).json()["locks"]
    assert [lk["id"] for lk in listed] == [mine["lock_id"]]  # the id to break it by
    assert state(w) == before

    # The holder with its token may write.
    ok = op(w, w.owner, with_token(token))
    assert ok.is_success, ok.text


@pytest.mark.parametrize("name", ["put", "delete", "move-source", "mkdir-inside"])
def test_after_unlock_anyone_may_write(world: World, name: str) -> None:
    kind, op = OPS[name]
    w = world
    locked, token = take(w, kind)
    assert op(w, w.member, {}).status_code == 423
    dav_unlock(w.c, locked + ("/" if kind == "folder" else ""), w.owner, token)
    ok = op(w, w.member, {})
    assert ok.is_success, ok.text


def test_an_expired_lock_never_blocks(world: World, alice: Account) -> None:
    w = world
    take(w, "file")
    assert OPS["put"][1](w, w.member, {}).status_code == 423
    with w.rt.db.write_conn() as conn:
        conn.execute(
            update(DavLock)
            .where(DavLock.tenant_id == alice.tenant_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert OPS["put"][1](w, w.member, {}).status_code == 201
    assert OPS["delete"][1](w, w.member, {}).status_code == 204


def test_a_broken_lock_no_longer_blocks(world: World) -> None:
    """The 423 names the lock's id; an owner breaks it with it, and the write goes."""
    w = world
    take(w, "file")
    refused = w.c.put(f"/api/v1/files{DOC}", content=b"m", auth=w.member)
    lock_id = problem(refused)["lock_id"]
    assert w.c.delete(f"/api/v1/locks/{lock_id}", auth=w.owner).status_code == 200
    assert w.c.put(f"/api/v1/files{DOC}", content=b"m", auth=w.member).status_code == 201


def test_the_holders_delete_with_its_token_releases_the_lock(world: World) -> None:
    """As a WebDAV DELETE does (RFC 4918 §9.6.1): the lock does not outlive the file."""
    w = world
    token = dav_lock(w.c, DOC, w.owner)
    assert w.c.delete(f"/api/v1/files{DOC}", auth=w.owner, headers=with_token(token)).is_success
    assert w.c.get("/api/v1/locks", auth=w.owner).json()["locks"] == []
    assert w.c.put(f"/api/v1/files{DOC}", content=b"new", auth=w.member).status_code == 201


def test_a_locked_item_of_a_batch_commit_is_423_the_others_commit(world: World) -> None:
    w = world
    dav_lock(w.c, DOC, w.owner)
    items = []
    for path, data in ((DOC, b"blocked"), ("/team/other.txt", b"goes")):
        digest = hashlib.sha256(data).hexdigest()
        assert w.c.put(f"/api/v1/chunks/{digest}", content=data, auth=w.member).is_success
        items.append({"path": path, "sha256": digest, "chunks": [digest], "size": len(data)})
    r = w.c.post("/api/v1/commit/batch", json={"files": items}, auth=w.member)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == 423 and first["lock_path"] == DOC and first["lock_id"]
    assert second["status"] == 201
    assert w.c.get(f"/api/v1/files{DOC}", auth=w.owner).content == b"v2"


def test_a_lock_on_a_sibling_or_a_depth_0_parent_does_not_block(world: World) -> None:
    w = world
    dav_lock(w.c, "/team/free.txt", w.owner)
    dav_lock(w.c, "/team/sub/", w.owner, depth="0")
    assert w.c.put(f"/api/v1/files{DOC}", content=b"ok", auth=w.member).status_code == 201
    r = w.c.put("/api/v1/files/team/sub/deeper.txt", content=b"ok", auth=w.member)
    assert r.status_code == 201  # a depth-0 lock on a folder locks the folder, not its files


def test_another_client_is_unaffected_and_sees_nothing(world: World, bob: Account) -> None:
    w = world
    token = dav_lock(w.c, DOC, w.owner)
    bob_auth = bob.auth
    assert w.c.post("/api/v1/mkdir", json={"path": "/team"}, auth=bob_auth).status_code == 201
    # Bob's file of the same path is his own: no lock, and Alice's token means nothing.
    assert w.c.put(f"/api/v1/files{DOC}", content=b"b", auth=bob_auth).status_code == 201
    r = w.c.put(f"/api/v1/files{DOC}", content=b"b2", auth=bob_auth, headers=with_token(token))
    assert r.status_code == 201, r.text
    assert w.c.delete(f"/api/v1/files{DOC}", auth=bob_auth).status_code == 204
    assert w.c.get("/api/v1/locks", auth=bob_auth).json()["locks"] == []
    # Alice's lock stands, untouched by anything Bob did.
    assert w.c.put(f"/api/v1/files{DOC}", content=b"a", auth=w.member).status_code == 423


def test_openapi_declares_423_on_writes(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path, method in (
        ("/files/{path}", "put"),
        ("/files/{path}", "delete"),
        ("/move", "post"),
        ("/copy", "post"),
        ("/mkdir", "post"),
        ("/commit", "post"),
        ("/versions/{path}", "post"),
        ("/trash/{item_id}/restore", "post"),
    ):
        assert "423" in paths[path][method]["responses"], (path, method)


def test_a_name_locked_in_nfd_is_found_from_its_nfc_name(world: World) -> None:
    """macOS spells URLs in NFD; WsgiDAV keeps the lock's root as spelled, the API has
    the NFC name (core/paths.py): the lock must still hold."""
    w = world
    nfc = "/team/été.txt"
    nfd = unicodedata.normalize("NFD", nfc)
    assert w.c.put(f"/api/v1/files{quote(nfc)}", content=b"v1", auth=w.owner).status_code == 201
    token = dav_lock(w.c, quote(nfd), w.owner)
    r = w.c.put(f"/api/v1/files{quote(nfc)}", content=b"x", auth=w.member)
    body = assert_locked(r, nfc, user=None)
    assert body["path"] == nfc
    ok = w.c.put(
        f"/api/v1/files{quote(nfc)}", content=b"v2", auth=w.owner, headers=with_token(token)
    )
    assert ok.status_code == 201, ok.text


def test_webdav_clients_spelling_a_name_differently_share_its_lock(world: World) -> None:
    """A Mac (NFD) locks a document; a Windows client (NFC) writing it through WebDAV is
    refused like anyone, and the holder unlocks under either spelling (the provider's
    ``get_ref_url``: locks are keyed by the stored, NFC path)."""
    w = world
    nfc = "/team/Données été.xlsx"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    assert w.c.put(f"/api/v1/files{quote(nfc)}", content=b"v1", auth=w.owner).status_code == 201
    token = dav_lock(w.c, quote(nfd), w.owner)
    for spelling in (nfc, nfd):
        assert w.c.put("/dav" + quote(spelling), content=b"x", auth=w.member).status_code == 423
        assert w.c.delete("/dav" + quote(spelling), auth=w.member).status_code == 423
        other = w.c.request(
            "LOCK", "/dav" + quote(spelling), auth=w.member, content=lockinfo("Bob")
        )
        assert other.status_code == 423, other.text
    assert w.c.get(f"/api/v1/files{quote(nfc)}", auth=w.owner).content == b"v1"
    mine = w.c.put("/dav" + quote(nfd), content=b"v2", auth=w.owner, headers=with_token(token))
    assert mine.status_code in (200, 204), mine.text
    dav_unlock(w.c, quote(nfc), w.owner, token)  # taken as NFD, released as NFC
    assert w.c.put("/dav" + quote(nfc), content=b"v3", auth=w.member).status_code in (200, 204)
    assert w.c.get(f"/api/v1/files{quote(nfc)}", auth=w.owner).content == b"v3"


def test_no_lock_is_granted_between_the_check_and_the_commit(
    runtime: Runtime, alice: Account
) -> None:
    """``check_write`` runs in the write's own transaction and keeps a LOCK from being
    granted until that transaction ends (SQLite: the write transaction holds the
    database; PostgreSQL: the Client's row FOR KEY SHARE against the grant's FOR
    UPDATE), so a document cannot become locked between the check and the commit."""
    storage = DbLockStorage(runtime.db, alice.tenant_id)
    other = DbLockStorage(runtime.db, alice.tenant_id)
    storage.create("/held.txt", _lockdef(alice.email))  # the Client has a live lock
    granted = threading.Event()

    def grant() -> None:
        other.create("/doc.txt", _lockdef(alice.email))
        granted.set()

    with runtime.db.write_conn() as conn:
        assert check_write(conn, alice.principal, NO_TOKENS, parse_path("/doc.txt")) == []
        racer = threading.Thread(target=grant)
        racer.start()
        assert not granted.wait(1.0)  # waits for this write to commit
    racer.join(timeout=30)
    assert granted.is_set()


def _lockdef(principal: str) -> dict[str, Any]:
    return {
        "type": "write",
        "scope": "exclusive",
        "depth": "0",
        "owner": b"<owner xmlns='DAV:'>t</owner>",
        "timeout": 600,
        "principal": principal,
    }


def test_a_client_with_many_locks_is_checked_by_path(world: World, alice: Account) -> None:
    """Up to ``FEW_LOCKS`` live locks a write reads them all; beyond, it asks by path:
    both must find the lock that matters (here the last of many)."""
    storage = DbLockStorage(world.rt.db, alice.tenant_id)
    for i in range(FEW_LOCKS + 1):
        storage.create(f"/team/many/f{i}.txt", _lockdef(alice.email))
    r = world.c.put("/api/v1/files/team/many/f200.txt", content=b"x", auth=world.member)
    assert r.status_code == 409  # no folder "many": 404/409 come before any lock
    world.c.post("/api/v1/mkdir", json={"path": "/team/many"}, auth=world.owner)
    r = world.c.put("/api/v1/files/team/many/f200.txt", content=b"x", auth=world.member)
    assert_locked_anyone(r, "/team/many/f200.txt")
    free = world.c.put("/api/v1/files/team/many/free.txt", content=b"x", auth=world.member)
    assert free.status_code == 201, free.text
    gone = world.c.delete("/api/v1/files/team/many", auth=world.member)
    assert_locked_anyone(gone, "/team/many/f")  # one of the locks below it


def assert_locked_anyone(r: httpx.Response, locked: str) -> None:
    assert r.status_code == 423, r.text
    assert problem(r)["lock_path"].startswith(locked)
