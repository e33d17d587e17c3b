"""The account, admin and sharing pages in a real headless Chromium against a real
server over TLS, with a real SMTP server (aiosmtpd) receiving the reset and invitation
emails: an app password shown once with the certificate's fingerprint; lost password →
email → reset → sign in, the old app password refused; a password-protected public link
opened in a fresh browser; a member who sees only the folder granted to them; a bad
phone number refused in plain words. Screenshots at desktop and phone width."""

from __future__ import annotations

import email
import hashlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, Page, expect

import webhelpers
from serverproc import ServerProcess
from webhelpers import PASSWORD, PHONE, new_page, owner

pytestmark = pytest.mark.system

NEW_PASSWORD = "Un nouveau départ 2027"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def wait_for(self, to: str, page: str) -> str:
        """The link (``/page#token=…``) of the newest message to ``to``."""
        for _ in range(100):
            for msg in reversed(self.messages):
                if msg["To"] == to:
                    payload = msg.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    m = re.search(rf"https?://\S+/{page}#token=(\S+)", payload.decode())
                    assert m, payload
                    return m.group(1)
            time.sleep(0.1)
        raise AssertionError(f"no email to {to}")


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.port = port  # type: ignore[attr-defined]
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox) -> Iterator[ServerProcess]:
    env = {
        "ALLSET_SMTP_HOST": "127.0.0.1",
        "ALLSET_SMTP_PORT": str(inbox.port),  # type: ignore[attr-defined]
        "ALLSET_SMTP_STARTTLS": "0",
    }
    proc = ServerProcess(tmp_path_factory.mktemp("webacct") / "srv", env=env)
    proc.start()
    yield proc
    proc.stop()


def shot(page: Page, name: str) -> None:
    """The screenshot; at phone width, the page must also be no wider than the screen."""
    webhelpers.shot(page, name)
    if page.viewport_size and page.viewport_size["width"] == PHONE["width"]:
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name


def sign_in(page: Page, email_: str, password: str = PASSWORD) -> None:
    webhelpers.sign_in(page, email_, password)
    expect(page).to_have_url(re.compile(r"/files/"))


def api_status(srv: ServerProcess, auth: tuple[str, str]) -> int:
    with srv.client(auth=auth) as c:
        return c.get("/api/v1/me").status_code


def test_app_password_then_lost_password_and_reset(
    srv: ServerProcess, browser: Browser, inbox: Inbox
) -> None:
    who = owner(srv, "acme")
    page = new_page(browser, srv)
    sign_in(page, who)
    page.get_by_role("link", name="Compte").click()
    shot(page, "account-desktop")
    page.get_by_label("Nom de l'appareil").fill("PC du bureau")
    page.get_by_role("button", name="Créer").click()
    expect(page.get_by_role("heading", name=re.compile("PC du bureau"))).to_be_visible()
    secret = page.locator("#secret").inner_text().strip()
    assert secret.startswith("ap-")
    expect(page.locator("#fingerprint")).to_have_text(srv.fingerprint)
    expect(page.locator("#dav-url")).to_have_text(f"{srv.url}/dav/")
    shot(page, "account-app-password-desktop")
    assert api_status(srv, (who, secret)) == 200
    page.get_by_role("link", name="Retour à mon compte").click()
    expect(page.get_by_role("cell", name="PC du bureau", exact=True)).to_be_visible()
    assert secret not in page.content()  # shown once

    page.get_by_role("button", name="Se déconnecter").click()
    page.get_by_role("link", name="Mot de passe perdu ?").click()
    page.get_by_label("Adresse e-mail").fill(who)
    shot(page, "lost-password-desktop")
    page.get_by_role("button", name="Signaler la perte").click()
    expect(page.get_by_role("status")).to_contain_text("Si un compte existe pour cette adresse")
    assert api_status(srv, (who, secret)) == 401  # R-SEC-2: revoked at once

    page.goto(f"/reset#token={inbox.wait_for(who, 'reset')}")
    expect(page.get_by_label("Code du lien")).to_be_hidden()  # filled from the fragment
    assert "#" not in page.url  # and dropped from the address bar
    page.get_by_label("Nouveau mot de passe (10 caractères au moins)").fill(NEW_PASSWORD)
    page.get_by_label("Confirmez le nouveau mot de passe").fill(NEW_PASSWORD)
    shot(page, "reset-desktop")
    page.get_by_role("button", name="Enregistrer le mot de passe").click()
    expect(page.get_by_role("status")).to_have_text(
        "Votre nouveau mot de passe est enregistré. Connectez-vous."
    )
    sign_in(page, who, NEW_PASSWORD)
    assert api_status(srv, (who, secret)) == 401  # the old app password stays refused
    assert page.violations == []  # type: ignore[attr-defined]


