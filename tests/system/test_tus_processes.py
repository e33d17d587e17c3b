"""One tus upload served by two real server processes on one data dir and one database
(what ``serve --workers N`` does: consecutive requests of an upload land in any worker).

Server A and server B are two ``allset-server serve`` processes on the same data dir:
an upload begun in one goes on in the other from the recorded offset; two PATCHes of
one upload at once, one in each, are one write and one 423 Locked (never waiting,
never interleaved); a process killed mid-PATCH lets go of the upload (the kernel drops
its ``flock``) and the other resumes from the last acknowledged byte. On SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import problem
from serverproc import ServerProcess
from system._util import make_account, repr_digest, sha256

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET = "application/offset+octet-stream"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on one data dir and database, both up before any upload
    (a starting server's clean-up of other boots' temporary files is another part of
    the multi-process work, not this one's). Each test works in a Client of its own."""
    env = {"ALLSET_GC_GRACE_SECONDS": "0"}
    pg = None
    name = f"tp{os.getpid()}"
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        env["ALLSET_DATABASE_URL"] = pg.create_database(name)
    data = tmp_path_factory.mktemp("tusproc") / "srv"
    a, b = ServerProcess(data, env=env), ServerProcess(data, env=env)
    a.start()
    b.start()
    yield a, b
    b.stop()
    a.stop()
    if pg is not None:
        pg.drop_database(name)


def create(srv: ServerProcess, auth: tuple[str, str], length: int, filename: str) -> str:
    """A new upload's path (``/tus/<id>``), the same on both servers."""
    name = base64.b64encode(filename.encode()).decode()
    with srv.client(auth=auth) as c:
        r = c.post(
            "/tus/",
            headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {name}"},
        )
    assert r.status_code == 201, r.text
    return "/tus/" + r.headers["location"].rsplit("/", 1)[-1]


def patch(
    srv: ServerProcess, auth: tuple[str, str], url: str, offset: int, data: bytes
) -> httpx.Response:
    with srv.client(auth=auth, timeout=120) as c:
        return c.patch(
            url,
            headers={**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET},
            content=data,
        )


def head_offset(srv: ServerProcess, auth: tuple[str, str], url: str) -> int:
    with srv.client(auth=auth) as c:
        r = c.head(url, headers=TUS)
    assert r.status_code == 200, r.text
    return int(r.headers["upload-offset"])


def fetch(srv: ServerProcess, auth: tuple[str, str], name: str) -> bytes:
    with srv.client(auth=auth, timeout=120) as c:
        r = c.get(f"/api/v1/files/{name}")
    assert r.status_code == 200, r.text
    return r.content


def pid(srv: ServerProcess) -> int:
    assert srv.proc is not None
    return srv.proc.pid


def part_file(srv: ServerProcess, url: str) -> Path:
    return srv.data_dir / "tus" / f"{url.rsplit('/', 1)[-1]}.part"


def flock_holder(path: Path) -> int | None:
    """The pid holding an flock on ``path``, read from /proc/locks (looking, not taking
    it: a probe that locked it would itself turn a PATCH away)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields and fields[1] == "FLOCK" and fields[5] == key:
            return int(fields[4])
    return None


def wait_for(what: str, check: Callable[[], bool], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what} after {deadline} s")


class HeldPatch:
    """A PATCH over a raw TLS socket whose body is sent in two goes: between them the
    server is inside the request, holding the upload."""

    def __init__(
        self, srv: ServerProcess, auth: tuple[str, str], url: str, offset: int, body: bytes
    ) -> None:
        self.body = body
        host, port = srv.url.removeprefix("https://").rsplit(":", 1)
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        ctx = ssl.create_default_context(cafile=str(srv.cert))
        raw = socket.create_connection((host, int(port)), timeout=60)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.sock.sendall(
            (
                f"PATCH {url} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Basic {token}\r\nTus-Resumable: 1.0.0\r\n"
                f"Upload-Offset: {offset}\r\nContent-Type: {OFFSET}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        self.sent = 0

    def send(self, n: int) -> None:
        view = memoryview(self.body)[self.sent : self.sent + n]
        for i in range(0, len(view), 256 * 1024):
            self.sock.sendall(view[i : i + 256 * 1024])
        self.sent += len(view)

    def finish(self) -> tuple[int, dict[str, str]]:
        """Send the rest; the answer's status and headers."""
        self.send(len(self.body) - self.sent)
        answer = b""
        for _ in range(1000):
            if b"\r\n\r\n" in answer:
                break
            got = self.sock.recv(65536)
            if not got:
                break
            answer += got
        self.close()
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        assert head and head[0].startswith("HTTP/1.1 "), answer[:200]
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        return int(head[0].split()[1]), headers

    def close(self) -> None:
        self.sock.close()


