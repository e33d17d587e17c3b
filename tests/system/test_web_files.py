"""The Files area in a real headless Chromium against a real server: uploads by the file
and folder pickers over tus (progress to 100 %), download with SHA-256 check, sorting by
size, the SHA-256 on demand, rename, versions restore, delete and restore from the trash;
and an upload cut by a server crash that resumes, after a page reload, from the server's
offset rather than from zero. Screenshots at desktop and phone width go to
``test-artifacts/screenshots/``."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _util import client, db_query, restart
from playwright.sync_api import Browser, Page, Request, expect

from serverproc import ServerProcess
from webhelpers import DESKTOP, PASSWORD, PHONE, new_page, owner, shot, sign_in

pytestmark = pytest.mark.system

MiB = 1 << 20


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("webfiles") / "srv")
    s.start()
    yield s
    s.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uploads_finished(page: Page) -> None:
    done = page.locator("#upload .alldone")
    expect(done).to_be_visible(timeout=30_000)
    expect(page.locator("#overall-text")).to_contain_text("100 %")
    expect(page.locator("#upload .queue li.failed")).to_have_count(0)


def file_names(page: Page) -> list[str]:
    return page.locator("table.listing tbody a.file").all_text_contents()


def flash(page: Page) -> str:
    return page.locator("main .flash").inner_text()


def test_upload_browse_sort_rename_versions_trash(
    srv: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    email = owner(srv, "fichiers")
    files = {"a.txt": b"first version\n", "b.bin": os.urandom(300_000), "c.csv": b"x;y\n" * 900}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    tree = tmp_path / "pick" / "Dossier été"
    (tree / "inner").mkdir(parents=True)
    (tree / "plan.txt").write_bytes(b"plan")
    (tree / "inner" / "deep <img src=x onerror=alert(1)>.txt").write_bytes(b"deep")

    page = new_page(browser, srv, DESKTOP)
    page.on("dialog", lambda d: d.accept())
    sign_in(page, email, start="/")
    expect(page).to_have_url(f"{srv.url}/files/")
    page.locator("#pick-files").set_input_files([str(tmp_path / n) for n in files])
    page.locator("#pick-folder").set_input_files(str(tree))
    uploads_finished(page)
    expect(page.locator("#upload .queue li")).to_have_count(5)
    shot(page, "files-upload-desktop")
    page.get_by_role("link", name="Afficher les fichiers envoyés").click()
    expect(page.get_by_role("link", name="Dossier été/", exact=True)).to_be_visible()
    assert file_names(page) == ["a.txt", "b.bin", "c.csv"]
    with client(srv, (email, PASSWORD)) as api:
        got = api.get("/api/v1/files/Dossier été/inner/deep <img src=x onerror=alert(1)>.txt")
        assert got.status_code == 200 and got.content == b"deep"

    # sort by size, ascending then descending; folders stay first
    page.get_by_role("link", name="Trier par Taille").click()
    assert file_names(page) == ["a.txt", "c.csv", "b.bin"]
    expect(page.locator("th[aria-sort=ascending]")).to_contain_text("Taille")
    page.get_by_role("link", name=re.compile("^Trier par Taille")).click()
    assert file_names(page) == ["b.bin", "c.csv", "a.txt"]
    expect(page.locator("tbody tr").first).to_contain_text("Dossier été")

    # download one and compare its SHA-256
    with page.expect_download() as dl:
        page.get_by_role("link", name="b.bin", exact=True).click()
    saved = tmp_path / "got.bin"
    dl.value.save_as(saved)
    assert sha(saved.read_bytes()) == sha(files["b.bin"])

    # the details page: SHA-256 on demand (keyboard), rename
    page.get_by_role("link", name="Détails de b.bin").click()
    digest = page.locator("details.sha code")
    expect(digest).to_be_hidden()
    page.locator("details.sha summary").focus()
    page.keyboard.press("Enter")
    expect(digest).to_have_text(sha(files["b.bin"]))
    shot(page, "files-item-desktop")
    page.get_by_label("Nouveau nom").fill("b renommé.bin")
    page.get_by_role("button", name="Renommer").click()
    assert "renommé en « b renommé.bin »" in flash(page)
    expect(page.get_by_role("heading", name="b renommé.bin")).to_be_visible()

    # delete to the trash, then restore from it
    page.get_by_role("button", name="Mettre à la corbeille").click()
    assert "est dans la corbeille" in flash(page)
    assert "b renommé.bin" not in file_names(page)
    page.get_by_role("link", name="Corbeille").click()
    shot(page, "files-trash-desktop")
    page.get_by_role("button", name="Restaurer b renommé.bin").click()
    assert "a été restauré" in flash(page)
    page.goto("/files/")
    assert "b renommé.bin" in file_names(page)

    # drag and drop: a file dropped on the zone is uploaded like a picked one
    page.evaluate(
        """() => {
            const dt = new DataTransfer();
            dt.items.add(new File(["dropped bytes"], "déposé.txt", {type: "text/plain"}));
            const zone = document.querySelector("#upload .dropzone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
        }"""
    )
    uploads_finished(page)
    with client(srv, (email, PASSWORD)) as api:
        assert api.get("/api/v1/files/déposé.txt").content == b"dropped bytes"

    # a second version by the picker, then the first restored from the details page
    (tmp_path / "a.txt").write_bytes(b"second version\n")
    page.locator("#pick-files").set_input_files(str(tmp_path / "a.txt"))
    uploads_finished(page)
    page.goto("/item/a.txt")
    expect(page.locator("table.versions tbody tr")).to_have_count(2)
    page.get_by_role("button", name=re.compile("^Restaurer cette version")).click()
    assert "de nouveau la version actuelle" in flash(page)
    expect(page.locator("table.versions tbody tr")).to_have_count(3)
    with client(srv, (email, PASSWORD)) as api:
        assert api.get("/api/v1/files/a.txt").content == files["a.txt"]

    # a refused action says why in plain words: the name is taken
    page.get_by_label("Nouveau nom").fill("c.csv")
    page.get_by_role("button", name="Renommer").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Un fichier ou dossier porte déjà ce nom à cet endroit."
    )

    # over tus, a full quota is said with the figures
    srv.cli("tenant", "limit", "fichiers", "--bandwidth", "100Mbit", "--quota", "400KiB")
    (tmp_path / "too big.bin").write_bytes(os.urandom(MiB))
    page.goto("/files/")
    page.locator("#pick-files").set_input_files(str(tmp_path / "too big.bin"))
    expect(page.locator("#upload .queue li.failed .qstatus")).to_contain_text(
        re.compile(r"^Échec : Espace plein : \d.* utilisés sur 400\.0 KiB\.")
    )
    assert page.violations == []  # type: ignore[attr-defined]

    # phone width: nothing wider than the screen on the three pages
    phone = new_page(browser, srv, PHONE)
    sign_in(phone, email, start="/")
    for url, name in (
        ("/files/", "files-list"),
        ("/item/c.csv", "files-item"),
        ("/trash", "files-trash"),
    ):
        phone.goto(url)
        shot(phone, f"{name}-phone")
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], url
    assert phone.violations == []  # type: ignore[attr-defined]


def test_upload_resumes_after_server_restart(browser: Browser, tmp_path: Path) -> None:
    """Kill -9 the server mid-upload, start it again on the same port, reload the page and
    choose the file again: tus-js-client finds its upload (localStorage) and continues
    from the server's offset; the stored file is whole."""
    server = ServerProcess(tmp_path / "srv")
    server.start()
    server.port = urlsplit(server.url).port or 0
    try:
        email = owner(server, "reprise")
        # 16 Mbit/s = 2 MB/s: 20 MiB take ~10 s, so the cut lands mid-upload
        server.cli("tenant", "limit", "reprise", "--bandwidth", "16Mbit")
        big = tmp_path / "gros.bin"
        body = os.urandom(20 * MiB)
        big.write_bytes(body)

        page = new_page(browser, server, DESKTOP)
        page.on("dialog", lambda d: d.accept())
        patches: list[tuple[str, int]] = []

        def on_request(r: Request) -> None:
            if r.method == "PATCH" and "/tus/" in r.url:
                patches.append((r.url, int(r.headers.get("upload-offset", "-1"))))

        page.on("request", on_request)
        sign_in(page, email, start="/")
        expect(page).to_have_url(f"{server.url}/files/")
        page.locator("#pick-files").set_input_files(str(big))
        deadline = time.monotonic() + 30
        while len(patches) < 2 and time.monotonic() < deadline:  # one 4 MiB part is in
            page.wait_for_timeout(100)
        assert len(patches) >= 2, patches
        expect(page.locator("#overall-speed")).to_contain_text(re.compile(r"/s · reste environ"))
        server.kill()
        stored = db_query(server, 'SELECT "offset" FROM resumable_uploads')
        assert stored and stored[0][0] >= 4 * MiB, stored  # durable before acknowledged
        restart(server)
        assert server.url.endswith(f":{server.port}")

        before = len(patches)
        page.reload()
        page.locator("#pick-files").set_input_files(str(big))
        expect(page.locator("#upload .queue li .qstatus")).not_to_have_text("En attente")
        uploads_finished(page)
        resumed = patches[before:]
        assert resumed, "no PATCH after the reload"
        assert resumed[0][1] >= 4 * MiB, resumed  # not from zero
        assert resumed[0][0] == patches[0][0]  # the same upload, found again
        with client(server, (email, PASSWORD)) as api:
            r = api.get("/api/v1/tree/")
            [entry] = [e for e in r.json()["entries"] if e["name"] == "gros.bin"]
            assert entry["sha256"] == sha(body) and entry["size"] == len(body)
        assert page.violations == []  # type: ignore[attr-defined]
        page.context.close()  # no keep-alive connection left to delay the shutdown
    finally:
        server.stop()
