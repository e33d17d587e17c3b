"""tus against the real server: an upload that survives dropped connections and a crash,
and a tus client written by others (tuspy)."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from pathlib import Path

import pytest
from tusclient import client as tus_client

from serverproc import ServerProcess
from system._util import chunk_files, make_account, repr_digest, restart, sha256

pytestmark = pytest.mark.system

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


def cut_patch(
    srv: ServerProcess, auth: tuple[str, str], url: str, offset: int, data: bytes, send: int
) -> None:
    """Start a PATCH of ``data`` from ``offset`` but drop the connection after ``send``
    bytes of body: what a laptop closing its lid does."""
    host, port = srv.url.removeprefix("https://").rsplit(":", 1)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    head = (
        f"PATCH {url} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {token}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n"
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    ctx = ssl.create_default_context(cafile=str(srv.cert))
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as s,
    ):
        s.sendall(head)
        view = memoryview(data)[:send]
        for i in range(0, len(view), 256 * 1024):
            s.sendall(view[i : i + 256 * 1024])
        time.sleep(0.3)  # let the server take in what was sent


def server_offset(srv: ServerProcess, auth: tuple[str, str], url: str) -> int:
    with srv.client(auth=auth) as c:
        r = c.head(url, headers=TUS)
        assert r.status_code == 200, r.text
        return int(r.headers["upload-offset"])


def test_upload_survives_three_cuts_and_a_crash(server: ServerProcess) -> None:
    tenant_id, email, password = make_account(server, "tus", "tus@resume.example")
    auth = (email, password)
    data = os.urandom(50 * MiB)
    name = base64.b64encode(b"video.mp4").decode()
    with server.client(auth=auth) as c:
        r = c.post(
            "/tus/",
            headers={**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {name}"},
        )
        assert r.status_code == 201, r.text
        # The path, not the URL: the restarted server listens on another port.
        url = "/tus/" + r.headers["location"].rsplit("/", 1)[-1]

    offsets = [0]
    # Cut 1 and 2: connection dropped mid-body; the server keeps what arrived.
    for send in (9 * MiB, 13 * MiB):
        start = offsets[-1]
        cut_patch(server, auth, url, start, data[start:], send)
        for _ in range(50):
            now = server_offset(server, auth, url)
            if now > start:
                break
            time.sleep(0.1)
        assert start < now <= start + send
        offsets.append(now)
    # Cut 3: the server is killed (kill -9) mid-body, then restarted.
    start = offsets[-1]
    cut_patch(server, auth, url, start, data[start:], 11 * MiB)
    server.kill()
    restart(server)
    now = server_offset(server, auth, url)
    assert start <= now <= start + 11 * MiB  # only fsynced bytes were ever announced
    offsets.append(now)

    with server.client(auth=auth, timeout=120) as c:
        r = c.patch(
            url,
            headers={
                **TUS,
                "Upload-Offset": str(now),
                "Content-Type": "application/offset+octet-stream",
            },
            content=data[now:],
        )
        assert r.status_code == 204, r.text
        assert r.headers["repr-digest"] == repr_digest(sha256(data))
        got = c.get("/api/v1/files/video.mp4")
        assert sha256(got.content) == sha256(data)
        me = c.get("/api/v1/me").json()["usage"]
    # Dropped connections keep what arrived; a crash mid-request keeps only what an
    # earlier request had made durable (this PATCH's bytes were never acknowledged).
    assert offsets == sorted(offsets) and offsets[0] < offsets[1] < offsets[2]
    # No byte stored twice: the Client is charged the file once, every chunk file exists
    # once per replica and they add up to the file, and no staging bytes remain.
    assert me["used_bytes"] == len(data) and me["in_flight_bytes"] == 0
    for vol, found in chunk_files(server).items():
        mine = [server.data_dir / "volumes" / vol / "chunks" / t / h[:2] / h for t, h in found]
        assert sum(p.stat().st_size for p in mine if tenant_id in p.parts) == len(data)
    assert list((server.data_dir / "tus").glob("*.part")) == []


def test_tuspy_uploads_a_file(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tuspy verifies TLS through requests, which trusts this bundle: verification stays on.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.cert))
    _, email, password = make_account(server, "tuspy", "tus@py.example")
    src = tmp_path / "report.bin"
    data = os.urandom(3 * MiB + 12345)
    src.write_bytes(data)
    token = base64.b64encode(f"{email}:{password}".encode()).decode()
    c = tus_client.TusClient(f"{server.url}/tus/", headers={"Authorization": f"Basic {token}"})
    uploader = c.uploader(
        str(src),
        chunk_size=MiB,
        metadata={"filename": "report.bin", "path": "/"},
    )
    uploader.upload()
    assert uploader.offset == len(data)
    with server.client(auth=(email, password)) as http:
        got = http.get("/api/v1/files/report.bin")
        assert got.status_code == 200 and sha256(got.content) == sha256(data)
        assert got.headers["repr-digest"] == repr_digest(sha256(data))
