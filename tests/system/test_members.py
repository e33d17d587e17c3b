"""R-SHARE-1 end to end: a member's `allset sync` (the real engine against the real TLS
server) brings down only the folders granted to them, and cannot push outside them."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from _util import client, make_account
from test_sync import Device, server_files

from serverproc import ServerProcess

pytestmark = pytest.mark.system
API = "/api/v1"


@pytest.fixture
def members_server(module_server: ServerProcess) -> ServerProcess:
    """One server per database for this module (tests/conftest.py ``module_server``)."""
    return module_server


def member_client(srv: ServerProcess, owner: httpx.Client, email: str) -> tuple[str, httpx.Client]:
    """Invited through the API (no SMTP configured: the link comes back), accepted, with an
    app password as `allset login` would make."""
    r = owner.post(f"{API}/users", json={"email": email})
    assert r.status_code == 201, r.text
    token = r.json()["link"].split("#token=", 1)[1]
    password = "member password 42"
    a = owner.post(f"{API}/invitations/accept", json={"token": token, "password": password})
    assert a.status_code == 200, a.text
    with client(srv, (email, password)) as c:
        app = c.post(f"{API}/auth/app-passwords", json={"name": "laptop"}).json()["password"]
    return str(r.json()["id"]), client(srv, (email, app))


def test_member_sync_brings_down_only_the_granted_folder(
    members_server: ServerProcess, tmp_path: Path
) -> None:
    tenant = f"members{os.getpid()}x{len(list(tmp_path.parent.iterdir()))}"
    _, email, app = make_account(members_server, tenant, f"owner@{tenant}.example")
    with client(members_server, (email, app)) as owner:
        for path, data in {
            "/Work/Shared/plan.txt": b"the plan",
            "/Work/Shared/sub/deep.txt": b"deep",
            "/Work/Private/pay.txt": b"salaries",
            "/Work/top.txt": b"top",
            "/Team/readme.txt": b"team",
        }.items():
            owner.post(f"{API}/mkdir", json={"path": path.rsplit("/", 1)[0], "parents": True})
            assert owner.put(f"{API}/files{path}", content=data).status_code == 201
        uid, member = member_client(members_server, owner, f"m@{tenant}.example")
        with member:
            for folder, access in (("/Work/Shared", "read"), ("/Team", "write")):
                r = owner.put(f"{API}/users/{uid}/grants", json={"path": folder, "access": access})
                assert r.status_code == 200, r.text

            work = Device(member, tmp_path / "work", remote="/Work")
            work.root.mkdir()
            result = work.sync()
            assert work.files() == {"Shared/plan.txt": b"the plan", "Shared/sub/deep.txt": b"deep"}
            assert not result.outcome.errors

            # Pushing outside the grant (a new file beside Shared, an edit inside the
            # read-only folder) is refused: nothing reaches the server.
            work.write("mine.txt", b"not allowed here")
            work.write("Shared/plan.txt", b"edited by a reader")
            result = work.sync()
            assert result.outcome.errors
            assert server_files(owner, "/Work") == {
                "Shared/plan.txt": b"the plan",
                "Shared/sub/deep.txt": b"deep",
                "Private/pay.txt": b"salaries",
                "top.txt": b"top",
            }

            team = Device(member, tmp_path / "team", remote="/Team")
            team.root.mkdir()
            team.sync()
            assert team.files() == {"readme.txt": b"team"}
            team.write("notes.txt", b"from the member")
            result = team.sync()
            assert not result.outcome.errors
            assert owner.get(f"{API}/files/Team/notes.txt").content == b"from the member"

            # Removal: the member's next sync is refused (401), their files stay.
            assert owner.delete(f"{API}/users/{uid}").status_code == 204
            assert member.get(f"{API}/me").status_code == 401
            assert owner.get(f"{API}/files/Team/notes.txt").content == b"from the member"