def test_public_link_with_password_in_a_fresh_browser(
    srv: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    who = owner(srv, "partage")
    body = b"%PDF-1.4 rapport " * 5000
    with srv.client(auth=(who, PASSWORD)) as c:
        assert c.put("/api/v1/files/bilan.pdf", content=body).status_code == 201
    page = new_page(browser, srv)
    sign_in(page, who)
    page.goto("/shares/new?path=/bilan.pdf")
    page.get_by_label("Mot de passe (facultatif)").fill("sésame ouvre-toi")
    page.get_by_label("Nombre maximal de téléchargements (facultatif)").fill("3")
    page.get_by_role("button", name="Créer le lien").click()
    url = page.locator("#share-url").inner_text().strip()
    assert "/s/" in url
    shot(page, "share-created-desktop")

    visitor = new_page(browser, srv)  # a fresh context: no cookie of ours
    visitor.goto(url)
    expect(visitor.get_by_role("heading")).to_have_text("This link is protected by a password")
    visitor.get_by_label("Password").fill("sésame ouvre-toi")
    visitor.get_by_role("button", name="Open").click()
    with visitor.expect_download() as dl:
        visitor.get_by_role("link", name=re.compile("Download", re.I)).first.click()
    saved = tmp_path / "bilan.pdf"
    dl.value.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(body).digest()

    page.get_by_role("link", name="Partages").click()
    row = page.get_by_role("row", name=re.compile("bilan.pdf"))
    expect(row).to_contain_text("1 sur 3")
    expect(row).to_contain_text("actif")
    shot(page, "shares-desktop")
    phone = new_page(browser, srv, PHONE)
    sign_in(phone, who)
    phone.goto("/shares")
    shot(phone, "shares-phone")
    assert page.violations == [] and visitor.violations == []  # type: ignore[attr-defined]


def test_member_sees_only_their_folder(srv: ServerProcess, browser: Browser, inbox: Inbox) -> None:
    who = owner(srv, "chantiers")
    with srv.client(auth=(who, PASSWORD)) as c:
        for folder in ("/Chantier", "/Direction"):
            assert c.post("/api/v1/mkdir", json={"path": folder}).is_success
    member = "ouvrier@chantiers.fr"
    page = new_page(browser, srv)
    sign_in(page, who)
    page.get_by_role("link", name="Administration").click()
    page.get_by_label("Adresse e-mail").fill(member)
    page.get_by_role("button", name="Inviter").click()
    expect(page.get_by_role("status")).to_have_text(f"Invitation envoyée à {member}.")
    shot(page, "admin-desktop")

    guest = new_page(browser, srv, PHONE)
    guest.goto(f"/invite#token={inbox.wait_for(member, 'invite')}")
    shot(guest, "invite-phone")
    guest.get_by_label("Nouveau mot de passe (10 caractères au moins)").fill(NEW_PASSWORD)
    guest.get_by_label("Confirmez le nouveau mot de passe").fill(NEW_PASSWORD)
    guest.get_by_role("button", name="Activer mon compte").click()
    expect(guest).to_have_url(re.compile(r"/files/$"))
    expect(guest.get_by_role("status")).to_have_text("Bienvenue ! Votre compte est actif.")
    folders = guest.locator("main a.folder")
    expect(folders).to_have_count(0)  # nothing granted yet

    page.goto("/admin")
    page.get_by_role("link", name=f"Gérer {member}").click()
    page.get_by_role("textbox", name="Dossier").fill("/Chantier")
    page.get_by_label("lecture et écriture").check()
    page.get_by_role("button", name="Ouvrir ce dossier").click()
    expect(page.get_by_role("status")).to_contain_text("/Chantier")
    shot(page, "admin-user-desktop")

    guest.reload()
    expect(folders).to_have_text(["Chantier"])  # only the granted folder, not /Direction
    expect(guest.get_by_role("link", name="Administration")).to_have_count(0)
    assert guest.goto(f"{srv.url}/admin").status == 404  # type: ignore[union-attr]
    assert page.violations == [] and guest.violations == []  # type: ignore[attr-defined]


def test_contact_details_refuse_a_bad_phone(srv: ServerProcess, browser: Browser) -> None:
    who = owner(srv, "coordonnees")
    page = new_page(browser, srv, PHONE)
    sign_in(page, who)
    page.goto("/admin/contact")
    page.get_by_label("Raison sociale").fill("Coordonnées SAS")
    page.get_by_label("Téléphones").fill("12345")
    page.get_by_role("button", name="Enregistrer les coordonnées").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "« 12345 » n'est pas un numéro de téléphone valable"
    )
    shot(page, "admin-contact-error-phone")
    page.get_by_label("Téléphones").fill("01 42 68 53 00")
    page.get_by_role("button", name="Enregistrer les coordonnées").click()
    expect(page.get_by_role("status")).to_have_text("Coordonnées enregistrées.")
    expect(page.get_by_label("Téléphones")).to_have_value("+33 1 42 68 53 00")
    page.goto("/account")
    shot(page, "account-phone")
    assert page.violations == []  # type: ignore[attr-defined]


def test_an_admin_breaks_a_lock_an_editor_left_behind(srv: ServerProcess, browser: Browser) -> None:
    """Word crashed holding a lock on a shared document: the owner finds it on a phone,
    sees who holds it and breaks it; the document can then be saved without the token."""
    who = owner(srv, "verrous")
    info = (
        b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
        b"<locktype><write/></locktype><owner>Word sur PC-7</owner></lockinfo>"
    )
    with srv.client(auth=(who, PASSWORD)) as dav:
        assert dav.put("/dav/Devis%202026.docx", content=b"v1").status_code == 201
        locked = dav.request(
            "LOCK", "/dav/Devis%202026.docx", content=info, headers={"Timeout": "Second-3600"}
        )
        assert locked.status_code == 200, locked.text
        assert dav.put("/dav/Devis%202026.docx", content=b"v2").status_code == 423

        page = new_page(browser, srv, PHONE)
        sign_in(page, who)
        page.goto("/admin")
        page.get_by_role("link", name="Verrous WebDAV").click()
        row = page.get_by_role("row").filter(has_text="/Devis 2026.docx")
        expect(row).to_contain_text(who)
        expect(row).to_contain_text("Word sur PC-7")
        shot(page, "admin-locks-phone")
        row.get_by_role("button", name="Lever le verrou").click()
        expect(page.get_by_role("status").first).to_contain_text("Verrou levé : /Devis 2026.docx")
        expect(page.get_by_text("Aucun document n'est verrouillé.")).to_be_visible()
        assert dav.put("/dav/Devis%202026.docx", content=b"v2").status_code == 204
    assert page.violations == []  # type: ignore[attr-defined]
