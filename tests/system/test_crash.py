"""kill -9 during concurrent uploads, restart on the same data dir, check the promises.

What a crash may and may not do (R-STORE-4):

(a) an upload the server ACKNOWLEDGED (201 with its sha256) survives, byte for byte;
(b) nothing half-written is ever visible: every listed file is a body some client sent
    whole, at the path it was sent to;
(c) what the crash abandoned (temp files, chunks of uploads that never committed) is
    reclaimed at the next start, and the quota counts exactly the chunks kept.

20 client threads upload at once (1 KiB..12 MiB, so multi-chunk files are in flight;
some bodies are sent by several clients, so chunks are shared between committed and
in-flight uploads; a third of the uploads overwrite a file, making versions). The
server is killed 3 times at random moments (more, up to 8, until a kill has left
something to reclaim) and restarted on the same data dir. The kill
moments are random; the seed is printed, and ALLSET_CRASH_SEED=N replays the same
uploads (the timing, and so the exact kill points, cannot be replayed). Runs on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import os
import random
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _util import (
    chunk_files,
    chunk_rows,
    db_query,
    make_account,
    repr_digest,
    restart,
    sha256,
    temp_files,
    walk,
)

from serverproc import ServerProcess

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(240)]

KiB, MiB = 1024, 1024 * 1024
WORKERS = 20
ROUNDS = 3  # = kills; the server is restarted after each
# Kills after ROUNDS until one has left a temp file or an orphan chunk to reclaim (about
# two kills in five leave none: the upload's writes in progress are short windows).
MAX_ROUNDS = 8
MAX_UPLOADS_PER_ROUND = 12  # per worker; the kill comes long before this
ROUND_DEADLINE = 30.0  # seconds; a round that does not get killed by then fails


def pick_size(rng: random.Random) -> int:
    """Mostly small, a good share of multi-chunk files (chunks: 256 KiB..4 MiB, ~1 MiB)."""
    x = rng.random()
    if x < 0.35:
        return rng.randint(1 * KiB, 256 * KiB)
    if x < 0.70:
        return rng.randint(256 * KiB, 3 * MiB)
    return rng.randint(3 * MiB, 12 * MiB)


@dataclass
class Attempt:
    worker: int
    round: int
    seq: int  # order of attempts on one path (each path is written by one worker only)
    path: str
    size: int
    sha: str
    mode: str  # "length" | "length+digest" | "chunked"
    outcome: str = "in-flight"  # "acked" | "http-<status>" | "transport-error"
    ack: dict[str, object] = field(default_factory=dict)
    ack_digest: str = ""
    error: str = ""


class Ledger:
    """Everything the clients did; thread-safe appends."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.path_seq: dict[str, int] = {}

    def new(self, worker: int, rnd: int, path: str, size: int, sha: str, mode: str) -> Attempt:
        with self.lock:
            seq = self.path_seq.get(path, 0)
            self.path_seq[path] = seq + 1
            a = Attempt(worker, rnd, seq, path, size, sha, mode)
            self.attempts.append(a)
            return a

    def acked_in_round(self, rnd: int) -> int:
        with self.lock:
            return sum(1 for a in self.attempts if a.round == rnd and a.outcome == "acked")

    def in_flight(self, rnd: int) -> list[Attempt]:
        with self.lock:
            return [a for a in self.attempts if a.round == rnd and a.outcome == "in-flight"]


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def worker(
    srv_url: str,
    cert: Path,
    auth: tuple[str, str],
    ledger: Ledger,
    seed: int,
    w: int,
    rnd: int,
    stop: threading.Event,
    shared_bodies: list[bytes],
) -> None:
    rng = random.Random(f"{seed}/{w}/{rnd}")
    deadline = time.monotonic() + ROUND_DEADLINE
    with httpx.Client(
        base_url=srv_url,
        verify=ssl.create_default_context(cafile=str(cert)),
        auth=auth,
        timeout=httpx.Timeout(20.0),
    ) as c:
        for k in range(MAX_UPLOADS_PER_ROUND):
            if stop.is_set() or time.monotonic() > deadline:
                return
            if rng.random() < 0.2:
                # Content other uploads also send, at the same time or later: chunks
                # shared between in-flight and committed uploads (dedup), charged once.
                data = rng.choice(shared_bodies)
            else:
                data = rng.randbytes(pick_size(rng))
            size = len(data)
            digest = sha256(data)
            # A third of the uploads overwrite this worker's own "shared" file (versions);
            # the rest go to a fresh path.
            path = (
                f"/crash/shared/w{w}.bin" if rng.random() < 0.33 else f"/crash/w{w}/r{rnd}-{k}.bin"
            )
            mode = rng.choice(["length", "length", "length+digest", "chunked"])
            a = ledger.new(w, rnd, path, size, digest, mode)
            headers = {"Repr-Digest": repr_digest(digest)} if mode == "length+digest" else {}
            content: bytes | Iterator[bytes] = (
                _pieces(data, 256 * KiB) if mode == "chunked" else data
            )
            try:
                r = c.put(f"/api/v1/files{path}", content=content, headers=headers)
            except httpx.TransportError as exc:  # the kill; nothing more from this worker
                a.error = repr(exc)
                a.outcome = "transport-error"
                return
            if r.status_code != 201:
                a.outcome = f"http-{r.status_code}"
                a.error = r.text[:500]
                return
            a.ack = r.json()
            a.ack_digest = r.headers.get("repr-digest", "")
            a.outcome = "acked"


