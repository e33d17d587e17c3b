"""The server side of sync (R-SYNC-1): change feed with long-poll, snapshot, batch chunk
upload and download, batch commit — through the whole app, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from allset.core.paths import parse_path
from allset.files import events
from allset.files.batch import MAX_BATCH_BODY
from allset.files.upload import MAX_CHUNK, store_bytes
from allset.runtime import Runtime
from conftest import Account, later, problem

API = "/api/v1"


@pytest.fixture
def http(client: TestClient, alice: Account) -> TestClient:
    client.auth = alice.auth
    return client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frames(chunks: list[bytes], names: list[str] | None = None) -> bytes:
    names = names or [sha(c) for c in chunks]
    return b"".join(
        bytes.fromhex(h) + len(c).to_bytes(4, "big") + c for h, c in zip(names, chunks, strict=True)
    )


def parse_frames(body: bytes) -> list[tuple[str, bytes]]:
    out, pos = [], 0
    while pos < len(body):
        digest = body[pos : pos + 32].hex()
        n = int.from_bytes(body[pos + 32 : pos + 36], "big")
        out.append((digest, body[pos + 36 : pos + 36 + n]))
        pos += 36 + n
    assert pos == len(body)
    return out


def feed(http: TestClient, **params: Any) -> dict[str, Any]:
    r = http.get(f"{API}/changes", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def missing(http: TestClient, digests: list[str]) -> list[str]:
    r = http.post(f"{API}/chunks/missing", json={"chunks": digests})
    assert r.status_code == 200, r.text
    found: list[str] = r.json()["missing"]
    return found


# ---- change feed ---------------------------------------------------------------------------


def test_feed_order_cursor_limit_more(http: TestClient, bob: Account) -> None:
    start = feed(http)
    assert start["changes"] == [] and start["more"] is False
    c0 = start["cursor"]
    assert feed(http, since=c0)["changes"] == []

    assert http.post(f"{API}/mkdir", json={"path": "/A"}).status_code == 201
    assert http.put(f"{API}/files/A/x.txt", content=b"x").status_code == 201
    assert http.post(f"{API}/move", json={"from": "/A/x.txt", "to": "/A/y.txt"}).status_code == 200
    assert http.post(f"{API}/copy", json={"from": "/A/y.txt", "to": "/z.txt"}).status_code == 201
    assert http.delete(f"{API}/files/z.txt").status_code == 204
    # Bob's changes never show in Alice's feed.
    assert http.put(f"{API}/files/bob.txt", content=b"b", auth=bob.auth).status_code == 201

    full = feed(http, since=c0)
    got = [(c["kind"], c["path"], c["source"]) for c in full["changes"]]
    assert got == [
        ("mkdir", "/A", None),
        ("put", "/A/x.txt", None),
        ("move", "/A/y.txt", "/A/x.txt"),
        ("copy", "/z.txt", "/A/y.txt"),
        ("trash", "/z.txt", None),
    ]
    ids = [c["id"] for c in full["changes"]]
    assert ids == sorted(ids) and len(set(ids)) == 5 and ids[0] > c0
    assert full["cursor"] == ids[-1] and full["more"] is False
    assert all(c["at"].startswith("20") for c in full["changes"])
    # The bare cursor is now the latest change.
    assert feed(http)["cursor"] == ids[-1]

    # Paged: limit, more, cursor of the last returned.
    page1 = feed(http, since=c0, limit=2)
    assert [c["id"] for c in page1["changes"]] == ids[:2]
    assert page1["more"] is True and page1["cursor"] == ids[1]
    page2 = feed(http, since=page1["cursor"], limit=2)
    assert [c["id"] for c in page2["changes"]] == ids[2:4] and page2["more"] is True
    page3 = feed(http, since=page2["cursor"], limit=2)
    assert [c["id"] for c in page3["changes"]] == ids[4:] and page3["more"] is False

    # Nothing new: the cursor stays; a cursor from the future is brought back, never
    # past an event this Client could still get.
    assert feed(http, since=ids[-1]) == {"cursor": ids[-1], "changes": [], "more": False}
    assert feed(http, since=10**12)["cursor"] == ids[-1]
    # Audit events (emptying the trash) are not tree changes.
    assert http.delete(f"{API}/trash").status_code == 204
    assert feed(http, since=ids[-1]) == {"cursor": ids[-1], "changes": [], "more": False}

    bob_feed = http.get(f"{API}/changes", params={"since": 0}, auth=bob.auth).json()
    assert [(c["kind"], c["path"]) for c in bob_feed["changes"]] == [("put", "/bob.txt")]

    for bad in ({"limit": 0}, {"limit": 5001}, {"since": -1}, {"wait": 61}, {"since": "x"}):
        r = http.get(f"{API}/changes", params=bad)
        assert r.status_code == 400, (bad, r.text)
        problem(r)


@pytest.fixture
def slow_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """Database re-checks every 10 s: an early answer can then only come from the
    in-process notification."""
    monkeypatch.setattr(events, "RECHECK_SECONDS", 10.0)


def test_feed_long_poll_wakes_on_change(
    http: TestClient, runtime: Runtime, alice: Account, slow_recheck: None
) -> None:
    cursor = feed(http)["cursor"]
    t = later(
        0.4,
        lambda: store_bytes(runtime.files, alice.principal, parse_path("/late.txt"), b"late"),
    )
    began = time.monotonic()
    body = feed(http, since=cursor, wait=20)
    elapsed = time.monotonic() - began
    t.join()
    assert [(c["kind"], c["path"]) for c in body["changes"]] == [("put", "/late.txt")]
    assert 0.3 < elapsed < 5, elapsed
    assert runtime.files.changes.waiting() == 0  # waiters do not pile up


def test_feed_long_poll_sees_other_processes(
    http: TestClient, runtime: Runtime, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change this process is not told about (as from another server process) is
    still found by the periodic re-check."""
    monkeypatch.setattr(events, "RECHECK_SECONDS", 0.3)
    monkeypatch.setattr(runtime.db, "on_commit", [])
    cursor = feed(http)["cursor"]
    t = later(0.5, lambda: runtime.files.mkdir(alice.principal, "/quiet"))
    began = time.monotonic()
    body = feed(http, since=cursor, wait=20)
    elapsed = time.monotonic() - began
    t.join()
    assert [(c["kind"], c["path"]) for c in body["changes"]] == [("mkdir", "/quiet")]
    assert elapsed < 5, elapsed


