"""R-SHARE-1 inside a Client: invitations by email (a real SMTP server), folder grants,
and what a member sees and may change on every protocol (REST, chunk protocol, change
feed and snapshot, WebDAV, tus); removal revokes everything at once."""

from __future__ import annotations

import email
import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import update
from starlette.testclient import TestClient

from allset.db.models import Invitation, utcnow
from allset.runtime import Runtime
from conftest import Account, make_account, problem

API = "/api/v1"
PASSWORD = "member password 42"


class Inbox:
    """An aiosmtpd handler keeping every message received."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(runtime: Runtime) -> Iterator[Inbox]:
    """A real SMTP server on loopback, and the runtime's settings pointing at it."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    runtime.settings.smtp_host = "127.0.0.1"
    runtime.settings.smtp_port = port
    runtime.settings.smtp_starttls = False
    runtime.settings.mail_from = "allset <noreply@allset.test>"
    runtime.settings.public_url = "https://files.example.fr"
    yield inbox
    controller.stop()


def url(area: str, path: str) -> str:
    return f"{API}/{area}" + quote(path)


def token_from(message: email.message.Message) -> str:
    body = message.get_payload(decode=True)
    assert isinstance(body, bytes)
    text = body.decode()
    link = next(w for w in text.split() if "/invite#token=" in w)
    assert link.startswith("https://files.example.fr/invite#token=")
    return link.split("#token=", 1)[1]


@dataclass
class Member:
    id: str
    email: str
    password: str
    app_password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.email, self.app_password)


def invite_member(client: TestClient, owner: Account, email_: str, role: str = "member") -> Member:
    """Invite without SMTP (the link comes back to the owner), accept, make an app password."""
    r = client.post(f"{API}/users", json={"email": email_, "role": role}, auth=owner.auth)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email_sent"] is False and body["status"] == "invited"
    token = body["link"].split("#token=", 1)[1]
    a = client.post(f"{API}/invitations/accept", json={"token": token, "password": PASSWORD})
    assert a.status_code == 200, a.text
    ap = client.post(f"{API}/auth/app-passwords", json={"name": "t"}, auth=(email_, PASSWORD))
    assert ap.status_code == 201, ap.text
    return Member(body["id"], email_, PASSWORD, ap.json()["password"])