def check_storage(
    srv: ServerProcess, tenant_id: str, tenant_name: str, via_cli: bool
) -> dict[str, int]:
    """(c): nothing abandoned survives a restart, and the quota is exactly what is kept."""
    leftovers = temp_files(srv)
    assert not leftovers, f"temporary files not reclaimed after restart: {leftovers[:10]}"
    rows = chunk_rows(srv)
    files = chunk_files(srv)
    row_keys = set(rows)
    for vol, keys in files.items():
        orphans = keys - row_keys
        assert not orphans, (
            f"volume {vol}: {len(orphans)} chunk files without a chunks row, "
            f"e.g. {sorted(orphans)[:3]}"
        )
        lost = row_keys - keys
        assert not lost, (
            f"volume {vol}: {len(lost)} chunks rows without their file, e.g. {sorted(lost)[:3]}"
        )
    referenced = set(db_query(srv, "SELECT DISTINCT tenant_id, hash FROM version_chunks"))
    assert row_keys == referenced, (
        f"chunks rows not referenced by any version: {sorted(row_keys - referenced)[:3]}; "
        f"referenced without a row: {sorted(referenced - row_keys)[:3]}"
    )
    charged = sum(size for (t, _), size in rows.items() if t == tenant_id)
    if via_cli:  # as the operator sees it
        used = srv.cli_json("tenant", "show", tenant_name)["used_bytes"]
    else:  # same number, a second faster
        used = db_query(srv, "SELECT used_bytes FROM tenants WHERE id = :id", id=tenant_id)[0][0]
    assert used == charged, f"used_bytes {used} != sum of its chunk sizes {charged}"
    return {"chunks": len(rows), "bytes": charged}