def test_feed_long_poll_times_out_empty(http: TestClient, bob: Account) -> None:
    cursor = feed(http)["cursor"]
    # Another Client's change does not end Alice's wait.
    began = time.monotonic()
    assert http.put(f"{API}/files/b.txt", content=b"b", auth=bob.auth).status_code == 201
    body = feed(http, since=cursor, wait=1.5)
    elapsed = time.monotonic() - began
    assert body == {"cursor": cursor, "changes": [], "more": False}
    assert 1.4 <= elapsed < 6, elapsed
    # Without since there is nothing to wait for: the cursor at once.
    began = time.monotonic()
    assert feed(http, wait=30)["cursor"] == cursor
    assert time.monotonic() - began < 3


# ---- snapshot --------------------------------------------------------------------------------


def test_snapshot_contents_and_cursor(http: TestClient, bob: Account) -> None:
    assert http.post(f"{API}/mkdir", json={"path": "/S/sub/deep", "parents": True}).status_code
    a = http.put(f"{API}/files/S/a.txt", content=b"alpha").json()
    b = http.put(f"{API}/files/S/sub/b.txt", content=b"bravo!").json()
    http.post(f"{API}/mkdir", json={"path": "/S/gone"})
    http.put(f"{API}/files/S/gone/inside.txt", content=b"in a trashed folder")
    http.put(f"{API}/files/S/old.txt", content=b"trashed")
    assert http.delete(f"{API}/files/S/gone").status_code == 204
    assert http.delete(f"{API}/files/S/old.txt").status_code == 204
    http.put(f"{API}/files/top.txt", content=b"outside")

    r = http.get(f"{API}/snapshot/S")
    assert r.status_code == 200, r.text
    snap = r.json()
    assert snap["path"] == "/S"
    # the same, streamed one entry per line for clients with big trees (NDJSON)
    streamed = http.get(f"{API}/snapshot/S", headers={"Accept": "application/x-ndjson"})
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    head, *lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert head == {"path": "/S", "cursor": snap["cursor"]}
    assert lines == snap["entries"]
    paths = [e["path"] for e in snap["entries"]]
    assert paths == ["a.txt", "sub", "sub/b.txt", "sub/deep"]
    by_path = {e["path"]: e for e in snap["entries"]}
    assert by_path["a.txt"] == {
        "path": "a.txt",
        "type": "file",
        "size": 5,
        "sha256": sha(b"alpha"),
        "version": a["version"],
        "mtime": a["mtime"],
    }
    assert by_path["sub/b.txt"]["version"] == b["version"]
    assert by_path["sub/b.txt"]["sha256"] == sha(b"bravo!")
    assert by_path["sub"]["type"] == by_path["sub/deep"]["type"] == "folder"
    assert set(by_path["sub"]) == {"path", "type", "mtime"}
    # The cursor is the latest change at the time of the snapshot...
    assert snap["cursor"] == feed(http)["cursor"] > 0
    # ...so what happens next is exactly what the feed returns after it.
    http.put(f"{API}/files/S/c.txt", content=b"charlie")
    after = feed(http, since=snap["cursor"])
    assert [(c["kind"], c["path"]) for c in after["changes"]] == [("put", "/S/c.txt")]

    root = http.get(f"{API}/snapshot/").json()
    assert root["path"] == "/"
    assert [e["path"] for e in root["entries"]] == [
        "S",
        "S/a.txt",
        "S/c.txt",
        "S/sub",
        "S/sub/b.txt",
        "S/sub/deep",
        "top.txt",
    ]
    assert http.get(f"{API}/snapshot/S/sub/deep").json()["entries"] == []

    r = http.get(f"{API}/snapshot/top.txt")
    assert r.status_code == 409
    problem(r)
    r = http.get(f"{API}/snapshot/nowhere")
    assert r.status_code == 404
    problem(r)
    r = http.get(f"{API}/snapshot/S/gone")  # trashed
    assert r.status_code == 404
    # Another Client: Alice's folder does not exist for Bob, his root is his own.
    r = http.get(f"{API}/snapshot/S", auth=bob.auth)
    assert r.status_code == 404
    problem(r)
    assert http.get(f"{API}/snapshot/", auth=bob.auth).json()["entries"] == []