def grant(client: TestClient, owner: Account, m: Member, path: str, access: str) -> str:
    r = client.put(
        f"{API}/users/{m.id}/grants", json={"path": path, "access": access}, auth=owner.auth
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


@dataclass
class World:
    owner: Account
    member: Member
    files: dict[str, bytes]


@pytest.fixture
def world(client: TestClient, alice: Account) -> World:
    """/Shared (read), /Team (write), /Deep/Inner (read: /Deep is navigation only),
    /Secret and /Deep/Hidden (nothing)."""
    files = {
        "/Shared/s.txt": b"shared content",
        "/Team/t.txt": b"team content",
        "/Secret/x.txt": b"secret content nobody else may see",
        "/Deep/Inner/i.txt": b"inner content",
        "/Deep/Hidden/h.txt": b"hidden sibling",
        "/top.txt": b"top-level file",
    }
    for path, data in files.items():
        r = client.put(url("files", path) + "?parents=true", content=data, auth=alice.auth)
        if r.status_code == 409:  # no ?parents on PUT: make the folders first
            parent = path.rsplit("/", 1)[0]
            client.post(f"{API}/mkdir", json={"path": parent, "parents": True}, auth=alice.auth)
            r = client.put(url("files", path), content=data, auth=alice.auth)
        assert r.status_code == 201, r.text
    # a second version of the secret file, so old versions are covered too
    client.put(url("files", "/Secret/x.txt"), content=b"secret v2", auth=alice.auth)
    m = invite_member(client, alice, "member@alice.example")
    grant(client, alice, m, "/Shared", "read")
    grant(client, alice, m, "/Team", "write")
    grant(client, alice, m, "/Deep/Inner", "read")
    return World(alice, m, files)


# ---- invitations --------------------------------------------------------------------
def test_invitation_email_accept_and_sign_in(
    client: TestClient, runtime: Runtime, alice: Account, smtp: Inbox
) -> None:
    r = client.post(f"{API}/users", json={"email": "new@alice.example"}, auth=alice.auth)
    assert r.status_code == 201, r.text
    assert r.json()["email_sent"] is True and "link" not in r.json()
    assert len(smtp.messages) == 1
    msg = smtp.messages[0]
    assert msg["To"] == "new@alice.example" and "alice" in msg["Subject"]
    token = token_from(msg)
    assert len(token) >= 3 + 43  # prefix + 256 bits in base64url
    # The invited user cannot sign in yet.
    login = {"email": "new@alice.example", "password": PASSWORD}
    assert client.post(f"{API}/auth/login", json=login).status_code == 401
    a = client.post(f"{API}/invitations/accept", json={"token": token, "password": PASSWORD})
    assert a.status_code == 200, a.text
    assert a.json()["role"] == "member"
    assert (
        client.get(f"{API}/me", headers={"Authorization": f"Bearer {a.json()['token']}"}).json()[
            "access"
        ]
        == []
    )
    assert client.post(f"{API}/auth/login", json=login).status_code == 200
    # One-time: the same link again is refused.
    again = client.post(f"{API}/invitations/accept", json={"token": token, "password": "x" * 12})
    assert again.status_code == 410 and problem(again)["detail"]
    assert client.post(f"{API}/auth/login", json=login).status_code == 200  # unchanged
    # Only the hash is stored.
    with runtime.db.read() as s:
        stored = [i.token_hash for i in s.query(Invitation)]
    assert token not in stored and hashlib.sha256(token.encode()).hexdigest() in stored
    users = client.get(f"{API}/users", auth=alice.auth).json()["users"]
    assert {u["email"]: u["status"] for u in users}["new@alice.example"] == "active"


def test_invitation_expires_and_bad_tokens(
    client: TestClient, runtime: Runtime, alice: Account, smtp: Inbox
) -> None:
    r = client.post(f"{API}/users", json={"email": "late@alice.example"}, auth=alice.auth)
    assert r.status_code == 201
    token = token_from(smtp.messages[-1])
    with runtime.db.write() as s:
        s.execute(update(Invitation).values(expires_at=utcnow() - timedelta(seconds=1)))
    a = client.post(f"{API}/invitations/accept", json={"token": token, "password": PASSWORD})
    assert a.status_code == 410 and "expired" in problem(a)["detail"]
    users = {u["email"]: u for u in client.get(f"{API}/users", auth=alice.auth).json()["users"]}
    assert users["late@alice.example"]["status"] == "invitation-expired"
    # A new invitation replaces the old link.
    uid = users["late@alice.example"]["id"]
    assert client.post(f"{API}/users/{uid}/invitation", auth=alice.auth).status_code == 201
    fresh = token_from(smtp.messages[-1])
    assert fresh != token
    assert (
        client.post(
            f"{API}/invitations/accept", json={"token": "iv-" + "A" * 43, "password": PASSWORD}
        ).status_code
        == 404
    )
    short = client.post(f"{API}/invitations/accept", json={"token": fresh, "password": "short"})
    assert short.status_code == 400 and problem(short)
    ok = client.post(f"{API}/invitations/accept", json={"token": fresh, "password": PASSWORD})
    assert ok.status_code == 200


def test_smtp_down_is_a_clear_502_and_the_invitation_is_kept(
    client: TestClient, runtime: Runtime, alice: Account, smtp: Inbox
) -> None:
    port = runtime.settings.smtp_port
    runtime.settings.smtp_port = free_port()  # nothing listens there
    r = client.post(f"{API}/users", json={"email": "wait@alice.example"}, auth=alice.auth)
    assert r.status_code == 502
    body = problem(r)
    assert "127.0.0.1" in body["detail"] and body["user_id"]
    runtime.settings.smtp_port = port
    users = {u["email"]: u for u in client.get(f"{API}/users", auth=alice.auth).json()["users"]}
    assert users["wait@alice.example"]["status"] == "invited"
    assert (
        client.post(f"{API}/users/{body['user_id']}/invitation", auth=alice.auth).status_code == 201
    )
    assert smtp.messages and smtp.messages[-1]["To"] == "wait@alice.example"


def test_roles_and_other_clients(
    client: TestClient, runtime: Runtime, world: World, bob: Account
) -> None:
    alice, m = world.owner, world.member
    # Members do not manage users.
    r = client.get(f"{API}/users", auth=m.auth)
    assert r.status_code == 403 and problem(r)
    assert (
        client.put(
            f"{API}/users/{m.id}/grants", json={"path": "/Secret", "access": "read"}, auth=m.auth
        ).status_code
        == 403
    )
    # An admin manages members but not owners.
    admin = invite_member(client, alice, "admin@alice.example", role="admin")
    r = client.post(
        f"{API}/users", json={"email": "o2@alice.example", "role": "owner"}, auth=admin.auth
    )
    assert r.status_code == 403
    assert client.delete(f"{API}/users/{alice.principal.id}", auth=admin.auth).status_code == 403
    assert (
        client.patch(f"{API}/users/{m.id}", json={"role": "owner"}, auth=admin.auth).status_code
        == 403
    )
    # Nobody removes or demotes themselves.
    assert client.delete(f"{API}/users/{alice.principal.id}", auth=alice.auth).status_code == 409
    # Admins see everything without grants.
    assert client.get(url("files", "/Secret/x.txt"), auth=admin.auth).content == b"secret v2"
    # Another Client's users and grants do not exist for Bob.
    for method, path, body in [
        ("GET", f"/users/{m.id}", None),
        ("PATCH", f"/users/{m.id}", {"role": "admin"}),
        ("DELETE", f"/users/{m.id}", None),
        ("GET", f"/users/{m.id}/grants", None),
        ("PUT", f"/users/{m.id}/grants", {"path": "/", "access": "write"}),
        ("POST", f"/users/{m.id}/invitation", None),
    ]:
        r = client.request(method, API + path, json=body, auth=bob.auth)
        assert r.status_code == 404, (method, path, r.text)
        assert "member@alice" not in r.text
    grants = client.get(f"{API}/users/{m.id}/grants", auth=alice.auth).json()["grants"]
    gid = grants[0]["id"]
    bob_user = client.get(f"{API}/users", auth=bob.auth).json()["users"][0]["id"]
    assert client.delete(f"{API}/users/{bob_user}/grants/{gid}", auth=bob.auth).status_code == 404
    assert {u["email"] for u in client.get(f"{API}/users", auth=bob.auth).json()["users"]} == {
        bob.email
    }
    # A role change applies on the next request.
    assert (
        client.patch(f"{API}/users/{m.id}", json={"role": "admin"}, auth=alice.auth).json()["role"]
        == "admin"
    )
    assert client.get(url("files", "/Secret/x.txt"), auth=m.auth).status_code == 200


# ---- what a member sees ---------------------------------------------------------------
def names(client: TestClient, who: tuple[str, str], path: str) -> set[str]:
    r = client.get(url("tree", path), auth=who)
    assert r.status_code == 200, (path, r.text)
    return {e["name"] for e in r.json()["entries"]}


def test_member_sees_only_granted_folders(client: TestClient, world: World) -> None:
    m, owner = world.member, world.owner
    assert names(client, m.auth, "/") == {"Shared", "Team", "Deep"}
    assert names(client, m.auth, "/Deep") == {"Inner"}
    assert names(client, m.auth, "/Deep/Inner") == {"i.txt"}
    assert names(client, owner.auth, "/") == {"Shared", "Team", "Deep", "Secret", "top.txt"}
    me = client.get(f"{API}/me", auth=m.auth).json()
    assert {(g["path"], g["access"]) for g in me["access"]} == {
        ("/Shared", "read"),
        ("/Team", "write"),
        ("/Deep/Inner", "read"),
    }
    for path in ["/Secret", "/Secret/x.txt", "/top.txt", "/Deep/Hidden", "/Deep/Hidden/h.txt"]:
        for area in ("tree", "files", "versions"):
            r = client.get(url(area, path), auth=m.auth)
            assert r.status_code == 404, (area, path, r.status_code)
            assert (
                problem(r)["type"] == problem(client.get(url(area, "/nope"), auth=m.auth))["type"]
            )
    assert client.get(url("files", "/Shared/s.txt"), auth=m.auth).content == b"shared content"
    assert client.get(url("files", "/Deep/Inner/i.txt"), auth=m.auth).status_code == 200
    assert len(client.get(url("versions", "/Shared/s.txt"), auth=m.auth).json()["versions"]) == 1
    # A folder above a grant is navigation, not content: no copy of it.
    r = client.post(f"{API}/copy", json={"from": "/Deep", "to": "/Team/deep"}, auth=m.auth)
    assert r.status_code == 403 and problem(r)

    # Snapshot and change feed (what `allset sync` reads).
    snap = client.get(f"{API}/snapshot/", auth=m.auth).json()
    assert {e["path"] for e in snap["entries"]} == {
        "Deep",
        "Deep/Inner",
        "Deep/Inner/i.txt",
        "Shared",
        "Shared/s.txt",
        "Team",
        "Team/t.txt",
    }
    assert client.get(f"{API}/snapshot/Secret", auth=m.auth).status_code == 404
    feed = client.get(f"{API}/changes?since=0&limit=5000", auth=m.auth).json()
    paths = {c["path"] for c in feed["changes"]}
    assert paths and not any(p.startswith(("/Secret", "/top", "/Deep/Hidden")) for p in paths)
    assert "/Shared/s.txt" in paths
    owner_feed = client.get(f"{API}/changes?since=0&limit=5000", auth=owner.auth).json()
    assert feed["cursor"] == owner_feed["cursor"]
    assert not any(c["kind"] == "access" for c in owner_feed["changes"])
    assert any(c["kind"] == "access" and c["path"] == "/Team" for c in feed["changes"])
    # A move out of the member's sight is a deletion to them; one into it has no source.
    client.post(f"{API}/move", json={"from": "/Team/t.txt", "to": "/Secret/t.txt"}, auth=owner.auth)
    client.post(f"{API}/move", json={"from": "/top.txt", "to": "/Team/top.txt"}, auth=owner.auth)
    later = client.get(f"{API}/changes?since={feed['cursor']}", auth=m.auth).json()["changes"]
    assert [(c["kind"], c["path"], c["source"]) for c in later] == [
        ("trash", "/Team/t.txt", None),
        ("move", "/Team/top.txt", None),
    ]

    # Chunks: only those of files the member may read.
    secret = client.get(url("manifest", "/Secret/x.txt"), auth=owner.auth).json()["chunks"][0]
    shared = client.get(url("manifest", "/Shared/s.txt"), auth=m.auth).json()["chunks"][0]
    assert client.get(url("manifest", "/Secret/x.txt"), auth=m.auth).status_code == 404
    assert client.get(f"{API}/chunks/{secret['hash']}", auth=m.auth).status_code == 404
    assert client.get(f"{API}/chunks/{shared['hash']}", auth=m.auth).content == b"shared content"
    r = client.post(
        f"{API}/chunks/fetch", json={"chunks": [shared["hash"], secret["hash"]]}, auth=m.auth
    )
    assert r.status_code == 404
    r = client.post(f"{API}/chunks/fetch", json={"chunks": [shared["hash"]]}, auth=m.auth)
    assert r.status_code == 200 and r.content.endswith(b"shared content")
    # Trash: the member's view holds only what they could see.
    client.delete(url("files", "/Deep/Hidden/h.txt"), auth=owner.auth)
    client.put(url("files", "/Team/gone.txt"), content=b"gone", auth=m.auth)
    client.delete(url("files", "/Team/gone.txt"), auth=m.auth)
    trash = {t["original_path"] for t in client.get(f"{API}/trash", auth=m.auth).json()["items"]}
    assert trash == {"/Team/gone.txt"}


def test_read_only_and_write_grants(client: TestClient, world: World) -> None:
    m, owner = world.member, world.owner

    def refused(r: Any, status: int) -> None:
        assert r.status_code == status, r.text
        body = problem(r)
        if status == 403:
            assert body["type"].endswith("read-only")

    # read-only: every write is 403 read-only
    refused(client.put(url("files", "/Shared/s.txt"), content=b"x", auth=m.auth), 403)
    refused(client.put(url("files", "/Shared/new.txt"), content=b"x", auth=m.auth), 403)
    refused(client.post(f"{API}/mkdir", json={"path": "/Shared/d"}, auth=m.auth), 403)
    refused(client.delete(url("files", "/Shared/s.txt"), auth=m.auth), 403)
    refused(
        client.post(
            f"{API}/move", json={"from": "/Shared/s.txt", "to": "/Team/s.txt"}, auth=m.auth
        ),
        403,
    )
    v = client.get(url("versions", "/Shared/s.txt"), auth=m.auth).json()["versions"][0]["version"]
    refused(client.post(url("versions", "/Shared/s.txt"), json={"version": v}, auth=m.auth), 403)
    sha = hashlib.sha256(b"shared content").hexdigest()
    chunk = client.get(url("manifest", "/Shared/s.txt"), auth=m.auth).json()["chunks"][0]["hash"]
    commit = {"path": "/Shared/c.txt", "sha256": sha, "chunks": [chunk]}
    refused(client.post(f"{API}/commit", json=commit, auth=m.auth), 403)
    # invisible: 404, like a path that does not exist
    refused(client.put(url("files", "/Secret/x.txt"), content=b"x", auth=m.auth), 404)
    refused(client.put(url("files", "/new-at-root.txt"), content=b"x", auth=m.auth), 404)
    refused(client.post(f"{API}/mkdir", json={"path": "/Secret/d"}, auth=m.auth), 404)
    refused(client.delete(url("files", "/Secret/x.txt"), auth=m.auth), 404)
    refused(
        client.post(
            f"{API}/copy", json={"from": "/Secret/x.txt", "to": "/Team/x.txt"}, auth=m.auth
        ),
        404,
    )
    refused(
        client.post(
            f"{API}/copy", json={"from": "/Team/t.txt", "to": "/Secret/t.txt"}, auth=m.auth
        ),
        404,
    )
    refused(
        client.post(f"{API}/commit", json={**commit, "path": "/Secret/c.txt"}, auth=m.auth), 404
    )
    # the shared folder itself is not the member's to rename or delete
    refused(client.delete(url("files", "/Team"), auth=m.auth), 403)
    refused(client.post(f"{API}/move", json={"from": "/Team", "to": "/Team2"}, auth=m.auth), 403)
    # write grant: anything inside
    assert client.put(url("files", "/Team/new.txt"), content=b"new", auth=m.auth).status_code == 201
    assert (
        client.post(
            f"{API}/mkdir", json={"path": "/Team/a/b", "parents": True}, auth=m.auth
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"{API}/move", json={"from": "/Team/new.txt", "to": "/Team/a/new.txt"}, auth=m.auth
        ).status_code
        == 200
    )
    assert (
        client.post(
            f"{API}/copy", json={"from": "/Shared/s.txt", "to": "/Team/s.txt"}, auth=m.auth
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"{API}/commit", json={**commit, "path": "/Team/c.txt"}, auth=m.auth
        ).status_code
        == 201
    )
    assert client.delete(url("files", "/Team/s.txt"), auth=m.auth).status_code == 204
    # the owner sees the member's work; quota stays the Client's
    assert client.get(url("files", "/Team/a/new.txt"), auth=owner.auth).content == b"new"
    # a withdrawn grant is gone on the next request
    gid = next(
        g["id"]
        for g in client.get(f"{API}/users/{m.id}/grants", auth=owner.auth).json()["grants"]
        if g["path"] == "/Team"
    )
    assert client.delete(f"{API}/users/{m.id}/grants/{gid}", auth=owner.auth).status_code == 204
    assert client.get(url("files", "/Team/a/new.txt"), auth=m.auth).status_code == 404
    refused(client.put(url("files", "/Team/again.txt"), content=b"x", auth=m.auth), 404)
    # chunk uploads need some folder to write to
    data = b"chunk of a read-only member"
    digest = hashlib.sha256(data).hexdigest()
    refused(client.put(f"{API}/chunks/{digest}", content=data, auth=m.auth), 403)


PROPFIND = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'


def test_webdav_and_tus_as_a_member(client: TestClient, world: World) -> None:
    m = world.member

    def dav(method: str, path: str, **kw: Any) -> Any:
        return client.request(method, "/dav" + quote(path), auth=m.auth, **kw)

    r = dav("PROPFIND", "/", headers={"Depth": "1"}, content=PROPFIND)
    assert r.status_code == 207
    assert "Shared" in r.text and "Team" in r.text and "Deep" in r.text
    assert "Secret" not in r.text and "top.txt" not in r.text
    r = dav("PROPFIND", "/Deep/", headers={"Depth": "1"}, content=PROPFIND)
    assert "Inner" in r.text and "Hidden" not in r.text
    assert dav("PROPFIND", "/Secret/", headers={"Depth": "1"}, content=PROPFIND).status_code == 404
    assert dav("GET", "/Shared/s.txt").content == b"shared content"
    assert dav("GET", "/Secret/x.txt").status_code == 404
    assert dav("PUT", "/Shared/w.txt", content=b"x").status_code == 403
    assert dav("DELETE", "/Shared/s.txt").status_code == 403
    assert dav("PUT", "/Secret/w.txt", content=b"x").status_code in (404, 409)
    assert dav("PUT", "/Team/w.txt", content=b"webdav").status_code == 201
    assert dav("MKCOL", "/Shared/newdir").status_code == 403
    assert dav("MKCOL", "/Team/newdir").status_code == 201
    assert (
        dav("MOVE", "/Team/w.txt", headers={"Destination": "/dav/Shared/w.txt"}).status_code == 403
    )
    assert client.get(url("files", "/Secret/w.txt"), auth=world.owner.auth).status_code == 404

    import base64

    def meta(**kv: str) -> str:
        return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())

    tus = {"Tus-Resumable": "1.0.0", "Upload-Length": "5"}
    r = client.post(
        "/tus/",
        headers={**tus, "Upload-Metadata": meta(filename="t.bin", path="/Secret")},
        auth=m.auth,
    )
    assert r.status_code == 404, r.text
    r = client.post(
        "/tus/",
        headers={**tus, "Upload-Metadata": meta(filename="t.bin", path="/Shared")},
        auth=m.auth,
    )
    assert r.status_code == 403, r.text
    r = client.post(
        "/tus/",
        headers={**tus, "Upload-Metadata": meta(filename="t.bin", path="/Team")},
        auth=m.auth,
    )
    assert r.status_code == 201, r.text


