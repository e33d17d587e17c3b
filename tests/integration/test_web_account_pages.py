"""The account, admin and sharing pages of the web interface, in-process: lost password
(neutral answer, revocation, one-time expiring reset links, throttles, a real SMTP
server), app passwords and password change, the admin area's scoping, contact details,
invitations and public links; CSRF on every form."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import update

from allset.db.models import Event, PasswordReset, Tenant, User, utcnow
from allset.runtime import Runtime
from allset.server.auth import SESSION_COOKIE, csrf_token
from conftest import Account

NEW_PASSWORD = "un tout nouveau secret"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp(runtime: Runtime) -> Iterator[Inbox]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    runtime.settings.smtp_host, runtime.settings.smtp_port = "127.0.0.1", port
    runtime.settings.smtp_starttls = False
    runtime.settings.public_url = "https://files.example.fr"
    yield inbox
    controller.stop()


def body_of(msg: email.message.Message) -> str:
    payload = msg.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def token_in(msg: email.message.Message, page: str) -> str:
    m = re.search(rf"https://files\.example\.fr/{page}#token=(\S+)", body_of(msg))
    assert m, body_of(msg)
    return m.group(1)


def sign_in(client: TestClient, email_: str, password: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    client.cookies.clear()
    client.get("/login")
    pre = client.cookies.get("__Host-allset-pre")
    r = client.post(
        "/login",
        data={"pre": pre, "email": email_, "password": password, "next": "/account"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    token = client.cookies.get(SESSION_COOKIE)
    assert token
    return csrf_token(token)


def public_pre(client: TestClient, page: str) -> str:
    assert client.get(page).status_code == 200
    pre = client.cookies.get("__Host-allset-form")
    assert pre
    return pre


def main_text(html: str) -> str:
    """The page's main content without its per-request form token."""
    main = html.split('<main id="main"', 1)[1]
    return re.sub(r'name="pre" value="[^"]*"', "", main)


