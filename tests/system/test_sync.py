"""``allset sync`` against a real server over TLS: two and three devices, conflicts,
guards, platform name rules (simulated: CI runs on Linux), symlinks and ignores."""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _util import client, make_account, walk

from allset.sync.engine import Options, PassResult, SyncEngine, SyncRefused
from allset.sync.ignore import MARKER
from allset.sync.names import LINUX, MACOS, WINDOWS, Platform
from serverproc import ServerProcess

pytestmark = pytest.mark.system


class Device:
    """One computer: a local folder, its own sync state, one connection to the server."""

    def __init__(
        self,
        http: httpx.Client,
        root: Path,
        remote: str = "/Sync",
        platform: Platform = LINUX,
        host: str = "pc",
    ) -> None:
        self.http, self.root, self.remote = http, root, remote
        self.platform, self.host = platform, host
        self.state_file = root.parent / f".{root.name}-state.db"

    def sync(self, **options: Any) -> PassResult:
        engine = SyncEngine(
            self.http,
            self.root,
            self.remote,
            self.state_file,
            Options(platform=self.platform, host=self.host, **options),
        )
        try:
            return engine.run_once()
        finally:
            engine.close()

    def write(self, rel: str, data: bytes) -> None:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def files(self) -> dict[str, bytes]:
        out = {}
        for p in self.root.rglob("*"):
            if p.is_file() and not p.is_symlink() and p.name != MARKER:
                out[p.relative_to(self.root).as_posix()] = p.read_bytes()
        return out


def server_files(http: httpx.Client, root: str = "/Sync") -> dict[str, bytes]:
    out = {}
    for path, e in walk(http, root):
        if e["type"] == "file":
            r = http.get("/api/v1/files" + path)
            assert r.status_code == 200, r.text
            out[path.removeprefix(root + "/")] = r.content
    return out


_accounts = itertools.count()


@pytest.fixture
def sync_server(module_server: ServerProcess) -> ServerProcess:
    """One server per database for this module (tests/conftest.py ``module_server``): each
    test has its own Client in it."""
    return module_server


@pytest.fixture
def http(sync_server: ServerProcess) -> Iterator[httpx.Client]:
    n = next(_accounts)
    _, email, password = make_account(sync_server, f"sync{n}", f"me@sync{n}.example")
    with client(sync_server, (email, password)) as c:
        assert c.post("/api/v1/mkdir", json={"path": "/Sync"}).status_code == 201
        yield c


def test_two_devices_converge_with_conflict_copies_and_trash(
    http: httpx.Client, tmp_path: Path
) -> None:
    a = Device(http, tmp_path / "a", host="laptop")
    b = Device(http, tmp_path / "b", host="desktop")
    a.write("notes.txt", b"v1")
    a.write("docs/report.txt", b"draft")
    a.write("docs/deep/data.bin", os.urandom(300_000))  # more than one chunk
    (a.root / "empty").mkdir(parents=True)
    first = a.sync()
    assert first.outcome.uploaded == 3 and not first.outcome.errors
    assert b.sync().outcome.downloaded == 3
    assert b.files() == a.files() == server_files(http)
    assert (b.root / "empty").is_dir()

    # both edit the same file: nothing is lost, the loser is a conflict copy everywhere
    a.write("notes.txt", b"from a")
    b.write("notes.txt", b"from b, longer")
    a.sync()
    res = b.sync()
    assert res.outcome.conflicts == 1
    a.sync()
    copies = [k for k in b.files() if "conflicted copy" in k]
    assert len(copies) == 1 and copies[0].endswith("from desktop).txt")
    assert b.files()["notes.txt"] == b"from a"
    assert b.files()[copies[0]] == b"from b, longer"
    assert a.files() == b.files() == server_files(http)

    # a delete travels to the other device; on the server it lands in the trash
    (a.root / "docs" / "report.txt").unlink()
    assert a.sync().outcome.deleted_remote == 1
    assert b.sync().outcome.deleted_local == 1
    assert not (b.root / "docs" / "report.txt").exists()
    trash = http.get("/api/v1/trash").json()["items"]
    assert any(i["original_path"] == "/Sync/docs/report.txt" for i in trash)

    # a second pass with nothing new does nothing and sends nothing
    again = a.sync()
    assert again.plan.empty and again.outcome.bytes_up == 0


def test_edit_on_the_server_while_deleted_here_comes_back(
    http: httpx.Client, tmp_path: Path
) -> None:
    a = Device(http, tmp_path / "a")
    a.write("keep.txt", b"1")
    a.sync()
    (a.root / "keep.txt").unlink()
    assert http.put("/api/v1/files/Sync/keep.txt", content=b"edited there").status_code in (
        200,
        201,
    )
    a.sync()
    assert (a.root / "keep.txt").read_bytes() == b"edited there"


def test_unmounted_folder_is_refused_not_deleted(http: httpx.Client, tmp_path: Path) -> None:
    a = Device(http, tmp_path / "disk")
    for i in range(5):
        a.write(f"f{i}.txt", b"x" * i)
    a.sync()
    before = server_files(http)
    # the disk is unmounted: the mount point is an empty folder
    os.rename(a.root, tmp_path / "elsewhere")
    a.root.mkdir()
    with pytest.raises(SyncRefused, match="mounted"):
        a.sync()
    a.root.rmdir()
    with pytest.raises(SyncRefused, match="missing"):
        a.sync()
    assert server_files(http) == before
    os.rename(tmp_path / "elsewhere", a.root)
    assert a.sync().plan.empty