def test_removing_a_user_revokes_everything_at_once(client: TestClient, world: World) -> None:
    m, owner = world.member, world.owner
    session = client.post(f"{API}/auth/login", json={"email": m.email, "password": m.password})
    bearer = {"Authorization": f"Bearer {session.json()['token']}"}
    assert (
        client.put(
            url("files", "/Team/mine.txt"), content=b"member's file", auth=m.auth
        ).status_code
        == 201
    )
    for auth in (m.auth, (m.email, m.password)):
        assert client.get(f"{API}/me", auth=auth).status_code == 200
    assert client.get(f"{API}/me", headers=bearer).status_code == 200

    assert client.delete(f"{API}/users/{m.id}", auth=owner.auth).status_code == 204
    assert client.get(f"{API}/me", auth=m.auth).status_code == 401
    assert client.get(f"{API}/me", auth=(m.email, m.password)).status_code == 401
    assert client.get(f"{API}/me", headers=bearer).status_code == 401
    assert (
        client.request("PROPFIND", "/dav/", auth=m.auth, headers={"Depth": "0"}).status_code == 401
    )
    login = client.post(f"{API}/auth/login", json={"email": m.email, "password": m.password})
    assert login.status_code == 401
    # Their files stay with the Client; their access is gone; they are listed as removed.
    assert client.get(url("files", "/Team/mine.txt"), auth=owner.auth).content == b"member's file"
    assert client.get(f"{API}/users/{m.id}/grants", auth=owner.auth).json()["grants"] == []
    assert client.get(f"{API}/users/{m.id}", auth=owner.auth).json()["status"] == "removed"
    # The owner is untouched.
    assert client.get(f"{API}/me", auth=owner.auth).status_code == 200