def test_an_upload_moves_between_processes(pair: tuple[ServerProcess, ServerProcess]) -> None:
    """Begun in A, looked at and continued in B, finished in A: every process reports
    the recorded offset, none trusts what it kept in memory over it, and the file is
    right wherever it is read."""
    a, b = pair
    _, email, password = make_account(a, "moves", "owner@moves.example")
    auth = (email, password)
    data = os.urandom(6 * MiB + 4321)
    url = create(a, auth, len(data), "moved.bin")
    one, two = 2 * MiB + 17, 4 * MiB + 99
    r = patch(a, auth, url, 0, data[:one])  # A now keeps a live Upload of these bytes
    assert r.status_code == 204 and r.headers["upload-offset"] == str(one), r.text
    assert head_offset(b, auth, url) == one
    r = patch(b, auth, url, one, data[one:two])
    assert r.status_code == 204 and r.headers["upload-offset"] == str(two), r.text
    assert head_offset(a, auth, url) == two  # A's own Upload stopped at ``one``
    # A at its old offset is told where the upload really is.
    stale = patch(a, auth, url, one, data[one:two])
    assert stale.status_code == 409 and stale.headers["upload-offset"] == str(two)
    r = patch(a, auth, url, two, data[two:])
    assert r.status_code == 204, r.text
    assert r.headers["repr-digest"] == repr_digest(sha256(data))
    assert sha256(fetch(a, auth, "moved.bin")) == sha256(data)
    assert sha256(fetch(b, auth, "moved.bin")) == sha256(data)
    assert not part_file(a, url).exists()

    # The brief's order: begun in A, the rest sent through B.
    url = create(a, auth, len(data), "second.bin")
    assert patch(a, auth, url, 0, data[:one]).status_code == 204
    assert head_offset(b, auth, url) == one
    r = patch(b, auth, url, one, data[one:])
    assert r.status_code == 204 and r.headers["repr-digest"] == repr_digest(sha256(data))
    assert sha256(fetch(a, auth, "second.bin")) == sha256(data)
    assert sha256(fetch(b, auth, "second.bin")) == sha256(data)
    with a.client(auth=auth) as c:
        assert c.get("/api/v1/me").json()["usage"]["in_flight_bytes"] == 0


def test_two_patches_at_once_one_is_locked(pair: tuple[ServerProcess, ServerProcess]) -> None:
    """While A is inside a PATCH, B refuses a PATCH and a DELETE of the same upload at
    once (423, problem+json) and touches nothing; A's PATCH then ends normally."""
    a, b = pair
    _, email, password = make_account(a, "twice", "owner@twice.example")
    auth = (email, password)
    data = os.urandom(5 * MiB)
    url = create(a, auth, len(data), "once.bin")
    part = part_file(a, url)
    held = HeldPatch(a, auth, url, 0, data)
    try:
        held.send(1 * MiB)
        wait_for("A to hold the upload", lambda: flock_holder(part) == pid(a))
        started = time.monotonic()
        other = patch(b, auth, url, 0, data[:1000])
        assert other.status_code == 423, other.text
        assert "retry" in problem(other)["detail"]
        with b.client(auth=auth) as c:
            gone = c.delete(url, headers=TUS)
        assert gone.status_code == 423, gone.text
        assert time.monotonic() - started < 60  # refused, not queued behind A
        assert head_offset(b, auth, url) == 0  # nothing of B's went in
        status, headers = held.finish()
    finally:
        held.close()
    assert status == 204, (status, headers)
    assert headers["repr-digest"] == repr_digest(sha256(data))
    assert sha256(fetch(b, auth, "once.bin")) == sha256(data)
    # Let go at the end: B can now end an upload A holds no more.
    url = create(a, auth, 10, "later.bin")
    assert patch(a, auth, url, 0, b"01234").status_code == 204
    with b.client(auth=auth) as c:
        assert c.delete(url, headers=TUS).status_code == 204


def test_delete_through_the_other_process(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    _, email, password = make_account(a, "ends", "owner@ends.example")
    auth = (email, password)
    url = create(a, auth, 3 * MiB, "dropped.bin")
    assert patch(a, auth, url, 0, os.urandom(MiB + 5)).status_code == 204
    assert part_file(a, url).stat().st_size == MiB + 5
    with b.client(auth=auth) as c:
        assert c.delete(url, headers=TUS).status_code == 204
        assert c.get("/api/v1/me").json()["usage"]["in_flight_bytes"] == 0
    assert not part_file(a, url).exists()
    with a.client(auth=auth) as c:
        assert c.head(url, headers=TUS).status_code == 404
    assert patch(a, auth, url, MiB + 5, b"more").status_code == 404


def test_kill_mid_patch_then_the_other_resumes(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    """kill -9 of A inside a PATCH: the kernel lets go of A's lock, B reports the last
    acknowledged offset (the killed PATCH's bytes never were), cuts off what A wrote
    beyond it and completes the upload. Last in the module: A is restarted after."""
    a, b = pair
    _, email, password = make_account(a, "killed", "owner@killed.example")
    auth = (email, password)
    data = os.urandom(8 * MiB + 777)
    url = create(a, auth, len(data), "survivor.bin")
    first = 1 * MiB + 3
    assert patch(b, auth, url, 0, data[:first]).status_code == 204  # B keeps a live Upload
    part = part_file(a, url)
    held = HeldPatch(a, auth, url, first, data[first:])  # A has none: into the part file
    try:
        held.send(4 * MiB)
        wait_for("A to hold the upload", lambda: flock_holder(part) == pid(a))
        wait_for("A to write past the offset", lambda: part.stat().st_size > first + MiB)
        assert patch(b, auth, url, first, data[first:]).status_code == 423
        a.kill()
    finally:
        held.close()
    wait_for("the lock to go with A", lambda: flock_holder(part) is None)
    assert head_offset(b, auth, url) == first
    r = patch(b, auth, url, first, data[first:])
    assert r.status_code == 204, r.text
    assert r.headers["repr-digest"] == repr_digest(sha256(data))
    assert sha256(fetch(b, auth, "survivor.bin")) == sha256(data)
    assert not part.exists()
    a.url = ""
    a.start()
    assert sha256(fetch(a, auth, "survivor.bin")) == sha256(data)
