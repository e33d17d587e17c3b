"""R-STORE-3: one Client never sees, touches or learns of another Client's data.

Alice (one Client) builds up files, folders, versions, trash items, app passwords and
sessions. Bob (another Client) then calls EVERY route of the REST API, with his own
valid credentials but with Alice's paths, node ids, version ids, trash item ids and
credential ids.

The route list is read from the app's own OpenAPI document, so a route added later is
covered automatically: ``ROUTES`` says how to exercise each (method, path template), and
the test fails when the document lists an operation the table does not know.

What "isolated" means here, per probe:

* routes that address an existing object (read, delete, move, copy, versions, trash
  items, credentials) answer 404, never 403 (which would confirm the object exists),
  never 2xx, never 500;
* routes that create in the caller's own space (PUT, mkdir) cannot be a 404 by nature:
  they act on Bob's namespace. They are probed in a way that would have to touch
  Alice's object to succeed (``If-Match`` with Alice's ETag, a folder only Alice has)
  and must fail exactly as for a path that exists nowhere;
* every probe is paired with a *control*: the same request with Alice's identifier
  replaced by a random one of the same shape. Status and problem type must be equal,
  so a response cannot tell "belongs to another Client" from "does not exist";
* the response (body and headers) contains none of Alice's ids, names, sha256 values,
  contents, secrets or email, except what Bob himself put in the request (a 404 that
  echoes the path Bob asked for leaks nothing Bob did not know).

Routes that take no identifier (listing one's trash, /me, credentials, login...) are
called with Bob's credentials; they must answer 2xx, contain nothing of Alice's, and
leave Alice's data as it was.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from starlette.testclient import TestClient

from allset.files.locks import lock_id
from conftest import Account, problem

API = "/api/v1"
LOCKINFO = (
    b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
    b"<locktype><write/></locktype><owner>alice-editor</owner></lockinfo>"
)
URLSAFE = set(string.ascii_letters + string.digits + "-_")

# Names distinctive enough that finding one in a response cannot be a coincidence.
D_TOP = "AliceTopSecret-q7Zk"
D_SUB = "AliceSub-Wm3x"
F_REPORT = "alice-report-Xy9.txt"
F_TOP = "alice-top-Pq2.txt"
F_DEEP = "alice-deep-Rr8.bin"
F_UNICODE = "alice-\u00e9t\u00e9-Ko4.txt"
F_GONE = "alice-gone-Tb5.txt"
D_GONE = "AliceGoneFolder-Nn6"
F_IN_GONE = "alice-inside-gone-Vv1.txt"


@dataclass
class AliceWorld:
    """Everything Alice owns, and every string that must never reach Bob."""

    account: Account
    files: dict[str, bytes]  # live path -> current content
    dirs: list[str]
    trashed_paths: list[str]
    node_ids: list[str] = field(default_factory=list)
    version_ids: list[str] = field(default_factory=list)
    old_version_ids: list[str] = field(default_factory=list)
    trash_ids: list[str] = field(default_factory=list)
    credential_ids: list[str] = field(default_factory=list)
    sha256s: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    session_token: str = ""
    extra_app_password: str = ""
    etags: dict[str, str] = field(default_factory=dict)  # file path -> ETag
    link_ids: list[str] = field(default_factory=list)  # public links (R-SHARE-2)
    link_urls: list[str] = field(default_factory=list)
    lock_ids: list[str] = field(default_factory=list)  # WebDAV locks (/locks)
    lock_tokens: list[str] = field(default_factory=list)

    @property
    def all_ids(self) -> list[str]:
        return sorted(
            {
                *self.node_ids,
                *self.version_ids,
                *self.trash_ids,
                *self.credential_ids,
                *self.link_ids,
                *self.lock_ids,
            }
        )

    def secrets(self) -> dict[str, list[bytes]]:
        """Each secret with the encodings it could take in a body or a header."""
        out: dict[str, list[bytes]] = {}

        def add(s: str) -> None:
            forms = {
                s.encode(),
                quote(s, safe="").encode(),
                quote(s).encode(),
                json.dumps(s)[1:-1].encode(),  # \u escapes (ensure_ascii)
            }
            out[s] = sorted(forms)

        for s in [
            *self.all_ids,
            *self.names,
            self.account.email,
            self.account.tenant_id,
            self.account.password,
            self.account.app_password,
            self.session_token,
            self.extra_app_password,
            *self.link_urls,
            *(u.rsplit("/", 1)[-1] for u in self.link_urls),
            *self.lock_tokens,
        ]:
            add(s)
        for sha in self.sha256s:
            add(sha)
            b64 = base64.b64encode(bytes.fromhex(sha)).decode()
            out[sha].append(b64.encode())
        for content in self.files.values():
            out[f"content {content[:20]!r}"] = [content]
        return out


# ---- building Alice's world -------------------------------------------------------------


def _ok(resp: httpx.Response, *codes: int) -> httpx.Response:
    assert resp.status_code in (codes or (200, 201, 204)), (
        resp.request.method,
        resp.request.url,
        resp.status_code,
        resp.text,
    )
    return resp


def url_of(area: str, path: str) -> str:
    return f"{API}/{area}" + quote(path)


def build_alice(client: TestClient, alice: Account) -> AliceWorld:
    auth = alice.auth
    _ok(client.post(f"{API}/mkdir", json={"path": f"/{D_TOP}/{D_SUB}", "parents": True}, auth=auth))
    files = {
        f"/{D_TOP}/{F_REPORT}": b"alice report, second version, confidential",
        f"/{F_TOP}": b"alice top-level content 1f7c",
        f"/{D_TOP}/{D_SUB}/{F_DEEP}": b"\x00alice deep binary\xff" * 50,
        f"/{F_UNICODE}": "caf\u00e9 d'Alice".encode(),
    }
    # A file with an older version: its first content is superseded.
    _ok(client.put(url_of("files", f"/{D_TOP}/{F_REPORT}"), content=b"alice report v1", auth=auth))
    for path, content in files.items():
        _ok(client.put(url_of("files", path), content=content, auth=auth), 201)
    # Trash: a file and a folder with a file inside.
    _ok(client.put(url_of("files", f"/{F_GONE}"), content=b"alice deleted file", auth=auth))
    _ok(client.post(f"{API}/mkdir", json={"path": f"/{D_GONE}"}, auth=auth), 201)
    _ok(client.put(url_of("files", f"/{D_GONE}/{F_IN_GONE}"), content=b"alice in gone", auth=auth))
    _ok(client.delete(url_of("files", f"/{F_GONE}"), auth=auth), 204)
    _ok(client.delete(url_of("files", f"/{D_GONE}"), auth=auth), 204)
    # Credentials: an extra app password and a session.
    extra = _ok(
        client.post(f"{API}/auth/app-passwords", json={"name": "alice-laptop-Zq1"}, auth=auth), 201
    ).json()
    session = _ok(
        client.post(f"{API}/auth/login", json={"email": alice.email, "password": alice.password})
    ).json()

    w = AliceWorld(
        account=alice,
        files=files,
        dirs=[f"/{D_TOP}", f"/{D_TOP}/{D_SUB}"],
        trashed_paths=[f"/{F_GONE}", f"/{D_GONE}", f"/{D_GONE}/{F_IN_GONE}"],
        session_token=session["token"],
        extra_app_password=extra["password"],
        names=[
            D_TOP,
            D_SUB,
            F_REPORT,
            F_TOP,
            F_DEEP,
            F_UNICODE,
            F_GONE,
            D_GONE,
            F_IN_GONE,
            "alice-laptop-Zq1",
        ],
    )
    for d in ["/", *w.dirs]:
        listing = _ok(client.get(url_of("tree", d), auth=auth)).json()
        if d != "/":
            w.node_ids.append(listing["id"])
        for e in listing["entries"]:
            w.node_ids.append(e["id"])
            if e["type"] == "file":
                w.sha256s.append(e["sha256"])
                w.etags[e["path"]] = e["etag"]
    for path in files:
        for v in _ok(client.get(url_of("versions", path), auth=auth)).json()["versions"]:
            w.version_ids.append(v["version"])
            w.sha256s.append(v["sha256"])
            if not v["current"]:
                w.old_version_ids.append(v["version"])
    assert w.old_version_ids, "the overwritten report must have an older version"
    for item in _ok(client.get(f"{API}/trash", auth=auth)).json()["items"]:
        w.trash_ids.append(item["id"])
    assert len(w.trash_ids) == 2
    creds = _ok(client.get(f"{API}/auth/credentials", auth=auth)).json()["credentials"]
    w.credential_ids = [c["id"] for c in creds]
    assert len(w.credential_ids) == 3  # fixture app password, extra app password, session
    for path in (f"/{F_TOP}", f"/{D_TOP}"):
        made = _ok(client.post(f"{API}/links", json={"path": path}, auth=auth), 201).json()
        w.link_ids.append(made["id"])
        w.link_urls.append(made["url"])
    # A WebDAV lock of Alice's: its id is listed to her, its token never to anyone else.
    locked = _ok(
        client.request(
            "LOCK",
            "/dav" + quote(f"/{F_TOP}"),
            content=LOCKINFO,
            headers={"Depth": "0", "Timeout": "Second-3600"},
            auth=auth,
        )
    )
    w.lock_tokens.append(locked.headers["lock-token"].strip("<>"))
    w.lock_ids = [lk["id"] for lk in _ok(client.get(f"{API}/locks", auth=auth)).json()["locks"]]
    assert w.lock_ids == [lock_id(w.lock_tokens[0])]
    w.sha256s = sorted(set(w.sha256s))
    w.node_ids = sorted(set(w.node_ids))
    return w


def snapshot(client: TestClient, w: AliceWorld) -> dict[str, Any]:
    """Alice's view of her data; must be identical before and after Bob's attempts."""
    auth = w.account.auth
    snap: dict[str, Any] = {}
    for path in w.files:
        r = _ok(client.get(url_of("files", path), auth=auth))
        snap[f"content {path}"] = (r.content, r.headers["etag"])
        snap[f"versions {path}"] = _ok(client.get(url_of("versions", path), auth=auth)).json()
    for d in ["/", *w.dirs]:
        snap[f"tree {d}"] = _ok(client.get(url_of("tree", d), auth=auth)).json()
    snap["trash"] = _ok(client.get(f"{API}/trash", auth=auth)).json()
    creds = _ok(client.get(f"{API}/auth/credentials", auth=auth)).json()["credentials"]
    snap["credentials"] = sorted(c["id"] for c in creds)
    snap["used"] = _ok(client.get(f"{API}/me", auth=auth)).json()["usage"]["used_bytes"]
    return snap


def assert_alice_credentials_work(client: TestClient, w: AliceWorld) -> None:
    email = w.account.email
    for how in [
        {"auth": w.account.auth},
        {"auth": (email, w.extra_app_password)},
        {"auth": (email, w.account.password)},
        {"headers": {"Authorization": f"Bearer {w.session_token}"}},
    ]:
        r = client.get(f"{API}/me", **how)  # type: ignore[arg-type]
        assert r.status_code == 200, (how, r.text)
        assert r.json()["email"] == email


# ---- probes -----------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    url: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None

    def send(self, client: TestClient, auth: tuple[str, str] | None) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = self.content
        if auth is not None:
            kwargs["auth"] = auth
        return client.request(self.method, self.url, **kwargs)

    def text(self) -> str:
        """Everything the caller sent, to tell echoes from leaks."""
        parts = [
            unquote(self.url),
            self.url,
            json.dumps(self.json, ensure_ascii=False),
            *self.headers.values(),
            # binary bodies (chunk frames) carry digests as raw bytes: their hex is sent too
            self.content.hex() if self.content else "",
        ]
        return "\n".join(parts)


@dataclass
class Probe:
    """A request carrying Alice's identifier, and the same with a random stand-in."""

    label: str
    make: Callable[[Any], Req]
    alice_value: Any
    fake_value: Any
    expect: int = 404