def test_grants_follow_moves_and_trash(client: TestClient, world: World) -> None:
    m, owner = world.member, world.owner
    client.post(f"{API}/move", json={"from": "/Shared", "to": "/Deep/Shared"}, auth=owner.auth)
    assert names(client, m.auth, "/Deep") == {"Inner", "Shared"}
    assert client.get(url("files", "/Deep/Shared/s.txt"), auth=m.auth).status_code == 200
    client.delete(url("files", "/Deep/Shared"), auth=owner.auth)
    assert names(client, m.auth, "/Deep") == {"Inner"}
    grants = client.get(f"{API}/users/{m.id}/grants", auth=owner.auth).json()["grants"]
    assert [g for g in grants if not g["active"]]
    r = client.put(
        f"{API}/users/{m.id}/grants",
        json={"path": "/Secret/x.txt", "access": "read"},
        auth=owner.auth,
    )
    assert r.status_code == 400 and problem(r)
    r = client.put(
        f"{API}/users/{m.id}/grants", json={"path": "/Nowhere", "access": "read"}, auth=owner.auth
    )
    assert r.status_code == 404
    r = client.put(
        f"{API}/users/{m.id}/grants", json={"path": "/Secret", "access": "admin"}, auth=owner.auth
    )
    assert r.status_code == 400


