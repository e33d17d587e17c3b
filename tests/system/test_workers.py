"""``allset-server serve --workers N`` (server/workers.py): several server processes on
one port, one data dir and one database, on SQLite and PostgreSQL.

What a user of such a server must not be able to tell: every acknowledged upload reads
back whole from any worker, the operator's CLI sees every worker's live transfers, a
worker that dies is replaced while the others serve, a stop stops them all, and a killed
server leaves no worker behind (a half-alive server holding the port would be worse than
a dead one)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serverproc import ServerProcess

KiB, MiB = 1024, 1024 * 1024


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(what: str, check: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def two_workers(tmp_path: Path, db_url: str) -> Iterator[ServerProcess]:
    env = {"ALLSET_WORKERS": "2", "ALLSET_GC_GRACE_SECONDS": "0"}
    if db_url:
        env["ALLSET_DATABASE_URL"] = db_url
    srv = ServerProcess(tmp_path / "srv", env=env)
    srv.start()
    yield srv
    srv.stop()


def test_two_workers_serve_one_data_dir(two_workers: ServerProcess) -> None:
    srv = two_workers
    assert srv.proc is not None
    workers = children(srv.proc.pid)
    assert len(workers) == 2, workers
    # Initialised by a child process, its outcome still shown once by the supervisor...
    assert srv.fingerprint and srv.operator_password
    # ...which holds none of the database, the store or the web app: native modules each
    # of them loads, looked for among what the process has mapped.
    supervisor_maps = Path(f"/proc/{srv.proc.pid}/maps").read_text()
    for native in ("sqlalchemy", "pydantic_core", "_argon2_cffi", "fastcdc", "uvloop"):
        assert native not in supervisor_maps, f"the supervisor loaded {native}"
    assert any(native in Path(f"/proc/{w}/maps").read_text() for w in workers)
    auth = srv.make_account("wk", "owner@wk.example")
    with srv.client(auth=auth) as c:
        assert c.post("/api/v1/mkdir", json={"path": "/w"}).status_code == 201

    # 8 connections at once, small files and multi-chunk ones, as a sync client would.
    sent: dict[str, str] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def uploader(n: int) -> None:
        rng = random.Random(n)
        with srv.client(auth=auth) as c:
            for i in range(12):
                size = 9 * MiB if i == 5 else rng.choice([4 * KiB, 60 * KiB, 300 * KiB])
                body = rng.randbytes(size)
                path = f"/w/c{n}-{i}.bin"
                r = c.put(f"/api/v1/files{path}", content=body)
                with lock:
                    if r.status_code != 201:
                        errors.append(f"{path}: {r.status_code} {r.text[:200]}")
                    else:
                        sent[path] = hashlib.sha256(body).hexdigest()

    threads = [threading.Thread(target=uploader, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:5]
    assert len(sent) == 96
    for path, digest in sent.items():  # each on a fresh connection: any worker answers
        with srv.client(auth=auth) as c:
            r = c.get(f"/api/v1/files{path}")
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest
    lines = [json.loads(x) for x in srv.log_path.read_text().splitlines() if x.startswith("{")]
    served = {x.get("worker") for x in lines if x.get("event") == "request"}
    assert served == {0, 1}, f"requests were not spread over both workers: {served}"

    # /metrics, answered by either worker, counts the requests of both.
    for _ in range(4):
        with srv.client() as c:
            text = c.get("/metrics").text
        puts = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("allset_http_requests_total{") and 'method="PUT"' in line
        )
        assert puts == 96, f"/metrics counted {puts} PUTs of the 96 both workers served"

    # The operator's CLI asks every worker (each has its own control socket).
    assert srv.cli("transfers", "list").stdout.strip() == "no transfer in progress"
    sockets = sorted(p.name for p in (srv.data_dir / "run").glob("control*.sock"))
    assert sockets == ["control.1.sock", "control.sock"], sockets

    # A worker that dies is replaced; the service goes on meanwhile.
    os.kill(workers[0], signal.SIGKILL)
    wait_for("the worker to die", lambda: not alive(workers[0]))
    wait_for("a new worker", lambda: len([p for p in children(srv.proc.pid) if alive(p)]) == 2)
    assert workers[0] not in children(srv.proc.pid)  # reaped, replaced
    with srv.client(auth=auth) as c:
        for i in range(10):
            r = c.put(f"/api/v1/files/w/after{i}", content=b"x" * (i + 1))
            assert r.status_code == 201, r.text

    # A stop stops them all, cleanly.
    now = children(srv.proc.pid)
    srv.stop()
    assert srv.proc.returncode == 0
    wait_for("every worker to stop", lambda: not any(alive(p) for p in now))


def test_a_killed_supervisor_leaves_no_worker(two_workers: ServerProcess) -> None:
    srv = two_workers
    assert srv.proc is not None
    workers = children(srv.proc.pid)
    assert len(workers) == 2
    srv.kill()
    wait_for("the workers to die with their parent", lambda: not any(alive(p) for p in workers))
    # And the data dir serves again at once, from a new server (no worker holds it).
    srv.start()
    with srv.client() as c:
        assert c.get("/healthz").status_code == 200
