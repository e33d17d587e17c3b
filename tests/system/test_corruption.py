"""Damaged replicas: reads stay correct and heal, scrub finds and repairs the rest.

Every chunk is on both volumes (DATA/volumes/1 and /2). The test damages copies behind
the running server's back (flipped bytes, a truncated file, a deleted file) and checks:

1. read-through: a GET returns exactly the uploaded bytes, and every bad copy the read
   went through is rewritten from the good one before the GET completes;
2. scrub: copies nobody has read are found by ``allset-server scrub`` (exit 1, each one
   listed), fixed by ``scrub --repair``, and a second scrub is clean;
3. both copies bad: the GET fails promptly (no hang, never a full-length wrong body),
   the rest of the file and server still work, and scrub calls the chunk unrecoverable.

Each assertion is about a state the test controls: what the server may have touched is
checked against the bytes on disk, hashed here independently of the server's code.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _util import (
    VOLUMES,
    chunk_path,
    chunk_rows,
    client,
    file_chunks,
    make_account,
    repr_digest,
    sha256,
)

from serverproc import ServerProcess

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(180)]

MiB = 1024 * 1024
REPLICA = {"1": "volume1", "2": "volume2"}  # volume dir -> replica name in reports


def flip(path: Path, rng: random.Random, count: int = 3) -> None:
    """Flip bytes in place, same length (bit rot)."""
    data = bytearray(path.read_bytes())
    for _ in range(count):
        i = rng.randrange(len(data))
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    """A torn copy: right name, half the bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def copy_state(srv: ServerProcess, tenant_id: str, digest: str, vol: str) -> str:
    """'ok' | 'missing' | 'corrupt', judged from the bytes on disk."""
    p = chunk_path(srv, vol, tenant_id, digest)
    if not p.exists():
        return "missing"
    return "ok" if sha256(p.read_bytes()) == digest else "corrupt"


def bad_copies(srv: ServerProcess, tenant_id: str) -> set[tuple[str, str, str]]:
    """Every damaged copy of every chunk the database knows: {(key, replica, problem)}."""
    out = set()
    for t, digest in chunk_rows(srv):
        assert t == tenant_id
        for vol in VOLUMES:
            state = copy_state(srv, t, digest, vol)
            if state != "ok":
                out.add((f"{t}/{digest}", REPLICA[vol], state))
    return out


def scrub(srv: ServerProcess, *extra: str) -> tuple[int, dict[str, Any]]:
    import json

    res = srv.cli("scrub", *extra, "--json", check=False)
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        raise AssertionError(
            f"scrub printed no JSON (exit {res.returncode}): {res.stdout!r} {res.stderr[-2000:]}"
        ) from None


def reported(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(p["key"], p["replica"], p["problem"]) for p in report["problems"]}


