"""Bad input of every kind gets a clear 4xx problem+json, never a 500, and stores nothing.

Names: the one validator is ``core.paths`` (no empty name, no ``.``/``..``, no NUL, no
``/`` inside a name, <= 255 UTF-8 bytes per name, <= 4096 per path, valid UTF-8, NFC).
What the REST adapter does with the URL, decided from ``server.rest.deps.path_after``:
the remote path is the *raw* URL after the route prefix, percent-decoded to bytes and
then decoded as strict UTF-8. Consequences tested here:

* ``%2F`` decodes to ``/`` and so separates names, exactly like a literal ``/``;
* empty components (``a//b``, a trailing ``/``) are folded, by design of ``parse_path``
  (no name can be empty, so ``a//b`` can only mean ``a/b``); ``/api/v1/files/`` names the
  root folder, which is answered as such (409: the root is a folder), not as a bad name;
* ``.``/``..`` reach the server only percent-encoded (httpx removes literal dot
  segments before sending, as browsers do) or from a raw client; both are sent here,
  the raw form straight through the ASGI interface.

In JSON bodies (mkdir, move, copy) a name is a JSON string, so NUL and lone surrogates
can be sent as ``\\u0000``/``\\ud800`` escapes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from allset.runtime import Runtime
from conftest import Account, problem

API = "/api/v1"


def q(path: str) -> str:
    return quote(path, safe="/")


def files_url(path: str) -> str:
    return f"{API}/files" + q(path)


def assert_problem(resp: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.text)
    body = problem(resp)
    for w in words:
        assert w.lower() in body["detail"].lower(), (w, body)
    return body


def usage(client: TestClient, who: Account) -> dict[str, int]:
    r = client.get(f"{API}/me", auth=who.auth)
    assert r.status_code == 200, r.text
    u: dict[str, int] = r.json()["usage"]
    return u


def root_names(client: TestClient, who: Account, path: str = "/") -> list[str]:
    r = client.get(f"{API}/tree" + q(path), auth=who.auth)
    assert r.status_code == 200, r.text
    return [e["name"] for e in r.json()["entries"]]


def volume_files(rt: Runtime) -> set[str]:
    """Everything stored on the volumes; not the ``tmp/<boot>.boot`` marker a process
    leaves once it has written anything (it says a live process may be writing)."""
    out: set[str] = set()
    for v in rt.settings.volume_paths:
        out |= {
            str(p.relative_to(v))
            for p in Path(v).rglob("*")
            if p.is_file() and not (p.parent.name == "tmp" and p.suffix == ".boot")
        }
    return out


def raw_asgi(
    client: TestClient,
    method: str,
    raw_path: bytes,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    query: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """Send a request whose raw path reaches the app byte for byte, as a real HTTP/1.1
    server (uvicorn) passes it: httpx would remove ``.``/``..`` segments first."""
    hdrs = [(b"host", b"testserver")]
    for k, v in (headers or {}).items():
        hdrs.append((k.lower().encode("latin-1"), v.encode("latin-1")))
    if body:
        hdrs.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": unquote(raw_path.decode("latin-1"), errors="replace"),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": query,
        "headers": hdrs,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 443),
        "state": {},
    }
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # pragma: no cover - the app never asks twice
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = {k.decode(): v.decode("latin-1") for k, v in msg["headers"]}
        elif msg["type"] == "http.response.body":
            out["body"] += msg.get("body", b"")

    asyncio.run(client.app(scope, receive, send))  # type: ignore[arg-type]
    return out["status"], out["headers"], out["body"]


def post_json(
    client: TestClient, url: str, obj: Any, auth: tuple[str, str] | None = None
) -> httpx.Response:
    """JSON with \\u escapes, so that lone surrogates can be sent (httpx's own ``json=``
    encodes UTF-8 and cannot)."""
    return client.post(
        url,
        content=json.dumps(obj).encode(),
        headers={"content-type": "application/json"},
        auth=auth,
    )


def basic(who: Account) -> dict[str, str]:
    token = base64.b64encode(f"{who.email}:{who.app_password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# ---- invalid names ------------------------------------------------------------------------

LONG_NAME = "n" * 256
LONG_MULTIBYTE = "\u00e9" * 128  # 128 characters, 256 bytes
LONG_PATH = "/".join(["p" * 250] * 17)  # 17 valid names, 4267 bytes

# (id, as sent in a URL (already percent-encoded), as a JSON string or None, detail words)
BAD_NAMES = [
    ("dot", "%2E", "/a/./b", ["reserved"]),
    ("dotdot", "%2E%2E", "/a/../b", ["reserved"]),
    ("dotdot-mid", "a/%2E%2E/b", "/../etc", ["reserved"]),
    ("nul", "a%00b", "/a\x00b", ["NUL"]),
    ("nul-alone", "%00", "\x00", ["NUL"]),
    ("long-name", LONG_NAME, "/" + LONG_NAME, ["255", "256"]),
    ("long-multibyte", quote(LONG_MULTIBYTE), "/" + LONG_MULTIBYTE, ["255", "256"]),
    ("long-path", LONG_PATH, "/" + LONG_PATH, ["4096"]),
    ("bad-utf8", "%FF%FE", None, ["UTF-8"]),
    ("bad-utf8-mid", "ok/caf%C3%28", None, ["UTF-8"]),
    ("overlong-utf8", "%C0%AF", None, ["UTF-8"]),
    ("surrogate-utf8", "%ED%A0%80", "/\ud800", ["UTF-8"]),
]


@pytest.fixture
def seeded(client: TestClient, alice: Account) -> Account:
    """Alice with /ok.txt and /dir, so that failures cannot be "source missing"."""
    assert client.put(files_url("/ok.txt"), content=b"ok", auth=alice.auth).status_code == 201
    r = client.post(f"{API}/mkdir", json={"path": "/dir"}, auth=alice.auth)
    assert r.status_code == 201
    return alice


def _check_bad_name(
    client: TestClient, auth: tuple[str, str], encoded: str, as_json: str | None, words: list[str]
) -> None:
    for area, method, kw in [
        ("files", "PUT", {"content": b"x"}),
        ("files", "GET", {}),
        ("files", "DELETE", {}),
        ("tree", "GET", {}),
        ("versions", "GET", {}),
        ("versions", "POST", {"json": {"version": "x" * 22}}),
    ]:
        for url in [f"{API}/{area}/{encoded}", f"{API}/{area}/dir/{encoded}"]:
            r = client.request(method, url, auth=auth, **kw)
            body = assert_problem(r, 400, *words)
            assert body["type"].endswith("/invalid-name"), body
    r = client.head(f"{API}/files/{encoded}", auth=auth)
    assert r.status_code == 400
    if as_json is not None:
        for route, payload in [
            ("mkdir", {"path": as_json}),
            ("mkdir", {"path": as_json, "parents": True}),
            ("move", {"from": "/ok.txt", "to": as_json}),
            ("move", {"from": as_json, "to": "/new.txt"}),
            ("copy", {"from": "/ok.txt", "to": as_json}),
            ("copy", {"from": as_json, "to": "/new.txt"}),
        ]:
            r = post_json(client, f"{API}/{route}", payload, auth=auth)
            body = assert_problem(r, 400, *words)
            assert body["type"].endswith("/invalid-name"), body


def test_invalid_names_are_400(client: TestClient, seeded: Account) -> None:
    """PUT/GET/HEAD/DELETE/tree/versions in the URL, mkdir/move/copy in JSON: 400
    invalid-name whose detail names the rule broken; nothing is created."""
    failures = []
    for case, encoded, as_json, words in BAD_NAMES:
        try:
            _check_bad_name(client, seeded.auth, encoded, as_json, words)
        except AssertionError as exc:
            failures.append(f"{case}: {str(exc)[:400]}")
    assert not failures, "\n".join(failures)
    assert root_names(client, seeded) == ["dir", "ok.txt"]
    assert root_names(client, seeded, "/dir") == []


RAW_DOTS = [
    b"/api/v1/files/..",
    b"/api/v1/files/.",
    b"/api/v1/files/a/../ok.txt",
    b"/api/v1/files/./ok.txt",
    b"/api/v1/files/dir/..",
    b"/api/v1/files/dir/../../x",
    b"/api/v1/tree/..",
    b"/api/v1/tree/dir/.",
    b"/api/v1/versions/dir/../ok.txt",
    b"/api/v1/files/%2e%2e",
    b"/api/v1/files/dir/%2e",
]


def test_raw_dot_segments_are_400(client: TestClient, seeded: Account) -> None:
    """Dot segments exactly as a raw HTTP client sends them, never resolved."""
    for raw in RAW_DOTS:
        methods = {
            b"files": ("GET", "HEAD", "PUT", "DELETE"),
            b"tree": ("GET",),
            b"versions": ("GET", "POST"),
        }[raw.split(b"/")[3]]
        for method in methods:
            payload = b'{"version": "x"}' if method == "POST" else b"x"
            hdrs = {**basic(seeded), "content-type": "application/json"}
            status, headers, body = raw_asgi(client, method, raw, hdrs, payload)
            assert status == 400, (method, raw, status, body)
            assert headers["content-type"].startswith("application/problem+json")
            if method == "HEAD":
                continue
            doc = json.loads(body)
            assert doc["status"] == 400
            assert "reserved" in doc["detail"], doc
    assert root_names(client, seeded) == ["dir", "ok.txt"]


def test_raw_request_helper_reaches_files(client: TestClient, seeded: Account) -> None:
    """The raw helper itself works (so the 400s above are the server's doing)."""
    status, _headers, body = raw_asgi(client, "GET", b"/api/v1/files/ok.txt", basic(seeded))
    assert (status, body) == (200, b"ok")


def test_empty_components(client: TestClient, seeded: Account) -> None:
    auth = seeded.auth
    # a//b and a trailing slash are folded: they can only mean a/b.
    r = client.put(f"{API}/files/dir//x.txt", content=b"x", auth=auth)
    assert r.status_code == 201, r.text
    assert r.json()["path"] == "/dir/x.txt"
    assert client.get(f"{API}/files//dir///x.txt/", auth=auth).content == b"x"
    # The root itself: not a name at all, answered as what it is, a folder.
    assert_problem(client.put(f"{API}/files/", content=b"x", auth=auth), 409, "root")
    assert_problem(client.put(f"{API}/files//", content=b"x", auth=auth), 409, "root")
    assert_problem(client.get(f"{API}/files/", auth=auth), 409, "folder")
    assert_problem(client.delete(f"{API}/files/", auth=auth), 403, "root")
    assert_problem(client.get(f"{API}/versions/", auth=auth), 409, "folder")
    for path in ("", "/", "//"):
        assert_problem(client.post(f"{API}/mkdir", json={"path": path}, auth=auth), 409, "root")
        assert_problem(
            client.post(f"{API}/move", json={"from": path, "to": "/y"}, auth=auth), 403, "root"
        )
        assert_problem(
            client.post(f"{API}/move", json={"from": "/ok.txt", "to": path}, auth=auth), 403, "root"
        )
        assert_problem(
            client.post(f"{API}/copy", json={"from": "/ok.txt", "to": path}, auth=auth),
            403,
            "root",
        )
    assert root_names(client, seeded) == ["dir", "ok.txt"]


def test_encoded_slash_is_a_separator(client: TestClient, seeded: Account) -> None:
    auth = seeded.auth
    r = client.put(f"{API}/files/dir%2Fa.txt", content=b"a", auth=auth)
    assert r.status_code == 201, r.text
    assert r.json()["path"] == "/dir/a.txt"
    assert root_names(client, seeded, "/dir") == ["a.txt"]
    assert client.get(f"{API}/files/dir/a.txt", auth=auth).content == b"a"
    assert client.get(f"{API}/files/dir%2fa.txt", auth=auth).content == b"a"
    # a name with '/' cannot exist, in a URL or in JSON: it is always two names
    r = client.post(f"{API}/mkdir", json={"path": "/dir%2Fb"}, auth=auth)
    assert r.status_code == 201  # '%2F' in JSON is three ordinary characters
    assert root_names(client, seeded) == ["dir", "dir%2Fb", "ok.txt"]


def test_nfd_names_are_stored_nfc(client: TestClient, alice: Account) -> None:
    auth = alice.auth
    nfd, nfc = "e\u0301t\u0065\u0301.txt", "\u00e9t\u00e9.txt"
    r = client.put(files_url("/" + nfd), content=b"v1", auth=auth)
    assert r.status_code == 201, r.text
    assert r.json()["path"] == "/" + nfc
    assert root_names(client, alice) == [nfc]
    for name in (nfd, nfc):
        r = client.get(files_url("/" + name), auth=auth)
        assert r.status_code == 200
        assert r.content == b"v1"
        assert quote(nfc, safe="") in r.headers["content-disposition"]
    # Writing through the other form updates the same file.
    r = client.put(files_url("/" + nfc), content=b"v2", auth=auth)
    assert r.json()["created"] is False
    assert len(client.get(f"{API}/versions/" + quote(nfd), auth=auth).json()["versions"]) == 2
    # Folders from JSON bodies too.
    r = client.post(f"{API}/mkdir", json={"path": "/Cafe\u0301"}, auth=auth)
    assert r.status_code == 201
    assert r.json()["name"] == "Caf\u00e9"
    r = client.post(f"{API}/mkdir", json={"path": "/Caf\u00e9"}, auth=auth)
    assert_problem(r, 409)
    r = client.post(f"{API}/move", json={"from": "/" + nfd, "to": "/Cafe\u0301/x"}, auth=auth)
    assert r.status_code == 200, r.text
    assert root_names(client, alice, "/Caf\u00e9") == ["x"]


# ---- JSON bodies ----------------------------------------------------------------------------

JSON_ROUTES = [
    ("mkdir", {"path": "/new"}),
    ("move", {"from": "/ok.txt", "to": "/moved.txt"}),
    ("copy", {"from": "/ok.txt", "to": "/copied.txt"}),
    ("versions/ok.txt", {"version": "x"}),
    ("auth/app-passwords", {"name": "laptop"}),
    ("auth/login", {"email": "a@b.example", "password": "p" * 10}),
]

MALFORMED = [
    b"{",
    b"",
    b"{'path': '/x'}",
    b'{"path": "/x",}',
    b"[]",
    b"null",
    b"42",
    b'"a string"',
    b"{}",
    b'{"path": "\xff\xfe"}',
    b"\xef\xbb\xbf{}",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b'{"path": "' + b"x" * 2_000_000 + b'"}',
]


@pytest.mark.parametrize(("route", "good"), JSON_ROUTES, ids=[r[0] for r in JSON_ROUTES])
def test_malformed_json_bodies(
    client: TestClient, seeded: Account, route: str, good: dict[str, Any]
) -> None:
    url = f"{API}/{route}"
    for body in MALFORMED:
        for ctype in ("application/json", "text/plain", None):
            headers = {"content-type": ctype} if ctype else {}
            r = client.post(url, content=body, headers=headers, auth=seeded.auth)
            assert r.status_code == 400, (route, body[:40], ctype, r.status_code, r.text[:300])
            problem(r)
    # Wrong types and missing fields: every field replaced by each wrong value, and
    # each field left out.
    for key in good:
        for wrong in (5, 1.5, None, True, ["/x"], {"a": 1}):
            payload = {**good, key: wrong}
            r = client.post(url, json=payload, auth=seeded.auth)
            assert r.status_code == 400, (route, payload, r.text)
            body = problem(r)
            assert key in body["detail"], body
        payload = {k: v for k, v in good.items() if k != key}
        r = client.post(url, json=payload, auth=seeded.auth)
        assert r.status_code == 400, (route, payload, r.text)
        assert key in problem(r)["detail"]
    assert root_names(client, seeded) == ["dir", "ok.txt"]


def test_wrong_json_field_values(client: TestClient, seeded: Account) -> None:
    auth = seeded.auth
    for payload in [
        {"path": "/x", "parents": "maybe"},
        {"path": "/x", "parents": [1]},
    ]:
        assert_problem(client.post(f"{API}/mkdir", json=payload, auth=auth), 400, "parents")
    for payload in [{"from": "/ok.txt", "to": "/z", "overwrite": "sometimes"}]:
        assert_problem(client.post(f"{API}/move", json=payload, auth=auth), 400, "overwrite")
    for name in ("", "x" * 201):
        r = client.post(f"{API}/auth/app-passwords", json={"name": name}, auth=auth)
        assert_problem(r, 400, "name")
    r = client.post(f"{API}/auth/login", json={"email": "x" * 400, "password": "y"})
    assert_problem(r, 400, "email")
    r = client.post(f"{API}/auth/login", json={"email": "a@b.c", "password": "y" * 2000})
    assert_problem(r, 400, "password")
    # Unknown fields are ignored, but the known ones still count.
    r = client.post(f"{API}/mkdir", json={"path": "/extra", "colour": "red"}, auth=auth)
    assert r.status_code == 201
    # A version id of the wrong shape is simply not found.
    for vid in ("", "x", "x" * 5000, "\x00", "../../etc/passwd", "' OR 1=1 --"):
        r = client.post(f"{API}/versions/ok.txt", json={"version": vid}, auth=auth)
        assert_problem(r, 404)


# ---- upload headers ---------------------------------------------------------------------


def test_bad_content_length(client: TestClient, runtime: Runtime, alice: Account) -> None:
    auth = alice.auth
    before = usage(client, alice)
    stored = volume_files(runtime)
    for value, status in [
        ("abc", 400),
        ("", 400),
        ("1.5", 400),
        ("0x10", 400),
        ("-3", 400),
        ("2", 400),  # fewer announced than sent
        ("10", 400),  # more announced than sent: an incomplete upload
        (str(10**30), 507),  # more than any quota: refused before a byte is read
    ]:
        r = client.put(
            files_url("/cl.txt"), content=b"abcdef", headers={"content-length": value}, auth=auth
        )
        assert_problem(r, status)
        assert client.get(files_url("/cl.txt"), auth=auth).status_code == 404
    assert usage(client, alice) == before
    assert volume_files(runtime) == stored


def test_ranges(client: TestClient, alice: Account) -> None:
    auth = alice.auth
    url = files_url("/digits.txt")
    assert client.put(url, content=b"0123456789", auth=auth).status_code == 201
    etag = client.head(url, auth=auth).headers["etag"]
    # Malformed or multiple ranges: ignored, the whole file (RFC 9110 allows this).
    for bad in [
        "bytes=abc",
        "bytes=5-2",
        "bytes=0-0,2-3",
        "items=0-5",
        "bytes=-0",
        "bytes=--1",
        "bytes=",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=0x1-2",
        "bytes=1.5-2",
        "garbage",
        b"bytes=\xe9-1",
        "bytes=" + "9" * 5000 + "-1",
        "bytes=-" + "9" * 5000,
        "",
    ]:
        for method in ("GET", "HEAD"):
            r = client.request(method, url, headers={"range": bad}, auth=auth)
            assert r.status_code == 200, (bad, r.status_code, r.text)
            assert r.headers["content-length"] == "10"
            if method == "GET":
                assert r.content == b"0123456789"
    for good, part in [
        ("bytes=2-4", b"234"),
        ("bytes=-3", b"789"),
        ("bytes=7-", b"789"),
        ("bytes=5-999", b"56789"),
        ("bytes=0-" + "9" * 40, b"0123456789"),
        ("bytes=-9999", b"0123456789"),
    ]:
        r = client.get(url, headers={"range": good}, auth=auth)
        assert r.status_code == 206, (good, r.text)
        assert r.content == part
        assert r.headers["content-range"].endswith("/10")
    # If-Range with another validator: the whole file.
    r = client.get(url, headers={"range": "bytes=2-4", "if-range": '"other"'}, auth=auth)
    assert (r.status_code, r.content) == (200, b"0123456789")
    r = client.get(url, headers={"range": "bytes=2-4", "if-range": etag}, auth=auth)
    assert (r.status_code, r.content) == (206, b"234")
    # Unsatisfiable: 416 with a problem and the size, in the body and Content-Range.
    for unsat in ["bytes=10-", "bytes=100-200", "bytes=" + "9" * 30 + "-"]:
        r = client.get(url, headers={"range": unsat}, auth=auth)
        body = assert_problem(r, 416, "10 bytes")
        assert body["size"] == 10
        assert r.headers.get("content-range") == "bytes */10", r.headers
    empty = files_url("/empty.txt")
    assert client.put(empty, content=b"", auth=auth).status_code == 201
    for unsat in ["bytes=0-", "bytes=-5"]:
        assert_problem(client.get(empty, headers={"range": unsat}, auth=auth), 416)
    assert client.get(empty, headers={"range": "bytes=x"}, auth=auth).status_code == 200


def test_bad_conditionals(client: TestClient, alice: Account) -> None:
    auth = alice.auth
    url = files_url("/c.txt")
    assert client.put(url, content=b"one", auth=auth).status_code == 201
    for bad in ["garbage", '"nope"', "W/", ",,,", '"' * 100, "x" * 10_000]:
        assert_problem(client.get(url, headers={"if-match": bad}, auth=auth), 412)
        assert_problem(client.put(url, content=b"two", headers={"if-match": bad}, auth=auth), 412)
        assert_problem(client.delete(url, headers={"if-match": bad}, auth=auth), 412)
        r = client.put(files_url("/new.txt"), content=b"n", headers={"if-match": bad}, auth=auth)
        assert_problem(r, 412)
        # Unparseable If-None-Match / If-Modified-Since never match: a normal 200.
        assert client.get(url, headers={"if-none-match": bad}, auth=auth).status_code == 200
        assert client.get(url, headers={"if-modified-since": bad}, auth=auth).status_code == 200
    assert client.get(url, auth=auth).content == b"one"
    assert client.get(files_url("/new.txt"), auth=auth).status_code == 404
    assert len(client.get(f"{API}/versions/c.txt", auth=auth).json()["versions"]) == 1


def _digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


@pytest.mark.parametrize("header", ["repr-digest", "content-digest"])
def test_bad_digests(client: TestClient, runtime: Runtime, alice: Account, header: str) -> None:
    auth = alice.auth
    url = files_url("/d.txt")
    before = usage(client, alice)
    stored = volume_files(runtime)
    data = b"digest test content " + header.encode()
    for bad in [
        "sha-256=:not base64!:",
        "sha-256=:AAAA:",  # 3 bytes
        "sha-256=:" + base64.b64encode(b"x" * 31).decode() + ":",
        "sha-256=:" + base64.b64encode(b"x" * 33).decode() + ":",
        "sha-256=:AAA:",  # bad padding
        "sha-256=:====:",
        "sha-256=" + hashlib.sha256(data).hexdigest(),  # hex, not a byte sequence
        "sha-256",
    ]:
        r = client.put(url, content=data, headers={header: bad}, auth=auth)
        assert_problem(r, 400, "sha-256")
    # Well-formed but wrong: the body does not hash to it.
    for wrong in [_digest(b"something else"), "sha-512=:AAAA:, " + _digest(b"other")]:
        r = client.put(url, content=data, headers={header: wrong}, auth=auth)
        body = assert_problem(r, 400, "does not match")
        assert body["type"].endswith("/digest-mismatch")
    assert client.get(url, auth=auth).status_code == 404
    assert usage(client, alice) == before
    assert volume_files(runtime) == stored
    # An overwrite with a wrong digest leaves the stored file as it was.
    assert client.put(url, content=b"kept", auth=auth).status_code == 201
    used = usage(client, alice)
    stored = volume_files(runtime)
    r = client.put(url, content=data, headers={header: _digest(b"nope")}, auth=auth)
    assert_problem(r, 400)
    assert client.get(url, auth=auth).content == b"kept"
    assert len(client.get(f"{API}/versions/d.txt", auth=auth).json()["versions"]) == 1
    assert usage(client, alice) == used
    assert volume_files(runtime) == stored
    # The right digest, and algorithms we do not check, are accepted.
    r = client.put(url, content=data, headers={header: _digest(data)}, auth=auth)
    assert r.status_code == 201, r.text
    r = client.put(url, content=b"other", headers={header: "sha-512=:AAAA:"}, auth=auth)
    assert r.status_code == 201, r.text


def test_bad_mtime(client: TestClient, alice: Account) -> None:
    auth = alice.auth
    url = files_url("/m.txt")
    for header in ("x-allset-mtime", "x-oc-mtime"):
        for bad in [
            "yesterday",
            "nan",
            "inf",
            "-inf",
            "-1",
            "1e400",
            "99999999999999999999",
            "253402300800",
            "2024-01-01T00:00:00",  # no offset
            "2024-13-01T00:00:00+00:00",
            "2024-01-01T25:00:00Z",
            "0x10",
            "1" * 5000,
        ]:
            r = client.put(url, content=b"m", headers={header: bad}, auth=auth)
            assert_problem(r, 400, "time")
            assert client.get(url, auth=auth).status_code == 404
    r = client.put(url, content=b"m", headers={"x-allset-mtime": "1700000000.5"}, auth=auth)
    assert r.status_code == 201
    assert r.json()["mtime"].startswith("2023-11-14T22:13:20.5")
    r = client.put(
        url, content=b"m", headers={"x-allset-mtime": "2020-02-02T10:00:00+01:00"}, auth=auth
    )
    assert r.status_code == 201
    assert r.json()["mtime"].startswith("2020-02-02T09:00:00")


# ---- query parameters -----------------------------------------------------------------------


def test_huge_and_bad_query_params(client: TestClient, seeded: Account) -> None:
    auth = seeded.auth
    for limit in ["0", "-1", "1001", str(10**30), "abc", "1.5", "", "1e3", "%00"]:
        r = client.get(f"{API}/tree/?limit={limit}", auth=auth)
        assert_problem(r, 400, "limit")
    assert client.get(f"{API}/tree/?limit=1000", auth=auth).status_code == 200
    r = client.get(f"{API}/tree/?limit=1", auth=auth)
    assert [e["name"] for e in r.json()["entries"]] == ["dir"]
    assert r.json()["next"] == "dir"
    for after in ["z" * 30_000, "%00", "a%00b", "%FF%FE", "%ED%A0%80", "\U0010ffff", "'--"]:
        r = client.get(f"{API}/tree/?after={after}", auth=auth)
        assert r.status_code in (200, 400), (after, r.status_code, r.text[:300])
        if r.status_code == 400:
            problem(r)
    r = client.get(f"{API}/tree/?after={'z' * 30_000}", auth=auth)
    assert r.json()["entries"] == []
    # ?version= with ids of every wrong shape: not found, never a crash.
    for version in ["", "x", "x" * 30_000, "%00", "%FF", "' OR 1=1 --", "a%00b" * 5]:
        r = client.get(f"{API}/files/ok.txt?version={version}", auth=auth)
        if version == "":
            assert r.status_code == 200  # empty means the current version
        else:
            assert_problem(r, 404)
    # Ids in the URL of trash and credential routes, of every wrong shape.
    for item in ["x", "x" * 5000, "%00", "%FF%FE", "..%2F..", "%20"]:
        for method, url in [
            ("POST", f"{API}/trash/{item}/restore"),
            ("DELETE", f"{API}/trash/{item}"),
            ("DELETE", f"{API}/auth/credentials/{item}"),
        ]:
            r = client.request(method, url, auth=auth)
            assert_problem(r, 404)


def test_unknown_urls(client: TestClient, alice: Account) -> None:
    for url in [
        f"{API}/nope",
        f"{API}/",
        f"{API}/auth",
        f"{API}/trash/a/b/c",
        f"{API}/FILES/x",
        f"{API}/mkdir/extra",
        "/api/v2/files/x",
        "/api/v1x",
        "/nothing-here",
    ]:
        for auth in (alice.auth, None):
            r = client.get(url, auth=auth)
            assert r.status_code == 404, (url, r.status_code, r.text)
            assert "No such URL" in problem(r)["detail"]
    for method, url in [
        ("PATCH", f"{API}/files/x"),
        ("DELETE", f"{API}/me"),
        ("GET", f"{API}/mkdir"),
        ("PUT", f"{API}/trash"),
    ]:
        r = client.request(method, url, auth=alice.auth)
        assert r.status_code == 405, (method, url, r.text)
        problem(r)


# ---- property: nothing makes the server fail ----------------------------------------------

SEGMENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=80).map(lambda s: s.encode("utf-8")),
    st.sampled_from(
        [
            b".",
            b"..",
            b"\x00",
            b"/",
            b"%",
            b"%2F",
            b"\xff",
            b"\xed\xa0\x80",
            b"\n",
            b"\r\n",
            b" ",
            b"?",
            b"#",
            b"\\",
            "e\u0301".encode(),
        ]
    ),
)
TEXT = st.one_of(
    st.text(max_size=100),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zs", "Lo"]), max_size=20),
    st.sampled_from(["", ".", "..", "/", "\x00", "a\x00b", "\ud800", "/..", "/a/../b"]),
)
# Any bytes a header can carry (no CR, LF or NUL: those cannot be sent at all).
HEADER_VALUE = st.binary(max_size=200).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"").strip()
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "range",
            "if-match",
            "if-none-match",
            "if-modified-since",
            "if-range",
            "repr-digest",
            "content-digest",
            "x-allset-mtime",
            "x-oc-mtime",
            "content-type",
        ]
    ),
    HEADER_VALUE,
    max_size=4,
)
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _no_500(r: httpx.Response) -> None:
    assert r.status_code < 500 or r.status_code in (507,), (
        r.request.method,
        r.request.url,
        r.request.headers,
        r.status_code,
        r.text[:500],
    )
    if r.status_code >= 400 and r.request.method != "HEAD":
        problem(r)


