"""The Files area's web routes in-process: every change needs the session's CSRF token;
actions answer with a redirect and a message (errors in plain words, never a 500: taken
names, bad names, missing folders, a full quota with its figures); the no-script upload
form stores files and folders; sorting and paging links; the trash."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi.testclient import TestClient
from test_web_session import sign_in

from allset.runtime import Runtime
from allset.server.auth import csrf_token
from conftest import Account, make_account

API = "/api/v1"


def post(client: TestClient, token: str, action: str, **fields: Any) -> tuple[str, str, str]:
    """POST a Files action with the CSRF token; (kind, message, where it sends us)."""
    r = client.post(
        f"/files-do/{action}",
        data={"csrf": csrf_token(token), **fields},
        follow_redirects=False,
    )
    assert r.status_code == 303, (r.status_code, r.text)
    kind, _, message = flash_of(r).partition(":")
    return kind, message, r.headers["location"]


def flash_of(r: Any) -> str:
    """The one-shot message cookie as the page will show it (the jar keeps its quotes)."""
    return unquote(r.cookies.get("allset-flash", "").strip('"'))


def names(client: TestClient, who: Account, path: str = "/") -> list[str]:
    return [e["name"] for e in client.get(f"{API}/tree{path}", auth=who.auth).json()["entries"]]


def test_actions_feedback_and_errors(client: TestClient, alice: Account) -> None:
    client.put(f"{API}/files/a.txt", content=b"a", auth=alice.auth)
    client.put(f"{API}/files/b.txt", content=b"bb", auth=alice.auth)
    token = sign_in(client, alice)

    # no CSRF token: refused, nothing changed
    r = client.post("/files-do/delete", data={"path": "/a.txt"}, follow_redirects=False)
    assert r.status_code == 403 and "a.txt" in names(client, alice)

    assert post(client, token, "mkdir", folder="/", name="Projets")[0] == "ok"
    kind, msg, where = post(client, token, "rename", path="/a.txt", name="été.txt")
    assert (kind, where) == ("ok", "/item/%C3%A9t%C3%A9.txt") and "été.txt" in msg
    kind, msg, where = post(client, token, "move", path="/été.txt", to="/Projets")
    assert kind == "ok" and names(client, alice, "/Projets") == ["été.txt"]
    kind, msg, _ = post(client, token, "copy", path="/b.txt", to="/Projets", name="b2.txt")
    assert kind == "ok" and names(client, alice, "/Projets") == ["b2.txt", "été.txt"]
    kind, msg, where = post(client, token, "delete", path="/Projets/b2.txt", back="/x")
    assert (kind, where) == ("ok", "/files/Projets/") and "corbeille" in msg

    # errors come back as messages on the page the form was on
    kind, msg, where = post(
        client, token, "rename", path="/b.txt", name="Projets", back="/item/b.txt"
    )
    assert (kind, msg, where) == (
        "error",
        "Un fichier ou dossier porte déjà ce nom à cet endroit.",
        "/item/b.txt",
    )
    for bad in ("", "a/b", "..", "x\x00y"):
        kind, msg, _ = post(client, token, "rename", path="/b.txt", name=bad)
        assert kind == "error" and msg.startswith("Ce nom ou ce chemin n'est pas valable"), bad
    kind, msg, _ = post(client, token, "move", path="/b.txt", to="/Nulle/part")
    assert (kind, msg) == ("error", "Le dossier /Nulle/part n'existe pas ; créez-le d'abord.")
    kind, msg, _ = post(client, token, "delete", path="/nothing-here")
    assert kind == "error"
    kind, _, where = post(
        client, token, "rename", path="/b.txt", name="c.txt", back="//evil.example"
    )
    assert kind == "ok" and where.startswith("/item/")
    kind, _, where = post(client, token, "delete", path="/zz", back="//evil.example/x")
    assert kind == "error" and where == "/files/"  # never off-site

    # the trash: listed, restored, purged, emptied
    page = client.get("/trash")
    assert page.status_code == 200 and "b2.txt" in page.text
    assert 'data-confirm="Supprimer « b2.txt » définitivement' in page.text
    trash = client.get(f"{API}/trash", auth=alice.auth).json()["items"]
    kind, msg, _ = post(client, token, "trash-restore", id=trash[0]["id"])
    assert kind == "ok" and "b2.txt" in names(client, alice, "/Projets")
    post(client, token, "delete", path="/c.txt")
    item = client.get(f"{API}/trash", auth=alice.auth).json()["items"][0]
    assert post(client, token, "trash-purge", id=item["id"], name="c.txt")[0] == "ok"
    post(client, token, "delete", path="/Projets")
    kind, msg, _ = post(client, token, "trash-empty")
    assert kind == "ok" and client.get(f"{API}/trash", auth=alice.auth).json()["items"] == []
    assert post(client, token, "trash-restore", id="nope")[0] == "error"


def test_versions_page_and_restore(client: TestClient, alice: Account) -> None:
    client.put(f"{API}/files/v.txt", content=b"one", auth=alice.auth)
    client.put(f"{API}/files/v.txt", content=b"two", auth=alice.auth)
    token = sign_in(client, alice)
    page = client.get("/item/v.txt")
    assert page.status_code == 200 and page.text.count('name="version"') == 1
    old = client.get(f"{API}/versions/v.txt", auth=alice.auth).json()["versions"][1]["version"]
    assert old in page.text and "Empreinte SHA-256" in page.text
    # a way to share it from here, to the shares page that publishes it
    assert 'href="/shares/new?path=/v.txt"' in page.text
    assert client.get("/shares/new?path=/v.txt").status_code == 200
    kind, _, _ = post(client, token, "restore-version", path="/v.txt", version=old, when="x")
    assert kind == "ok" and client.get(f"{API}/files/v.txt", auth=alice.auth).content == b"one"
    assert post(client, token, "restore-version", path="/v.txt", version="bad")[0] == "error"
    assert client.get("/item/nothing").status_code == 404


def test_fallback_upload_and_quota(client: TestClient, runtime: Runtime) -> None:
    small = make_account(runtime, quota=10_000)
    token = sign_in(client, small)
    files = [
        ("files", ("one.txt", b"1" * 100, "text/plain")),
        ("files", ("Dossier/sous/two.txt", b"2" * 200, "text/plain")),
    ]
    r = client.post(
        "/files-do/upload",
        data={"csrf": csrf_token(token), "folder": "/"},
        files=files,
        follow_redirects=False,
    )
    assert r.status_code == 303 and "2 fichier" in flash_of(r)
    assert names(client, small) == ["Dossier", "one.txt"]
    assert names(client, small, "/Dossier/sous") == ["two.txt"]

    r = client.post(
        "/files-do/upload",
        data={"csrf": csrf_token(token), "folder": "/"},
        files=[("files", ("big.bin", b"x" * 20_000, "application/octet-stream"))],
        follow_redirects=False,
    )
    flash = flash_of(r)
    assert r.status_code == 303 and flash.startswith(
        "error:Espace plein : 300 B utilisés sur 9.8 KiB"
    )
    assert "big.bin" not in names(client, small)
    r = client.post(
        "/files-do/upload", data={"folder": "/"}, files=files[:1], follow_redirects=False
    )
    assert r.status_code == 403  # no CSRF token


def test_listing_sort_and_paging_links(client: TestClient, alice: Account) -> None:
    client.post(f"{API}/mkdir", json={"path": "/Many"}, auth=alice.auth)
    for i in range(205):
        client.put(f"{API}/files/Many/f{i:03d}.txt", content=b"x" * (i % 7), auth=alice.auth)
    sign_in(client, alice)
    page = client.get("/files/Many/?sort=size&order=desc")
    assert page.status_code == 200
    assert page.text.count('class="file"') == 200 and 'aria-sort="descending"' in page.text
    assert '<option value="size" selected>' in page.text  # the sort form (phones) agrees
    assert '<option value="desc" selected>' in page.text
    nxt = page.text.split('rel="next" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    assert "sort=size" in nxt and "order=desc" in nxt
    rest = client.get(nxt)
    assert rest.text.count('class="file"') == 5 and 'rel="next"' not in rest.text
    assert client.get("/files/Many/?sort=bogus&order=up").status_code == 200  # defaults
    bad = client.get("/files/Many/?sort=size&after=garbage")
    assert bad.status_code == 400 and "première page" in bad.text
    assert client.get("/files/Nowhere/").status_code == 404
    root = client.get("/files/").text
    zip_href = root.split('class="button" href="', 1)[1].split('"', 1)[0]
    assert zip_href == "/api/v1/zip/"
    assert client.get(zip_href).headers["content-type"] == "application/zip"


def test_pages_in_english(client: TestClient, alice: Account) -> None:
    client.put(f"{API}/files/v.txt", content=b"one", auth=alice.auth)
    client.put(f"{API}/files/v.txt", content=b"two", auth=alice.auth)
    client.delete(f"{API}/files/v.txt", auth=alice.auth)
    client.put(f"{API}/files/w.txt", content=b"w", auth=alice.auth)
    client.put(f"{API}/files/w.txt", content=b"ww", auth=alice.auth)
    sign_in(client, alice)
    client.cookies.set("allset-lang", "en")
    pages = {
        "/files/": ["Upload files", "Choose a folder", "Sort by Size", "Download the folder"],
        "/item/w.txt": ["Show the SHA-256 fingerprint", "Move to the trash", "Restore this"],
        "/trash": ["Empty the trash", "Delete v.txt for good", "Original location"],
    }
    for url, words in pages.items():
        r = client.get(url)
        assert r.status_code == 200, url
        for w in words:
            assert w in r.text, (url, w)
        assert "Corbeille" not in r.text and "Envoyer" not in r.text, url