def fake_id() -> str:
    return secrets.token_urlsafe(16)


def fake_path(path: str) -> str:
    """Same depth and shape, names that exist nowhere."""
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(
        f"nowhere-{secrets.token_hex(4)}{'.txt' if '.' in p else ''}" for p in parts
    )


def file_paths(w: AliceWorld) -> list[str]:
    return list(w.files)


def object_paths(w: AliceWorld) -> list[str]:
    """Every path Alice has or had: live files and folders, and trashed ones."""
    return [*w.files, *w.dirs, *w.trashed_paths]


def path_probes(
    w: AliceWorld, paths: Iterable[str], label: str, make: Callable[[str], Req], expect: int = 404
) -> list[Probe]:
    return [Probe(f"{label} {p}", make, p, fake_path(p), expect) for p in paths]


def id_probes(w: AliceWorld, label: str, make: Callable[[str], Req]) -> list[Probe]:
    """Every kind of Alice id, not only the kind the route expects."""
    return [Probe(f"{label} {i}", make, i, fake_id()) for i in w.all_ids]


def probes_get_file(w: AliceWorld, method: str) -> list[Probe]:
    out = path_probes(
        w, object_paths(w), f"{method} file", lambda p: Req(method, url_of("files", p))
    )
    # ?version= with Alice's version ids on Alice's own paths
    for path in file_paths(w):
        for vid in w.version_ids:
            out.append(
                Probe(
                    f"{method} file {path}?version={vid}",
                    lambda pv, m=method: Req(m, url_of("files", pv[0]) + f"?version={pv[1]}"),
                    (path, vid),
                    (fake_path(path), fake_id()),
                )
            )
    return out


