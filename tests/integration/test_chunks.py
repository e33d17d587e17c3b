"""The chunk protocol (our client's way to send only what changed), through the whole app
on SQLite and PostgreSQL, driven by the client library itself (allset.client.transfer)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from allset.client.transfer import (
    ProofMismatch,
    TransferError,
    plan_file,
    pull_file,
    push_file,
)
from conftest import Account, problem

MiB = 1 << 20


@pytest.fixture
def http(client: TestClient, alice: Account) -> TestClient:
    client.auth = alice.auth
    return client


def test_small_edit_sends_only_changed_chunks(http: TestClient, tmp_path: Path) -> None:
    rng = random.Random(7)
    original = rng.randbytes(64 * MiB)
    local = tmp_path / "disk.img"
    local.write_bytes(original)
    first = push_file(http, local, "/disk.img")
    assert (
        first.bytes_sent == len(original) and first.sha256 == hashlib.sha256(original).hexdigest()
    )

    # 1 MiB changed in the middle, 10 bytes inserted near the start.
    edited = bytearray(original)
    mid = len(edited) // 2
    edited[mid : mid + MiB] = rng.randbytes(MiB)
    edited[1000:1000] = b"0123456789"
    local.write_bytes(bytes(edited))
    done: list[int] = []
    second = push_file(http, local, "/disk.img", base_version=first.version, progress=done.append)
    assert second.bytes_sent < 4 * MiB, second
    assert sum(done) == len(edited)  # the progress bar reaches 100 % (sent + already there)
    assert second.chunks_sent < second.chunks_total
    got = http.get("/api/v1/files/disk.img")
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(bytes(edited)).digest()

    # A change based on the old version is refused: someone else changed it since.
    local.write_bytes(b"stale edit")
    with pytest.raises(TransferError, match="412"):
        push_file(http, local, "/disk.img", base_version=first.version)
    assert http.get("/api/v1/tree/disk.img").json()["version"] == second.version


def test_pull_fetches_only_missing_chunks(http: TestClient, tmp_path: Path) -> None:
    data = os.urandom(6 * MiB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    push_file(http, src, "/f.bin")
    plan = plan_file(src)
    have = {h: data[o : o + n] for h, o, n in plan.chunks[1:]}  # all but the first chunk
    dest = tmp_path / "dest.bin"
    seen: list[tuple[int, int]] = []
    fetched = pull_file(http, "/f.bin", dest, have, progress=lambda n, t: seen.append((n, t)))
    assert fetched == plan.chunks[0][2]
    assert seen[0] == (0, len(data)) and sum(n for n, _ in seen) == len(data)
    assert dest.read_bytes() == data
    assert not (tmp_path / "dest.bin.allset-part").exists()


def test_chunk_protocol_refuses_bad_input(http: TestClient) -> None:
    data = b"some chunk bytes"
    h = hashlib.sha256(data).hexdigest()
    wrong = http.put(f"/api/v1/chunks/{h}", content=b"other bytes")
    assert wrong.status_code == 400 and problem(wrong)["type"].endswith("digest-mismatch")
    assert http.post("/api/v1/chunks/missing", json={"chunks": [h]}).json()["missing"] == [h]
    ok = http.put(f"/api/v1/chunks/{h}", content=data)
    assert ok.status_code == 201 and ok.json()["stored"] is True
    assert http.post("/api/v1/chunks/missing", json={"chunks": [h]}).json()["missing"] == []
    assert http.put("/api/v1/chunks/NOTHEX", content=data).status_code == 400
    bad_list = http.post("/api/v1/chunks/missing", json={"chunks": ["xyz"]})
    assert bad_list.status_code in (400, 422)
    problem(bad_list)
    unknown = hashlib.sha256(b"never sent").hexdigest()
    r = http.post("/api/v1/commit", json={"path": "/x.bin", "sha256": unknown, "chunks": [unknown]})
    assert r.status_code == 400 and unknown in problem(r)["missing"]
    # Chunks that exist but do not hash to the announced file: nothing is made.
    r = http.post("/api/v1/commit", json={"path": "/x.bin", "sha256": unknown, "chunks": [h]})
    assert r.status_code == 400 and problem(r)["type"].endswith("digest-mismatch")
    assert http.get("/api/v1/files/x.bin").status_code == 404
    # The right manifest works, answers with the proof, and the chunk is now readable.
    r = http.post(
        "/api/v1/commit",
        json={"path": "/x.bin", "sha256": h, "chunks": [h], "size": len(data)},
    )
    assert r.status_code == 201 and r.json()["sha256"] == h
    assert http.get(f"/api/v1/chunks/{h}").content == data
    man = http.get("/api/v1/manifest/x.bin").json()
    assert man["chunks"] == [{"hash": h, "offset": 0, "size": len(data)}]


def test_proof_mismatch_is_loud(http: TestClient, tmp_path: Path) -> None:
    """A proof that does not match what was sent (here: altered on the way back, as a
    broken proxy would) makes the client fail loudly instead of reporting success."""

    def tamper(resp: httpx.Response) -> None:
        if resp.request.url.path.endswith("/commit"):
            resp.headers["repr-digest"] = "sha-256=:" + "A" * 43 + "=:"

    src = tmp_path / "a.bin"
    src.write_bytes(b"content")
    http.event_hooks["response"] = [tamper]
    try:
        with pytest.raises(ProofMismatch, match="NOT trustworthy"):
            push_file(http, src, "/a.bin")
    finally:
        http.event_hooks["response"] = []