# ---- batch chunk upload --------------------------------------------------------------------


def test_batch_upload_stores_verified_chunks(http: TestClient) -> None:
    chunks = [f"chunk {i} ".encode() * 300 for i in range(5)]
    digests = [sha(c) for c in chunks]
    assert http.put(f"{API}/chunks/{digests[0]}", content=chunks[0]).status_code == 201
    body = frames([*chunks, chunks[1]])  # one already stored, one sent twice
    r = http.post(
        f"{API}/chunks/batch", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 6, "stored": 4}
    assert missing(http, digests) == []
    # Stored means usable: a commit of each is proven and readable.
    for c, d in zip(chunks, digests, strict=True):
        r = http.post(f"{API}/commit", json={"path": f"/{d[:8]}", "sha256": d, "chunks": [d]})
        assert r.status_code == 201, r.text
        assert http.get(f"{API}/files/{d[:8]}").content == c

    # Streamed without Content-Length (chunked transfer), in odd-sized pieces.
    more = [bytes([i]) * (4096 + i) for i in range(50)]
    raw = frames(more)

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(raw), 777):
            yield raw[i : i + 777]

    r = http.post(f"{API}/chunks/batch", content=pieces())
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 50, "stored": 50}
    assert missing(http, [sha(c) for c in more]) == []

    assert http.post(f"{API}/chunks/batch", content=b"").json() == {"received": 0, "stored": 0}


