"""The files API (R-STORE-2, R-STORE-7, R-STORE-8): content, versions, trash, quota."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from allset.blobstore.chunker import MAX_SIZE
from allset.core.errors import QuotaExceeded
from allset.core.paths import parse_path
from allset.db.engine import _GroupItem, group_memo
from allset.db.models import utcnow
from allset.files import maintenance
from allset.files.upload import begin_upload, store_bytes
from allset.runtime import Runtime
from conftest import Account, make_account, problem


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunk_files(rt: Runtime) -> set[str]:
    found = set()
    for vol in rt.settings.volume_paths:
        found |= {p.name for p in (vol / "chunks").rglob("*") if p.is_file()}
    return found


def test_put_answers_digest_and_get_verifies(client, alice: Account) -> None:
    data = os.urandom(MAX_SIZE + 17)  # over one chunk's maximum: at least two chunks
    r = client.put("/api/v1/files/dir1/big.bin", content=data, auth=alice.auth)
    assert r.status_code == 409  # parent missing: said clearly, not auto-created
    assert "create it first" in problem(r)["detail"]
    assert client.post("/api/v1/mkdir", json={"path": "/dir1"}, auth=alice.auth).status_code == 201
    r = client.put("/api/v1/files/dir1/big.bin", content=data, auth=alice.auth)
    assert r.status_code == 201
    body = r.json()
    assert body["sha256"] == sha(data) and body["size"] == len(data) and body["version"]
    expected_digest = "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"
    assert r.headers["repr-digest"] == expected_digest
    g = client.get("/api/v1/files/dir1/big.bin", auth=alice.auth)
    assert g.status_code == 200 and g.content == data
    assert g.headers["repr-digest"] == expected_digest
    assert g.headers["etag"] == f'"{body["version"]}"'
    assert g.headers["content-disposition"].startswith("attachment")
    # Replicas: every chunk on both volumes.
    vols = [p / "chunks" for p in client.app.state.runtime.settings.volume_paths]
    names = [sorted(x.name for x in v.rglob("*") if x.is_file()) for v in vols]
    assert names[0] == names[1] and len(names[0]) >= 2


def test_ranges_and_conditionals(client, alice: Account) -> None:
    data = bytes(range(256)) * 100
    etag = client.put("/api/v1/files/r.bin", content=data, auth=alice.auth).headers["etag"]
    r = client.get("/api/v1/files/r.bin", headers={"Range": "bytes=10-19"}, auth=alice.auth)
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = client.get("/api/v1/files/r.bin", headers={"Range": "bytes=-5"}, auth=alice.auth)
    assert r.content == data[-5:]
    r = client.get("/api/v1/files/r.bin", headers={"Range": f"bytes={len(data)}-"}, auth=alice.auth)
    assert r.status_code == 416
    problem(r)
    r = client.get("/api/v1/files/r.bin", headers={"If-None-Match": etag}, auth=alice.auth)
    assert r.status_code == 304 and r.content == b""
    r = client.get(
        "/api/v1/files/r.bin", headers={"Range": "bytes=0-0", "If-Range": '"old"'}, auth=alice.auth
    )
    assert r.status_code == 200 and r.content == data
    h = client.head("/api/v1/files/r.bin", auth=alice.auth)
    assert (
        h.status_code == 200 and h.headers["content-length"] == str(len(data)) and h.content == b""
    )
    # Conditional overwrite: a stale ETag changes nothing.
    r = client.put(
        "/api/v1/files/r.bin", content=b"new", headers={"If-Match": '"stale"'}, auth=alice.auth
    )
    assert r.status_code == 412 and problem(r)["current_etag"] == etag
    r = client.put(
        "/api/v1/files/r.bin", content=b"new", headers={"If-None-Match": "*"}, auth=alice.auth
    )
    assert r.status_code == 412
    assert client.get("/api/v1/files/r.bin", auth=alice.auth).content == data
    r = client.put(
        "/api/v1/files/r.bin", content=b"new", headers={"If-Match": etag}, auth=alice.auth
    )
    assert r.status_code == 201
    assert client.get("/api/v1/files/r.bin", auth=alice.auth).content == b"new"


def test_versions_kept_and_restorable(client, alice: Account) -> None:
    v1 = client.put("/api/v1/files/doc.txt", content=b"one", auth=alice.auth).json()["version"]
    v2 = client.put("/api/v1/files/doc.txt", content=b"two", auth=alice.auth).json()["version"]
    versions = client.get("/api/v1/versions/doc.txt", auth=alice.auth).json()["versions"]
    assert [v["version"] for v in versions] == [v2, v1]
    assert versions[0]["current"] and versions[1]["expires_at"]
    assert client.get(f"/api/v1/files/doc.txt?version={v1}", auth=alice.auth).content == b"one"
    r = client.post("/api/v1/versions/doc.txt", json={"version": v1}, auth=alice.auth)
    assert r.status_code == 200
    assert client.get("/api/v1/files/doc.txt", auth=alice.auth).content == b"one"
    assert len(client.get("/api/v1/versions/doc.txt", auth=alice.auth).json()["versions"]) == 3


def test_mtime_from_client(client, alice: Account) -> None:
    r = client.put(
        "/api/v1/files/m.txt",
        content=b"x",
        headers={"X-Allset-Mtime": "1700000000.5"},
        auth=alice.auth,
    )
    assert r.json()["mtime"].startswith("2023-11-14T22:13:20.5")
    meta = client.get("/api/v1/tree/m.txt", auth=alice.auth).json()
    assert meta["mtime"] == r.json()["mtime"] and meta["type"] == "file"


def test_listing_is_paged_and_sorted(client, alice: Account) -> None:
    client.post("/api/v1/mkdir", json={"path": "/many"}, auth=alice.auth)
    names = [f"f{i:03d}" for i in range(25)]
    for n in random.sample(names, len(names)):
        client.put(f"/api/v1/files/many/{n}", content=n.encode(), auth=alice.auth)
    seen, after = [], ""
    for _ in range(10):
        page = client.get(f"/api/v1/tree/many?limit=10&after={after}", auth=alice.auth).json()
        seen += [e["name"] for e in page["entries"]]
        if not page["next"]:
            break
        after = page["next"]
    assert seen == names


def test_delete_goes_to_trash_and_restores(client, alice: Account) -> None:
    client.post("/api/v1/mkdir", json={"path": "/proj/sub", "parents": True}, auth=alice.auth)
    client.put("/api/v1/files/proj/sub/a.txt", content=b"A", auth=alice.auth)
    assert client.delete("/api/v1/files/proj", auth=alice.auth).status_code == 204
    assert client.get("/api/v1/files/proj/sub/a.txt", auth=alice.auth).status_code == 404
    items = client.get("/api/v1/trash", auth=alice.auth).json()["items"]
    assert [(i["name"], i["original_path"]) for i in items] == [("proj", "/proj")]
    # The name is free again; restoring does not overwrite the new one.
    client.post("/api/v1/mkdir", json={"path": "/proj"}, auth=alice.auth)
    restored = client.post(f"/api/v1/trash/{items[0]['id']}/restore", auth=alice.auth).json()
    assert restored["path"] == "/proj (restored 1)"
    assert client.get("/api/v1/files/proj (restored 1)/sub/a.txt", auth=alice.auth).content == b"A"
    assert client.delete("/api/v1/files/", auth=alice.auth).status_code in (400, 403)


def test_move_copy_rules(client, alice: Account, runtime: Runtime) -> None:
    client.post("/api/v1/mkdir", json={"path": "/a/b", "parents": True}, auth=alice.auth)
    client.put("/api/v1/files/a/b/f.bin", content=os.urandom(500_000), auth=alice.auth)
    r = client.post("/api/v1/move", json={"from": "/a", "to": "/a/b/c"}, auth=alice.auth)
    assert r.status_code == 409 and "into itself" in problem(r)["detail"]
    used = runtime.files.usage(alice.principal).used
    r = client.post("/api/v1/copy", json={"from": "/a", "to": "/a2"}, auth=alice.auth)
    assert r.status_code == 201
    assert runtime.files.usage(alice.principal).used == used  # copies share chunks
    assert (
        client.get("/api/v1/files/a2/b/f.bin", auth=alice.auth).content
        == client.get("/api/v1/files/a/b/f.bin", auth=alice.auth).content
    )
    client.put("/api/v1/files/x.txt", content=b"x", auth=alice.auth)
    client.put("/api/v1/files/y.txt", content=b"y", auth=alice.auth)
    r = client.post("/api/v1/move", json={"from": "/x.txt", "to": "/y.txt"}, auth=alice.auth)
    assert r.status_code == 409 and problem(r)["type"].endswith("already-exists")
    r = client.post(
        "/api/v1/move", json={"from": "/x.txt", "to": "/y.txt", "overwrite": True}, auth=alice.auth
    )
    assert r.status_code == 200 and r.json()["replaced"] is True
    assert client.get("/api/v1/files/y.txt", auth=alice.auth).content == b"x"
    # The replaced file is not lost: it is in the trash.
    assert "y.txt" in [
        i["name"] for i in client.get("/api/v1/trash", auth=alice.auth).json()["items"]
    ]
    r = client.post("/api/v1/move", json={"from": "/y.txt", "to": "/renamed.txt"}, auth=alice.auth)
    assert r.json()["path"] == "/renamed.txt"


def test_quota_refusal_leaves_nothing(client, runtime: Runtime) -> None:
    acct = make_account(runtime, quota=2 * 1024 * 1024)
    client.put("/api/v1/files/small", content=os.urandom(1024 * 1024), auth=acct.auth)
    before_files = chunk_files(runtime)
    used = runtime.files.usage(acct.principal).used
    # Announced length over quota: refused before reading the body.
    r = client.put("/api/v1/files/big", content=os.urandom(3 * 1024 * 1024), auth=acct.auth)
    assert r.status_code == 507
    body = problem(r)
    assert body["used_bytes"] == used and body["quota_bytes"] == 2 * 1024 * 1024
    assert "MiB" in body["detail"]

    # Unknown length (chunked): refused mid-stream, and nothing of it stays.
    def gen():
        for _ in range(12):
            yield os.urandom(256 * 1024)

    r = client.put("/api/v1/files/big", content=gen(), auth=acct.auth)
    assert r.status_code == 507
    assert client.get("/api/v1/files/big", auth=acct.auth).status_code == 404
    assert runtime.files.usage(acct.principal).used == used
    assert runtime.files.usage(acct.principal).inflight == 0
    assert chunk_files(runtime) == before_files


@pytest.mark.parametrize("announced", [True, False])
def test_concurrent_uploads_cannot_overshoot_quota(runtime: Runtime, announced: bool) -> None:
    """With Content-Length, uploads are admitted in order (exactly 3 of 8 fit); without
    it, in-flight bytes are reserved as they arrive, so the quota is never overshot."""
    quota = 10 * 1024 * 1024
    acct = make_account(runtime, quota=quota)
    results: list[str] = []

    def upload(i: int) -> None:
        try:
            up = begin_upload(
                runtime.files,
                acct.principal,
                parse_path(f"/f{i}"),
                expected_size=3 * 1024 * 1024 if announced else None,
            )
            data = random.Random(i).randbytes(3 * 1024 * 1024)
            for k in range(0, len(data), 256 * 1024):
                up.write(data[k : k + 256 * 1024])
            up.commit()
            results.append("ok")
        except QuotaExceeded:
            results.append("507")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    usage = runtime.files.usage(acct.principal)
    assert usage.used <= quota and usage.inflight == 0
    assert results.count("ok") + results.count("507") == 8
    if announced:
        assert results.count("ok") == 3
    # Refused uploads released their reservations: retried one by one, exactly as many
    # fit as the quota allows (3 x 3 MiB in 10 MiB), never more.
    for i in range(8, 16):
        upload(i)
    assert results.count("ok") == 3
    assert runtime.files.usage(acct.principal).used <= quota


def test_concurrent_small_uploads_cannot_overshoot_quota(runtime: Runtime) -> None:
    """R-STORE-8 on the small-file path, whose quota admission happens in the commit's
    transaction (no read before it): 16 bodies of 100 kB race for room for 5, beside
    an unfinished big upload holding 3 x 100 kB. Never over, never a stray chunk, and the
    refused ones leave no reservation behind."""
    unit = 100_000
    acct = make_account(runtime, quota=8 * unit + unit // 2)
    big = begin_upload(runtime.files, acct.principal, parse_path("/held"), expected_size=3 * unit)
    before = chunk_files(runtime)
    results: list[str] = []
    barrier = threading.Barrier(16)

    def upload(i: int) -> None:
        data = random.Random(i).randbytes(unit)
        barrier.wait(timeout=30)
        try:
            store_bytes(runtime.files, acct.principal, parse_path(f"/s{i}"), data)
            results.append("ok")
        except QuotaExceeded as exc:
            results.append(f"507 of {exc.extra['quota_bytes']}")

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(results) == [f"507 of {8 * unit + unit // 2}"] * 11 + ["ok"] * 5
    usage = runtime.files.usage(acct.principal)
    assert usage.used == 5 * unit and usage.inflight == 3 * unit  # only the held upload
    assert len(chunk_files(runtime) - before) == 5  # refused bodies were removed
    big.abort()
    assert runtime.files.usage(acct.principal).inflight == 0


def test_group_commit_isolates_each_writer(runtime: Runtime, alice: Account) -> None:
    """Concurrent small uploads share commits (Database.write_group); one that fails in
    its commit (a folder in the way, a stale If-Match) fails alone, and the others of
    the same group are all stored, each once, with its own version."""
    runtime.files.mkdir(alice.principal, parse_path("/taken"), False)
    payloads = {i: random.Random(100 + i).randbytes(5000) for i in range(24)}
    errors: dict[int, str] = {}
    barrier = threading.Barrier(24)

    def upload(i: int) -> None:
        path = "/taken" if i % 8 == 0 else f"/g/{i}"  # every 8th hits the folder: 409
        opts = {"if_match": '"stale"'} if i % 8 == 4 else {}  # and these are stale: 412
        barrier.wait(timeout=30)
        try:
            store_bytes(runtime.files, alice.principal, parse_path(path), payloads[i], **opts)
        except Exception as exc:
            errors[i] = type(exc).__name__

    runtime.files.mkdir(alice.principal, parse_path("/g"), False)
    threads = [threading.Thread(target=upload, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == {
        i: ("Conflict" if i % 8 == 0 else "PreconditionFailed") for i in range(24) if i % 4 == 0
    }
    for i, data in payloads.items():
        if i % 4:
            entry = runtime.files.stat(alice.principal, f"/g/{i}")
            assert entry.sha256 == hashlib.sha256(data).hexdigest()
            assert len(runtime.files.versions(alice.principal, f"/g/{i}")) == 1
    assert runtime.files.usage(alice.principal).used == sum(
        len(d) for i, d in payloads.items() if i % 4
    )


def test_group_memo_lives_one_transaction(runtime: Runtime, alice: Account) -> None:
    """Uploads of one group transaction reuse the folder an earlier one found or made
    (``_apply_grouped``), and only within that transaction: here the first upload makes
    /fresh (``parents``), the second fails, the group is rolled back and run again
    without it; the third upload must then use the /fresh made by that second run, not
    the one rolled back (which no longer exists)."""
    files, p = runtime.files, alice.principal
    files.mkdir(p, parse_path("/fixed"), False)
    files.mkdir(p, parse_path("/fixed/inside"), False)
    plan = [
        ("/fresh/x", b"x" * 100, {"parents": True}),
        ("/fixed/stale", b"s" * 100, {"if_match": '"stale"'}),
        ("/fresh/y", b"y" * 100, {"parents": True}),
        ("/fixed/a", b"a" * 100, {}),
        ("/fixed/b", b"b" * 100, {}),
        ("/fixed/inside/c", b"c" * 100, {}),
    ]
    uploads = []
    for path, data, kw in plan:
        up = begin_upload(files, p, parse_path(path), expected_size=len(data), **kw)
        up.write(data)
        assert up._small is not None
        body, up._small = bytes(up._small), None
        up._put_whole(body)
        uploads.append((up, up.verified_digest()))
    items = [_GroupItem(lambda c, u=u, sha=sha: u._apply_grouped(c, sha)) for u, sha in uploads]
    try:
        with files.leases.committing():
            runtime.db._run_group(items)
    finally:
        for (up, _), item in zip(uploads, items, strict=True):
            up.finish() if item.error is None else up.abort()
    assert [type(i.error).__name__ for i in items] == ["NoneType", "PreconditionFailed"] + [
        "NoneType"
    ] * 4
    fresh = files.stat(p, "/fresh")
    assert [e.name for e in files.list_dir(p, "/fresh")[1]] == ["x", "y"]
    assert fresh.kind == "dir"
    for path, data, _ in plan:
        if "stale" not in path:
            assert files.stat(p, path).sha256 == hashlib.sha256(data).hexdigest()
    assert [e.name for e in files.list_dir(p, "/fixed")[1]] == ["a", "b", "inside"]
    assert runtime.db._group_conn is not None and group_memo(runtime.db._group_conn) is None


def test_dedup_within_client_and_empty_trash_frees_space(
    client, runtime: Runtime, alice: Account
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    client.put("/api/v1/files/one", content=data, auth=alice.auth)
    used = runtime.files.usage(alice.principal).used
    assert used >= len(data)
    client.put("/api/v1/files/two", content=data, auth=alice.auth)
    assert runtime.files.usage(alice.principal).used == used  # same bytes, counted once
    client.delete("/api/v1/files/one", auth=alice.auth)
    client.delete("/api/v1/files/two", auth=alice.auth)
    assert runtime.files.usage(alice.principal).used == used  # the trash still holds them
    assert client.delete("/api/v1/trash", auth=alice.auth).status_code == 204
    assert runtime.files.usage(alice.principal).used == 0
    assert chunk_files(runtime) == set()


def test_retention_purges_old_versions_and_trash(client, runtime: Runtime, alice: Account) -> None:
    client.put("/api/v1/files/v", content=os.urandom(300_000), auth=alice.auth)
    client.put("/api/v1/files/v", content=b"current", auth=alice.auth)
    client.put("/api/v1/files/gone", content=os.urandom(300_000), auth=alice.auth)
    client.delete("/api/v1/files/gone", auth=alice.auth)
    # Not yet: 29 days later nothing is purged.
    r = maintenance.purge_expired(runtime.files, now=utcnow() + timedelta(days=29))
    assert (r.trashed_purged, r.versions_purged) == (0, 0)
    r = maintenance.purge_expired(runtime.files, now=utcnow() + timedelta(days=31))
    assert (r.trashed_purged, r.versions_purged) == (1, 1)
    maintenance.collect_chunks(runtime.files)
    assert runtime.files.usage(alice.principal).used == len(b"current")
    assert len(client.get("/api/v1/versions/v", auth=alice.auth).json()["versions"]) == 1
    assert client.get("/api/v1/trash", auth=alice.auth).json()["items"] == []
    assert client.get("/api/v1/files/v", auth=alice.auth).content == b"current"


def test_openapi_health_me(client, alice: Account) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/files/{path}" in spec["paths"]
    assert client.get("/healthz").json()["status"] == "ok"
    me = client.get("/api/v1/me", auth=alice.auth).json()
    assert me["email"] == alice.email and me["usage"]["quota_bytes"] == 1 << 30
    r = client.get("/api/v1/me")
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    problem(r)


def test_unknown_url_is_problem_json(client) -> None:
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    problem(r)


def test_streaming_upload_constant_memory_path(client, alice: Account, tmp_path: Path) -> None:
    """A body of unknown length, sent in odd-sized pieces, arrives intact."""
    rng = random.Random(7)
    pieces = [rng.randbytes(rng.choice([1, 7, 4096, 70_000, 1 << 20])) for _ in range(40)]
    r = client.put("/api/v1/files/streamed", content=iter(pieces), auth=alice.auth)
    assert r.status_code == 201
    whole = b"".join(pieces)
    assert r.json()["sha256"] == sha(whole)
    assert client.get("/api/v1/files/streamed", auth=alice.auth).content == whole


def test_concurrent_first_uploads_to_one_path(runtime: Runtime, alice: Account) -> None:
    """Eight first uploads of the same path and bytes race on the same node and chunk
    rows: none fails, the file has one version per upload, the bytes count once."""
    data = random.Random(11).randbytes(600_000)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            up = begin_upload(runtime.files, alice.principal, parse_path("/race.bin"))
            up.write(data)
            up.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(runtime.files.versions(alice.principal, "/race.bin")) == 8
    assert runtime.files.usage(alice.principal).used == len(data)


def test_file_routes_outside_fastapi_answer_like_the_rest(client, alice: Account) -> None:
    """GET/HEAD/PUT/DELETE of /api/v1/files/... are served ahead of FastAPI (speed);
    errors, other methods and the OpenAPI document must not notice."""
    r = client.put("/api/v1/files/fast.txt", content=b"abc", auth=alice.auth)
    assert r.status_code == 201 and r.json()["size"] == 3
    assert client.head("/api/v1/files/fast.txt", auth=alice.auth).headers["content-length"] == "3"
    r = client.get("/api/v1/files/fast.txt")  # no credentials
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    assert r.headers["content-type"] == "application/problem+json"
    r = client.post("/api/v1/files/fast.txt", content=b"x", auth=alice.auth)
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
    r = client.get("/api/v1/files/fast.txt?version=nope", auth=alice.auth)
    assert r.status_code == 404 and problem(r)["status"] == 404
    assert client.delete("/api/v1/files/fast.txt", auth=alice.auth).status_code == 204
    assert client.get("/api/v1/files/fast.txt", auth=alice.auth).status_code == 404
    spec = client.get("/api/v1/openapi.json").json()
    assert {"get", "head", "put", "delete"} <= set(spec["paths"]["/files/{path}"])