@FUZZ
@given(
    segments=st.lists(SEGMENT, min_size=1, max_size=4),
    headers=HEADERS,
    area=st.sampled_from(["files", "tree", "versions"]),
    method=st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "POST"]),
)
def test_fuzz_paths_and_headers(
    client: TestClient,
    seeded: Account,
    segments: list[bytes],
    headers: dict[str, bytes],
    area: str,
    method: str,
) -> None:
    raw = "/".join(quote(s, safe="") for s in segments)
    for prefix in ("", "dir/", "ok.txt/"):
        url = f"{API}/{area}/{prefix}{raw}"
        kw: dict[str, Any] = {"headers": headers, "auth": seeded.auth}
        if method == "PUT":
            kw["content"] = b"fuzz"
        if method == "POST":
            kw["json"] = {"version": "x"}
        _no_500(client.request(method, url, **kw))
    # The files that were there are still readable.
    assert client.get(files_url("/ok.txt"), auth=seeded.auth).status_code in (200, 404)


# login and app passwords cost an argon2 hash or verification each: fewer examples.
@settings(FUZZ, max_examples=80)
@given(
    a=TEXT,
    b=TEXT,
    flag=st.one_of(st.booleans(), st.none(), st.text(max_size=5)),
    route=st.sampled_from(["mkdir", "move", "copy", "auth/login", "auth/app-passwords"]),
)
def test_fuzz_json_bodies(
    client: TestClient, seeded: Account, a: str, b: str, flag: Any, route: str
) -> None:
    body = {
        "path": a,
        "from": a,
        "to": b,
        "parents": flag,
        "overwrite": flag,
        "email": a,
        "password": b,
        "name": a,
    }
    _no_500(post_json(client, f"{API}/{route}", body, auth=seeded.auth))


