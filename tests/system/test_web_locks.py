"""The Files page in a real headless Chromium against a real server: an upload (over
tus, ``static/files.js``) onto a document someone has locked through WebDAV stops at
once with the reason in the page — who holds it, what to do — instead of retrying, and
the document is untouched; a rename from the item page says the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _util import client
from playwright.sync_api import Browser, expect

from serverproc import ServerProcess
from webhelpers import DESKTOP, PASSWORD, new_page, owner, shot, sign_in

pytestmark = pytest.mark.system

LOCKINFO = (
    b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
    b"<locktype><write/></locktype><owner>Marie Curie</owner></lockinfo>"
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("weblocks") / "srv")
    s.start()
    yield s
    s.stop()


def test_an_upload_onto_a_locked_document_says_who_holds_it(
    srv: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    email = owner(srv, "verrous")
    with client(srv, (email, PASSWORD)) as http:
        assert http.put("/api/v1/files/plan.docx", content=b"v1").status_code == 201
        r = http.request(
            "LOCK",
            "/dav/plan.docx",
            content=LOCKINFO,
            headers={"Depth": "0", "Timeout": "Second-600"},
        )
        assert r.status_code == 200, r.text

        (tmp_path / "plan.docx").write_bytes(b"overwritten?")
        page = new_page(browser, srv, DESKTOP)
        sign_in(page, email, start="/")
        page.locator("#pick-files").set_input_files(str(tmp_path / "plan.docx"))
        failed = page.locator("#upload .queue li.failed")
        expect(failed).to_have_count(1, timeout=10_000)  # not after a minute of retries
        expect(failed).to_contain_text("/plan.docx est verrouillé par Marie Curie")
        expect(failed).to_contain_text("Fermez le document ou attendez")
        shot(page, "files-upload-locked-desktop")

        page.goto("/item/plan.docx")
        page.get_by_label("Nouveau nom").fill("autre.docx")
        page.get_by_role("button", name="Renommer").click()
        expect(page.locator("main .flash")).to_contain_text("verrouillé par Marie Curie")
        assert http.get("/api/v1/files/plan.docx").content == b"v1"
