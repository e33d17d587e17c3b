"""WebDAV at /dav/ through the whole ASGI app (a2wsgi + WsgiDAV + our provider), on SQLite
and PostgreSQL. Conformance is litmus' job (tests/system/test_dav_clients.py); these are
the rules of this service: isolation, quota, proof of transfer, finite depth, properties,
conditional writes, macOS metadata files, Windows-style uploads."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote
from xml.etree import ElementTree

import pytest
from starlette.testclient import TestClient

from allset.runtime import Runtime, build_runtime, initialise
from allset.server.app import build_app
from allset.settings import load_settings
from conftest import Account, make_account

PROPFIND_ALL = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'


def quota_propfind() -> bytes:
    return (
        b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop>'
        b"<quota-used-bytes/><quota-available-bytes/></prop></propfind>"
    )


def digest_header(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def dav(client: TestClient, method: str, path: str, who: Account, **kw: object):  # type: ignore[no-untyped-def]
    return client.request(method, "/dav" + path, auth=who.auth, **kw)  # type: ignore[arg-type]


def test_put_get_head_carry_the_stored_sha256(client: TestClient, alice: Account) -> None:
    data = b"proof of transfer\n" * 1000
    r = dav(client, "PUT", "/report.txt", alice, content=data)
    assert r.status_code == 201, r.text
    assert r.headers["repr-digest"] == digest_header(data)
    etag = r.headers["etag"]
    g = dav(client, "GET", "/report.txt", alice)
    assert g.status_code == 200 and g.content == data
    assert g.headers["repr-digest"] == digest_header(data)
    assert g.headers["etag"] == etag
    h = dav(client, "HEAD", "/report.txt", alice)
    assert h.headers["repr-digest"] == digest_header(data) and h.content == b""
    part = dav(client, "GET", "/report.txt", alice, headers={"Range": "bytes=18-35"})
    assert part.status_code == 206 and part.content == data[18:36]
    # Overwrite keeps the previous version (the REST API lists both).
    assert dav(client, "PUT", "/report.txt", alice, content=b"v2").status_code == 204
    versions = client.get("/api/v1/versions/report.txt", auth=alice.auth).json()
    assert len(versions["versions"]) == 2


def test_sha256_and_quota_properties(client: TestClient, alice: Account) -> None:
    data = b"x" * 5000
    dav(client, "PUT", "/a.bin", alice, content=data)
    r = dav(client, "PROPFIND", "/a.bin", alice, headers={"Depth": "0"}, content=PROPFIND_ALL)
    assert r.status_code == 207
    assert hashlib.sha256(data).hexdigest() in r.text and "urn:allset:dav:" in r.text
    # RFC 4331: quota properties on request, not in allprop.
    assert "quota-used-bytes" not in r.text
    q = dav(client, "PROPFIND", "/", alice, headers={"Depth": "0"}, content=quota_propfind())
    assert q.status_code == 207
    usage = client.get("/api/v1/me", auth=alice.auth).json()
    used = usage.get("used_bytes", usage.get("usage", {}).get("used_bytes"))
    assert f"quota-used-bytes>{used}<" in q.text.replace("ns0:", "")
    assert "quota-available-bytes>" in q.text.replace("ns0:", "")


def test_sha256_property_is_protected(client: TestClient, alice: Account) -> None:
    dav(client, "PUT", "/a.bin", alice, content=b"abc")
    body = (
        b'<?xml version="1.0"?><propertyupdate xmlns="DAV:" xmlns:a="urn:allset:dav:">'
        b"<set><prop><a:sha256>forged</a:sha256></prop></set></propertyupdate>"
    )
    r = dav(client, "PROPPATCH", "/a.bin", alice, content=body)
    assert r.status_code == 207 and "403" in r.text
    again = dav(client, "PROPFIND", "/a.bin", alice, headers={"Depth": "0"})
    assert hashlib.sha256(b"abc").hexdigest() in again.text and "forged" not in again.text


@pytest.mark.parametrize("depth", ["infinity", None])
def test_propfind_depth_infinity_refused(
    client: TestClient, alice: Account, depth: str | None
) -> None:
    headers = {"Depth": depth} if depth else {}
    r = dav(client, "PROPFIND", "/", alice, headers=headers)
    assert r.status_code == 403
    assert "propfind-finite-depth" in r.text


def test_dead_properties_persist_move_and_copy(client: TestClient, alice: Account) -> None:
    dav(client, "PUT", "/doc.txt", alice, content=b"hello")
    body = (
        b'<?xml version="1.0"?><propertyupdate xmlns="DAV:" xmlns:z="urn:example:z">'
        b"<set><prop><z:colour>bleu</z:colour></prop></set></propertyupdate>"
    )
    assert dav(client, "PROPPATCH", "/doc.txt", alice, content=body).status_code == 207
    dest = {"Destination": "https://testserver/dav/moved.txt"}
    assert dav(client, "MOVE", "/doc.txt", alice, headers=dest).status_code == 201
    copy = {"Destination": "https://testserver/dav/copied.txt"}
    assert dav(client, "COPY", "/moved.txt", alice, headers=copy).status_code == 201
    for path in ("/moved.txt", "/copied.txt"):
        r = dav(client, "PROPFIND", path, alice, headers={"Depth": "0"}, content=PROPFIND_ALL)
        assert "bleu" in r.text, (path, r.text)
    gone = dav(client, "PROPFIND", "/doc.txt", alice, headers={"Depth": "0"})
    assert gone.status_code == 404


def test_conditional_writes(client: TestClient, alice: Account) -> None:
    missing = dav(client, "PUT", "/new.txt", alice, content=b"x", headers={"If-Match": "*"})
    assert missing.status_code == 412
    assert dav(client, "GET", "/new.txt", alice).status_code == 404
    r = dav(client, "PUT", "/new.txt", alice, content=b"one")
    etag = r.headers["etag"]
    clash = dav(client, "PUT", "/new.txt", alice, content=b"two", headers={"If-None-Match": "*"})
    assert clash.status_code == 412
    stale = dav(client, "PUT", "/new.txt", alice, content=b"two", headers={"If-Match": '"old"'})
    assert stale.status_code == 412
    ok = dav(client, "PUT", "/new.txt", alice, content=b"two", headers={"If-Match": etag})
    assert ok.status_code == 204
    assert dav(client, "GET", "/new.txt", alice).content == b"two"


def test_windows_style_chunked_put_without_length(client: TestClient, alice: Account) -> None:
    """The Windows redirector streams with Transfer-Encoding: chunked and no length."""
    pieces = [bytes([i]) * 300_000 for i in range(7)]

    def body() -> Iterator[bytes]:
        yield from pieces

    r = dav(client, "PUT", "/big.bin", alice, content=body(), headers={"Translate": "f"})
    assert r.status_code == 201, r.text
    assert dav(client, "GET", "/big.bin", alice).content == b"".join(pieces)


def test_expected_entity_length_mismatch_stores_nothing(client: TestClient, alice: Account) -> None:
    """macOS Finder announces the size in X-Expected-Entity-Length; a short body is refused."""

    def body() -> Iterator[bytes]:
        yield b"a" * 1000

    r = dav(
        client,
        "PUT",
        "/short.bin",
        alice,
        content=body(),
        headers={"X-Expected-Entity-Length": "5000"},
    )
    assert r.status_code == 400
    assert dav(client, "GET", "/short.bin", alice).status_code == 404


def test_over_quota_put_answers_507_and_leaves_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    small = make_account(runtime, quota=100_000, name="tiny")
    r = dav(client, "PUT", "/too-big.bin", small, content=b"z" * 200_000)
    assert r.status_code == 507
    assert dav(client, "GET", "/too-big.bin", small).status_code == 404
    assert runtime.files.usage(small.principal).used == 0

    def body() -> Iterator[bytes]:  # no length announced: refused while streaming
        for _ in range(4):
            yield b"q" * 50_000

    r = dav(client, "PUT", "/stream.bin", small, content=body())
    assert r.status_code == 507
    assert dav(client, "GET", "/stream.bin", small).status_code == 404
    assert runtime.files.usage(small.principal).used == 0


def test_another_clients_paths_answer_404(client: TestClient, alice: Account, bob: Account) -> None:
    dav(client, "MKCOL", "/private", alice)
    dav(client, "PUT", "/private/plan.txt", alice, content=b"secret")
    target = {"Destination": "https://testserver/dav/stolen.txt"}
    for method, kw in [
        ("GET", {}),
        ("HEAD", {}),
        ("PROPFIND", {"headers": {"Depth": "0"}}),
        ("PROPPATCH", {"content": b'<propertyupdate xmlns="DAV:"/>'}),
        ("DELETE", {}),
        ("COPY", {"headers": target}),
        ("MOVE", {"headers": target}),
        ("UNLOCK", {"headers": {"Lock-Token": "<opaquelocktoken:x>"}}),
    ]:
        r = dav(client, method, "/private/plan.txt", bob, **kw)
        assert r.status_code == 404, (method, r.status_code, r.text)
    # Writing there lands nowhere in Alice's space: Bob has no such folder.
    assert dav(client, "PUT", "/private/plan.txt", bob, content=b"x").status_code == 409
    listing = dav(client, "PROPFIND", "/", bob, headers={"Depth": "1"})
    assert "private" not in listing.text
    assert dav(client, "GET", "/private/plan.txt", alice).content == b"secret"


def test_locks_belong_to_one_client(client: TestClient, alice: Account, bob: Account) -> None:
    """WsgiDAV keeps locks by path; each Client has its own lock table."""
    for who in (alice, bob):
        dav(client, "PUT", "/same.txt", who, content=b"mine")
    lock = (
        b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
        b"<locktype><write/></locktype><owner>alice</owner></lockinfo>"
    )
    r = dav(client, "LOCK", "/same.txt", alice, content=lock, headers={"Timeout": "Second-60"})
    assert r.status_code == 200
    assert dav(client, "PUT", "/same.txt", alice, content=b"no token").status_code == 423
    assert dav(client, "PUT", "/same.txt", bob, content=b"bob writes").status_code == 204
    token = r.headers["lock-token"]
    ok = dav(client, "PUT", "/same.txt", alice, content=b"a2", headers={"If": f"({token})"})
    assert ok.status_code == 204


def test_unauthenticated_and_throttled(client: TestClient, alice: Account) -> None:
    r = client.request("PROPFIND", "/dav/", headers={"Depth": "0"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    statuses = [
        client.request("PROPFIND", "/dav/", auth=(alice.email, f"wrong{i}")).status_code
        for i in range(12)
    ]
    assert statuses[0] == 401 and 429 in statuses
    limited = client.request("PROPFIND", "/dav/", auth=(alice.email, "wrong again"))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


@pytest.fixture
def apple_client(
    tmp_path: Path, db_url: str, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, Account]]:
    settings = load_settings(
        tmp_path / "apple",
        database_url=db_url or None,
        log_json=False,
        dav_apple_files=request.param,
    )
    initialise(settings)
    rt = build_runtime(settings)
    who = make_account(rt, name="mac")
    with TestClient(build_app(rt, tls=False), base_url="https://testserver") as c:
        yield c, who
    rt.close()


@pytest.mark.parametrize("apple_client", ["hide"], indirect=True)
def test_macos_metadata_hidden(apple_client: tuple[TestClient, Account]) -> None:
    client, who = apple_client
    assert dav(client, "PUT", "/photo.jpg", who, content=b"jpg").status_code == 201
    assert dav(client, "PUT", "/._photo.jpg", who, content=b"resource fork").status_code == 201
    assert dav(client, "PUT", "/.DS_Store", who, content=b"finder").status_code == 201
    assert dav(client, "GET", "/._photo.jpg", who).content == b"resource fork"  # Finder reads back
    listing = dav(client, "PROPFIND", "/", who, headers={"Depth": "1"}).text
    assert "photo.jpg" in listing and "._photo.jpg" not in listing and ".DS_Store" not in listing


@pytest.mark.parametrize("apple_client", ["refuse"], indirect=True)
def test_macos_metadata_refused(apple_client: tuple[TestClient, Account]) -> None:
    client, who = apple_client
    r = dav(client, "PUT", "/._photo.jpg", who, content=b"resource fork")
    assert r.status_code == 403
    assert dav(client, "GET", "/._photo.jpg", who).status_code == 404
    assert dav(client, "PUT", "/photo.jpg", who, content=b"jpg").status_code == 201


def test_depth1_shows_each_dead_property_on_its_own_resource(
    client: TestClient, alice: Account, bob: Account
) -> None:
    """A depth-1 PROPFIND reads the folder's and its children's dead properties in one
    statement (``folder_properties``): each shows on its own resource, never on another
    one, and nothing of a grandchild or of another Client's same-named folder appears."""
    for who in (alice, bob):
        dav(client, "MKCOL", "/p", who)
        dav(client, "MKCOL", "/p/sub", who)
        dav(client, "PUT", "/p/sub/deep.txt", who, content=b"d")
        dav(client, "PUT", "/p/f.txt", who, content=b"f")

    def tag(value: str) -> bytes:
        return (
            b'<?xml version="1.0"?><propertyupdate xmlns="DAV:" xmlns:z="urn:example:z">'
            b"<set><prop><z:tag>" + value.encode() + b"</z:tag></prop></set></propertyupdate>"
        )

    for path, value in (("/p/", "folder"), ("/p/f.txt", "file"), ("/p/sub/deep.txt", "deep")):
        assert dav(client, "PROPPATCH", path, alice, content=tag(value)).status_code == 207
    assert dav(client, "PROPPATCH", "/p/sub/", bob, content=tag("bob's")).status_code == 207
    r = dav(client, "PROPFIND", "/p/", alice, headers={"Depth": "1"})
    assert r.status_code == 207
    tags = {
        unquote(resp.findtext("{DAV:}href") or ""): [
            t.text for t in resp.iter("{urn:example:z}tag")
        ]
        for resp in ElementTree.fromstring(r.content).iter("{DAV:}response")
    }
    assert tags == {"/dav/p/": ["folder"], "/dav/p/f.txt": ["file"], "/dav/p/sub/": []}