def test_unreadable_subfolder_is_left_alone(http: httpx.Client, tmp_path: Path) -> None:
    """A sub-folder that became a dangling link (an unmounted share): its files are not
    taken as deleted. (Permissions cannot make a folder unreadable to root, who runs CI.)"""
    a = Device(http, tmp_path / "a")
    a.write("share/x.txt", b"1")
    a.write("share/y.txt", b"2")
    a.sync()
    share = a.root / "share"
    os.rename(share, tmp_path / "share-away")
    share.symlink_to(tmp_path / "nowhere")  # a dangling mount: not followed, not deleted
    res = a.sync()
    assert not res.plan.remote_deletes
    assert set(server_files(http)) == {"share/x.txt", "share/y.txt"}


def test_mass_delete_needs_the_users_word(http: httpx.Client, tmp_path: Path) -> None:
    a = Device(http, tmp_path / "a")
    for i in range(30):
        a.write(f"many/{i:02}.txt", str(i).encode())
    a.sync()
    for i in range(25):
        (a.root / "many" / f"{i:02}.txt").unlink()
    with pytest.raises(SyncRefused, match="25 of the 30"):
        a.sync()
    assert len(server_files(http)) == 30
    res = a.sync(allow_mass_delete=True)
    assert res.outcome.deleted_remote == 25
    assert len(server_files(http)) == 5
    assert len(http.get("/api/v1/trash").json()["items"]) == 25


def test_not_enough_room_refuses_before_any_transfer(http: httpx.Client, tmp_path: Path) -> None:
    """R-SYNC-2: free space plus what the folder holds must cover the server folder."""
    for i in range(3):
        assert http.put(f"/api/v1/files/Sync/f{i}", content=b"z" * 1000).status_code == 201
    a = Device(http, tmp_path / "small")
    a.write("mine.txt", b"m" * 100)
    with pytest.raises(SyncRefused) as exc:
        a.sync(free_space=lambda _p: 50)
    assert "3,000 bytes" in str(exc.value) and "50 bytes free" in str(exc.value)
    assert "100 bytes already" in str(exc.value)
    assert a.files() == {"mine.txt": b"m" * 100}  # nothing came down
    assert "mine.txt" not in server_files(http)  # nothing went up
    a.sync(free_space=lambda _p: 2_900)  # 2,900 + 100 >= 3,000
    assert len(a.files()) == 4


def test_nfd_names_do_not_duplicate(http: httpx.Client, tmp_path: Path) -> None:
    mac = Device(http, tmp_path / "mac", platform=MACOS)
    nfd = unicodedata.normalize("NFD", "Résumé.txt")
    mac.write(nfd, b"cv")
    mac.sync()
    names = list(server_files(http))
    assert names == [unicodedata.normalize("NFC", "Résumé.txt")]
    linux = Device(http, tmp_path / "linux")
    linux.sync()
    assert list(linux.files()) == names
    again = mac.sync()
    assert again.plan.empty
    assert list(server_files(http)) == names


def test_case_insensitive_device_keeps_both_names(http: httpx.Client, tmp_path: Path) -> None:
    for name, body in (("Report.txt", b"upper"), ("report.txt", b"lower")):
        assert http.put(f"/api/v1/files/Sync/{name}", content=body).status_code == 201
    mac = Device(http, tmp_path / "mac", platform=MACOS)
    mac.sync()
    assert mac.files() == {"Report.txt": b"upper", "report (case conflict).txt": b"lower"}
    assert mac.sync().plan.empty  # the suffixed name is not a new file
    assert set(server_files(http)) == {"Report.txt", "report.txt"}
    mac.write("report (case conflict).txt", b"lower, edited")
    mac.sync()
    assert server_files(http)["report.txt"] == b"lower, edited"


def test_windows_names_are_escaped_and_come_back(http: httpx.Client, tmp_path: Path) -> None:
    names = ["a:b.txt", "CON", "aux.txt", "dot.", 'q"uote']
    for n in names:
        assert http.put(f"/api/v1/files/Sync/{n}", content=n.encode()).status_code == 201
    win = Device(http, tmp_path / "win", platform=WINDOWS)
    win.sync()
    local = win.files()
    assert len(local) == len(names)
    assert all(not any(c in k for c in ':"') and not k.endswith(".") for k in local)
    assert sorted(WINDOWS.to_remote(k) for k in local) == sorted(names)
    win.write(WINDOWS.to_local("a:b.txt"), b"edited on windows")
    win.sync()
    remote = server_files(http)
    assert remote["a:b.txt"] == b"edited on windows" and set(remote) == set(names)


def test_symlinks_reported_once_and_ignores_respected(http: httpx.Client, tmp_path: Path) -> None:
    a = Device(http, tmp_path / "a")
    a.write("real.txt", b"r")
    a.write(".allsetignore", b"*.log\nbuild/\n")
    a.write("debug.log", b"noise")
    a.write("build/out.o", b"obj")
    a.write("~$report.docx", b"lock")
    a.write(".DS_Store", b"junk")
    (a.root / "link.txt").symlink_to(a.root / "real.txt")
    first = a.sync()
    assert "link.txt" in first.plan.notices
    assert set(server_files(http)) == {"real.txt", ".allsetignore"}
    seen: list[str] = []
    engine = SyncEngine(http, a.root, a.remote, a.state_file, Options(host="pc"))
    engine.report.event = lambda kind, **d: seen.append(kind)  # type: ignore[method-assign]
    engine.run_once()
    engine.close()
    assert "notice" not in seen  # told once, not on every pass


def test_one_sync_of_a_folder_at_a_time(http: httpx.Client, tmp_path: Path) -> None:
    a = Device(http, tmp_path / "a")
    a.write("x.txt", b"x")
    first = SyncEngine(http, a.root, a.remote, a.state_file, Options(host="pc"))
    try:
        with pytest.raises(SyncRefused, match="is running"):
            a.sync()
    finally:
        first.close()
    assert a.sync().outcome.uploaded == 1  # the lock went with the first engine