def probes_put_file(w: AliceWorld) -> list[Probe]:
    """PUT acts in Bob's own space, so it cannot answer 404; a conditional PUT naming
    Alice's ETag must fail as if nothing existed (412), a PUT into a folder only Alice
    has must fail as for any missing folder (409), never 2xx."""
    out = []
    for path, etag in w.etags.items():
        out.append(
            Probe(
                f"PUT If-Match {path}",
                lambda pe: Req(
                    "PUT",
                    url_of("files", pe[0]),
                    headers={"If-Match": pe[1]},
                    content=b"bob overwrites?",
                ),
                (path, etag),
                (fake_path(path), f'"{fake_id()}"'),
                # at the root: no such file (412); deeper: no such folder for Bob (409)
                412 if path.count("/") == 1 else 409,
            )
        )
    for d in w.dirs:
        out.append(
            Probe(
                f"PUT into {d}",
                lambda p: Req("PUT", url_of("files", p + "/bob.txt"), content=b"bob"),
                d,
                fake_path(d),
                409,
            )
        )
    return out


def probes_mkdir(w: AliceWorld) -> list[Probe]:
    """Like PUT: creating inside a folder only Alice has fails as for a missing folder."""
    return path_probes(
        w,
        w.dirs,
        "mkdir in",
        lambda p: Req("POST", f"{API}/mkdir", json={"path": p + "/bob-new", "parents": False}),
        409,
    )


def probes_transfer(w: AliceWorld, op: str) -> list[Probe]:
    out = path_probes(
        w,
        object_paths(w),
        f"{op} from",
        lambda p: Req("POST", f"{API}/{op}", json={"from": p, "to": "/bob-destination"}),
    )
    out += path_probes(
        w,
        object_paths(w),
        f"{op} from+overwrite",
        lambda p: Req("POST", f"{API}/{op}", json={"from": p, "to": p, "overwrite": True}),
    )
    return out


def probes_versions_get(w: AliceWorld) -> list[Probe]:
    return path_probes(w, object_paths(w), "versions", lambda p: Req("GET", url_of("versions", p)))


def probes_versions_restore(w: AliceWorld) -> list[Probe]:
    out = []
    for path in object_paths(w):
        for vid in w.version_ids:
            out.append(
                Probe(
                    f"restore {path} {vid}",
                    lambda pv: Req("POST", url_of("versions", pv[0]), json={"version": pv[1]}),
                    (path, vid),
                    (fake_path(path), fake_id()),
                )
            )
    return out


def probes_trash_restore(w: AliceWorld) -> list[Probe]:
    return id_probes(w, "trash restore", lambda i: Req("POST", f"{API}/trash/{i}/restore"))


def probes_trash_purge_one(w: AliceWorld) -> list[Probe]:
    return id_probes(w, "trash purge", lambda i: Req("DELETE", f"{API}/trash/{i}"))


def probes_revoke(w: AliceWorld) -> list[Probe]:
    return id_probes(w, "revoke", lambda i: Req("DELETE", f"{API}/auth/credentials/{i}"))


