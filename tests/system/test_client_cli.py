"""``allset`` (the Software) against a real server over TLS: sign-in with a pinned
self-signed certificate, one-shot commands, end-to-end SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _util import create_owner

from serverproc import ServerProcess

pytestmark = pytest.mark.system

ALLSET = str(Path(sys.executable).parent / "allset")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def server(module_server: ServerProcess) -> ServerProcess:
    """One server per database for this module (tests/conftest.py ``module_server``):
    each test works in a Client of its own and checks only that Client's files and usage."""
    return module_server


def allset(cfg: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ALLSET_CONFIG_DIR": str(cfg)}
    return subprocess.run(
        [ALLSET, *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=120,
    )


def owner_with_password(server: ServerProcess, tenant: str, *options: str) -> str:
    """A Client whose owner signs in with an account password (what `allset login` asks).
    ``options``: ``"--bandwidth", RATE`` or nothing, as for ``allset-server tenant create``."""
    bandwidth = dict(zip(options[::2], options[1::2], strict=True)).pop("--bandwidth", None)
    assert len(options) == (2 if bandwidth else 0), options
    email = f"me@{tenant}.example"
    create_owner(server, tenant, email, quota="1GiB", bandwidth=bandwidth, password=PASSWORD)
    return email


def signed_in(server: ServerProcess, tmp_path: Path, tenant: str, *options: str) -> Path:
    """A new Client whose owner ran ``allset login`` (trusting the server's certificate
    file); returns the config dir to pass to ``allset``."""
    email = owner_with_password(server, tenant, *options)
    cfg = tmp_path / "cfg"
    login = allset(
        cfg,
        "login",
        server.url,
        "--user",
        email,
        "--password-stdin",
        "--ca-file",
        str(server.cert),
        input=PASSWORD + "\n",
    )
    assert login.returncode == 0, login.stderr
    return cfg


def test_login_pins_the_certificate_and_commands_verify(
    server: ServerProcess, tmp_path: Path
) -> None:
    email = owner_with_password(server, "cli")
    cfg = tmp_path / "cfg"

    wrong = allset(
        cfg,
        "login",
        server.url,
        "--user",
        email,
        "--password-stdin",
        "--fingerprint",
        "ab" * 32,
        input=PASSWORD + "\n",
    )
    assert wrong.returncode == 1 and "not" in wrong.stderr and "Traceback" not in wrong.stderr
    assert not (cfg / "profile.json").exists()

    fp = server.fingerprint.lower()  # printed with colons; any case is accepted
    ok = allset(
        cfg,
        "login",
        server.url,
        "--user",
        email,
        "--password-stdin",
        "--fingerprint",
        fp,
        "--json",
        input=PASSWORD + "\n",
    )
    assert ok.returncode == 0, ok.stderr
    profile = cfg / "profile.json"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600
    assert PASSWORD not in profile.read_text()  # only an app password is kept
    assert json.loads(profile.read_text())["app_password"].startswith("ap-")

    data = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "report.bin"
    local.write_bytes(data)
    assert allset(cfg, "mkdir", "/docs").returncode == 0
    put = allset(cfg, "put", str(local), "/docs/", "--json")
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    listed = json.loads(allset(cfg, "ls", "/docs", "--json").stdout)
    assert [e["name"] for e in listed] == ["report.bin"]

    back = tmp_path / "back.bin"
    got = allset(cfg, "get", "/docs/report.bin", str(back), "--json")
    assert got.returncode == 0, got.stderr
    assert back.read_bytes() == data

    assert allset(cfg, "mv", "/docs/report.bin", "/docs/final.bin").returncode == 0
    assert allset(cfg, "rm", "/docs/final.bin").returncode == 0
    assert json.loads(allset(cfg, "ls", "/docs", "--json").stdout) == []
    missing = allset(cfg, "get", "/docs/final.bin", str(tmp_path / "x"))
    assert missing.returncode == 1 and "error:" in missing.stderr

    nobody = allset(tmp_path / "empty-cfg", "ls")
    assert nobody.returncode == 1 and "allset login" in nobody.stderr


def test_bwlimit_caps_the_clients_own_rate(server: ServerProcess, tmp_path: Path) -> None:
    cfg = signed_in(server, tmp_path, "bw", "--bandwidth", "10Gbit")
    local = tmp_path / "four.bin"
    local.write_bytes(os.urandom(4 * 1024 * 1024))
    bad = allset(cfg, "put", str(local), "/four.bin", "--bwlimit", "fast")
    assert bad.returncode == 1 and "--bwlimit" in bad.stderr

    start = time.monotonic()
    assert allset(cfg, "put", str(local), "/four.bin", "--bwlimit", "16Mbit").returncode == 0
    assert time.monotonic() - start >= 1.6  # 4 MiB at 2 MB/s: about 2.1 s, never much less
    start = time.monotonic()
    back = tmp_path / "back.bin"
    assert allset(cfg, "get", "/four.bin", str(back), "--bwlimit", "16Mbit").returncode == 0
    assert time.monotonic() - start >= 1.6
    assert back.read_bytes() == local.read_bytes()


def test_put_shows_a_progress_bar_on_a_terminal(server: ServerProcess, tmp_path: Path) -> None:
    """On a terminal, ``put`` and ``get`` draw a progress bar on stderr (rich); piped or
    with --json they print only their result."""
    import pty

    cfg = signed_in(server, tmp_path, "bar")
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(8 * 1024 * 1024))
    primary, secondary = pty.openpty()
    env = {**os.environ, "ALLSET_CONFIG_DIR": str(cfg), "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.run(
        [ALLSET, "put", str(local), "/big.bin", "--bwlimit", "40Mbit"],
        stderr=secondary,
        stdout=subprocess.PIPE,
        env=env,
        timeout=120,
        check=False,
    )
    os.close(secondary)
    drawn = b""
    for _ in range(10_000):
        try:
            piece = os.read(primary, 65536)
        except OSError:
            break
        if not piece:
            break
        drawn += piece
    os.close(primary)
    assert proc.returncode == 0
    assert b"big.bin" in drawn and b"MB" in drawn, drawn[-500:]
    piped = allset(cfg, "put", str(local), "/big2.bin")
    assert piped.returncode == 0 and "MB" not in piped.stderr


def test_get_resumes_from_a_partial_download(server: ServerProcess, tmp_path: Path) -> None:
    """An interrupted ``get`` leaves ``NAME.allset-part``; the next ``get`` takes the
    chunks it already has from there (verified again) and fetches only the rest. Updating
    a file that is already here fetches only what changed."""
    cfg = signed_in(server, tmp_path, "resume")
    data = os.urandom(12 * 1024 * 1024)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    assert allset(cfg, "put", str(src), "/big.bin").returncode == 0
    dest = tmp_path / "dest.bin"
    (tmp_path / "dest.bin.allset-part").write_bytes(data[: 9 * 1024 * 1024])
    got = allset(cfg, "get", "/big.bin", str(dest), "--json")
    assert got.returncode == 0, got.stderr
    fetched = json.loads(got.stdout)["fetched"]
    # without the partial file: 12 MiB; with it: the last 3 MiB and at most one 4 MiB chunk
    # that the cut-off prefix held only in part
    assert 0 < fetched <= 7 * 1024 * 1024, fetched
    assert dest.read_bytes() == data
    assert not (tmp_path / "dest.bin.allset-part").exists()
    assert not (tmp_path / "dest.bin.allset-resume").exists()

    edited = bytearray(data)
    edited[6_000_000:6_000_100] = os.urandom(100)
    src.write_bytes(bytes(edited))
    assert allset(cfg, "put", str(src), "/big.bin").returncode == 0
    again = allset(cfg, "get", "/big.bin", str(dest), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["fetched"] <= 4 * 1024 * 1024 + 1
    assert dest.read_bytes() == bytes(edited)


def test_locks_and_unlock_a_document_an_editor_left_behind(
    server: ServerProcess, tmp_path: Path
) -> None:
    """``allset locks`` shows who holds a WebDAV lock (never its token); ``allset unlock``
    breaks it and the document can be saved again; an unknown id is a clear error."""
    cfg = signed_in(server, tmp_path, "lockco")
    info = (
        b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
        b"<locktype><write/></locktype><owner>LibreOffice on laptop</owner></lockinfo>"
    )
    with server.client(auth=("me@lockco.example", PASSWORD)) as dav:
        assert dav.put("/dav/budget.ods", content=b"v1").status_code == 201
        locked = dav.request("LOCK", "/dav/budget.ods", content=info)
        assert locked.status_code == 200, locked.text
        token = locked.headers["lock-token"].strip("<>")
        assert allset(cfg, "locks").stdout.strip() != "No locks."
        listed = json.loads(allset(cfg, "locks", "--json").stdout)
        assert [(x["path"], x["owner"]) for x in listed] == [
            ("/budget.ods", "LibreOffice on laptop")
        ]
        human = allset(cfg, "locks")
        assert "/budget.ods" in human.stdout and token not in human.stdout + human.stderr
        assert dav.put("/dav/budget.ods", content=b"v2").status_code == 423
        done = allset(cfg, "unlock", listed[0]["id"])
        assert done.returncode == 0 and "unlocked /budget.ods" in done.stdout, done.stderr
        assert dav.put("/dav/budget.ods", content=b"v2").status_code == 204
    again = allset(cfg, "unlock", listed[0]["id"])
    assert again.returncode != 0 and "No such lock" in again.stderr
    assert "Traceback" not in again.stderr
    assert allset(cfg, "locks").stdout.strip() == "No locks."
