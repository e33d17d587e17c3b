"""``allset sync --watch``: local changes (file system events) and server changes (the
change feed's long-poll) are synced without a restart, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _util import client
from test_client_cli import ALLSET, PASSWORD, allset, owner_with_password

from serverproc import ServerProcess

pytestmark = pytest.mark.system


def eventually(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(10_000):
        if check():
            return
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


def test_watch_follows_both_sides(server: ServerProcess, tmp_path: Path) -> None:
    email = owner_with_password(server, "watch")
    cfg = tmp_path / "cfg"
    assert (
        allset(
            cfg,
            "login",
            server.url,
            "--user",
            email,
            "--password-stdin",
            "--ca-file",
            str(server.cert),
            input=PASSWORD + "\n",
        ).returncode
        == 0
    )
    local = tmp_path / "w"
    local.mkdir()
    (local / "before.txt").write_bytes(b"was here")
    log = tmp_path / "watch.jsonl"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [ALLSET, "sync", str(local), "/W", "--watch", "--json"],
            env={**os.environ, "ALLSET_CONFIG_DIR": str(cfg)},
            stdout=sink,
            stderr=subprocess.PIPE,
        )
    try:
        with client(server, (email, PASSWORD)) as http:

            def on_server(name: str, body: bytes) -> bool:
                r = http.get(f"/api/v1/files/W/{name}")
                return r.status_code == 200 and r.content == body

            eventually(lambda: on_server("before.txt", b"was here"), "the first pass")
            (local / "typed.txt").write_bytes(b"typed while watching")
            eventually(lambda: on_server("typed.txt", b"typed while watching"), "upload")
            assert (
                http.put("/api/v1/files/W/remote.txt", content=b"from the web").status_code == 201
            )
            target = local / "remote.txt"
            eventually(
                lambda: target.exists() and target.read_bytes() == b"from the web", "download"
            )
            (local / "typed.txt").unlink()
            eventually(lambda: http.get("/api/v1/files/W/typed.txt").status_code == 404, "delete")
        assert proc.poll() is None, "--watch stopped on its own"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"upload", "download", "delete-remote", "summary"} <= kinds