def test_damaged_replicas_are_read_correctly_repaired_and_scrubbed(server: ServerProcess) -> None:
    srv = server
    rng = random.Random(20261128)
    t0 = time.monotonic()
    tenant_id, email, password = make_account(srv, "rotco", "owner@rotco.example")

    bodies: dict[str, bytes] = {}
    with client(srv, (email, password)) as c:
        for name in ("a.bin", "b.bin", "c.bin", "d.bin"):
            bodies[name] = rng.randbytes(6 * MiB + rng.randrange(MiB))
            r = c.put(f"/api/v1/files/{name}", content=bodies[name])
            assert r.status_code == 201, r.text
            assert r.json()["sha256"] == sha256(bodies[name])
    manifests = {name: file_chunks(srv, tenant_id, name) for name in bodies}
    for name, m in manifests.items():  # the manifest tiles the file
        assert b"".join(bodies[name][off : off + size] for _, off, size in m) == bodies[name]
        assert all(sha256(bodies[name][off : off + size]) == h for h, off, size in m)
    chunks = {name: [h for h, _, _ in m] for name, m in manifests.items()}
    offset_of = {h: off for m in manifests.values() for h, off, _ in m}
    assert all(len(cs) >= 3 for cs in chunks.values()), {n: len(cs) for n, cs in chunks.items()}
    assert len({d for cs in chunks.values() for d in cs}) == sum(
        len(cs) for cs in chunks.values()
    ), "no shared chunks"
    assert bad_copies(srv, tenant_id) == set()

    # Distinct chunks of a, b and c for each kind of damage; d is kept for part 3.
    pool = [(n, d) for n in ("a.bin", "b.bin", "c.bin") for d in chunks[n]]
    rng.shuffle(pool)
    assert len(pool) >= 10, len(pool)

    def path(vol: str, digest: str) -> Path:
        return chunk_path(srv, vol, tenant_id, digest)

    # ---- 1. read-through repair ------------------------------------------------------
    # Reads use volume 1 first and fall back to volume 2, so damage on volume 1 is always
    # read through; damage on volume 2 behind a good volume-1 copy is not (part 2).
    v1_flipped = [pool.pop()[1], pool.pop()[1]]
    v1_torn = pool.pop()[1]
    v1_deleted = pool.pop()[1]
    v2_flipped = [pool.pop()[1], pool.pop()[1]]
    for d in v1_flipped:
        flip(path("1", d), rng)
    truncate(path("1", v1_torn))
    path("1", v1_deleted).unlink()
    for d in v2_flipped:
        flip(path("2", d), rng)
    read_through = dict.fromkeys([*v1_flipped, v1_torn], "corrupt") | {v1_deleted: "missing"}
    for d, problem in read_through.items():
        assert copy_state(srv, tenant_id, d, "1") == problem

    with client(srv, (email, password)) as c:
        for name in ("a.bin", "b.bin", "c.bin"):
            r = c.get(f"/api/v1/files/{name}")
            assert r.status_code == 200, r.text[:300]
            assert sha256(r.content) == sha256(bodies[name]), f"{name} read back wrong"
            assert r.headers["repr-digest"] == repr_digest(sha256(bodies[name]))
    for d in read_through:
        assert copy_state(srv, tenant_id, d, "1") == "ok", (
            f"volume1 copy of {d} not repaired by the read"
        )
        assert copy_state(srv, tenant_id, d, "2") == "ok"
    # A range read over a damaged copy is verified and repaired the same way.
    name, d = pool.pop()
    flip(path("1", d), rng)
    offset = offset_of[d]
    with client(srv, (email, password)) as c:
        r = c.get(
            f"/api/v1/files/{name}", headers={"Range": f"bytes={offset + 10}-{offset + 1000}"}
        )
        assert r.status_code == 206, r.text[:300]
        assert r.content == bodies[name][offset + 10 : offset + 1001]
    assert copy_state(srv, tenant_id, d, "1") == "ok", "range read did not repair the copy it read"

    # ---- 2. scrub finds what nobody read ---------------------------------------------
    unread: set[tuple[str, str, str]] = set()
    d = pool.pop()[1]
    flip(path("1", d), rng)
    unread.add((f"{tenant_id}/{d}", "volume1", "corrupt"))
    d = pool.pop()[1]
    flip(path("2", d), rng)
    unread.add((f"{tenant_id}/{d}", "volume2", "corrupt"))
    d = pool.pop()[1]
    path("2", d).unlink()
    unread.add((f"{tenant_id}/{d}", "volume2", "missing"))
    if pool:
        d = pool.pop()[1]
        truncate(path("2", d))
        unread.add((f"{tenant_id}/{d}", "volume2", "corrupt"))
    on_disk = bad_copies(srv, tenant_id)
    assert unread <= on_disk
    # Whatever is left of part 1 (volume-2 damage behind good volume-1 copies) is also
    # still bad on disk, and scrub must report it too.
    assert on_disk - unread <= {(f"{tenant_id}/{d}", "volume2", "corrupt") for d in v2_flipped}
    n_chunks = len(chunk_rows(srv))

    code, report = scrub(srv)
    assert code == 1, report
    assert report["ok"] is False and report["unrecoverable"] == []
    assert report["checked"] == n_chunks
    assert reported(report) == on_disk, f"scrub reported {reported(report)}, disk has {on_disk}"
    assert len(report["problems"]) == len(on_disk), "a bad copy was reported twice"
    assert not any(p["repaired"] for p in report["problems"])
    assert bad_copies(srv, tenant_id) == on_disk, "scrub without --repair changed the volumes"

    code, report = scrub(srv, "--repair")
    assert code == 0, report
    assert reported(report) == on_disk
    assert all(p["repaired"] for p in report["problems"]), report
    assert bad_copies(srv, tenant_id) == set(), "scrub --repair left bad copies"

    code, report = scrub(srv)
    assert code == 0, report
    assert report == {"checked": n_chunks, "problems": [], "unrecoverable": [], "ok": True}

    # ---- 3. both copies of one chunk bad ---------------------------------------------
    d_chunks = chunks["d.bin"]
    lost = d_chunks[len(d_chunks) // 2]
    lost_at = offset_of[lost]
    flip(path("1", lost), rng)
    flip(path("2", lost), rng)
    outcome = _get_outcome(srv, (email, password), "/api/v1/files/d.bin", len(bodies["d.bin"]))
    body = outcome.pop("_body")
    outcome["prefix_ok"] = body == bodies["d.bin"][: len(body)]
    print(f"\nGET with both copies of a chunk corrupt: {outcome} (bad chunk at {lost_at})")
    assert outcome["seconds"] < 20, "the failing GET took too long"
    if outcome["status"] is not None and outcome["status"] >= 400:
        assert outcome["status"] >= 500, outcome
    else:
        # Headers went out before the bad chunk was reached: the body must stop short
        # (the client sees an incomplete message), never a full-length wrong body.
        assert outcome["body_bytes"] < len(bodies["d.bin"]), outcome
        assert outcome["body_bytes"] <= lost_at, "bytes of the bad chunk were sent"
        assert outcome["prefix_ok"], "the bytes sent before the failure are wrong"
    with client(srv, (email, password)) as c:
        assert c.get("/healthz").status_code == 200
        # The rest of the file is still readable; other files are unaffected.
        r = c.get("/api/v1/files/d.bin", headers={"Range": f"bytes=0-{lost_at - 1}"})
        assert r.status_code == 206 and r.content == bodies["d.bin"][:lost_at]
        r = c.get("/api/v1/files/a.bin")
        assert r.status_code == 200 and r.content == bodies["a.bin"]
        # A read that STARTS in the bad chunk is refused before any header goes out:
        # a clean problem+json, not a 200 with a cut body.
        r = c.get("/api/v1/files/d.bin", headers={"Range": f"bytes={lost_at}-"})
        assert r.status_code == 500, r.status_code
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/integrity")
    # The failed read wrote nothing over either copy.
    assert copy_state(srv, tenant_id, lost, "1") == "corrupt"
    assert copy_state(srv, tenant_id, lost, "2") == "corrupt"

    code, report = scrub(srv)
    assert code == 1, report
    assert report["unrecoverable"] == [f"{tenant_id}/{lost}"], report
    assert report["problems"] == [] and report["ok"] is False
    code, report = scrub(srv, "--repair")
    assert code == 1, report
    assert report["unrecoverable"] == [f"{tenant_id}/{lost}"], report
    print(f"corruption test: {time.monotonic() - t0:.1f}s")


def _get_outcome(srv: ServerProcess, auth: tuple[str, str], url: str, size: int) -> dict[str, Any]:
    """What a client sees of a GET: status (None if no response), body bytes received,
    whether they are a correct prefix, how it ended, and how long it took."""
    out: dict[str, Any] = {"status": None, "body_bytes": 0, "ended": "complete", "seconds": 0.0}
    received = bytearray()
    t = time.monotonic()
    with client(srv, auth, timeout=15.0) as c:
        try:
            with c.stream("GET", url) as r:
                out["status"] = r.status_code
                out["content_length"] = r.headers.get("content-length")
                for piece in r.iter_raw():
                    received += piece
                    if len(received) > 2 * size:
                        break
        except httpx.TransportError as exc:
            out["ended"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = round(time.monotonic() - t, 2)
    out["body_bytes"] = len(received)
    out["_body"] = bytes(received)
    return out