def test_batch_upload_refuses_bad_frames(http: TestClient) -> None:
    good, bad, after = b"good bytes", b"tampered bytes", b"after the bad one"
    claimed = sha(b"what the bad frame claims")
    r = http.post(
        f"{API}/chunks/batch",
        content=frames([good, bad, after], [sha(good), claimed, sha(after)]),
    )
    assert r.status_code == 400
    body = problem(r)
    assert body["type"].endswith("digest-mismatch") and claimed in body["detail"]
    assert body["digest"] == claimed
    # Nothing of the bad frame (under either name) nor after it; the good one before may stay.
    assert missing(http, [claimed, sha(bad), sha(after)]) == [claimed, sha(bad), sha(after)]
    assert missing(http, [sha(good)]) == []

    # A frame cut short, a header cut short.
    whole = frames([b"complete"])
    for body_bytes in (whole + frames([b"x" * 100])[:-10], whole + b"\x01" * 20):
        r = http.post(f"{API}/chunks/batch", content=body_bytes)
        assert r.status_code == 400, r.text
        assert "ends inside frame 2" in problem(r)["detail"]

    # A frame announcing more than a chunk may hold: 413 before its bytes arrive.
    header = bytes(32) + (MAX_CHUNK + 1).to_bytes(4, "big")
    r = http.post(f"{API}/chunks/batch", content=header + b"x" * 100)
    assert r.status_code == 413
    assert problem(r)["limit_bytes"] == MAX_CHUNK

    # A body over the limit: refused by its announced length...
    r = http.post(
        f"{API}/chunks/batch",
        content=b"",
        headers={"Content-Length": str(MAX_BATCH_BODY + 1)},
    )
    assert r.status_code == 413
    assert problem(r)["limit_bytes"] == MAX_BATCH_BODY

    # ...and, streamed without a length, as soon as it passes the limit.
    big = frames([b"\x00" * (4 << 20)])

    def endless() -> Iterator[bytes]:
        for _ in range(MAX_BATCH_BODY // len(big) + 2):
            yield big

    r = http.post(f"{API}/chunks/batch", content=endless())
    assert r.status_code == 413
    problem(r)


# ---- batch chunk download -------------------------------------------------------------------


def test_fetch_round_trip(http: TestClient, bob: Account) -> None:
    chunks = [f"fetch me {i}".encode() * (i + 1) for i in range(20)]
    digests = [sha(c) for c in chunks]
    assert http.post(f"{API}/chunks/batch", content=frames(chunks)).status_code == 200
    files = [{"path": f"/f{i}", "sha256": d, "chunks": [d]} for i, d in enumerate(digests)]
    r = http.post(f"{API}/commit/batch", json={"files": files})
    assert [x["status"] for x in r.json()["results"]] == [201] * 20

    wanted = [digests[3], digests[0], digests[3], *digests[10:]]
    r = http.post(f"{API}/chunks/fetch", json={"chunks": wanted})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert int(r.headers["content-length"]) == len(r.content)
    got = parse_frames(r.content)
    assert [d for d, _ in got] == wanted
    assert all(sha(data) == d for d, data in got)
    assert got[0][1] == chunks[3] and got[1][1] == chunks[0]

    assert http.post(f"{API}/chunks/fetch", json={"chunks": []}).content == b""

    unknown = sha(b"nobody has this")
    r = http.post(f"{API}/chunks/fetch", json={"chunks": [digests[0], unknown]})
    assert r.status_code == 404
    assert unknown in problem(r)["detail"]
    # Alice's chunks do not exist for Bob.
    r = http.post(f"{API}/chunks/fetch", json={"chunks": [digests[0]]}, auth=bob.auth)
    assert r.status_code == 404
    problem(r)

    r = http.post(f"{API}/chunks/fetch", json={"chunks": [digests[0]] * 10_001})
    assert r.status_code == 413
    assert "10,000" in problem(r)["detail"]
    r = http.post(f"{API}/chunks/fetch", json={"chunks": ["not hex"]})
    assert r.status_code == 400
    problem(r)


# ---- batch commit -----------------------------------------------------------------------------


def test_batch_commit_mixed_results(http: TestClient) -> None:
    v1 = http.put(f"{API}/files/doc.txt", content=b"doc v1").json()["version"]
    v2 = http.put(f"{API}/files/doc.txt", content=b"doc v2").json()["version"]
    http.put(f"{API}/files/taken.txt", content=b"someone else's new file")
    http.post(f"{API}/mkdir", json={"path": "/folder"})
    contents = {name: f"content of {name}".encode() for name in "abcdefg"}
    assert http.post(f"{API}/chunks/batch", content=frames(list(contents.values()))).status_code
    h = {name: sha(c) for name, c in contents.items()}
    never_sent = sha(b"never sent")

    def item(path: str, name: str, **kw: Any) -> dict[str, Any]:
        return {"path": path, "sha256": h[name], "chunks": [h[name]], **kw}

    cursor = feed(http)["cursor"]
    files = [
        item("/new1.txt", "a", size=len(contents["a"])),
        item("/doc.txt", "b", base_version=v1),  # stale base: 412
        item("/taken.txt", "c", if_absent=True),  # exists: 412
        item("/new2.txt", "d", if_absent=True, mtime="2020-01-02T03:04:05+00:00"),
        item("/doc.txt", "e", base_version=v2),  # current base: a new version, 200
        item("/deep/er/new3.txt", "f", parents=True),
        item("/nofolder/new4.txt", "g"),  # no parents: 409
        {"path": "/bad-sha.txt", "sha256": h["a"], "chunks": [h["b"]]},  # 400
        {"path": "/missing.txt", "sha256": never_sent, "chunks": [never_sent]},  # 400
        item("/wrong-size.txt", "a", size=3),  # 400
        item("/folder", "a"),  # a folder is there: 409
        item("/folder", "a", if_absent=True),  # anything there: 412
        item("/bad\x00name", "a"),  # 400
    ]
    r = http.post(f"{API}/commit/batch", json={"files": files})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [
        201,
        412,
        412,
        201,
        200,
        201,
        409,
        400,
        400,
        400,
        409,
        412,
        400,
    ]
    assert results[0] == {
        "status": 201,
        "path": "/new1.txt",
        "version": results[0]["version"],
        "sha256": h["a"],
        "size": len(contents["a"]),
    }
    for x in results:
        if x["status"] >= 400:
            assert x["type"].startswith("https://") and x["title"] and x["detail"], x
    assert results[1]["type"].endswith("precondition-failed")
    assert results[7]["type"].endswith("digest-mismatch")
    assert never_sent in results[8]["missing"]

    # What succeeded is there and proven; what failed changed nothing.
    for path, name in [("/new1.txt", "a"), ("/new2.txt", "d"), ("/doc.txt", "e")]:
        got = http.get(f"{API}/files{path}")
        assert got.content == contents[name], path
    assert http.get(f"{API}/files/deep/er/new3.txt").content == contents["f"]
    assert http.get(f"{API}/files/taken.txt").content == b"someone else's new file"
    assert http.get(f"{API}/tree/doc.txt").json()["version"] == results[4]["version"]
    assert http.get(f"{API}/tree/new2.txt").json()["mtime"].startswith("2020-01-02T03:04:05")
    for gone in ("/nofolder", "/bad-sha.txt", "/missing.txt", "/wrong-size.txt"):
        assert http.get(f"{API}/tree{gone}").status_code == 404, gone
    versions = http.get(f"{API}/versions/doc.txt").json()["versions"]
    assert len(versions) == 3  # v1, v2 and the batch's; the stale item added none

    changes = [(c["kind"], c["path"]) for c in feed(http, since=cursor)["changes"]]
    assert changes == [
        ("put", "/new1.txt"),
        ("put", "/new2.txt"),
        ("put", "/doc.txt"),
        ("mkdir", "/deep"),
        ("mkdir", "/deep/er"),
        ("put", "/deep/er/new3.txt"),
    ]

    r = http.post(f"{API}/commit/batch", json={"files": [files[0]] * 1001})
    assert r.status_code == 400
    problem(r)


def test_single_commit_if_absent_and_parents(http: TestClient) -> None:
    data = b"single"
    d = sha(data)
    http.put(f"{API}/chunks/{d}", content=data)
    body = {"path": "/p/q/r.txt", "sha256": d, "chunks": [d]}
    r = http.post(f"{API}/commit", json=body)
    assert r.status_code == 409
    problem(r)
    r = http.post(f"{API}/commit", json={**body, "parents": True})
    assert r.status_code == 201, r.text
    assert http.get(f"{API}/files/p/q/r.txt").content == data
    r = http.post(f"{API}/commit", json={**body, "if_absent": True})
    assert r.status_code == 412
    assert problem(r)["type"].endswith("precondition-failed")
    r = http.post(f"{API}/commit", json={**body, "path": "/p/q/s.txt", "if_absent": True})
    assert r.status_code == 201


def test_batch_commit_many_small_files(http: TestClient) -> None:
    """The sync client's shape: 500 one-chunk files per request, in a few transactions."""
    chunks = [f"small file {i}\n".encode() * 200 for i in range(500)]
    r = http.post(f"{API}/chunks/batch", content=frames(chunks))
    assert r.json() == {"received": 500, "stored": 500}
    files = [
        {"path": f"/many/{i:03}.txt", "sha256": sha(c), "chunks": [sha(c)], "parents": True}
        for i, c in enumerate(chunks)
    ]
    r = http.post(f"{API}/commit/batch", json={"files": files})
    assert [x["status"] for x in r.json()["results"]] == [201] * 500
    snap = http.get(f"{API}/snapshot/many").json()
    assert [e["sha256"] for e in snap["entries"]] == [sha(c) for c in chunks]
    used = http.get(f"{API}/me").json()["usage"]["used_bytes"]
    assert used == sum(len(c) for c in chunks)
