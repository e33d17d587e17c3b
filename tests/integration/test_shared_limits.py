"""Sign-in throttles (R-SEC-3) shared by every process serving one data dir.

The test's app (its runtime, through HTTP) and a second process (spawned, with its own
runtime on the same data dir and database: ``tests/multiproc.py``) play two workers. A
guesser spreading attempts over both must be throttled exactly as by one process; a
success or the end of a block in one is seen by the other. Bandwidth shared across
processes is tested with two real servers in tests/system/test_bandwidth.py.
"""

from __future__ import annotations

import multiprocessing
import secrets
import time
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

import multiproc
from allset.accounts.throttle import TABLE_FIELDS, TABLE_SETS
from allset.core.errors import NotFound, TooManyAttempts
from allset.runtime import Runtime, build_runtime, initialise
from allset.server.app import build_app
from allset.settings import load_settings
from conftest import make_account

API = "/api/v1"


@pytest.fixture(scope="module")
def other_process() -> Iterator[Pool]:
    """A second process for the whole module (each call builds and closes a runtime)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        yield pool


def login(c: TestClient, email: str, password: str) -> httpx.Response:
    return c.post(f"{API}/auth/login", json={"email": email, "password": password})


def retry_after(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    wait = int(r.headers["retry-after"])
    assert wait >= 1
    return wait


def test_failures_in_one_process_throttle_the_other(
    runtime: Runtime, from_ip: Any, alice: Any, other_process: Pool
) -> None:
    ip = "192.0.2.40"
    here = from_ip(ip)
    # 3 misses there and 2 here: 5, as if one process had seen them all.
    there = other_process.apply(
        multiproc.sign_in, (runtime.settings, [(alice.email, "wrong", ip)] * 3)
    )
    assert there == ["401"] * 3
    for _ in range(2):
        assert login(here, alice.email, "wrong").status_code == 401
    wait = retry_after(login(here, alice.email, alice.password))
    right = [(alice.email, alice.password, ip)]
    assert other_process.apply(multiproc.sign_in, (runtime.settings, right)) == ["429"]
    # No account-wide lock, in either process.
    assert login(from_ip("192.0.2.41"), alice.email, alice.password).status_code == 200
    assert other_process.apply(
        multiproc.sign_in, (runtime.settings, [(alice.email, alice.password, "192.0.2.42")])
    ) == ["ok"]

    # The block ends in both when Retry-After says; a success there clears it here.
    time.sleep(wait + 0.2)
    assert other_process.apply(multiproc.sign_in, (runtime.settings, right)) == ["ok"]
    for _ in range(4):
        assert login(here, alice.email, "wrong").status_code == 401
    assert login(here, alice.email, alice.password).status_code == 200


def test_guesses_over_many_accounts_add_up_across_processes(
    runtime: Runtime, from_ip: Any, alice: Any, other_process: Pool
) -> None:
    """30 misses from one address (15 in each process, over 30 accounts) block it."""
    ip = "192.0.2.50"
    guesser = from_ip(ip)

    def fake() -> str:
        return "ap-" + secrets.token_urlsafe(16) + secrets.token_urlsafe(24)

    misses = [(f"user{i}@guess.example", fake(), ip) for i in range(15)]
    assert other_process.apply(multiproc.sign_in, (runtime.settings, misses)) == ["401"] * 15
    for i in range(15, 30):
        r = guesser.get(f"{API}/me", auth=(f"user{i}@guess.example", fake()))
        assert r.status_code == 401, r.text
    retry_after(guesser.get(f"{API}/me", auth=alice.auth))
    assert other_process.apply(
        multiproc.sign_in, (runtime.settings, [(alice.email, alice.app_password, ip)])
    ) == ["429"]
    assert from_ip("192.0.2.51").get(f"{API}/me", auth=alice.auth).status_code == 200


def test_link_token_guesses_add_up_across_processes(runtime: Runtime, other_process: Pool) -> None:
    """R-SHARE-3 with several workers: 15 unknown tokens tried in another process and 5
    here are the 20 allowed; the 21st, here, blocks the address in both processes (a
    guesser cannot multiply its tries by the number of workers)."""
    ip = "192.0.2.70"
    unknown = ["A" * 28 + f"{i:04d}" for i in range(21)]
    assert (
        other_process.apply(multiproc.link_visits, (runtime.settings, unknown[:15], ip))
        == ["404"] * 15
    )
    outcomes = []
    for token in unknown[15:]:
        try:
            runtime.links.resolve(token, ip)
            outcomes.append("ok")
        except TooManyAttempts as exc:
            outcomes.append(f"429 after {exc.retry_after}")
        except NotFound:
            outcomes.append("404")
    assert outcomes == ["404"] * 5 + ["429 after 300"]
    assert other_process.apply(multiproc.link_visits, (runtime.settings, unknown[:1], ip)) == [
        "429"
    ]
    assert other_process.apply(
        multiproc.link_visits, (runtime.settings, unknown[:1], "192.0.2.71")
    ) == ["404"]  # another address is not blocked


def test_a_full_table_does_not_break_sign_in(
    runtime: Runtime, from_ip: Any, alice: Any, other_process: Pool
) -> None:
    """Another process floods the table with more records than it holds: sign-in still
    works, and new guesses are still throttled (the oldest records make room). Four
    times as many records as slots fill every set (keys spread at random)."""
    slots = TABLE_SETS * 8
    other_process.apply(multiproc.fill_throttles, (runtime.settings, 4 * slots))
    table = runtime.shared["throttles"]
    assert table.occupied() == slots
    here = from_ip("192.0.2.60")
    assert login(here, alice.email, alice.password).status_code == 200
    for _ in range(5):
        assert login(here, alice.email, "wrong").status_code == 401
    retry_after(login(here, alice.email, alice.password))
    assert login(from_ip("192.0.2.61"), alice.email, alice.password).status_code == 200


def test_a_damaged_table_file_is_started_afresh(tmp_path: Path, db_url: str) -> None:
    """Truncated throttles, garbage buckets: the server starts, signs in, throttles and
    serves files as with fresh tables."""
    settings = load_settings(
        tmp_path / "data", database_url=db_url or None, gc_grace_seconds=0, log_json=False
    )
    initialise(settings)
    settings.run_dir.mkdir(exist_ok=True)
    (settings.run_dir / "throttles.shm").write_bytes(b"ALLSETST" + bytes(100))
    (settings.run_dir / "buckets.shm").write_bytes(secrets.token_bytes(300_000))
    rt = build_runtime(settings)
    try:
        acct = make_account(rt, name="damaged")
        with TestClient(
            build_app(rt, tls=False),
            base_url="https://testserver",
            raise_server_exceptions=False,
        ) as c:
            assert c.put(f"{API}/files/a.txt", content=b"hello", auth=acct.auth).status_code == 201
            assert c.get(f"{API}/files/a.txt", auth=acct.auth).content == b"hello"
            for _ in range(5):
                assert login(c, acct.email, "wrong").status_code == 401
            retry_after(login(c, acct.email, acct.password))
        size = (settings.run_dir / "throttles.shm").stat().st_size
        assert size == 4096 + TABLE_SETS * 8 * (24 + 8 * TABLE_FIELDS)
    finally:
        rt.close()
