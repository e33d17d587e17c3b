"""The web interface in a real headless Chromium (Debian's, driven by Playwright)
against a real server over TLS: sign-in, browsing, download, language, sign-out, and
no Content-Security-Policy violation on the way. Screenshots of the pages, at desktop
and phone width, go to ``test-artifacts/screenshots/`` (CI keeps them)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _util import client
from playwright.sync_api import Browser, expect

from serverproc import ServerProcess
from webhelpers import DESKTOP, PASSWORD, PHONE, new_page, owner, shot, sign_in

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("web") / "srv")
    srv.start()
    yield srv
    srv.stop()


def test_sign_in_browse_download_language_sign_out(
    web_server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    email = owner(web_server, "acme")
    body = os.urandom(300_000)
    hostile = 'rapport <img src=x onerror="alert(1)">.bin'
    with client(web_server, (email, PASSWORD)) as api:
        assert api.post("/api/v1/mkdir", json={"path": "/Projets/2026", "parents": True})
        assert api.put(f"/api/v1/files/{hostile}", content=body).status_code == 201
        assert api.put("/api/v1/files/Projets/plan.txt", content=b"plan").status_code == 201

    page = new_page(browser, web_server, DESKTOP)
    page.goto("/files/")  # not signed in: to the sign-in page, and back after it
    expect(page).to_have_url(f"{web_server.url}/login?next=%2Ffiles%2F")
    shot(page, "login-desktop")
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_label("Mot de passe").fill("wrong password")
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("alert")).to_have_text("Adresse ou mot de passe incorrect.")
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    expect(page).to_have_url(f"{web_server.url}/files/")

    # the hostile name is shown as text, never run
    expect(page.get_by_role("link", name=hostile, exact=True)).to_be_visible()
    assert page.evaluate("document.querySelectorAll('main img').length") == 0
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    shot(page, "files-desktop")

    with page.expect_download() as dl:
        page.get_by_role("link", name=hostile, exact=True).click()
    saved = tmp_path / "got.bin"
    dl.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(body).digest()

    page.get_by_role("link", name="Projets/", exact=True).click()
    expect(page.get_by_role("link", name="plan.txt", exact=True)).to_be_visible()
    crumbs = page.get_by_role("navigation", name="breadcrumb")
    expect(crumbs).to_contain_text("Mes fichiers")
    crumbs.get_by_role("link", name="Mes fichiers").click()
    expect(page).to_have_url(f"{web_server.url}/files/")

    page.get_by_role("button", name="EN").click()
    expect(page.get_by_role("link", name="Files", exact=True)).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/files/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # the cookie is gone
    assert page.violations == []  # type: ignore[attr-defined]


def test_phone_width_and_keyboard(web_server: ServerProcess, browser: Browser) -> None:
    email = owner(web_server, "mobile")
    page = new_page(browser, web_server, PHONE)
    sign_in(page, email, start="/")
    expect(page).to_have_url(f"{web_server.url}/files/")
    shot(page, "files-phone")
    # nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # keyboard: the first Tab reaches the skip link, which is then visible
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Aller au contenu"
    assert page.violations == []  # type: ignore[attr-defined]
