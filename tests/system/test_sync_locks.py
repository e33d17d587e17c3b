"""The Software against a real server over TLS when a file is locked on the server (a
real WebDAV LOCK: someone has it open in an editor). ``allset sync`` leaves the local
change pending, makes no conflict copy, says so in its summary, and sends it on the
first pass after the lock is gone; one-shot commands (``allset put``, ``rm``, ``mv``)
say who holds the lock and what to do, in one line, exit 1, no traceback."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _util import client, make_account
from test_client_cli import allset, signed_in
from test_sync import Device, server_files

from allset.sync.ignore import MARKER
from serverproc import ServerProcess

pytestmark = pytest.mark.system

LOCKINFO = (
    b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
    b"<locktype><write/></locktype><owner>Marie in Word</owner></lockinfo>"
)
_accounts = itertools.count()


def lock(http: httpx.Client, path: str, depth: str = "0") -> str:
    r = http.request(
        "LOCK",
        "/dav" + path,
        content=LOCKINFO,
        headers={"Depth": depth, "Timeout": "Second-600"},
    )
    assert r.status_code in (200, 201), r.text
    return r.headers["lock-token"].strip("<>")


def unlock(http: httpx.Client, path: str, token: str) -> None:
    r = http.request("UNLOCK", "/dav" + path, headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 204, r.text


@pytest.fixture
def http(module_server: ServerProcess) -> Iterator[httpx.Client]:
    n = next(_accounts)
    _, email, password = make_account(module_server, f"slock{n}", f"me@slock{n}.example")
    with client(module_server, (email, password)) as c:
        yield c


def test_a_locked_edit_stays_pending_until_the_lock_goes(
    http: httpx.Client, tmp_path: Path
) -> None:
    dev = Device(http, tmp_path / "pc")
    dev.root.mkdir()
    dev.write("report.docx", b"v1")
    dev.write("notes.txt", b"n1")
    assert dev.sync().outcome.uploaded == 2
    token = lock(http, "/Sync/report.docx")

    dev.write("report.docx", b"v2, edited here")
    dev.write("notes.txt", b"n2")  # not locked: goes as usual
    for _ in range(2):  # the next pass tries again, and again says so
        out = dev.sync().outcome
        assert len(out.locked) == 1 and out.locked[0].startswith("report.docx: locked")
        assert "Marie in Word" in out.locked[0] and "will retry" in out.locked[0]
        assert out.conflicts == 0 and out.errors == []
        assert dev.files() == {"report.docx": b"v2, edited here", "notes.txt": b"n2"}
        assert server_files(http) == {"report.docx": b"v1", "notes.txt": b"n2"}

    unlock(http, "/Sync/report.docx", token)
    out = dev.sync().outcome
    assert (out.uploaded, out.locked, out.conflicts) == (1, [], 0)
    assert server_files(http) == {"report.docx": b"v2, edited here", "notes.txt": b"n2"}
    assert dev.files() == server_files(http)


def test_a_local_delete_of_a_locked_file_waits(http: httpx.Client, tmp_path: Path) -> None:
    dev = Device(http, tmp_path / "pc")
    dev.root.mkdir()
    dev.write("Team/plan.xlsx", b"plan")
    dev.sync()
    token = lock(http, "/Sync/Team/", depth="infinity")
    (dev.root / "Team" / "plan.xlsx").unlink()
    dev.write("Team/new.txt", b"new")  # inside the locked folder: refused too
    out = dev.sync().outcome
    assert sorted(x.split(":")[0] for x in out.locked) == ["Team/new.txt", "Team/plan.xlsx"]
    assert (out.deleted_remote, out.uploaded, out.conflicts, out.errors) == (0, 0, 0, [])
    assert server_files(http) == {"Team/plan.xlsx": b"plan"}
    assert dev.files() == {"Team/new.txt": b"new"}  # nothing local lost or renamed

    unlock(http, "/Sync/Team/", token)
    out = dev.sync().outcome
    assert (out.deleted_remote, out.uploaded, out.locked) == (1, 1, [])
    assert server_files(http) == {"Team/new.txt": b"new"}


def test_the_cli_names_the_holder_and_the_fix(module_server: ServerProcess, tmp_path: Path) -> None:
    n = next(_accounts)
    cfg = signed_in(module_server, tmp_path, f"clilock{n}")
    email = f"me@clilock{n}.example"
    doc = tmp_path / "doc.txt"
    doc.write_text("v1")
    assert allset(cfg, "put", str(doc), "/doc.txt").returncode == 0
    with client(module_server, (email, "correct horse battery staple")) as http:
        token = lock(http, "/doc.txt")
        listed = http.get("/api/v1/locks").json()["locks"]
        lock_id = listed[0]["id"]

        doc.write_text("v2")
        for args in (
            ("put", str(doc), "/doc.txt"),
            ("rm", "/doc.txt"),
            ("mv", "/doc.txt", "/other.txt"),
        ):
            r = allset(cfg, *args)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
            assert lines[0].startswith("locked: /doc.txt is locked on the server by Marie in Word")
            assert f"allset unlock {lock_id}" in lines[0] and "Close the document" in lines[0]
        assert http.get("/api/v1/files/doc.txt").content == b"v1"

        # allset sync: pending, listed, exit 2 (not in sync), nothing renamed.
        local = tmp_path / "folder"
        local.mkdir()
        (local / "doc.txt").write_text("v1")
        assert allset(cfg, "sync", str(local), "/", "--once").returncode == 0
        (local / "doc.txt").write_text("v3")
        r = allset(cfg, "sync", str(local), "/", "--once", "--json")
        assert r.returncode == 2, (r.stdout, r.stderr)
        events = [json.loads(line) for line in r.stdout.splitlines()]
        locked = [e for e in events if e["event"] == "locked"]
        assert [(e["path"], e["holder"], e["lock_id"]) for e in locked] == [
            ("doc.txt", "Marie in Word", lock_id)
        ]
        summary = next(e for e in events if e["event"] == "summary")
        assert (summary["locked"], summary["errors"], summary["conflicts"]) == (1, 0, 0)
        human = allset(cfg, "sync", str(local), "/", "--once")
        assert human.returncode == 2
        assert "1 locked on the server (will retry)" in human.stdout + human.stderr
        assert sorted(p.name for p in local.iterdir() if p.name != MARKER) == ["doc.txt"]

        unlock(http, "/doc.txt", token)
        assert allset(cfg, "sync", str(local), "/", "--once").returncode == 0
        assert http.get("/api/v1/files/doc.txt").content == b"v3"