def probes_delete_file(w: AliceWorld) -> list[Probe]:
    return path_probes(w, object_paths(w), "DELETE", lambda p: Req("DELETE", url_of("files", p)))


def probes_tree(w: AliceWorld) -> list[Probe]:
    return path_probes(w, object_paths(w), "tree", lambda p: Req("GET", url_of("tree", p)))


def probes_zip(w: AliceWorld) -> list[Probe]:
    return path_probes(w, object_paths(w), "zip", lambda p: Req("GET", url_of("zip", p)))


def alice_chunks(w: AliceWorld) -> list[tuple[str, bytes]]:
    """Alice's files are single chunks: (hash, content) of each."""
    return [(hashlib.sha256(c).hexdigest(), c) for c in w.files.values()]


def fake_chunk() -> tuple[str, bytes]:
    data = secrets.token_bytes(40)
    return hashlib.sha256(data).hexdigest(), data


def probes_chunk_get(w: AliceWorld) -> list[Probe]:
    return [
        Probe(f"GET chunk {h[:12]}", lambda v: Req("GET", f"{API}/chunks/{v}"), h, fake_chunk()[0])
        for h, _ in alice_chunks(w)
    ]


def probes_chunk_put(w: AliceWorld) -> list[Probe]:
    """Bob sending bytes he has is his own business: stored in his space, and the answer
    is the same whether Alice has the same bytes or not (no cross-Client dedup oracle)."""
    return [
        Probe(
            f"PUT chunk {h[:12]}",
            lambda v: Req("PUT", f"{API}/chunks/{v[0]}", content=v[1]),
            (h, c),
            fake_chunk(),
            201,
        )
        for h, c in alice_chunks(w)
    ]


def probes_chunks_missing(w: AliceWorld) -> list[Probe]:
    return [
        Probe(
            f"missing? {h[:12]}",
            lambda v: Req("POST", f"{API}/chunks/missing", json={"chunks": [v]}),
            h,
            fake_chunk()[0],
            200,
        )
        for h, _ in alice_chunks(w)
    ]


def probes_commit(w: AliceWorld) -> list[Probe]:
    """A manifest naming Alice's chunks is refused exactly like one naming unknown ones."""
    return [
        Probe(
            f"commit {h[:12]}",
            lambda v: Req(
                "POST",
                f"{API}/commit",
                json={"path": "/bob-stolen.bin", "sha256": v, "chunks": [v]},
            ),
            h,
            fake_chunk()[0],
            400,
        )
        for h, _ in alice_chunks(w)
    ]


def probes_manifest(w: AliceWorld) -> list[Probe]:
    return path_probes(w, object_paths(w), "manifest", lambda p: Req("GET", url_of("manifest", p)))


def frames_of(chunks: list[tuple[str, bytes]]) -> bytes:
    """The batch chunk format: 32-byte SHA-256, 4-byte big-endian length, bytes."""
    return b"".join(bytes.fromhex(h) + len(c).to_bytes(4, "big") + c for h, c in chunks)


def probes_chunks_batch(w: AliceWorld) -> list[Probe]:
    """A frame named by Alice's chunk but holding other bytes is refused exactly as one
    named by an unknown chunk: Alice having it neither makes it pass nor changes the
    answer. (Sending the right bytes is Bob's own business, as PUT /chunks probes show;
    not done here, since those chunks would then make Bob's /commit probes succeed.)"""
    return [
        Probe(
            f"batch chunk {h[:12]}",
            lambda v: Req(
                "POST", f"{API}/chunks/batch", content=frames_of([(v, b"not these bytes")])
            ),
            h,
            fake_chunk()[0],
            400,
        )
        for h, _ in alice_chunks(w)
    ]


def probes_chunks_fetch(w: AliceWorld) -> list[Probe]:
    return [
        Probe(
            f"fetch chunk {h[:12]}",
            lambda v: Req("POST", f"{API}/chunks/fetch", json={"chunks": [v]}),
            h,
            fake_chunk()[0],
        )
        for h, _ in alice_chunks(w)
    ]


def probes_commit_batch(w: AliceWorld) -> list[Probe]:
    """Each item naming Alice's chunks fails as one naming unknown chunks (the batch
    itself answers 200 with one result per item)."""
    return [
        Probe(
            f"commit batch {h[:12]}",
            lambda v: Req(
                "POST",
                f"{API}/commit/batch",
                json={"files": [{"path": "/bob-stolen.bin", "sha256": v, "chunks": [v]}]},
            ),
            h,
            fake_chunk()[0],
            200,
        )
        for h, _ in alice_chunks(w)
    ]


def probes_snapshot(w: AliceWorld) -> list[Probe]:
    return path_probes(w, object_paths(w), "snapshot", lambda p: Req("GET", url_of("snapshot", p)))


def probes_link_create(w: AliceWorld) -> list[Probe]:
    """Publishing acts in Bob's space: Alice's paths are as missing as random ones."""
    return path_probes(
        w, object_paths(w), "link create", lambda p: Req("POST", f"{API}/links", json={"path": p})
    )


def probes_link(w: AliceWorld, method: str, suffix: str) -> list[Probe]:
    return id_probes(w, f"{method} link", lambda i: Req(method, f"{API}/links/{i}{suffix}"))


def probes_operator_links(w: AliceWorld) -> list[Probe]:
    """Operator routes do not exist for a Client (404), whatever the Client names."""
    return [
        Probe(
            "operator links",
            lambda t: Req("GET", f"{API}/operator/links?tenant={t}"),
            w.account.tenant,
            f"nowhere{secrets.token_hex(3)}",
        )
    ]