def test_depth1_listing_is_well_formed_for_odd_names(client: TestClient, alice: Account) -> None:
    names = ["a & b.txt", "<tag>.txt", "100%.txt", "x#y?.txt", "fête 🎉.txt", "sp ace"]
    dav(client, "MKCOL", "/odd", alice)
    for n in names:
        assert dav(client, "PUT", f"/odd/{quote(n)}", alice, content=n.encode()).status_code == 201
    body = (
        b'<?xml version="1.0"?><propertyupdate xmlns="DAV:" xmlns:z="urn:example:z">'
        b"<set><prop><z:tag>&lt;important&gt;</z:tag></prop></set></propertyupdate>"
    )
    dav(client, "PROPPATCH", f"/odd/{quote(names[0])}", alice, content=body)
    r = dav(client, "PROPFIND", "/odd/", alice, headers={"Depth": "1"})
    assert r.status_code == 207
    tree = ElementTree.fromstring(r.content)
    hrefs = [unquote(h.text or "") for h in tree.iter("{DAV:}href")]
    assert hrefs[0] == "/dav/odd/"
    assert sorted(h.removeprefix("/dav/odd/") for h in hrefs[1:]) == sorted(names)
    assert "<important>" in "".join(tree.itertext())  # the dead property, unescaped once

    named = (
        b'<?xml version="1.0"?><propfind xmlns="DAV:" xmlns:z="urn:example:z"><prop>'
        b"<getcontentlength/><z:tag/><z:absent/></prop></propfind>"
    )
    r = dav(
        client, "PROPFIND", f"/odd/{quote(names[0])}", alice, headers={"Depth": "0"}, content=named
    )
    tree = ElementTree.fromstring(r.content)
    statuses = {
        ps.findtext("{DAV:}status"): [c.tag for c in ps.iterfind("{DAV:}prop/*")]
        for ps in tree.iter("{DAV:}propstat")
    }
    assert statuses["HTTP/1.1 200 OK"] == ["{DAV:}getcontentlength", "{urn:example:z}tag"]
    assert statuses["HTTP/1.1 404 Not Found"] == ["{urn:example:z}absent"]


