"""WebDAV locks honoured by tus uploads, the web interface and public drop links (files/
locks.py ``check_write``), on SQLite and PostgreSQL, through the whole app: a real
WebDAV LOCK, then each of these ways of writing is refused (423, or the message in the
page in the reader's language) and nothing changes; once the lock is gone it works."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

import httpx
from starlette.testclient import TestClient
from test_links import csrf_of, share, visit
from test_locks_rest import dav_lock, dav_unlock
from test_web_session import sign_in

from allset.runtime import Runtime
from allset.server.auth import csrf_token
from conftest import Account, problem

API = "/api/v1"
TUS = {"Tus-Resumable": "1.0.0"}
OFFSET = "application/offset+octet-stream"


def tus_create(c: TestClient, who: Account, length: int, name: str, folder: str = "/") -> Any:
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in (("filename", name), ("path", folder))
    )
    headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": meta}
    return c.post("/tus/", auth=who.auth, headers=headers)


def tus_patch(c: TestClient, who: Account, url: str, offset: int, data: bytes) -> httpx.Response:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET}
    return c.patch(url, auth=who.auth, headers=headers, content=data)


def tus_rows(rt: Runtime) -> int:
    with rt.db.read_conn() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM resumable_uploads").scalar() or 0)


def test_tus_creation_to_a_locked_path_is_423_and_stages_nothing(
    client: TestClient, alice: Account, runtime: Runtime
) -> None:
    c = client
    assert c.put(f"{API}/files/doc.txt", content=b"v1", auth=alice.auth).status_code == 201
    dav_lock(c, "/doc.txt", alice.auth, owner="Marie")
    staged = set(runtime.resumables.root.iterdir())
    r = tus_create(c, alice, 10, "doc.txt")
    assert r.status_code == 423, r.text
    body = problem(r)
    assert body["lock_path"] == "/doc.txt" and body["lock_owner"] == "Marie"
    assert tus_rows(runtime) == 0 and set(runtime.resumables.root.iterdir()) == staged
    assert c.get(f"{API}/files/doc.txt", auth=alice.auth).content == b"v1"
    # Inside a folder locked with depth infinity, too.
    c.post(f"{API}/mkdir", json={"path": "/proj"}, auth=alice.auth)
    dav_lock(c, "/proj/", alice.auth, depth="infinity", owner="Marie")
    assert tus_create(c, alice, 10, "new.txt", "/proj").status_code == 423
    assert tus_rows(runtime) == 0


def test_tus_completion_under_a_lock_is_423_then_a_retry_commits(
    client: TestClient, alice: Account, runtime: Runtime
) -> None:
    """A lock taken while the bytes travel: the last PATCH is refused (423) and nothing
    is committed; the staged bytes stay, as for any refused commit, so the client's
    retry at the final offset commits once the lock is gone; then nothing is left."""
    c = client
    data = bytes(range(251)) * 2000
    assert c.put(f"{API}/files/report.bin", content=b"old", auth=alice.auth).status_code == 201
    url = tus_create(c, alice, len(data), "report.bin").headers["location"]
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    assert tus_patch(c, alice, url, 0, data[:1000]).status_code == 204
    token = dav_lock(c, "/report.bin", alice.auth, owner="Marie")

    refused = tus_patch(c, alice, url, 1000, data[1000:])
    assert refused.status_code == 423, refused.text
    assert problem(refused)["lock_owner"] == "Marie"
    assert c.get(f"{API}/files/report.bin", auth=alice.auth).content == b"old"
    versions = c.get(f"{API}/versions/report.bin", auth=alice.auth).json()["versions"]
    assert len(versions) == 1
    assert runtime.resumables.part_path(upload_id).stat().st_size == len(data)

    dav_unlock(c, "/report.bin", alice.auth, token)
    done = tus_patch(c, alice, url, len(data), b"")
    assert done.status_code == 204, done.text
    assert c.get(f"{API}/files/report.bin", auth=alice.auth).content == data
    assert not runtime.resumables.part_path(upload_id).exists()


def test_tus_upload_refused_at_completion_can_be_terminated(
    client: TestClient, alice: Account, runtime: Runtime
) -> None:
    """Given up: termination removes the staged bytes and the row, as for any upload."""
    c = client
    data = b"z" * 5000
    url = tus_create(c, alice, len(data), "given-up.txt").headers["location"]
    upload_id = url.rstrip("/").rsplit("/", 1)[-1]
    dav_lock(c, "/given-up.txt", alice.auth)
    assert tus_patch(c, alice, url, 0, data).status_code == 423
    assert c.delete(url, auth=alice.auth, headers=TUS).status_code == 204
    assert not runtime.resumables.part_path(upload_id).exists() and tus_rows(runtime) == 0
    assert c.get(f"{API}/files/given-up.txt", auth=alice.auth).content == b""  # the lock's


# ---- the web interface ----------------------------------------------------------------
def web_post(c: TestClient, token: str, action: str, **fields: Any) -> tuple[str, str]:
    r = c.post(
        f"/files-do/{action}",
        data={"csrf": csrf_token(token), **fields},
        follow_redirects=False,
    )
    assert r.status_code == 303, (r.status_code, r.text)
    flash = unquote(r.cookies.get("allset-flash", "").strip('"'))
    page = c.get(r.headers["location"])
    return flash, page.text


def test_web_actions_show_the_lock_in_the_page(client: TestClient, alice: Account) -> None:
    c = client
    c.post(f"{API}/mkdir", json={"path": "/Docs"}, auth=alice.auth)
    assert c.put(f"{API}/files/Docs/plan.docx", content=b"v1", auth=alice.auth).is_success
    dav_lock(c, "/Docs/plan.docx", alice.auth, owner="Marie Curie")
    token = sign_in(c, alice)

    attempts = {
        "rename": {"path": "/Docs/plan.docx", "name": "other.docx"},
        "delete": {"path": "/Docs/plan.docx"},
        "move": {"path": "/Docs/plan.docx", "to": "/"},
    }
    for action, fields in attempts.items():
        flash, page = web_post(c, token, action, **fields)
        assert flash.startswith("error:/Docs/plan.docx est verrouillé par Marie Curie"), flash
        assert "est verrouillé par Marie Curie" in page, action
        assert "Fermez le document ou attendez" in page
    c.cookies.set("allset-lang", "en")
    flash, page = web_post(c, token, "delete", path="/Docs/plan.docx")
    assert "/Docs/plan.docx is locked by Marie Curie until" in page
    assert "Close the document or wait; an owner or admin can break the lock" in page
    c.cookies.delete("allset-lang")

    # The no-script upload form, in French.
    r = c.post(
        "/files-do/upload",
        data={"csrf": csrf_token(token), "folder": "/Docs"},
        files=[("files", ("plan.docx", b"overwritten?", "application/octet-stream"))],
        follow_redirects=False,
    )
    flash = unquote(r.cookies.get("allset-flash", "").strip('"'))
    assert flash.startswith("error:/Docs/plan.docx est verrouillé par Marie Curie"), flash
    listing = c.get(f"{API}/tree/Docs", auth=alice.auth).json()["entries"]
    assert [e["name"] for e in listing] == ["plan.docx"]
    assert c.get(f"{API}/files/Docs/plan.docx", auth=alice.auth).content == b"v1"


def test_files_script_has_the_lock_message_in_both_languages(
    client: TestClient, alice: Account
) -> None:
    """files.js shows a tus 423 with the words the page hands it (``SCRIPT_WORDS``)."""
    sign_in(client, alice)
    fr = client.get("/files/").text
    assert "est verrouillé par {holder}" in fr
    client.cookies.set("allset-lang", "en")
    assert "is locked by {holder}" in client.get("/files/").text
    script = client.get("/static/files.js").text
    assert "resource-locked" in script and 't("err.locked"' in script


# ---- public drop links ----------------------------------------------------------------
def test_a_drop_into_a_locked_folder_is_refused_without_naming_the_lock(
    client: TestClient, alice: Account
) -> None:
    c = client
    c.post(f"{API}/mkdir", json={"path": "/Inbox"}, auth=alice.auth)
    link = share(c, alice, "/Inbox", drop=True)
    token = dav_lock(c, "/Inbox/", alice.auth, depth="infinity", owner="Marie Curie")
    csrf = csrf_of(visit(c, "GET", link["s"]).text)
    sent = visit(
        c,
        "POST",
        link["s"] + "/upload",
        data={"csrf": csrf},
        files=[("file", ("cv.pdf", b"a cv", "application/pdf"))],
    )
    assert sent.status_code == 423, sent.text
    assert "being edited" in sent.text and "Marie" not in sent.text and "Inbox" not in sent.text
    raw = visit(c, "PUT", link["s"] + "/upload/cv.pdf", content=b"a cv")
    assert raw.status_code == 423 and "Marie" not in raw.text
    assert c.get(f"{API}/tree/Inbox", auth=alice.auth).json()["entries"] == []

    dav_unlock(c, "/Inbox/", alice.auth, token)
    raw = visit(c, "PUT", link["s"] + "/upload/cv.pdf", content=b"a cv")
    assert raw.status_code == 201, raw.text
