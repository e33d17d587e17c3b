"""Change-feed wake-ups across processes of one data dir (files.wakeups, R-SYNC-1): two
runtimes on the same data dir and database stand for two server processes (they share
nothing in memory); on SQLite and PostgreSQL. The real-process version is
tests/system/test_multiprocess.py."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from allset.core.ids import new_id
from allset.core.paths import parse_path
from allset.files import wakeups
from allset.files.upload import store_bytes
from allset.files.wakeups import MAX_DATAGRAM, PeerWakeups, WakeupError, directory_for
from allset.runtime import Runtime, build_runtime
from allset.server.app import build_app
from conftest import Account, later

API = "/api/v1"


@pytest.fixture
def peer(runtime: Runtime) -> Iterator[Runtime]:
    """A second 'process' on the runtime's data dir, serving through its own app; its
    long-polls re-check the database only every 60 s, so a prompt answer can only come
    from a wake-up."""
    rt = build_runtime(runtime.settings)
    rt.files.changes.recheck_seconds = 60
    yield rt
    rt.close()


def test_commit_in_one_process_wakes_long_poll_in_another(
    client: TestClient, runtime: Runtime, peer: Runtime, alice: Account
) -> None:
    runtime.files.changes.recheck_seconds = 60
    with TestClient(build_app(peer, tls=False), base_url="https://testserver") as other:
        other.auth = client.auth = alice.auth
        assert peer.wakeups.joined and runtime.wakeups.joined
        assert peer.wakeups.socket_path is not None
        assert str(peer.wakeups.socket_path) in runtime.wakeups.peers()
        cursor = other.get(f"{API}/changes").json()["cursor"]
        t = later(0.5, lambda: client.put(f"{API}/files/from-a.txt", content=b"a"))
        began = time.monotonic()
        body = other.get(f"{API}/changes", params={"since": cursor, "wait": 30}).json()
        elapsed = time.monotonic() - began
        t.join()
        assert [(c["kind"], c["path"]) for c in body["changes"]] == [("put", "/from-a.txt")]
        assert 0.4 < elapsed < 5, elapsed
        # And the other way round, from a commit that is not an HTTP request.
        cursor = body["cursor"]
        t = later(
            0.5,
            lambda: store_bytes(peer.files, alice.principal, parse_path("/from-b.txt"), b"b"),
        )
        began = time.monotonic()
        body = client.get(f"{API}/changes", params={"since": cursor, "wait": 30}).json()
        elapsed = time.monotonic() - began
        t.join()
        assert [(c["kind"], c["path"]) for c in body["changes"]] == [("put", "/from-b.txt")]
        assert 0.4 < elapsed < 5, elapsed
        path = peer.wakeups.socket_path
    # Leaving removes the socket: nothing is sent to a stopped process.
    assert not peer.wakeups.joined and not path.exists()
    assert str(path) not in runtime.wakeups.peers()


def _heard(directory: Path) -> tuple[PeerWakeups, list[set[str]]]:
    heard: list[set[str]] = []
    listener = PeerWakeups(directory)
    listener.join(heard.append)
    return listener, heard


def _wait_for(predicate: Any, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_commit_sends_changed_clients_only_to_others(
    runtime: Runtime, alice: Account, bob: Account
) -> None:
    listener, heard = _heard(runtime.wakeups.directory)
    try:
        runtime.files.mkdir(alice.principal, "/one")
        assert _wait_for(lambda: {alice.tenant_id} in heard), heard
        runtime.files.mkdir(bob.principal, "/two")
        assert _wait_for(lambda: {bob.tenant_id} in heard), heard
        # A process never hears itself (its own notifier was told directly).
        own: list[set[str]] = []
        runtime.wakeups.join(own.append)
        runtime.files.mkdir(alice.principal, "/three")
        assert _wait_for(lambda: len(heard) >= 3)
        time.sleep(0.3)
        assert own == []
    finally:
        listener.close()


def test_dead_peer_socket_neither_breaks_nor_slows_commits(
    runtime: Runtime, alice: Account
) -> None:
    """A process killed without leaving leaves its socket file behind; the first send
    to it finds nobody bound and removes it. A live peer that never reads (full queue)
    is skipped without waiting."""
    directory = runtime.wakeups.directory
    wakeups.ensure_private_dir(directory, create=True)
    dead = directory / f"999999-{'0' * 16}.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(dead))
    s.close()  # the file stays, nobody is bound to it
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf_path = directory / f"999998-{'0' * 16}.sock"
    deaf.bind(str(deaf_path))
    try:
        assert dead.exists()
        runtime.files.mkdir(alice.principal, "/after-a-crash")
        assert not dead.exists()
        assert deaf_path.exists()  # alive: kept

        # Far more sends than the deaf peer's queue holds: none of them may block.
        done = threading.Event()

        def many() -> None:
            for i in range(3000):
                runtime.wakeups.send({alice.tenant_id, f"x{i}"})
            done.set()

        t = threading.Thread(target=many, daemon=True)
        t.start()
        assert done.wait(30), "a send blocked on a peer that does not read"
        runtime.files.mkdir(alice.principal, "/still-fine")
        assert runtime.files.stat(alice.principal, "/still-fine").path == "/still-fine"
    finally:
        deaf.close()
        deaf_path.unlink()
        dead.unlink(missing_ok=True)
        directory.rmdir()  # this runtime never joined, so it leaves nothing to remove it


def test_many_clients_are_split_into_datagrams_and_all_arrive(tmp_path: Path) -> None:
    directory = directory_for(tmp_path / "data")
    ids = {new_id() for _ in range(2000)}
    packets = wakeups.pack(ids)
    assert len(packets) > 1 and all(len(p) <= MAX_DATAGRAM for p in packets)
    assert set().union(*(wakeups.unpack(p) for p in packets)) == ids
    assert wakeups.unpack(b"not ours\n" + new_id().encode()) == set()

    listener, heard = _heard(directory)
    sender = PeerWakeups(directory)
    try:
        sender.send(ids)
        assert _wait_for(lambda: set().union(*heard) == ids)
    finally:
        sender.close()
        listener.close()


def test_socket_directory_is_private_and_path_short(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "data"
    directory = directory_for(deep)
    assert not directory.is_relative_to(deep)  # the temp-dir fallback
    assert directory == directory_for(deep)  # every process finds the same one
    listener, _ = _heard(directory)
    try:
        path = listener.socket_path
        assert path is not None and len(os.fsencode(path)) <= 107
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        listener.join(lambda ids: None)  # joining twice changes nothing
        assert listener.socket_path == path
    finally:
        listener.close()
    assert not directory.exists()  # the last to leave removes it

    with tempfile.TemporaryDirectory(prefix="allset-t") as top:  # pytest's are too deep
        data = Path(top) / "data"
        short = directory_for(data)
        assert short == data.resolve() / "run" / "notify"
        short.mkdir(parents=True)
        short.chmod(0o755)
        with pytest.raises(WakeupError):
            PeerWakeups(short).join(lambda ids: None)
        PeerWakeups(short).send({new_id()})  # a sender stays quiet
        short.chmod(0o700)
        listener, _ = _heard(short)
        listener.close()


def test_removed_socket_is_bound_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wakeups, "HEALTH_SECONDS", 0.2)
    directory = directory_for(tmp_path / "data")
    listener, heard = _heard(directory)
    sender = PeerWakeups(directory)
    try:
        first = listener.socket_path
        assert first is not None
        first.unlink()  # as a temp-file cleaner would
        assert _wait_for(lambda: listener.socket_path not in (None, first))
        tenant = new_id()
        sender.send({tenant})
        assert _wait_for(lambda: {tenant} in heard)
    finally:
        sender.close()
        listener.close()