def test_other_client_member_is_isolated(
    client: TestClient, runtime: Runtime, world: World
) -> None:
    """A member of another Client with a grant on its own root sees nothing of Alice's."""
    carol = make_account(runtime, name="carol")
    cm = invite_member(client, carol, "member@carol.example")
    grant(client, carol, cm, "/", "write")
    assert names(client, cm.auth, "/") == set()
    assert client.get(url("files", "/Shared/s.txt"), auth=cm.auth).status_code == 404


def test_dedup_is_no_way_around_folder_access(client: TestClient, world: World) -> None:
    """A member who knows the SHA-256 of a chunk in a folder they cannot read learns
    nothing from /chunks/missing and cannot commit it into their own folder; sending the
    bytes (proof that they hold them) makes it usable, without a second stored copy."""
    import hashlib

    m = world.member
    secret = b"secret v2"  # the current content of /Secret/x.txt: one chunk
    digest = hashlib.sha256(secret).hexdigest()
    commit = {"path": "/Team/stolen.txt", "sha256": digest, "chunks": [digest]}
    # the owner is told the Client has it; the member is told it is missing
    owner_view = client.post(
        f"{API}/chunks/missing", json={"chunks": [digest]}, auth=world.owner.auth
    )
    assert owner_view.json()["missing"] == []
    member_view = client.post(f"{API}/chunks/missing", json={"chunks": [digest]}, auth=m.auth)
    assert member_view.json()["missing"] == [digest]
    stolen = client.post(f"{API}/commit", json=commit, auth=m.auth)
    assert stolen.status_code == 400 and "send it first" in problem(stolen)["detail"]
    batch = client.post(f"{API}/commit/batch", json={"files": [commit]}, auth=m.auth)
    assert batch.json()["results"][0]["status"] == 400
    assert client.get(url("files", "/Team/stolen.txt"), auth=m.auth).status_code == 404
    # with the bytes, it is theirs to use
    sent = client.put(f"{API}/chunks/{digest}", content=secret, auth=m.auth)
    assert sent.status_code == 201 and sent.json()["stored"] is False  # no second copy
    assert client.post(f"{API}/commit", json=commit, auth=m.auth).status_code == 201
    assert client.get(url("files", "/Team/stolen.txt"), auth=m.auth).content == secret
