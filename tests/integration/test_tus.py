"""tus 1.0.0 at /tus/ through the whole ASGI app, on SQLite and PostgreSQL: the protocol's
rules (offsets, checksums, termination, expiration, concatenation), and ours (quota while
unfinished, commit like a PUT with a Repr-Digest proof, isolation between Clients)."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import timedelta

import httpx
from starlette.testclient import TestClient

from allset.db.models import utcnow
from allset.runtime import Runtime
from conftest import Account, make_account, problem

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET = "application/offset+octet-stream"


def meta(**kv: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kv.items())


def digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def create(
    client: TestClient, who: Account, length: int, headers: dict[str, str] | None = None, **kv: str
) -> httpx.Response:
    h = {**TUS, "Upload-Length": str(length), "Upload-Metadata": meta(**kv), **(headers or {})}
    return client.post("/tus/", auth=who.auth, headers=h)


def patch(
    client: TestClient, who: Account, url: str, offset: int, data: bytes, **headers: str
) -> httpx.Response:
    h = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET, **headers}
    return client.patch(url, auth=who.auth, headers=h, content=data)


def test_options_advertise_the_protocol(client: TestClient) -> None:
    r = client.options("/tus/")
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    for ext in (
        "creation",
        "creation-with-upload",
        "expiration",
        "checksum",
        "termination",
        "concatenation",
    ):
        assert ext in r.headers["tus-extension"].split(",")
    assert set(r.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "sha256"}
    assert int(r.headers["tus-max-size"]) > 0


def test_upload_in_pieces_commits_with_proof(client: TestClient, alice: Account) -> None:
    client.post("/api/v1/mkdir", json={"path": "/docs"}, auth=alice.auth)
    data = bytes(range(256)) * 4000
    r = create(client, alice, len(data), filename="scan.pdf", path="/docs")
    assert r.status_code == 201, r.text
    url = r.headers["location"]
    assert "upload-expires" in r.headers
    assert client.get("/api/v1/files/docs/scan.pdf", auth=alice.auth).status_code == 404
    first = patch(client, alice, url, 0, data[:300_000])
    assert first.status_code == 204 and first.headers["upload-offset"] == "300000"
    head = client.head(url, auth=alice.auth, headers=TUS)
    assert head.headers["upload-offset"] == "300000"
    assert head.headers["upload-length"] == str(len(data))
    assert head.headers["cache-control"] == "no-store"
    last = patch(client, alice, url, 300_000, data[300_000:])
    assert last.status_code == 204
    assert last.headers["repr-digest"] == digest(data)
    got = client.get("/api/v1/files/docs/scan.pdf", auth=alice.auth)
    assert got.content == data and got.headers["repr-digest"] == digest(data)
    # A second upload to the same name is a new version, as with PUT.
    again = create(client, alice, 3, filename="scan.pdf", path="/docs")
    patch(client, alice, again.headers["location"], 0, b"new")
    versions = client.get("/api/v1/versions/docs/scan.pdf", auth=alice.auth).json()["versions"]
    assert len(versions) == 2


def test_protocol_errors(client: TestClient, alice: Account) -> None:
    url = create(client, alice, 10, filename="a.bin").headers["location"]
    wrong = patch(client, alice, url, 4, b"abcd")
    assert wrong.status_code == 409 and wrong.headers["upload-offset"] == "0"
    problem(wrong)
    no_version = client.patch(url, auth=alice.auth, content=b"x", headers={"Upload-Offset": "0"})
    assert no_version.status_code == 412 and no_version.headers["tus-version"] == "1.0.0"
    bad_type = client.patch(
        url, auth=alice.auth, content=b"x", headers={**TUS, "Upload-Offset": "0"}
    )
    assert bad_type.status_code == 415
    too_long = patch(client, alice, url, 0, b"x" * 11)
    assert too_long.status_code == 400
    assert create(client, alice, 5).status_code == 400  # no filename
    missing_folder = create(client, alice, 5, filename="a.txt", path="/nowhere")
    assert missing_folder.status_code == 409
    bad_meta = client.post(
        "/tus/",
        auth=alice.auth,
        headers={**TUS, "Upload-Length": "1", "Upload-Metadata": "filename ***"},
    )
    assert bad_meta.status_code == 400
    assert client.post("/tus/", auth=alice.auth, headers=TUS).status_code == 400  # no length


def test_checksums(client: TestClient, alice: Account) -> None:
    data = b"checksummed bytes " * 100
    url = create(client, alice, len(data) * 2, filename="c.bin").headers["location"]
    sha1 = "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert patch(client, alice, url, 0, data, **{"Upload-Checksum": sha1}).status_code == 204
    bad = "sha256 " + base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    r = patch(client, alice, url, len(data), data, **{"Upload-Checksum": bad})
    assert r.status_code == 460
    assert problem(r)["upload_offset"] == len(data)
    head = client.head(url, auth=alice.auth, headers=TUS)
    assert head.headers["upload-offset"] == str(len(data))  # the bad body was discarded
    good = "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()
    done = patch(client, alice, url, len(data), data, **{"Upload-Checksum": good})
    assert done.headers["repr-digest"] == digest(data * 2)
    fresh = create(client, alice, 4, filename="d.bin").headers["location"]
    md5 = patch(client, alice, fresh, 0, b"abcd", **{"Upload-Checksum": "md5 AAAA"})
    assert md5.status_code == 400 and "sha1 or sha256" in problem(md5)["detail"]


def test_creation_with_upload_and_empty_file(client: TestClient, alice: Account) -> None:
    data = b"all at once"
    r = client.post(
        "/tus/",
        auth=alice.auth,
        content=data,
        headers={
            **TUS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(filename="once.txt"),
            "Content-Type": OFFSET,
        },
    )
    assert r.status_code == 201 and r.headers["upload-offset"] == str(len(data))
    assert r.headers["repr-digest"] == digest(data)
    assert client.get("/api/v1/files/once.txt", auth=alice.auth).content == data
    empty = create(client, alice, 0, filename="empty.txt")
    assert empty.status_code == 201 and empty.headers["repr-digest"] == digest(b"")
    assert client.get("/api/v1/files/empty.txt", auth=alice.auth).content == b""


def test_termination_frees_bytes_and_quota(
    client: TestClient, alice: Account, runtime: Runtime
) -> None:
    url = create(client, alice, 5000, filename="t.bin").headers["location"]
    patch(client, alice, url, 0, b"z" * 2000)
    upload_id = url.rsplit("/", 1)[-1]
    assert runtime.resumables.part_path(upload_id).stat().st_size == 2000
    assert runtime.files.usage(alice.principal).inflight == 5000
    assert client.delete(url, auth=alice.auth, headers=TUS).status_code == 204
    assert client.head(url, auth=alice.auth, headers=TUS).status_code == 404
    assert not runtime.resumables.part_path(upload_id).exists()
    assert runtime.files.usage(alice.principal).inflight == 0


def test_unfinished_uploads_expire(client: TestClient, alice: Account, runtime: Runtime) -> None:
    url = create(client, alice, 100, filename="late.bin").headers["location"]
    patch(client, alice, url, 0, b"a" * 10)
    upload_id = url.rsplit("/", 1)[-1]
    assert runtime.resumables.expire(utcnow() + timedelta(hours=23)) == 0
    assert runtime.resumables.expire(utcnow() + timedelta(hours=25)) == 1
    assert client.head(url, auth=alice.auth, headers=TUS).status_code == 404
    assert not runtime.resumables.part_path(upload_id).exists()
    assert runtime.files.usage(alice.principal).inflight == 0


def test_concatenation_of_parallel_parts(client: TestClient, alice: Account) -> None:
    pieces = [b"A" * 70_000, b"B" * 50_000, b"C" * 3]
    urls = []
    for piece in pieces:
        r = create(client, alice, len(piece), {"Upload-Concat": "partial"})
        assert r.status_code == 201
        urls.append(r.headers["location"])
    for url, piece in zip(reversed(urls), reversed(pieces), strict=True):  # any order
        assert patch(client, alice, url, 0, piece).status_code == 204
    assert client.get("/api/v1/tree/", auth=alice.auth).json()["entries"] == []  # not committed
    final = client.post(
        "/tus/",
        auth=alice.auth,
        headers={
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": meta(filename="joined.bin"),
        },
    )
    assert final.status_code == 201, final.text
    whole = b"".join(pieces)
    assert final.headers["repr-digest"] == digest(whole)
    assert client.get("/api/v1/files/joined.bin", auth=alice.auth).content == whole
    for url in urls:  # parts are consumed
        assert client.head(url, auth=alice.auth, headers=TUS).status_code == 404


def test_final_refuses_unfinished_parts(client: TestClient, alice: Account) -> None:
    url = create(client, alice, 10, {"Upload-Concat": "partial"}).headers["location"]
    r = client.post(
        "/tus/",
        auth=alice.auth,
        headers={**TUS, "Upload-Concat": f"final;{url}", "Upload-Metadata": meta(filename="x")},
    )
    assert r.status_code == 400 and "not finished" in problem(r)["detail"]


def test_unfinished_uploads_count_against_quota(client: TestClient, runtime: Runtime) -> None:
    small = make_account(runtime, quota=100_000, name="small")
    assert create(client, small, 60_000, filename="one.bin").status_code == 201
    over = create(client, small, 60_000, filename="two.bin")
    assert over.status_code == 507
    assert problem(over)["quota_bytes"] == 100_000
    put = client.put("/api/v1/files/three.bin", auth=small.auth, content=b"q" * 50_000)
    assert put.status_code == 507  # the REST path sees the reservation too


def test_another_clients_upload_is_404(client: TestClient, alice: Account, bob: Account) -> None:
    url = create(client, alice, 10, filename="mine.bin").headers["location"]
    assert client.head(url, auth=bob.auth, headers=TUS).status_code == 404
    assert patch(client, bob, url, 0, b"x").status_code == 404
    assert client.delete(url, auth=bob.auth, headers=TUS).status_code == 404
    final = client.post(
        "/tus/",
        auth=bob.auth,
        headers={**TUS, "Upload-Concat": f"final;{url}", "Upload-Metadata": meta(filename="x")},
    )
    assert final.status_code == 404
    assert client.head(url, auth=alice.auth, headers=TUS).status_code == 200


def test_last_patch_commits_and_a_failed_commit_keeps_the_bytes(
    client: TestClient, alice: Account, runtime: Runtime
) -> None:
    """The last byte commits at once from the chunks stored as the body arrived (the part
    file is never written). If that commit fails (here a folder appeared at the
    destination), every byte is still kept and acknowledged, the client hears why, and
    a retry at the final offset commits once the way is clear."""
    data = bytes(range(251)) * 3000
    url = create(client, alice, len(data), filename="plan.bin").headers["location"]
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    assert patch(client, alice, url, 0, data).status_code == 204
    assert not runtime.resumables.part_path(upload_id).exists()
    assert client.head(url, auth=alice.auth, headers=TUS).headers["upload-offset"] == str(len(data))
    assert client.get("/api/v1/files/plan.bin", auth=alice.auth).content == data

    url = create(client, alice, len(data), filename="late.bin").headers["location"]
    assert patch(client, alice, url, 0, data[:-1]).status_code == 204
    # A PATCH that ends early: its bytes, chunked as they came, are copied back out to
    # the part file, which is what a restarted server resumes from.
    late_id = url.rstrip("/").rsplit("/", 1)[-1]
    assert runtime.resumables.part_path(late_id).read_bytes() == data[:-1]
    client.post("/api/v1/mkdir", json={"path": "/late.bin"}, auth=alice.auth)
    refused = patch(client, alice, url, len(data) - 1, data[-1:])
    assert refused.status_code == 409, refused.text
    assert "folder" in problem(refused)["detail"]
    head = client.head(url, auth=alice.auth, headers=TUS)
    assert head.headers["upload-offset"] == str(len(data))  # nothing to send again
    client.delete("/api/v1/files/late.bin", auth=alice.auth)
    done = patch(client, alice, url, len(data), b"")
    assert done.status_code == 204 and done.headers["repr-digest"] == digest(data)
    assert client.get("/api/v1/files/late.bin", auth=alice.auth).content == data


def test_early_end_copies_chunked_bytes_back_to_the_part_file(
    client: TestClient, alice: Account, runtime: Runtime
) -> None:
    """A PATCH long enough to be cut into chunks on the way (over 8 MiB) that stops
    before the end: the part file then holds exactly the acknowledged bytes, from the
    stored chunks and the chunker's buffer, and the upload completes from there."""
    data = random.Random(5).randbytes(11 * 1024 * 1024)
    url = create(client, alice, len(data), filename="long.bin").headers["location"]
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    first = 9 * 1024 * 1024 + 12345
    assert patch(client, alice, url, 0, data[:first]).status_code == 204
    assert runtime.resumables.part_path(upload_id).read_bytes() == data[:first]
    last = patch(client, alice, url, first, data[first:])
    assert last.status_code == 204 and last.headers["repr-digest"] == digest(data)
    assert client.get("/api/v1/files/long.bin", auth=alice.auth).content == data
