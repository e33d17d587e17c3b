"""The operator console in a real headless Chromium against a real server over TLS:
the operator (one-time password printed at first start) suspends a Client with a reason
and that Client's signed-in user sees the reason on the next page and at sign-in;
throttles a Client (seen by ``allset-server tenant show``); sees a live upload and
interrupts it; takes a public link down (451); and finds all of it in the audit trail.
Screenshots of the console and the usage page, desktop and phone width, go to
``test-artifacts/screenshots/``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from _util import client
from playwright.sync_api import Browser, expect

from serverproc import ServerProcess
from webhelpers import DESKTOP, PASSWORD, PHONE, new_page, owner, shot, sign_in

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("webop") / "srv")
    s.start()
    yield s
    s.stop()


def test_operator_suspends_and_the_user_sees_why(srv: ServerProcess, browser: Browser) -> None:
    email = owner(srv, "acme", "--company", "Acme SAS")
    user = new_page(browser, srv, DESKTOP, dialogs=True)
    sign_in(user, email, PASSWORD)
    expect(user).to_have_url(f"{srv.url}/files/")

    op = new_page(browser, srv, DESKTOP, dialogs=True)
    assert srv.operator_password
    sign_in(op, "operator@localhost", srv.operator_password)
    expect(op).to_have_url(f"{srv.url}/operator")
    op.get_by_label("Rechercher un Client").fill("Acme SAS")
    op.get_by_role("button", name="Rechercher").click()
    op.get_by_role("link", name="acme", exact=True).click()
    expect(op.get_by_role("heading", name="Client acme")).to_be_visible()
    op.get_by_label("Motif (montré aux utilisateurs du Client)").fill("Facture impayée n° 42")
    op.get_by_role("button", name="Suspendre").click()
    expect(op.get_by_role("status")).to_have_text("Client acme suspendu : Facture impayée n° 42")

    user.reload()  # the user's next page says why
    expect(user.get_by_role("heading", name="Service suspendu")).to_be_visible()
    expect(user.get_by_role("alert")).to_have_text(
        "Le service de votre organisation est suspendu : Facture impayée n° 42"
    )
    shot(user, "suspended-desktop")
    fresh = new_page(browser, srv, PHONE, dialogs=True)  # and so does signing in
    sign_in(fresh, email, PASSWORD)
    expect(fresh.get_by_role("alert")).to_contain_text("Facture impayée n° 42")
    shot(fresh, "suspended-phone")

    op.get_by_role("button", name="Rétablir").click()
    expect(op.get_by_role("status")).to_have_text("Client acme rétabli.")
    user.reload()
    expect(user.get_by_role("navigation", name="breadcrumb")).to_contain_text("Mes fichiers")
    expect(user.get_by_role("alert")).to_have_count(0)
    op.get_by_role("link", name="Journal des actions").click()
    rows = op.locator("table.audit tbody tr")
    expect(rows.nth(0)).to_contain_text("tenant.resume")
    expect(rows.nth(1)).to_contain_text("tenant.suspend")
    expect(rows.nth(1)).to_contain_text("Facture impayée n° 42")
    assert op.violations == [] and user.violations == []  # type: ignore[attr-defined]


def test_throttle_interrupt_takedown_and_audit(srv: ServerProcess, browser: Browser) -> None:
    email = owner(srv, "lente", "--company", "Lente SAS")
    with client(srv, (email, PASSWORD)) as api:
        assert api.put("/api/v1/files/doc.txt", content=b"contrat").status_code == 201
        link = api.post("/api/v1/links", json={"path": "/doc.txt"}).json()

    op = new_page(browser, srv, DESKTOP, dialogs=True)
    assert srv.operator_password
    sign_in(op, "operator@localhost", srv.operator_password)
    op.goto("/operator/clients/lente")
    op.get_by_label("Débit dans chaque sens (ex. 20Mbit)").fill("2Mbit")
    op.get_by_label("Motif (facultatif)").fill("saturation du lien")
    op.get_by_role("button", name="Appliquer").click()
    expect(op.get_by_role("status")).to_have_text("Débit de lente : 2.0 Mbit/s dans chaque sens.")
    assert srv.cli_json("tenant", "show", "lente")["bandwidth_up"] == 250_000

    # a slow upload (4 MiB at 2 Mbit/s: ~16 s) shows up live, and is cut from the console
    result: dict[str, object] = {}

    def upload() -> None:
        with client(srv, (email, PASSWORD)) as api:
            try:
                result["put"] = api.put("/api/v1/files/big.bin", content=os.urandom(4 << 20))
            except httpx.HTTPError as exc:
                result["put"] = exc

    worker = threading.Thread(target=upload)
    worker.start()
    live = op.locator("table.live tbody tr")
    for _ in range(40):
        op.goto("/operator/clients/lente")
        if live.count():
            break
        time.sleep(0.25)
    expect(live.first).to_contain_text("API PUT")
    expect(live.first).to_contain_text(email)
    shot(op, "operator-client-desktop")
    op.get_by_role("button", name="Interrompre les transferts").click()
    expect(op.get_by_role("status")).to_have_text("1 transfert(s) interrompu(s).")
    worker.join(timeout=60)
    assert getattr(result.get("put"), "status_code", None) == 503, result
    assert srv.cli_json("transfers", "interrupt", "--tenant", "lente")["interrupted"] == 0

    # takedown by the link's address; the link answers 451 at once
    op.goto("/operator/links")
    op.get_by_label("Jeton, adresse /s/… ou identifiant du lien").fill(link["url"])
    op.get_by_role("button", name="Trouver un lien").click()
    op.get_by_placeholder("Motif du retrait").fill("Signalement 2026-17")
    op.get_by_role("button", name="Retirer").click()
    expect(op.get_by_role("status")).to_have_text("Lien retiré : Signalement 2026-17")
    shot(op, "operator-links-desktop")
    with srv.client() as anonymous:
        assert anonymous.get(link["url"]).status_code == 451

    op.goto("/operator/audit")
    rows = op.locator("table.audit tbody tr")
    expect(rows.nth(0)).to_contain_text("link.suspend")
    expect(rows.nth(0)).to_contain_text("Signalement 2026-17")
    expect(rows.nth(1)).to_contain_text("transfers.interrupt")  # from the CLI
    expect(rows.nth(1)).to_contain_text("operator-cli")
    expect(rows.nth(2)).to_contain_text("transfers.interrupt")  # from the console
    expect(rows.nth(2)).to_contain_text("count=1")
    expect(rows.nth(3)).to_contain_text("tenant.limit")
    expect(rows.nth(3)).to_contain_text("saturation du lien")
    expect(rows.nth(0)).to_contain_text("operator@localhost")
    shot(op, "operator-audit-desktop")
    op.goto("/operator")
    shot(op, "operator-clients-desktop")
    assert op.violations == []  # type: ignore[attr-defined]

    phone = new_page(browser, srv, PHONE, dialogs=True)
    sign_in(phone, "operator@localhost", srv.operator_password)
    shot(phone, "operator-clients-phone")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone.goto("/operator/clients/lente")
    shot(phone, "operator-client-phone")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    # the Client's owner sees the day's transfers as charts
    for viewport, name in ((DESKTOP, "usage-desktop"), (PHONE, "usage-phone")):
        page = new_page(browser, srv, viewport, dialogs=True)
        sign_in(page, email, PASSWORD)
        page.get_by_role("link", name="Consommation").click()
        expect(page.get_by_role("img", name="Transferts par jour")).to_be_visible()
        shot(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        assert page.violations == []  # type: ignore[attr-defined]
