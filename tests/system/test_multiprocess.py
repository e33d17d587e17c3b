"""Two real ``allset-server`` processes on one data dir and one database, as the workers
of ``serve --workers`` will be: a commit in one wakes change-feed long-polls in the
other (files.wakeups, R-SYNC-1), and either one's ``/metrics`` counts the requests of
both (prometheus_client's multiprocess mode). On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _util import make_account
from prometheus_client.parser import text_string_to_metric_families

from allset.observability import MULTIPROC_ENV, prepare_metrics_dir
from serverproc import ServerProcess

API = "/api/v1"


@pytest.fixture
def pair(tmp_path: Path, db_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one data dir. Long-polls re-check the database only every 60 s:
    an answer within seconds can only come from a wake-up."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_1.db").write_bytes(b"left by an earlier run")
    (metrics / "notes.txt").write_text("not prometheus_client's")
    prepare_metrics_dir(metrics)  # what the parent of the workers does
    assert sorted(p.name for p in metrics.iterdir()) == ["notes.txt"]
    env = {"ALLSET_FEED_RECHECK_SECONDS": "60", MULTIPROC_ENV: str(metrics)}
    if db_url:
        env["ALLSET_DATABASE_URL"] = db_url
    data = tmp_path / "srv"
    a = ServerProcess(data, env=env)
    a.start()
    b = ServerProcess(data, env=env)
    try:
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()


def _long_poll(srv: ServerProcess, auth: tuple[str, str], cursor: int) -> tuple[Any, float]:
    began = time.monotonic()
    with srv.client(auth=auth) as c:
        r = c.get(f"{API}/changes", params={"since": cursor, "wait": 45})
    assert r.status_code == 200, r.text
    return r.json(), time.monotonic() - began


def _put_later(srv: ServerProcess, auth: tuple[str, str], path: str) -> threading.Thread:
    def run() -> None:
        time.sleep(1.0)
        with srv.client(auth=auth) as c:
            assert c.put(f"{API}/files{path}", content=b"x").status_code == 201

    t = threading.Thread(target=run)
    t.start()
    return t


def test_commit_in_one_process_wakes_long_poll_in_the_other(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    _, email, password = make_account(a, "wakeco", "owner@wakeco.example")
    auth = (email, password)
    with b.client(auth=auth) as c:
        cursor = c.get(f"{API}/changes").json()["cursor"]

    t = _put_later(a, auth, "/from-a.txt")
    body, elapsed = _long_poll(b, auth, cursor)
    t.join()
    assert [(x["kind"], x["path"]) for x in body["changes"]] == [("put", "/from-a.txt")]
    assert elapsed < 6, elapsed  # the PUT came after 1 s; the re-check would take 60

    # A peer killed without leaving: its socket stays behind, and neither breaks nor
    # slows commits in the survivor, which removes it.
    assert len(_sockets(a)) == 2
    b.kill()
    started = time.monotonic()
    with a.client(auth=auth) as c:
        assert c.put(f"{API}/files/after-kill.txt", content=b"k").status_code == 201
    assert time.monotonic() - started < 10
    assert len(_sockets(a)) == 1

    # Started again: it joins again, and is woken again.
    b.start()
    assert len(_sockets(a)) == 2
    with b.client(auth=auth) as c:
        cursor = c.get(f"{API}/changes").json()["cursor"]
    t = _put_later(a, auth, "/again.txt")
    body, elapsed = _long_poll(b, auth, cursor)
    t.join()
    assert [(x["kind"], x["path"]) for x in body["changes"]] == [("put", "/again.txt")]
    assert elapsed < 6, elapsed


def _sockets(srv: ServerProcess) -> list[Path]:
    from allset.files.wakeups import directory_for

    directory = directory_for(srv.data_dir)
    return [p for p in directory.iterdir() if p.name.endswith(".sock")]


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_count_the_requests_of_both_processes(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    _, email, password = make_account(a, "metricsco", "owner@metricsco.example")
    auth = (email, password)
    with a.client(auth=auth) as c:
        for i in range(3):
            assert c.put(f"{API}/files/f{i}.bin", content=bytes([65 + i]) * 1000).status_code == 201
    with b.client(auth=auth) as c:
        for _ in range(5):
            assert c.get(f"{API}/files/f0.bin").status_code == 200
        assert c.get(f"{API}/files/missing").status_code == 404

    def scrape(srv: ServerProcess) -> str:
        with srv.client() as c:
            r = c.get("/metrics")
        assert r.status_code == 200
        return r.text

    for srv in (a, b):
        text = scrape(srv)
        name = "allset_http_requests_total"
        assert _counter(text, name, area="api", method="PUT", status="2xx") == 3, text
        assert _counter(text, name, area="api", method="GET", status="2xx") == 5, text
        assert _counter(text, name, area="api", method="GET", status="4xx") == 1, text
        assert _counter(text, "allset_bytes_received_total", area="api") == 3000
        # Read from the database by the scraped process alone: once, not once per process.
        used = _counter(text, "allset_storage_used_bytes", tenant="metricsco")
        assert used == 3000, text
        assert text.count('allset_storage_used_bytes{tenant="metricsco"}') == 1


def test_single_process_metrics_without_the_variable(tmp_path: Path) -> None:
    """Without the variable nothing changes: one process counts in memory."""
    srv = ServerProcess(tmp_path / "one")
    assert MULTIPROC_ENV not in srv.env
    srv.start()
    try:
        _, email, password = make_account(srv, "soloco", "owner@soloco.example")
        with srv.client(auth=(email, password)) as c:
            assert c.put(f"{API}/files/x", content=b"xy").status_code == 201
            text = c.get("/metrics").text
        name = "allset_http_requests_total"
        assert _counter(text, name, area="api", method="PUT", status="2xx") == 1
        assert _counter(text, "allset_storage_used_bytes", tenant="soloco") == 2
        assert "allset_http_requests_created" in text  # only the in-memory mode has these
    finally:
        srv.stop()


def test_metrics_dir_is_created_when_missing(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "metrics"
    srv = ServerProcess(tmp_path / "one", env={MULTIPROC_ENV: str(missing)})
    srv.start()
    try:
        with srv.client() as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/metrics").status_code == 200
        assert any(p.suffix == ".db" for p in missing.iterdir())
    finally:
        srv.stop()