@FUZZ
@given(
    after=SEGMENT,
    limit=st.one_of(st.integers(), st.text(max_size=10)),
    version=SEGMENT,
    item=SEGMENT,
)
def test_fuzz_query_and_ids(
    client: TestClient, seeded: Account, after: bytes, limit: Any, version: bytes, item: bytes
) -> None:
    auth = seeded.auth
    qa, qv, qi = quote(after, safe=""), quote(version, safe=""), quote(item, safe="")
    _no_500(client.get(f"{API}/tree/?after={qa}&limit={quote(str(limit), safe='')}", auth=auth))
    _no_500(client.get(f"{API}/tree/?after={qa}", auth=auth))
    _no_500(client.get(f"{API}/files/ok.txt?version={qv}", auth=auth))
    _no_500(
        client.post(
            f"{API}/versions/ok.txt", json={"version": version.decode("latin-1")}, auth=auth
        )
    )
    if qi:
        _no_500(client.post(f"{API}/trash/{qi}/restore", auth=auth))
        _no_500(client.delete(f"{API}/trash/{qi}", auth=auth))
        _no_500(client.delete(f"{API}/auth/credentials/{qi}", auth=auth))


_addresses = itertools.count()


# Well-formed credentials cost an argon2 verification (~0.2 s) each: fewer examples.
@settings(FUZZ, max_examples=30)
@given(
    value=HEADER_VALUE,
    user=TEXT,
    password=TEXT,
    scheme=st.sampled_from(["Basic", "Bearer", "basic", "Digest", ""]),
)
def test_fuzz_credentials(
    client: TestClient, value: bytes, user: str, password: str, scheme: str
) -> None:
    """Garbage credentials: 400/401/429, never 500. Each example from a client address of
    its own, so that the failures it piles up do not throttle the next one."""
    fuzz = TestClient(
        client.app,
        base_url="https://testserver",
        client=(f"fuzz-{next(_addresses)}", 1),
        raise_server_exceptions=False,
    )
    utf8 = password.encode("utf-8", "surrogatepass")
    encoded = base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass"))
    for header in [
        scheme.encode() + b" " + value,
        b"Basic " + encoded,
        b"Bearer ap-" + value,
        b"Bearer ss-" + utf8.replace(b"\r", b"").replace(b"\n", b""),
    ]:
        r = fuzz.get(f"{API}/me", headers={"authorization": header})
        _no_500(r)
        assert r.status_code in (400, 401, 429), r.text
    _no_500(post_json(fuzz, f"{API}/auth/login", {"email": user, "password": password}))