def test_windows_explorer_save_sequence(client: TestClient, alice: Account) -> None:
    """What the Windows redirector does when an application saves a new file: LOCK the
    unmapped name (creates an empty file), PUT chunked with the lock token and
    ``Translate: f``, PROPPATCH its Win32 times, UNLOCK."""
    lock = (
        b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        b"</D:lockscope><D:locktype><D:write/></D:locktype>"
        b"<D:owner><D:href>WIN\\alice</D:href></D:owner></D:lockinfo>"
    )
    r = dav(client, "LOCK", "/Budget.xlsx", alice, content=lock, headers={"Timeout": "Second-3600"})
    assert r.status_code in (200, 201), r.text
    token = r.headers["lock-token"]
    assert dav(client, "GET", "/Budget.xlsx", alice).content == b""

    def body() -> Iterator[bytes]:
        yield b"PK\x03\x04" + b"\x00" * 5000

    put = dav(
        client,
        "PUT",
        "/Budget.xlsx",
        alice,
        content=body(),
        headers={"If": f"({token})", "Translate": "f"},
    )
    assert put.status_code == 204, put.text
    times = (
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" '
        b'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
        b"<Z:Win32LastModifiedTime>Sat, 28 Nov 2026 10:00:00 GMT</Z:Win32LastModifiedTime>"
        b"<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>"
        b"</D:prop></D:set></D:propertyupdate>"
    )
    pp = dav(
        client, "PROPPATCH", "/Budget.xlsx", alice, content=times, headers={"If": f"({token})"}
    )
    assert pp.status_code == 207 and "200 OK" in pp.text
    assert (
        dav(client, "UNLOCK", "/Budget.xlsx", alice, headers={"Lock-Token": token}).status_code
        == 204
    )
    got = dav(client, "PROPFIND", "/Budget.xlsx", alice, headers={"Depth": "0"})
    assert "00000020" in got.text and "Win32LastModifiedTime" in got.text
    assert dav(client, "GET", "/Budget.xlsx", alice).content.startswith(b"PK")


def test_root_probe_and_mount_without_slash(client: TestClient, alice: Account) -> None:
    """Windows probes ``OPTIONS /`` and may address ``/dav`` without the slash."""
    probe = client.request("OPTIONS", "/")
    assert probe.status_code == 200 and probe.headers["dav"].startswith("1")
    assert probe.headers["ms-author-via"] == "DAV"
    dav(client, "PUT", "/seen.txt", alice, content=b"x")
    r = client.request("PROPFIND", "/dav", auth=alice.auth, headers={"Depth": "1"})
    assert r.status_code == 207 and "/dav/seen.txt" in r.text
    assert client.request("PROPFIND", "/dav", headers={"Depth": "0"}).status_code == 401
