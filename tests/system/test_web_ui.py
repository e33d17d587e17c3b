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
from playwright.sync_api import Browser, Page, expect, sync_playwright

from serverproc import ServerProcess

pytestmark = pytest.mark.system

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "Vive le stockage 2026!"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("web") / "srv")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def owner(srv: ServerProcess, tenant: str) -> str:
    srv.cli("tenant", "create", tenant, "--quota", "1GiB")
    email = f"direction@{tenant}.fr"
    srv.cli(
        "user",
        "create",
        "--tenant",
        tenant,
        email,
        "--role",
        "owner",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    return email


def page_for(browser: Browser, srv: ServerProcess, viewport: dict[str, int]) -> Page:
    ctx = browser.new_context(
        base_url=srv.url, ignore_https_errors=True, viewport=viewport, locale="fr-FR"
    )
    page = ctx.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.violations = violations  # type: ignore[attr-defined]
    return page


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, email: str) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()


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

    page = page_for(browser, web_server, DESKTOP)
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
    page = page_for(browser, web_server, PHONE)
    sign_in(page, email)
    expect(page).to_have_url(f"{web_server.url}/files/")
    shot(page, "files-phone")
    # nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # keyboard: the first Tab reaches the skip link, which is then visible
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    assert focused == "Aller au contenu"
    assert page.violations == []  # type: ignore[attr-defined]