def test_kill_during_concurrent_uploads(tmp_path: Path, db_url: str) -> None:
    """On SQLite and on PostgreSQL (``db_url``, like every database test)."""
    seed = int(os.environ.get("ALLSET_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\ncrash test seed: {seed}  (replay: ALLSET_CRASH_SEED={seed})")
    rng = random.Random(seed)
    t0 = time.monotonic()

    env = {"ALLSET_GC_GRACE_SECONDS": "0"}  # orphans are reclaimed at the next start
    if db_url:
        env["ALLSET_DATABASE_URL"] = db_url
    srv = ServerProcess(tmp_path / "srv", env=env)
    srv.start()
    try:
        tenant_id, email, password = make_account(srv, "crashco", "owner@crashco.example")
        auth = (email, password)
        with srv.client(auth=auth) as c:
            for folder in ["/crash/shared", *(f"/crash/w{w}" for w in range(WORKERS))]:
                r = c.post("/api/v1/mkdir", json={"path": folder, "parents": True})
                assert r.status_code == 201, r.text

        ledger = Ledger()
        shared_bodies = [rng.randbytes(n) for n in (200 * KiB, 2 * MiB, 5 * MiB, 9 * MiB)]
        reclaimed_total = 0
        for rnd in range(MAX_ROUNDS):
            if rnd >= ROUNDS and reclaimed_total > 0:
                break
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=worker,
                    args=(srv.url, srv.cert, auth, ledger, seed, w, rnd, stop, shared_bodies),
                    daemon=True,
                )
                for w in range(WORKERS)
            ]
            for t in threads:
                t.start()
            # Let some uploads complete (so there is something acknowledged to lose),
            # then kill at a random moment while the others are mid-flight.
            wait_until = time.monotonic() + ROUND_DEADLINE
            while ledger.acked_in_round(rnd) < 3 and time.monotonic() < wait_until:
                time.sleep(0.01)
            assert ledger.acked_in_round(rnd) >= 3, (
                f"round {rnd}: no upload completed (seed {seed})"
            )
            time.sleep(rng.uniform(0.0, 1.5))
            inflight = len(ledger.in_flight(rnd))
            stop.set()
            srv.kill()
            for t in threads:
                t.join(timeout=30)
            assert not any(t.is_alive() for t in threads), "a client hung after the kill"
            done = [a for a in ledger.attempts if a.round == rnd]
            print(
                f"round {rnd}: killed with {inflight} uploads in flight; "
                f"{sum(a.outcome == 'acked' for a in done)} acknowledged, "
                f"{sum(a.outcome == 'transport-error' for a in done)} cut off "
                f"({time.monotonic() - t0:.1f}s)"
            )
            # What the crash left on the volumes, before the restart cleans up.
            tmp_before = len(temp_files(srv))
            files_before = chunk_files(srv)
            restart(srv)
            stats = check_storage(srv, tenant_id, "crashco", via_cli=rnd == 0)
            files_after = chunk_files(srv)
            for vol in files_before:
                assert files_after[vol] <= files_before[vol], "chunk files appeared during startup"
            reclaimed = len(files_before["1"] - files_after["1"])
            reclaimed_total += reclaimed + tmp_before
            print(
                f"  restart reclaimed {tmp_before} temp files and {reclaimed} orphan chunks "
                "per volume; "
                f"{stats['chunks']} chunks, {stats['bytes'] / MiB:.1f} MiB kept"
            )

        attempts = ledger.attempts
        # Every reply the server gave was a 201 (the only failures allowed are the kills).
        odd = [(a.path, a.outcome, a.error) for a in attempts if a.outcome.startswith("http-")]
        assert not odd, f"unexpected HTTP errors (seed {seed}): {odd[:5]}"
        assert all(a.outcome != "in-flight" for a in attempts)
        acked = [a for a in attempts if a.outcome == "acked"]
        cut = [a for a in attempts if a.outcome == "transport-error"]
        assert acked and cut, "the test did not exercise both outcomes"
        assert any(a.size > 4 * MiB for a in cut), (
            f"no multi-chunk upload was cut off (seed {seed})"
        )
        assert reclaimed_total > 0, (
            f"no kill left a temp file or an orphan chunk: reclaim was not exercised (seed {seed})"
        )
        for a in acked:  # what the server acknowledged is what was sent
            assert a.ack["sha256"] == a.sha and a.ack["size"] == a.size, (a.path, a.ack)
            assert a.ack_digest == repr_digest(a.sha), (a.path, a.ack_digest)

        by_path: dict[str, list[Attempt]] = {}
        for a in attempts:
            by_path.setdefault(a.path, []).append(a)
        for tries in by_path.values():
            tries.sort(key=lambda a: a.seq)
        sent = {(a.size, a.sha) for a in attempts}

        with srv.client(auth=auth) as c:
            # (b) no partial file is visible anywhere, and every visible file reads back
            # whole with the size, sha256 and Repr-Digest its listing shows.
            listed = {p: e for p, e in walk(c, "/") if e["type"] == "file"}
            current: dict[str, tuple[str, str]] = {}  # path -> (sha256 read, version)
            for path, e in listed.items():
                assert path in by_path, f"{path} is listed but nobody uploaded it"
                assert (e["size"], e["sha256"]) in sent, (
                    f"{path}: listed size/sha256 were never sent whole: {e}"
                )
                assert (e["size"], e["sha256"]) in {(a.size, a.sha) for a in by_path[path]}, (
                    f"{path}: listed content was never sent to this path: {e}"
                )
                r = c.get(f"/api/v1/files{path}")
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
                got = sha256(r.content)
                assert len(r.content) == e["size"] and got == e["sha256"], (
                    f"{path} reads back differently from its listing"
                )
                assert r.headers["repr-digest"] == repr_digest(got), path
                current[path] = (got, r.headers["x-allset-version"])

            # (a) each path holds its last acknowledged upload, unless a later upload to
            # it (cut off by a kill) committed before the server died.
            for path, tries in by_path.items():
                last_ack = max((a.seq for a in tries if a.outcome == "acked"), default=None)
                if last_ack is None:
                    continue
                assert path in current, f"acknowledged {path} is missing from its folder listing"
                allowed = {a.sha for a in tries if a.seq >= last_ack}
                assert current[path][0] in allowed, (
                    f"{path}: content is not its last acknowledged upload"
                )
                if tries[-1].outcome == "acked":
                    assert current[path][0] == tries[-1].sha, (
                        f"{path}: last acknowledged upload lost"
                    )

            # (a) every acknowledged version reads back exactly, superseded ones included.
            for a in acked:
                if current[a.path][1] == a.ack["version"]:
                    assert current[a.path][0] == a.sha, f"acknowledged {a.path} reads back wrong"
                    continue
                r = c.get(f"/api/v1/files{a.path}", params={"version": str(a.ack["version"])})
                assert r.status_code == 200, (a.path, r.status_code, r.text[:300])
                assert sha256(r.content) == a.sha, (
                    f"acknowledged {a.path} v{a.ack['version']} reads back wrong"
                )
                assert r.headers["repr-digest"] == repr_digest(a.sha)
            unacked_visible = [
                p for p in listed if not any(a.outcome == "acked" for a in by_path[p])
            ]

        # (c) once more, at the very end.
        check_storage(srv, tenant_id, "crashco", via_cli=True)
        print(
            f"{len(attempts)} uploads ({sum(a.size for a in attempts) / MiB:.0f} MiB): "
            f"{len(acked)} acknowledged, {len(cut)} cut off; {len(listed)} files visible "
            f"({len(unacked_visible)} committed without an ack); "
            f"{time.monotonic() - t0:.1f}s"
        )
    finally:
        srv.stop()
