"""WebDAV against clients written by others (R-STORE-2): the litmus conformance suite and
rclone, on a real server process.

litmus and rclone come from Debian (``./dev test`` installs them when missing). litmus
(neon, OpenSSL) trusts our self-signed certificate through SSL_CERT_FILE, rclone through
``--ca-cert``: nothing runs with verification turned off.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import time
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pytest

from serverproc import ServerProcess
from system._util import make_account

pytestmark = pytest.mark.system

LITMUS_SUITES = "basic copymove props locks http"


@pytest.fixture
def server(module_server: ServerProcess) -> ServerProcess:
    """One server per database for this module (tests/conftest.py ``module_server``):
    each test works in a Client of its own and checks only that Client's files and usage."""
    return module_server


def run_litmus(
    srv: ServerProcess, email: str, password: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, tuple[int, int]]:
    env = {**os.environ, "TESTS": LITMUS_SUITES, "SSL_CERT_FILE": str(srv.cert)}
    res = subprocess.run(
        ["litmus", f"{srv.url}/dav/", email, password],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=srv.data_dir.parent,  # litmus writes debug.log in its working directory
        check=False,
    )
    summaries = re.findall(
        r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed", res.stdout
    )
    with capsys.disabled():  # the CI log shows every summary line, pass or fail
        print(f"\nlitmus against {srv.url}/dav/:")
        for line in res.stdout.splitlines():
            if "summary for" in line or "FAIL" in line or "SKIPPED" in line:
                print("   ", line.strip())
    failures = [line for line in res.stdout.splitlines() if "FAIL" in line]
    assert not failures, res.stdout[-4000:]
    return {name: (int(run), int(passed)) for name, run, passed, _failed in summaries}


@pytest.mark.slow
def test_litmus_over_tls(server: ServerProcess, capsys: pytest.CaptureFixture[str]) -> None:
    _, email, password = make_account(server, "litmus", "dav@litmus.example")
    results = run_litmus(server, email, password, capsys)
    assert set(results) == set(LITMUS_SUITES.split()), results
    for name, (run, passed) in results.items():
        assert run > 0 and passed == run, (name, run, passed)


@pytest.mark.slow
def test_litmus_plain_http_reverse_proxy_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over TLS litmus skips its Expect: 100-continue test; the plain mode runs it."""
    srv = ServerProcess(tmp_path / "srv", plain_http=True)
    srv.start()
    try:
        _, email, password = make_account(srv, "litmus", "dav@litmus.example")
        results = run_litmus(srv, email, password, capsys)
        assert results["http"][0] == results["http"][1] >= 4, results
        assert all(run == passed for run, passed in results.values()), results
    finally:
        srv.stop()


def odd_tree(root: Path, count: int = 500) -> None:
    """Nested folders and names users really have: spaces, NFD accents (macOS), emoji,
    and the characters URLs treat specially."""
    rng = random.Random(42)
    stems = [
        "rapport annuel",
        unicodedata.normalize("NFD", "Éléments été"),
        "photo 🎉 fête",
        "a#b",
        "100% sûr",
        "quoi?",
        "semi;colon & plus+",
        "[crochets] {accolades}",
        "apostrophe'quote",
        "tab\u00a0nbsp",
    ]
    folders = [root]
    for i in range(12):
        parent = rng.choice(folders)
        d = parent / f"{rng.choice(stems)} dir{i}"
        d.mkdir(exist_ok=True)
        folders.append(d)
    for i in range(count):
        d = folders[i % len(folders)]
        size = rng.choice([0, 1, 100, 4096, 70_000, 1_300_000])
        (d / f"{stems[i % len(stems)]} {i}.bin").write_bytes(rng.randbytes(size))


def rclone(*args: str, srv: ServerProcess, email: str, password: str) -> str:
    obscured = subprocess.run(
        ["rclone", "obscure", password], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    env = {
        **os.environ,
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_ALLSET_TYPE": "webdav",
        "RCLONE_CONFIG_ALLSET_URL": f"{srv.url}/dav/",
        "RCLONE_CONFIG_ALLSET_VENDOR": "other",
        "RCLONE_CONFIG_ALLSET_USER": email,
        "RCLONE_CONFIG_ALLSET_PASS": obscured,
    }
    res = subprocess.run(
        ["rclone", *args, "--ca-cert", str(srv.cert), "--transfers", "4", "--retries", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert res.returncode == 0, f"rclone {' '.join(args)}: {res.stderr[-3000:]}"
    return res.stdout + res.stderr


@pytest.mark.slow
def test_rclone_round_trip_of_500_odd_names(server: ServerProcess, tmp_path: Path) -> None:
    assert shutil.which("rclone"), "rclone is installed by ./dev test"
    _, email, password = make_account(server, "rcl", "dav@rclone.example")
    src, back = tmp_path / "src", tmp_path / "back"
    src.mkdir()
    odd_tree(src)
    n_files = sum(1 for p in src.rglob("*") if p.is_file())
    assert n_files == 500

    kw = {"srv": server, "email": email, "password": password}
    rclone("copy", str(src), "allset:tree", **kw)
    rclone("check", str(src), "allset:tree", **kw)  # sizes and names, both directions
    rclone("copy", "allset:tree", str(back), **kw)
    rclone("check", str(src), str(back), "--checksum", **kw)  # content, byte for byte

    listed = rclone("lsf", "-R", "--files-only", "allset:tree", **kw).splitlines()
    assert len([x for x in listed if x.endswith(".bin")]) == 500
    # The server's own view agrees: the SHA-256 it stored is the SHA-256 of what was sent.
    with server.client(auth=(email, password)) as c:
        some = next(p for p in src.rglob("*.bin") if p.stat().st_size > 1_000_000)
        rel = some.relative_to(src).as_posix()
        r = c.request("PROPFIND", f"/dav/tree/{_quote(rel)}", headers={"Depth": "0"})
        assert r.status_code == 207
        assert hashlib.sha256(some.read_bytes()).hexdigest() in r.text


def _quote(path: str) -> str:
    return quote(unicodedata.normalize("NFC", path))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_interrupted_put_leaves_nothing(server: ServerProcess, framing: str) -> None:
    """A client that drops the connection mid-body must not leave a truncated file (a2wsgi
    alone would end the body normally and WsgiDAV would commit what arrived)."""
    name = f"cut-{framing}"  # the server is shared by the module
    _, email, password = make_account(server, name, f"dav@{name}.example")
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    auth = base64.b64encode(f"{email}:{password}".encode()).decode()
    framing_header = (
        "Content-Length: 4194304" if framing == "content-length" else "Transfer-Encoding: chunked"
    )
    head = (
        f"PUT /dav/cut.bin HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
        f"{framing_header}\r\n\r\n"
    ).encode()
    piece = os.urandom(1 << 20)
    if framing == "chunked":
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as s,
    ):
        s.sendall(head + piece)
        time.sleep(0.5)  # the server is now inside the upload
    with server.client(auth=(email, password)) as c:
        for _ in range(100):  # the server notices the disconnect asynchronously
            me = c.get("/api/v1/me").json()
            if c.get("/dav/cut.bin").status_code == 404 and me["usage"]["in_flight_bytes"] == 0:
                break
            time.sleep(0.1)
        assert c.get("/dav/cut.bin").status_code == 404
        me = c.get("/api/v1/me").json()
        assert me["usage"]["used_bytes"] == 0, me
        # The same name uploads fine afterwards.
        assert c.put("/dav/cut.bin", content=b"whole").status_code == 201
        assert c.get("/dav/cut.bin").content == b"whole"