def probes_operator_link(w: AliceWorld, action: str) -> list[Probe]:
    probes = id_probes(
        w,
        f"operator {action}",
        lambda i: Req("POST", f"{API}/operator/links/{i}/{action}", json={"reason": "bob"}),
    )
    for url in w.link_urls:  # by token too
        token = url.rsplit("/", 1)[-1]
        probes.append(
            Probe(
                f"operator {action} by token",
                lambda t: Req("POST", f"{API}/operator/links/{t}/{action}", json={"reason": "b"}),
                token,
                secrets.token_urlsafe(24),
            )
        )
    return probes


# Routes without any identifier: Bob's own things. Each returns requests to send as Bob.
OwnCall = Callable[[TestClient, Account], list[tuple[Req, tuple[str, str] | None]]]


def user_probes(label: str, make: Callable[[str], Req]) -> Callable[[AliceWorld], list[Probe]]:
    """Alice's user id (and every other id of hers) where a user id goes (R-SHARE-1)."""

    def probes(w: AliceWorld) -> list[Probe]:
        ids = [w.account.principal.id, *w.all_ids]
        return [Probe(f"{label} {i}", make, i, fake_id()) for i in ids]

    return probes


def own_invite(client: TestClient, bob: Account) -> list[tuple[Req, tuple[str, str] | None]]:
    email = f"new-{secrets.token_hex(4)}@bob.example"
    return [(Req("POST", f"{API}/users", json={"email": email, "role": "member"}), bob.auth)]


def own_accept(client: TestClient, bob: Account) -> list[tuple[Req, tuple[str, str] | None]]:
    """Bob invites someone (no SMTP here: the link comes back) who then accepts."""
    email = f"joiner-{secrets.token_hex(4)}@bob.example"
    link = _ok(client.post(f"{API}/users", json={"email": email}, auth=bob.auth), 201).json()
    token = link["link"].split("#token=", 1)[1]
    body = {"token": token, "password": "a long enough password"}
    return [(Req("POST", f"{API}/invitations/accept", json=body), None)]


def own_login(client: TestClient, bob: Account) -> list[tuple[Req, tuple[str, str] | None]]:
    return [
        (
            Req("POST", f"{API}/auth/login", json={"email": bob.email, "password": bob.password}),
            None,
        )
    ]


def own_logout(client: TestClient, bob: Account) -> list[tuple[Req, tuple[str, str] | None]]:
    # A fresh session of Bob's: logging out with the app password would revoke it.
    token = _ok(
        client.post(f"{API}/auth/login", json={"email": bob.email, "password": bob.password})
    ).json()["token"]
    return [(Req("POST", f"{API}/auth/logout", headers={"Authorization": f"Bearer {token}"}), None)]


def own_simple(method: str, path: str, body: Any = None) -> OwnCall:
    def call(client: TestClient, bob: Account) -> list[tuple[Req, tuple[str, str] | None]]:
        return [(Req(method, API + path, json=body), bob.auth)]

    return call


@dataclass
class Route:
    probes: Callable[[AliceWorld], list[Probe]] | None = None
    own: OwnCall | None = None


