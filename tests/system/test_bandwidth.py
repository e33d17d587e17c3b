"""Per-Client bandwidth (R-BW-1) and the operator's controls (R-BW-2) on a real server.

Rates are measured on loopback over a few seconds and checked within ±10 %: tolerant on
purpose (the exact figures belong to the benchmark)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serverproc import ServerProcess
from system._util import make_account

pytestmark = pytest.mark.system

MiB = 1 << 20
LIMIT = 5_000_000  # 40 Mbit/s in bytes per second


@pytest.fixture
def server(module_server: ServerProcess) -> ServerProcess:
    """One server per database for this module (tests/conftest.py ``module_server``):
    each test works in a Client of its own and checks only that Client's files and usage."""
    return module_server


def timed_download(srv: ServerProcess, auth: tuple[str, str], path: str) -> tuple[int, float]:
    """Bytes and seconds from the first byte to the last (connection set-up excluded)."""
    with srv.client(auth=auth, timeout=120) as c, c.stream("GET", path) as r:
        assert r.status_code == 200
        start, n = 0.0, 0
        for piece in r.iter_bytes():
            if not n:
                start = time.monotonic()
            n += len(piece)
        return n, time.monotonic() - start


def timed_upload(srv: ServerProcess, auth: tuple[str, str], path: str, data: bytes) -> float:
    """Seconds for one PUT, after a request that makes the server check (and cache) the
    app password: argon2 is slow on purpose and is no part of the transfer's rate."""
    with srv.client(auth=auth, timeout=120) as c:
        assert c.get("/api/v1/me").status_code == 200
        start = time.monotonic()
        assert c.put(path, content=data).status_code == 201
        return time.monotonic() - start


def setup(srv: ServerProcess, name: str, sizes: dict[str, int]) -> tuple[str, str]:
    _, email, password = make_account(srv, name, f"bw@{name}.example")
    with srv.client(auth=(email, password), timeout=120) as c:
        for path, size in sizes.items():
            assert c.put(f"/api/v1/files/{path}", content=os.urandom(size)).status_code == 201
    srv.cli("tenant", "limit", name, "--bandwidth", "40Mbit")
    return email, password


def test_download_shaping_shared_by_connections_not_by_clients(server: ServerProcess) -> None:
    a = setup(server, "bwa", {"big.bin": 20 * MiB, **{f"p{i}.bin": 5 * MiB for i in range(4)}})
    b = setup(server, "bwb", {"other.bin": 20 * MiB})

    n, secs = timed_download(server, a, "/api/v1/files/big.bin")
    assert n == 20 * MiB
    assert 0.9 * LIMIT <= n / secs <= 1.1 * LIMIT, n / secs

    # Four parallel downloads of Client A share A's limit, while Client B, at the same
    # time, gets its own full limit.
    with ThreadPoolExecutor(max_workers=5) as pool:
        start = time.monotonic()
        parts = [
            pool.submit(timed_download, server, a, f"/api/v1/files/p{i}.bin") for i in range(4)
        ]
        other = pool.submit(timed_download, server, b, "/api/v1/files/other.bin")
        done_a = [f.result() for f in parts]
        a_total = sum(n for n, _ in done_a) / (time.monotonic() - start)
        n_b, secs_b = other.result()
    assert 0.9 * LIMIT <= a_total <= 1.1 * LIMIT, a_total
    assert 0.9 * LIMIT <= n_b / secs_b <= 1.1 * LIMIT, n_b / secs_b


def test_upload_shaping(server: ServerProcess) -> None:
    auth = setup(server, "bwu", {})
    data = os.urandom(12 * MiB)
    rate = len(data) / timed_upload(server, auth, "/api/v1/files/up.bin", data)
    assert 0.85 * LIMIT <= rate <= 1.1 * LIMIT, rate  # includes the commit after the body


@pytest.fixture
def two_servers(tmp_path: Path, db_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on one data dir and database, as ``serve --workers 2`` will
    run them (the second to start owns the control socket, which this test leaves alone)."""
    env = {"ALLSET_GC_GRACE_SECONDS": "0"}
    if db_url:
        env["ALLSET_DATABASE_URL"] = db_url
    first = ServerProcess(tmp_path / "srv", env=env)
    second = ServerProcess(first.data_dir, env=env)
    second.log_path = tmp_path / "srv-second.log"
    first.start()
    try:
        second.start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_two_server_processes_share_one_rate(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    """One Client's uploads through two server processes share its one rate, and each
    alone still gets all of it (the rate is not split by the number of processes). The
    limit is set before either server has read it: neither has a stale copy."""
    first, second = two_servers
    auth = setup(first, "bw2", {})
    size = 8 * MiB
    for i, srv in enumerate((first, second)):
        alone = size / timed_upload(srv, auth, f"/api/v1/files/alone-{i}", os.urandom(size))
        assert 0.8 * LIMIT <= alone <= 1.1 * LIMIT, alone
    with ThreadPoolExecutor(max_workers=2) as pool:
        start = time.monotonic()
        runs = [
            pool.submit(timed_upload, srv, auth, f"/api/v1/files/both-{i}", os.urandom(size))
            for i, srv in enumerate((first, second))
        ]
        each = [size / f.result() for f in runs]
        total = 2 * size / (time.monotonic() - start)
    assert total <= 1.3 * LIMIT, total
    assert all(rate <= 0.75 * LIMIT for rate in each), each  # shared, not one each


def test_operator_lists_and_interrupts_transfers(server: ServerProcess) -> None:
    auth = setup(server, "bwi", {"down.bin": 30 * MiB})
    results: dict[str, object] = {}

    def upload() -> None:
        with server.client(auth=auth, timeout=120) as c:
            results["put"] = c.put("/api/v1/files/up.bin", content=os.urandom(30 * MiB))

    def download() -> None:
        try:
            results["get"] = timed_download(server, auth, "/api/v1/files/down.bin")
        except Exception as exc:  # the cut is the expected outcome
            results["get"] = exc

    threads = [threading.Thread(target=upload), threading.Thread(target=download)]
    for t in threads:
        t.start()
    listed: list[dict[str, object]] = []
    for _ in range(50):
        time.sleep(0.2)
        listed = server.cli_json("transfers", "list", "--tenant", "bwi")
        if len(listed) == 2 and all(
            int(str(t["bytes_in"])) + int(str(t["bytes_out"])) for t in listed
        ):
            break
    assert {t["method"] for t in listed} == {"PUT", "GET"}, listed
    assert all(t["tenant"] == "bwi" for t in listed)
    cut = server.cli_json("transfers", "interrupt", "--tenant", "bwi")
    assert cut["interrupted"] == 2
    for t in threads:
        t.join(timeout=60)
    put = results["put"]
    assert getattr(put, "status_code", None) == 503, put
    assert not isinstance(results["get"], tuple) or results["get"][0] < 30 * MiB
    with server.client(auth=auth) as c:  # nothing half-stored
        assert c.get("/api/v1/files/up.bin").status_code == 404
        assert c.get("/api/v1/me").json()["usage"]["in_flight_bytes"] == 0
    assert server.cli_json("transfers", "list", "--tenant", "bwi") == []
