"""``allset sync`` killed with SIGKILL in the middle, then run again: it converges,
sends no finished file twice, and never leaves a half-written file under a real name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _util import db_query
from test_client_cli import ALLSET, allset, signed_in

from serverproc import ServerProcess

pytestmark = pytest.mark.system

FILES = 120
SIZE = 300 * 1024


def sync_until(cfg: Path, local: Path, event: str, count: int) -> int:
    """Start a slow sync, SIGKILL it once ``count`` ``event`` events were printed; returns
    how many it printed."""
    proc = subprocess.Popen(
        [ALLSET, "sync", str(local), "/Big", "--once", "--json", "--bwlimit", "40Mbit"],
        env={**os.environ, "ALLSET_CONFIG_DIR": str(cfg)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = 0
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line).get("event") == event:
            seen += 1
            if seen >= count:
                break
        assert time.monotonic() < deadline, "the sync never got that far"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "it finished before it could be killed"
    return seen


def finish(cfg: Path, local: Path) -> dict[str, int]:
    res = allset(cfg, "sync", str(local), "/Big", "--once", "--json")
    assert res.returncode == 0, res.stderr
    (summary,) = [e for e in map(json.loads, res.stdout.splitlines()) if e["event"] == "summary"]
    return summary  # type: ignore[no-any-return]


@pytest.fixture
def cfg(server: ServerProcess, tmp_path: Path) -> Path:
    return signed_in(server, tmp_path, "crash", "--bandwidth", "10Gbit")


def test_killed_upload_resumes_without_resending(
    server: ServerProcess, cfg: Path, tmp_path: Path
) -> None:
    local = tmp_path / "up"
    contents = {f"f{i:03}.bin": os.urandom(SIZE) for i in range(FILES)}
    for name, data in contents.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)

    done = sync_until(cfg, local, "upload", 10)
    assert 10 <= done < FILES
    summary = finish(cfg, local)
    assert summary["uploaded"] <= FILES - done  # finished files were not sent again
    # chunks that reached the server before the kill were not sent again either
    assert summary["bytes_up"] <= (FILES - done) * SIZE
    versions = db_query(
        server,
        "SELECT n.name, count(v.id) FROM nodes n JOIN versions v ON v.node_id = n.id "
        "WHERE n.kind = 'file' AND n.trashed_at IS NULL GROUP BY n.name",
    )
    assert len(versions) == FILES and all(c == 1 for _, c in versions), versions
    verify = allset(cfg, "verify", str(local), "/Big")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_killed_download_leaves_no_half_file(
    server: ServerProcess, cfg: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    contents = {f"d{i % 4}/f{i:03}.bin": os.urandom(SIZE) for i in range(FILES)}
    for name, data in contents.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    finish(cfg, source)

    local = tmp_path / "down"
    done = sync_until(cfg, local, "download", 10)
    assert 10 <= done < FILES
    for p in local.rglob("*"):  # whatever has a real name is whole and right
        if p.is_file() and not p.name.endswith(".allset-part") and p.name != ".allsetsync":
            assert p.read_bytes() == contents[p.relative_to(local).as_posix()]
    summary = finish(cfg, local)
    assert summary["downloaded"] <= FILES - done
    assert summary["bytes_down"] <= (FILES - done) * SIZE
    assert not list(local.rglob("*.allset-part"))
    verify = allset(cfg, "verify", str(local), "/Big", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["same"], verify.stdout
    (local / "d0" / "f000.bin").write_bytes(b"changed")
    differs = allset(cfg, "verify", str(local), "/Big", "--json")
    assert differs.returncode == 1
    assert json.loads(differs.stdout)["differences"][0]["path"] == "d0/f000.bin"


def test_refusals_exit_3_and_change_nothing(
    server: ServerProcess, cfg: Path, tmp_path: Path
) -> None:
    local = tmp_path / "disk"
    for i in range(25):
        (local / f"f{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (local / f"f{i}.txt").write_bytes(b"x" * i)
    finish(cfg, local)
    for i in range(22):
        (local / f"f{i}.txt").unlink()
    refused = allset(cfg, "sync", str(local), "/Big", "--json")
    assert refused.returncode == 3, refused.stderr
    assert "--allow-mass-delete" in refused.stderr
    (event,) = [e for e in map(json.loads, refused.stdout.splitlines()) if e["event"] == "refused"]
    assert event["files"] == 22 and event["synced"] == 25
    (local / ".allsetsync").rename(tmp_path / "marker")  # as if another disk were mounted
    unmounted = allset(cfg, "sync", str(local), "/Big")
    assert unmounted.returncode == 3 and "mounted" in unmounted.stderr
    assert "Traceback" not in unmounted.stderr
    (tmp_path / "marker").rename(local / ".allsetsync")
    allowed = allset(cfg, "sync", str(local), "/Big", "--allow-mass-delete", "--json")
    assert allowed.returncode == 0, allowed.stderr
    verify = allset(cfg, "verify", str(local), "/Big")
    assert verify.returncode == 0 and "3 files match" in verify.stdout