def test_lost_password_is_neutral_revokes_at_once_and_resets_once(
    client: TestClient, runtime: Runtime, alice: Account, smtp: Inbox
) -> None:
    api = "/api/v1/me"
    assert client.get(api, auth=alice.auth).status_code == 200
    pre = public_pre(client, "/lost")
    known = client.post("/lost", data={"pre": pre, "email": alice.email.upper()})
    unknown = client.post("/lost", data={"pre": pre, "email": "nobody@alice.example"})
    assert known.status_code == unknown.status_code == 200
    assert main_text(known.text) == main_text(unknown.text)  # nothing tells them apart
    assert "révoqués" in known.text or "revoked" in known.text
    # R-SEC-2: the app password and the password stop at once
    assert client.get(api, auth=alice.auth).status_code == 401
    assert client.get(api, auth=(alice.email, alice.password)).status_code == 401
    assert len(smtp.messages) == 1 and smtp.messages[0]["To"] == alice.email
    token = token_in(smtp.messages[0], "reset")
    assert len(token) >= 3 + 43  # 256 bits, base64url

    pre = public_pre(client, "/reset")
    short = client.post(
        "/reset", data={"pre": pre, "token": token, "password": "court", "confirm": "court"}
    )
    assert short.status_code == 400 and "10" in short.text
    data = {"pre": pre, "token": token, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    done = client.post("/reset", data=data, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/login"
    again = client.post("/reset", data=data)
    assert again.status_code == 410
    assert client.get(api, auth=(alice.email, NEW_PASSWORD)).status_code == 200
    assert client.get(api, auth=alice.auth).status_code == 401  # still revoked
    with runtime.db.read() as s:
        kinds = [e.kind for e in s.query(Event).filter(Event.tenant_id == alice.tenant_id)]
    assert "user.lost-password" in kinds and "user.password-reset" in kinds


def test_reset_links_expire_are_replaced_and_unknown_ones_throttled(
    client: TestClient, runtime: Runtime, alice: Account, smtp: Inbox
) -> None:
    pre = public_pre(client, "/lost")
    client.post("/lost", data={"pre": pre, "email": alice.email})
    client.post("/lost", data={"pre": pre, "email": alice.email})
    first, second = (token_in(m, "reset") for m in smtp.messages)
    pre = public_pre(client, "/reset")

    def reset(token: str) -> int:
        data = {"pre": pre, "token": token, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
        return client.post("/reset", data=data, follow_redirects=False).status_code

    assert reset(first) == 410  # replaced by the newer one
    with runtime.db.write() as s:
        s.execute(update(PasswordReset).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert reset(second) == 410  # expired
    statuses = [reset("rs-" + "x" * 43) for _ in range(8)]
    assert statuses[0] == 410 and 429 in statuses  # unknown tokens are throttled per IP


def test_lost_password_throttles(client: TestClient, alice: Account, smtp: Inbox) -> None:
    pre = public_pre(client, "/lost")
    for _ in range(5):
        assert client.post("/lost", data={"pre": pre, "email": alice.email}).status_code == 200
    assert len(smtp.messages) == 3  # per address: silent, same answer
    statuses = [
        client.post("/lost", data={"pre": pre, "email": f"x{i}@e.fr"}).status_code for i in range(6)
    ]
    assert statuses[-1] == 429  # per IP: said in plain words
    assert "Réessayez" in client.post("/lost", data={"pre": pre, "email": "y@e.fr"}).text


def test_app_password_once_with_fingerprint_and_password_change(
    client: TestClient, runtime: Runtime, alice: Account
) -> None:
    other = sign_in(client, alice.email, alice.password)
    other_cookie = client.cookies.get(SESSION_COOKIE)
    csrf = sign_in(client, alice.email, alice.password)
    page = client.get("/account")
    assert page.status_code == 200 and "tests" in page.text  # the conftest app password
    made = client.post("/account/app-passwords", data={"csrf": csrf, "name": "PC du bureau"})
    assert made.status_code == 200
    secret = re.search(r'id="secret" class="secret">(ap-[^<]+)<', made.text)
    assert secret, made.text
    assert "https://testserver/dav/" in made.text
    assert re.search(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", made.text)
    assert secret.group(1) not in client.get("/account").text  # shown once
    assert client.get("/api/v1/me", auth=(alice.email, secret.group(1))).status_code == 200
    bad = client.post("/account/app-passwords", data={"csrf": csrf, "name": ""})
    assert bad.status_code == 400

    wrong = client.post(
        "/account/password",
        data={"csrf": csrf, "current": "nope", "new": NEW_PASSWORD, "confirm": NEW_PASSWORD},
    )
    assert wrong.status_code == 400 and "incorrect" in wrong.text
    ok = client.post(
        "/account/password",
        data={
            "csrf": csrf,
            "current": alice.password,
            "new": NEW_PASSWORD,
            "confirm": NEW_PASSWORD,
        },
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert client.get("/account").status_code == 200  # this session goes on
    gone = client.get("/api/v1/me", headers={"Authorization": f"Bearer {other_cookie}"})
    assert gone.status_code == 401 and other  # the other session is signed out
    assert client.get("/api/v1/me", auth=alice.auth).status_code == 200  # app passwords stay
    assert client.get("/api/v1/me", auth=(alice.email, NEW_PASSWORD)).status_code == 200


def test_plain_http_mode_says_there_is_no_fingerprint(
    client: TestClient, runtime: Runtime, alice: Account
) -> None:
    runtime.settings.plain_http = True
    csrf = sign_in(client, alice.email, alice.password)
    made = client.post("/account/app-passwords", data={"csrf": csrf, "name": "nas"})
    assert "proxy" in made.text and not re.search(r"([0-9A-F]{2}:){31}", made.text)


def test_every_form_needs_its_token(client: TestClient, runtime: Runtime, alice: Account) -> None:
    csrf = sign_in(client, alice.email, alice.password)
    assert csrf
    uid = runtime.accounts.create_user(alice.tenant, "m@alice.example", "member", None, "t")["id"]
    for url, data in [
        ("/account/app-passwords", {"name": "x"}),
        ("/account/credentials/x/revoke", {}),
        ("/account/password", {"current": alice.password, "new": NEW_PASSWORD}),
        ("/admin/invite", {"email": "n@alice.example"}),
        (f"/admin/users/{uid}", {"action": "remove", "confirm": "1"}),
        ("/admin/contact", {"company": "Evil"}),
        ("/admin/locks", {"lock": "x"}),
        ("/shares", {"path": "/"}),
        ("/shares/x/revoke", {}),
    ]:
        for token in (None, "forged"):
            sent = dict(data, csrf=token) if token else data
            r = client.post(url, data=sent, follow_redirects=False)
            assert r.status_code == 403, (url, r.status_code)
    for url in ("/lost", "/reset", "/invite"):
        r = client.post(url, data={"pre": "forged", "email": alice.email, "token": "t"})
        assert r.status_code == 403, url
    with runtime.db.read() as s:
        t = s.get(Tenant, alice.tenant_id)
        assert t is not None and t.company != "Evil"
        u = s.get(User, uid)
        assert u is not None and not u.disabled


def test_admin_is_for_owners_and_admins_of_their_own_client(
    client: TestClient, runtime: Runtime, alice: Account, bob: Account
) -> None:
    runtime.accounts.create_user(alice.tenant, "m@alice.example", "member", NEW_PASSWORD, "t")
    sign_in(client, "m@alice.example", NEW_PASSWORD)
    assert client.get("/admin").status_code == 404
    assert client.get("/admin/contact").status_code == 404
    assert 'href="/admin"' not in client.get("/account").text
    csrf = sign_in(client, alice.email, alice.password)
    assert client.get("/admin").status_code == 200
    bob_id = bob.principal.id
    assert client.get(f"/admin/users/{bob_id}").status_code == 404  # another Client's user
    r = client.post(
        f"/admin/users/{bob_id}", data={"csrf": csrf, "action": "remove", "confirm": "1"}
    )
    assert r.status_code == 404
    assert client.get("/api/v1/me", auth=bob.auth).status_code == 200
    me = client.post(
        f"/admin/users/{alice.principal.id}",
        data={"csrf": csrf, "action": "role", "role": "member"},
    )
    assert me.status_code == 409  # nobody demotes themselves


def test_invite_grant_and_accept_through_the_pages(
    client: TestClient, runtime: Runtime, alice: Account, smtp: Inbox
) -> None:
    assert client.post("/api/v1/mkdir", json={"path": "/Chantier"}, auth=alice.auth).is_success
    csrf = sign_in(client, alice.email, alice.password)
    r = client.post(
        "/admin/invite", data={"csrf": csrf, "email": "new@alice.example"}, follow_redirects=False
    )
    assert r.status_code == 303
    bad = client.post("/admin/invite", data={"csrf": csrf, "email": "pas une adresse"})
    assert bad.status_code == 400 and "adresse" in bad.text
    uid = next(
        u["id"]
        for u in client.get("/api/v1/users", auth=alice.auth).json()["users"]
        if u["email"] == "new@alice.example"
    )
    missing = client.post(
        f"/admin/users/{uid}", data={"csrf": csrf, "action": "grant", "path": "/Nope"}
    )
    assert missing.status_code == 404 and "/Nope" in missing.text
    granted = client.post(
        f"/admin/users/{uid}",
        data={"csrf": csrf, "action": "grant", "path": "/Chantier", "access": "write"},
        follow_redirects=False,
    )
    assert granted.status_code == 303
    assert "/Chantier" in client.get(f"/admin/users/{uid}").text
    token = token_in(smtp.messages[-1], "invite")
    client.cookies.clear()
    pre = public_pre(client, "/invite")
    data = {"pre": pre, "token": token, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    ok = client.post("/invite", data=data, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/files/"
    assert client.get("/files/").status_code == 200  # signed in
    client.cookies.clear()
    pre = public_pre(client, "/invite")
    assert client.post("/invite", data=dict(data, pre=pre)).status_code == 410


def test_contact_details_validated_and_audited(
    client: TestClient, runtime: Runtime, alice: Account
) -> None:
    csrf = sign_in(client, alice.email, alice.password)
    form = {
        "csrf": csrf,
        "company": "Alice SARL",
        "postal_address": "1 rue de la Paix\n75002 Paris",
        "contact_name": "Alice Martin",
        "contact_email": "it@alice.example",
        "phones": "01 23 45 67 89\n+32 2 555 12 12",
    }
    assert client.post("/admin/contact", data=form, follow_redirects=False).status_code == 303
    with runtime.db.read() as s:
        t = s.get(Tenant, alice.tenant_id)
        assert t is not None and t.phones == ["+33123456789", "+3225551212"]
        ev = s.query(Event).filter(Event.kind == "tenant.contact").one()
        assert ev.actor == alice.email and "company" in ev.detail["changed"]
    bad = client.post("/admin/contact", data=dict(form, company="Autre", phones="12345"))
    assert bad.status_code == 400
    assert "« 12345 » n&#39;est pas un numéro de téléphone valable" in bad.text
    with runtime.db.read() as s:
        t = s.get(Tenant, alice.tenant_id)
        assert t is not None and t.company == "Alice SARL"  # nothing saved


def test_admins_break_a_lock_left_behind_from_the_pages(
    client: TestClient, runtime: Runtime, alice: Account
) -> None:
    """A document locked by an editor that crashed: the owner sees who holds it (never the
    token) and breaks it; then the document can be saved again without the token."""
    assert client.put("/dav/report.docx", content=b"v1", auth=alice.auth).status_code == 201
    info = (
        b'<?xml version="1.0"?><lockinfo xmlns="DAV:"><lockscope><exclusive/></lockscope>'
        b"<locktype><write/></locktype><owner>Word on PC-7</owner></lockinfo>"
    )
    locked = client.request(
        "LOCK",
        "/dav/report.docx",
        content=info,
        headers={"Timeout": "Second-3600"},
        auth=alice.auth,
    )
    assert locked.status_code == 200, locked.text
    token = locked.headers["lock-token"].strip("<>")
    assert client.put("/dav/report.docx", content=b"v2", auth=alice.auth).status_code == 423

    csrf = sign_in(client, alice.email, alice.password)
    page = client.get("/admin/locks")
    assert page.status_code == 200
    assert "/report.docx" in page.text and "Word on PC-7" in page.text
    assert token not in page.text
    found = re.search(r'name="lock" value="([0-9a-f]{32})"', page.text)
    assert found is not None
    done = client.post("/admin/locks", data={"csrf": csrf, "lock": found[1]})
    assert done.status_code == 200 and "Verrou levé : /report.docx" in done.text
    assert "Aucun document n&#39;est verrouillé." in done.text
    assert client.put("/dav/report.docx", content=b"v2", auth=alice.auth).status_code == 204
    again = client.post("/admin/locks", data={"csrf": csrf, "lock": found[1]})
    assert again.status_code == 200 and "Ce verrou n&#39;existe plus" in again.text
    with runtime.db.read() as s:
        assert s.query(Event).filter(Event.kind == "lock.break").count() == 1

    runtime.accounts.create_user(alice.tenant, "m@alice.example", "member", NEW_PASSWORD, "t")
    member_csrf = sign_in(client, "m@alice.example", NEW_PASSWORD)
    assert client.get("/admin/locks").status_code == 404
    refused = client.post("/admin/locks", data={"csrf": member_csrf, "lock": found[1]})
    assert refused.status_code == 404


def test_public_links_from_the_pages(
    client: TestClient, runtime: Runtime, alice: Account, bob: Account
) -> None:
    assert client.put("/api/v1/files/plan.pdf", content=b"%PDF", auth=alice.auth).is_success
    csrf = sign_in(client, alice.email, alice.password)
    assert 'value="/plan.pdf"' in client.get("/shares/new?path=/plan.pdf").text
    made = client.post(
        "/shares",
        data={"csrf": csrf, "path": "/plan.pdf", "days": "3", "password": "sésame", "max": "2"},
    )
    assert made.status_code == 201
    url = re.search(r'id="share-url" class="secret">([^<]+)<', made.text)
    assert url and url.group(1).startswith("https://testserver/s/")
    listing = client.get("/shares").text
    assert "/plan.pdf" in listing and url.group(1) not in listing
    too_long = client.post("/shares", data={"csrf": csrf, "path": "/plan.pdf", "days": "999"})
    assert too_long.status_code == 400 and "90" in too_long.text
    nothing = client.post("/shares", data={"csrf": csrf, "path": "/absent.pdf"})
    assert nothing.status_code == 404
    link_id = client.get("/api/v1/links", auth=alice.auth).json()["links"][0]["id"]
    runtime.links.suspend(link_id, "Plainte n°17")
    assert "Plainte n°17" in client.get("/shares").text
    # another Client cannot revoke it
    bob_csrf = sign_in(client, bob.email, bob.password)
    assert client.post(f"/shares/{link_id}/revoke", data={"csrf": bob_csrf}).status_code == 404
    csrf = sign_in(client, alice.email, alice.password)
    r = client.post(f"/shares/{link_id}/revoke", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/api/v1/links", auth=alice.auth).json()["links"][0]["state"] == "revoked"


def test_odd_input_is_answered_in_plain_words_never_a_500(
    client: TestClient, runtime: Runtime, alice: Account
) -> None:
    csrf = sign_in(client, alice.email, alice.password)
    uid = runtime.accounts.create_user(alice.tenant, "m@alice.example", "member", None, "t")["id"]
    odd = ["x", "%00", "a..b", "a" * 300, "ap-" + "A" * 40]
    for value in odd:
        assert client.get(f"/admin/users/{value}").status_code == 404
        r = client.post(f"/admin/users/{value}", data={"csrf": csrf, "action": "remove"})
        assert r.status_code == 404
        assert client.post(f"/shares/{value}/revoke", data={"csrf": csrf}).status_code == 404
        r = client.post(f"/account/credentials/{value}/revoke", data={"csrf": csrf})
        assert r.status_code == 404
    for path in ["/a\x00b", "relative/..", "/" + "n" * 5000]:
        r = client.post(f"/admin/users/{uid}", data={"csrf": csrf, "action": "grant", "path": path})
        assert r.status_code in (400, 404), (path, r.status_code)
        r = client.post("/shares", data={"csrf": csrf, "path": path})
        assert r.status_code in (400, 404), (path, r.status_code)
    for field in ["company", "contact_email", "phones", "contact_name"]:
        r = client.post("/admin/contact", data={"csrf": csrf, field: "x\x00y"})
        assert r.status_code == 400, field
    r = client.post(f"/admin/users/{uid}", data={"csrf": csrf, "action": "role", "role": "god"})
    assert r.status_code == 400
    r = client.post(f"/admin/users/{uid}", data={"csrf": csrf, "action": "nonsense"})
    assert r.status_code == 404
    for days in ["-1", "0", "abc", "1e9"]:
        r = client.post("/shares", data={"csrf": csrf, "path": "/", "days": days})
        assert r.status_code == 400, days
    pre = public_pre(client, "/lost")
    assert client.post("/lost", data={"pre": pre, "email": "a\x00@b.fr"}).status_code == 200
    pre = public_pre(client, "/reset")
    bad = {"pre": pre, "token": "\x00", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    assert client.post("/reset", data=bad).status_code == 410
    pre = public_pre(client, "/invite")
    assert client.post("/invite", data=dict(bad, pre=pre)).status_code == 410