# (METHOD, OpenAPI path template) -> how to exercise it. Keep in step with the routers:
# a new route makes test_every_route_isolated fail until it is described here.
ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/files/{path}"): Route(probes=lambda w: probes_get_file(w, "GET")),
    ("HEAD", "/files/{path}"): Route(probes=lambda w: probes_get_file(w, "HEAD")),
    ("PUT", "/files/{path}"): Route(probes=probes_put_file),
    ("DELETE", "/files/{path}"): Route(probes=probes_delete_file),
    ("GET", "/tree/{path}"): Route(probes=probes_tree),
    ("GET", "/zip/{path}"): Route(probes=probes_zip, own=own_simple("GET", "/zip/")),
    ("POST", "/mkdir"): Route(probes=probes_mkdir),
    ("POST", "/move"): Route(probes=lambda w: probes_transfer(w, "move")),
    ("POST", "/copy"): Route(probes=lambda w: probes_transfer(w, "copy")),
    ("GET", "/versions/{path}"): Route(probes=probes_versions_get),
    ("POST", "/versions/{path}"): Route(probes=probes_versions_restore),
    ("POST", "/trash/{item_id}/restore"): Route(probes=probes_trash_restore),
    ("DELETE", "/trash/{item_id}"): Route(probes=probes_trash_purge_one),
    ("GET", "/locks"): Route(own=own_simple("GET", "/locks")),
    ("DELETE", "/locks/{lock_id}"): Route(
        probes=lambda w: id_probes(w, "break lock", lambda i: Req("DELETE", f"{API}/locks/{i}"))
    ),
    ("DELETE", "/auth/credentials/{credential_id}"): Route(probes=probes_revoke),
    ("GET", "/trash"): Route(own=own_simple("GET", "/trash")),
    ("DELETE", "/trash"): Route(own=own_simple("DELETE", "/trash")),
    ("POST", "/auth/login"): Route(own=own_login),
    ("POST", "/auth/logout"): Route(own=own_logout),
    ("GET", "/auth/credentials"): Route(own=own_simple("GET", "/auth/credentials")),
    ("POST", "/auth/app-passwords"): Route(
        own=own_simple("POST", "/auth/app-passwords", {"name": "bob-phone"})
    ),
    ("GET", "/me"): Route(own=own_simple("GET", "/me")),
    ("GET", "/chunks/{digest}"): Route(probes=probes_chunk_get),
    ("PUT", "/chunks/{digest}"): Route(probes=probes_chunk_put),
    ("POST", "/chunks/missing"): Route(probes=probes_chunks_missing),
    ("POST", "/commit"): Route(probes=probes_commit),
    ("GET", "/manifest/{path}"): Route(probes=probes_manifest),
    ("POST", "/chunks/batch"): Route(probes=probes_chunks_batch),
    ("POST", "/chunks/fetch"): Route(probes=probes_chunks_fetch),
    ("POST", "/commit/batch"): Route(probes=probes_commit_batch),
    ("GET", "/snapshot/{path}"): Route(probes=probes_snapshot, own=own_simple("GET", "/snapshot/")),
    ("POST", "/links"): Route(probes=probes_link_create),
    ("GET", "/links"): Route(own=own_simple("GET", "/links")),
    ("GET", "/links/{link_id}"): Route(probes=lambda w: probes_link(w, "GET", "")),
    ("DELETE", "/links/{link_id}"): Route(probes=lambda w: probes_link(w, "DELETE", "")),
    ("GET", "/operator/links"): Route(probes=probes_operator_links),
    ("POST", "/operator/links/{ref}/suspend"): Route(
        probes=lambda w: probes_operator_link(w, "suspend")
    ),
    ("POST", "/operator/links/{ref}/resume"): Route(
        probes=lambda w: probes_operator_link(w, "resume")
    ),
    ("GET", "/users"): Route(own=own_simple("GET", "/users")),
    ("POST", "/users"): Route(own=own_invite),
    ("GET", "/users/{user_id}"): Route(
        probes=user_probes("GET user", lambda i: Req("GET", f"{API}/users/{i}"))
    ),
    ("PATCH", "/users/{user_id}"): Route(
        probes=user_probes(
            "PATCH user", lambda i: Req("PATCH", f"{API}/users/{i}", json={"role": "member"})
        )
    ),
    ("DELETE", "/users/{user_id}"): Route(
        probes=user_probes("DELETE user", lambda i: Req("DELETE", f"{API}/users/{i}"))
    ),
    ("POST", "/users/{user_id}/invitation"): Route(
        probes=user_probes("reinvite", lambda i: Req("POST", f"{API}/users/{i}/invitation"))
    ),
    ("GET", "/users/{user_id}/grants"): Route(
        probes=user_probes("GET grants", lambda i: Req("GET", f"{API}/users/{i}/grants"))
    ),
    ("PUT", "/users/{user_id}/grants"): Route(
        probes=user_probes(
            "PUT grant",
            lambda i: Req("PUT", f"{API}/users/{i}/grants", json={"path": "/", "access": "write"}),
        )
    ),
    ("DELETE", "/users/{user_id}/grants/{grant_id}"): Route(
        probes=user_probes("DELETE grant", lambda i: Req("DELETE", f"{API}/users/{i}/grants/{i}"))
    ),
    ("POST", "/invitations/accept"): Route(own=own_accept),
    ("GET", "/changes"): Route(
        own=lambda c, b: [
            (Req("GET", f"{API}/changes"), b.auth),
            (Req("GET", f"{API}/changes?since=0&limit=5000"), b.auth),
        ]
    ),
}


def openapi_operations(client: TestClient) -> list[tuple[str, str]]:
    doc = client.get(f"{API}/openapi.json").json()
    assert [s["url"] for s in doc.get("servers", [])] == [API]
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    ops = sorted(
        (m.upper(), path) for path, ops in doc["paths"].items() for m in ops if m in methods
    )
    # The walker keys on (method, path), but operationIds must be unique all the same.
    op_ids = [doc["paths"][p][m.lower()].get("operationId") for m, p in ops]
    assert len(set(op_ids)) == len(op_ids), f"duplicate operationIds: {op_ids}"
    return ops


def find_leaks(resp: httpx.Response, secrets_: dict[str, list[bytes]], sent: str) -> list[str]:
    blob = (
        resp.content
        + b"\n"
        + "\n".join(f"{k}: {v}" for k, v in resp.headers.multi_items()).encode()
    )
    leaks = []
    for secret, forms in secrets_.items():
        if secret and secret in sent:
            continue  # Bob sent it himself: an echo, not a leak
        if any(f and f in blob for f in forms):
            leaks.append(secret)
    return leaks


def check_probe(
    client: TestClient, bob: Account, probe: Probe, secrets_: dict[str, list[bytes]]
) -> list[str]:
    """Returns a list of failures (empty when the probe passes)."""
    req = probe.make(probe.alice_value)
    resp = req.send(client, bob.auth)
    control = probe.make(probe.fake_value).send(client, bob.auth)
    errors = []
    where = f"{probe.label}: {req.method} {req.url} -> {resp.status_code}"
    if resp.status_code != probe.expect:
        errors.append(f"{where}, expected {probe.expect}: {resp.text[:300]}")
    if resp.status_code != control.status_code:
        errors.append(
            f"{where}, but {control.status_code} for a random id/path: "
            f"the answer tells Alice's objects from missing ones"
        )
    if req.method != "HEAD" and resp.status_code >= 400:
        body = problem(resp)
        if control.status_code == resp.status_code:
            cbody = problem(control)
            if (body["type"], body["title"]) != (cbody["type"], cbody["title"]):
                errors.append(
                    f"{where}: problem {body['type']} differs from control {cbody['type']}"
                )
    leaks = find_leaks(resp, secrets_, req.text())
    if leaks:
        errors.append(f"{where}: response reveals {leaks}: {resp.text[:300]}")
    return errors


@pytest.fixture
def world(client: TestClient, alice: Account, bob: Account) -> AliceWorld:
    return build_alice(client, alice)


