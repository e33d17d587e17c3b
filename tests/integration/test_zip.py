"""``GET /api/v1/zip/{path}``: a folder as a zip streamed by the shared helper
(``server.zipstream``, also behind public folder links): every file byte for byte, empty
folders kept, a member's zip holds only what they may read, a file or a missing path is
a clear problem."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import quote

from starlette.testclient import TestClient

from allset.files import access
from allset.runtime import Runtime
from conftest import Account, problem

API = "/api/v1"


def put(client: TestClient, who: Account, path: str, data: bytes) -> None:
    parent = path.rsplit("/", 1)[0]
    if parent:
        client.post(f"{API}/mkdir", json={"path": parent, "parents": True}, auth=who.auth)
    r = client.put(f"{API}/files" + quote(path), content=data, auth=who.auth)
    assert r.status_code == 201, r.text


def test_folder_zip(client: TestClient, runtime: Runtime, alice: Account) -> None:
    files = {
        "/Projets/plan été.txt": b"plan" * 1000,
        "/Projets/2026/budget.bin": bytes(range(256)) * 3000,
        "/Projets/2026/Q1/notes.md": b"# notes",
        "/Ailleurs/secret.txt": b"not in the zip",
    }
    for path, data in files.items():
        put(client, alice, path, data)
    client.post(f"{API}/mkdir", json={"path": "/Projets/vide"}, auth=alice.auth)

    r = client.get(f"{API}/zip/Projets", auth=alice.auth)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''Projets.zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None  # every member's CRC checks
        got = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
        assert "Projets/vide/" in zf.namelist()
    assert got == {p[1:]: d for p, d in files.items() if p.startswith("/Projets/")}

    assert (
        problem(client.get(f"{API}/zip/Projets/plan%20%C3%A9t%C3%A9.txt", auth=alice.auth))[
            "status"
        ]
        == 409
    )
    assert problem(client.get(f"{API}/zip/Nowhere", auth=alice.auth))["status"] == 404

    # A member granted /Projets/2026 gets, from the root, only the way to it and its files.
    user = runtime.accounts.create_user(
        alice.tenant, "m@alice.example", "member", "member password 42", "test"
    )
    access.set_grant(runtime.files, alice.principal, user["id"], "/Projets/2026", "read")
    r = client.get(f"{API}/zip/", auth=("m@alice.example", "member password 42"))
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = {n for n in zf.namelist() if not n.endswith("/")}
    assert names == {"files/Projets/2026/budget.bin", "files/Projets/2026/Q1/notes.md"}