def test_unexpected_failure_is_still_a_problem(
    client: TestClient, runtime: Runtime, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug answers 500 in the API's one error format, with no traceback or internals."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals /srv/allset/db")

    monkeypatch.setattr(runtime.files, "usage", broken)
    r = client.get(f"{API}/me", auth=alice.auth)
    body = assert_problem(r, 500)
    assert "internals" not in r.text
    assert "Traceback" not in r.text
    assert body["detail"]


def test_line_feed_in_a_name_is_handled_consistently(client: TestClient, alice: Account) -> None:
    """Either names with control characters are refused everywhere (400 invalid-name), or
    they work everywhere; not creatable through one route and unreachable through others."""
    auth = alice.auth
    made = client.post(f"{API}/mkdir", json={"path": "/line\nfeed"}, auth=auth)
    put = client.put(f"{API}/files/a%0Ab.txt", content=b"x", auth=auth)
    if made.status_code == 400 or put.status_code == 400:
        assert_problem(made, 400)
        assert_problem(put, 400)
        return
    assert made.status_code == 201, made.text
    assert put.status_code == 201, put.text
    assert client.get(f"{API}/files/a%0Ab.txt", auth=auth).content == b"x"
    assert client.get(f"{API}/tree/line%0Afeed", auth=auth).status_code == 200
    assert client.delete(f"{API}/files/line%0Afeed", auth=auth).status_code == 204


def test_transaction_lost_to_a_concurrent_one_is_503_not_500() -> None:
    """PostgreSQL aborts one of two deadlocked transactions (SQLSTATE 40P01); the request
    that lost is told to retry (503 + Retry-After), never a 500."""
    import asyncio

    from sqlalchemy.exc import OperationalError
    from starlette.requests import Request

    from allset.server.app import _database_error

    class Deadlock(Exception):
        sqlstate = "40P01"

    exc = OperationalError("UPDATE nodes ...", {}, Deadlock("deadlock detected"))
    request = Request({"type": "http", "method": "PUT", "path": "/", "headers": []})
    resp = asyncio.run(_database_error(request, exc))
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert resp.headers["content-type"] == "application/problem+json"

    class Other(Exception):
        sqlstate = "53100"  # disk full: a real failure, not a retry

    other = OperationalError("INSERT ...", {}, Other("no space"))
    with pytest.raises(OperationalError):
        asyncio.run(_database_error(request, other))