def test_every_route_isolated(client: TestClient, world: AliceWorld, bob: Account) -> None:
    ops = openapi_operations(client)
    unknown = [op for op in ops if op not in ROUTES]
    assert not unknown, (
        f"The OpenAPI document lists operations the isolation walker cannot exercise: "
        f"{unknown}. Add them to ROUTES in {__file__}."
    )
    assert len(ops) >= 20

    before = snapshot(client, world)
    secrets_ = world.secrets()
    failures: list[str] = []
    count = 0
    for op in ops:
        route = ROUTES[op]
        if route.probes is not None:
            probes = route.probes(world)
            assert probes, f"no probe for {op}"
            for probe in probes:
                failures += check_probe(client, bob, probe, secrets_)
                count += 1
        if route.own is not None:
            for req, auth in route.own(client, bob):
                resp = req.send(client, auth)
                count += 1
                where = f"{op} as Bob -> {resp.status_code}"
                if not 200 <= resp.status_code < 300:
                    failures.append(f"{where}: {resp.text[:300]}")
                leaks = find_leaks(resp, secrets_, req.text())
                if leaks:
                    failures.append(f"{where}: response reveals {leaks}: {resp.text[:300]}")
    assert not failures, f"{len(failures)} of {count} probes failed:\n" + "\n".join(failures)
    assert count > 200

    # Nothing Bob did changed anything of Alice's, and all her credentials still work.
    after = snapshot(client, world)
    assert after == before
    assert_alice_credentials_work(client, world)


def test_walker_table_matches_routes(client: TestClient) -> None:
    """Entries for routes that no longer exist would silently test nothing."""
    ops = set(openapi_operations(client))
    stale = [op for op in ROUTES if op not in ops]
    assert not stale, f"ROUTES describes operations the app no longer has: {stale}"


def test_bob_listings_show_only_his_entries(
    client: TestClient, world: AliceWorld, bob: Account
) -> None:
    _ok(client.put(url_of("files", "/bob-own.txt"), content=b"bob's", auth=bob.auth), 201)
    _ok(client.post(f"{API}/mkdir", json={"path": "/BobFolder"}, auth=bob.auth), 201)
    secrets_ = world.secrets()
    for url in [
        f"{API}/tree/",
        f"{API}/tree",
        f"{API}/tree/BobFolder",
        f"{API}/trash",
        f"{API}/auth/credentials",
        f"{API}/me",
        f"{API}/tree/?limit=1000",
    ]:
        r = _ok(client.get(url, auth=bob.auth))
        assert not find_leaks(r, secrets_, ""), (url, r.text)
    root = client.get(f"{API}/tree/", auth=bob.auth).json()
    assert sorted(e["name"] for e in root["entries"]) == ["BobFolder", "bob-own.txt"]
    assert root["id"] not in world.node_ids
    assert client.get(f"{API}/trash", auth=bob.auth).json()["items"] == []
    me = client.get(f"{API}/me", auth=bob.auth).json()
    assert me["email"] == bob.email
    assert me["usage"]["used_bytes"] == len(b"bob's")
    creds = client.get(f"{API}/auth/credentials", auth=bob.auth).json()["credentials"]
    assert len(creds) == 1
    assert creds[0]["id"] not in world.credential_ids


def test_same_path_is_bobs_own_file(client: TestClient, world: AliceWorld, bob: Account) -> None:
    alice = world.account
    path = f"/{D_TOP}/{F_REPORT}"
    alice_content = world.files[path]
    alice_versions = client.get(url_of("versions", path), auth=alice.auth).json()["versions"]

    # Bob has no /D_TOP: creating it and the file at the very same path is his own.
    _ok(client.post(f"{API}/mkdir", json={"path": f"/{D_TOP}"}, auth=bob.auth), 201)
    r = _ok(client.put(url_of("files", path), content=b"bob's report", auth=bob.auth), 201)
    assert r.json()["created"] is True
    bob_version = r.json()["version"]
    assert bob_version not in world.version_ids

    assert client.get(url_of("files", path), auth=bob.auth).content == b"bob's report"
    assert client.get(url_of("files", path), auth=alice.auth).content == alice_content
    assert (
        client.get(url_of("versions", path), auth=alice.auth).json()["versions"] == alice_versions
    )
    bob_versions = client.get(url_of("versions", path), auth=bob.auth).json()["versions"]
    assert [v["version"] for v in bob_versions] == [bob_version]

    # Alice's version ids (current and old) never reach Bob's file of the same path.
    for vid in world.version_ids:
        for method in ("GET", "HEAD"):
            r = client.request(method, url_of("files", path) + f"?version={vid}", auth=bob.auth)
            assert r.status_code == 404, (method, vid, r.status_code)
        r = client.get(url_of("files", path) + f"?version={vid}", auth=bob.auth)
        body = problem(r)
        assert alice_content.decode() not in r.text
        assert all(sha not in r.text for sha in world.sha256s), body
        r = client.post(url_of("versions", path), json={"version": vid}, auth=bob.auth)
        assert r.status_code == 404, r.text
        problem(r)
    # ...nor does Alice's ETag satisfy a condition on Bob's file.
    r = client.put(
        url_of("files", path), content=b"x", auth=bob.auth, headers={"If-Match": world.etags[path]}
    )
    assert r.status_code == 412, r.text
    assert client.get(url_of("files", path), auth=bob.auth).content == b"bob's report"

    # Bob deleting his copy puts *his* node in *his* trash; Alice's file stays.
    _ok(client.delete(url_of("files", path), auth=bob.auth), 204)
    bob_trash = client.get(f"{API}/trash", auth=bob.auth).json()["items"]
    assert len(bob_trash) == 1
    assert bob_trash[0]["id"] not in world.all_ids
    assert client.get(url_of("files", path), auth=alice.auth).content == alice_content
    # Emptying Bob's trash leaves Alice's trash as it was.
    alice_trash = client.get(f"{API}/trash", auth=alice.auth).json()
    _ok(client.delete(f"{API}/trash", auth=bob.auth), 204)
    assert client.get(f"{API}/trash", auth=alice.auth).json() == alice_trash


