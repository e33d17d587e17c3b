"""What the browser tests (tests/system/test_web_*.py) share: one headless Chromium for
the whole session (Debian's, driven by Playwright; each test opens its own browser
contexts, so no cookie or storage is shared between tests), pages that record
Content-Security-Policy violations, screenshots, and a Client owner with a password.

The browser tests start their servers on SQLite only, on purpose: the pages' server side
(sign-in, account, admin, sharing, files and operator routes and forms) is also driven
through the whole app in tests/integration/test_web_*_pages.py, test_web_session.py and
test_operator_console.py, and by the REST tests, on SQLite *and* PostgreSQL; what the
browser adds (scripts, CSP, layout at phone width, tus-js-client) does not depend on the
database, so repeating it on PostgreSQL would re-test the same HTML.

Registered as a plugin (``pytest_plugins`` in tests/conftest.py), so the ``browser``
fixture reaches every module without being imported by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from serverproc import ServerProcess

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
PASSWORD = "Vive le stockage 2026!"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One Chromium for every browser test (starting one takes about a second)."""
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """The shared Chromium; the contexts (pages) a test opened are closed after it, so no
    cookie outlives the test and no keep-alive connection delays a server's shutdown."""
    yield chromium
    for ctx in chromium.contexts:
        ctx.close()


def new_page(
    browser: Browser,
    srv: ServerProcess,
    viewport: dict[str, int] = DESKTOP,
    *,
    dialogs: bool = False,
) -> Page:
    """A page in a fresh context (no cookie of any other page), in French, that records
    CSP violations in ``page.violations``; ``dialogs``: accept every confirm()."""
    ctx = browser.new_context(
        base_url=srv.url,
        ignore_https_errors=True,
        viewport=viewport,
        locale="fr-FR",
        accept_downloads=True,
    )
    page = ctx.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    if dialogs:
        page.on("dialog", lambda d: d.accept())
    page.violations = violations  # type: ignore[attr-defined]
    return page


def shot(page: Page, name: str) -> None:
    """A full-page screenshot in test-artifacts/screenshots/NAME.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def owner(srv: ServerProcess, tenant: str, *options: str) -> str:
    """``allset-server tenant create TENANT --quota 1GiB OPTIONS`` and an owner
    ``direction@TENANT.fr`` with ``PASSWORD`` (``user create --password-stdin``)."""
    srv.cli("tenant", "create", tenant, "--quota", "1GiB", *options)
    email = f"direction@{tenant}.fr"
    args = ["user", "create", "--tenant", tenant, email, "--role", "owner", "--password-stdin"]
    srv.cli(*args, input=PASSWORD + "\n")
    return email


def sign_in(page: Page, email: str, password: str = PASSWORD, start: str = "/login") -> None:
    """Open ``start`` signed out (the sign-in page), fill it in and submit."""
    page.goto(start)
    expect(page.get_by_role("heading", name="Connexion")).to_be_visible()
    page.get_by_label("Adresse e-mail").fill(email)
    page.get_by_label("Mot de passe", exact=True).fill(password)
    page.get_by_role("button", name="Se connecter").click()