def test_identical_content_is_charged_to_each_client(
    client: TestClient, world: AliceWorld, bob: Account
) -> None:
    """Deduplication is per Client: if Bob's upload of Alice's exact bytes were free,
    its cost would reveal that Alice stores them."""
    path = f"/{D_TOP}/{D_SUB}/{F_DEEP}"
    content = world.files[path]
    used = client.get(f"{API}/me", auth=bob.auth).json()["usage"]["used_bytes"]
    _ok(client.put(url_of("files", "/same.bin"), content=content, auth=bob.auth), 201)
    after = client.get(f"{API}/me", auth=bob.auth).json()["usage"]["used_bytes"]
    assert after - used == len(content)


def test_alice_credential_revoked_by_bob(
    client: TestClient, world: AliceWorld, bob: Account
) -> None:
    for cid in world.credential_ids:
        r = client.delete(f"{API}/auth/credentials/{cid}", auth=bob.auth)
        assert r.status_code == 404, r.text
        problem(r)
    # ...nor with a session of Bob's.
    token = _ok(
        client.post(f"{API}/auth/login", json={"email": bob.email, "password": bob.password})
    ).json()["token"]
    for cid in world.credential_ids:
        r = client.delete(
            f"{API}/auth/credentials/{cid}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 404, r.text
    assert_alice_credentials_work(client, world)
    creds = client.get(f"{API}/auth/credentials", auth=world.account.auth).json()["credentials"]
    assert sorted(c["id"] for c in creds) == sorted(world.credential_ids)


def test_alice_secrets_do_not_sign_bob_in(
    client: TestClient, world: AliceWorld, bob: Account
) -> None:
    """Alice's app password presented with Bob's email is refused (not Bob, not Alice)."""
    r = client.get(f"{API}/me", auth=(bob.email, world.extra_app_password))
    assert r.status_code == 401
    problem(r)


# ---- ids are unguessable ----------------------------------------------------------------


def _id_bits(i: str) -> int:
    raw = base64.urlsafe_b64decode(i + "=" * (-len(i) % 4))
    assert len(raw) >= 16, i
    return int.from_bytes(raw[:16], "big")


def check_ids_random(ids: list[str], what: str) -> None:
    """``ids`` in creation order."""
    assert len(set(ids)) == len(ids), f"duplicate {what} ids"
    for i in ids:
        assert len(i) >= 22 and set(i) <= URLSAFE, f"{what} id {i!r}: not 22+ url-safe chars"
    # Not sequential: neither increasing nor decreasing in creation order, no shared
    # prefix (a timestamp or counter prefix, as in ULIDs, would show here).
    ordered = [a < b for a, b in itertools.pairwise(ids)]
    assert 0 < sum(ordered) < len(ordered), f"{what} ids are monotonic: {ids}"
    for a, b in itertools.pairwise(ids):
        assert a[:4] != b[:4], f"consecutive {what} ids share a prefix: {a} {b}"
    nums = [_id_bits(i) for i in ids]
    diffs = {b - a for a, b in itertools.pairwise(nums)}
    assert len(diffs) == len(nums) - 1, f"{what} ids advance by a constant step"


def check_bits_balanced(ids: list[str]) -> None:
    """Each of the 128 bits is 1 in about half the ids (5 sigma bounds): the ids carry
    128 bits of randomness, not a few random bits padded with constants."""
    nums = [_id_bits(i) for i in ids]
    n = len(nums)
    sigma = (n**0.5) / 2
    for bit in range(128):
        ones = sum((x >> bit) & 1 for x in nums)
        assert abs(ones - n / 2) <= 5 * sigma, f"bit {bit} is 1 in {ones} of {n} ids"


def test_ids_are_unguessable(client: TestClient, alice: Account) -> None:
    auth = alice.auth
    node_ids, version_ids, cred_ids = [], [], []
    for k in range(48):
        node_ids.append(
            _ok(client.post(f"{API}/mkdir", json={"path": f"/d{k:03}"}, auth=auth), 201).json()[
                "id"
            ]
        )
    for k in range(48):
        version_ids.append(
            _ok(
                client.put(url_of("files", "/f.txt"), content=f"{k}".encode(), auth=auth), 201
            ).json()["version"]
        )
    file_id = client.get(url_of("tree", "/f.txt"), auth=auth).json()["id"]
    for k in range(12):
        cred_ids.append(
            _ok(
                client.post(f"{API}/auth/app-passwords", json={"name": f"k{k}"}, auth=auth), 201
            ).json()["id"]
        )
    check_ids_random(node_ids, "node")
    check_ids_random(version_ids, "version")
    check_ids_random(cred_ids, "credential")
    everything = [*node_ids, file_id, *version_ids, *cred_ids]
    assert len(set(everything)) == len(everything)
    check_bits_balanced(everything)
    # The trash id is the node id: deleting must not reveal a more guessable handle.
    _ok(client.delete(url_of("files", "/d000"), auth=auth), 204)
    items = client.get(f"{API}/trash", auth=auth).json()["items"]
    assert [i["id"] for i in items] == [node_ids[0]]
