"""The web interface's session cookie on the API and tus: reads with the cookie alone,
changes only with its CSRF token; the language rules; the security headers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from allset.server.auth import SESSION_COOKIE, csrf_token
from allset.server.web.i18n import MESSAGES, pick_language, translator
from conftest import Account

API = "/api/v1"


def sign_in(client: TestClient, who: Account) -> str:
    form = client.get("/login")
    pre = form.cookies.get("__Host-allset-pre") or client.cookies.get("__Host-allset-pre")
    assert pre, form.headers
    r = client.post(
        "/login",
        data={"pre": pre, "email": who.email, "password": who.password, "next": "/files/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/files/", r.text
    token = r.cookies.get(SESSION_COOKIE)
    assert token
    set_cookie = r.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "Secure" in set_cookie and "SameSite=lax" in set_cookie
    return token


def test_cookie_reads_but_changes_need_the_csrf_token(client: TestClient, alice: Account) -> None:
    assert client.put(f"{API}/files/a.txt", content=b"a", auth=alice.auth).status_code == 201
    token = sign_in(client, alice)
    client.cookies.clear()
    cookies = {SESSION_COOKIE: token}
    assert client.get(f"{API}/files/a.txt", cookies=cookies).content == b"a"
    forged = client.delete(f"{API}/files/a.txt", cookies=cookies)
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
    wrong = client.delete(f"{API}/files/a.txt", cookies=cookies, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403
    tus = client.post(
        "/tus/", cookies=cookies, headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1"}
    )
    assert tus.status_code == 403
    ok = client.delete(
        f"{API}/files/a.txt", cookies=cookies, headers={"X-CSRF-Token": csrf_token(token)}
    )
    assert ok.status_code == 204
    # WebDAV does not take the cookie at all
    assert client.request("PROPFIND", "/dav/", cookies=cookies).status_code == 401


def test_pages_need_a_session_and_carry_strict_headers(client: TestClient, alice: Account) -> None:
    r = client.get("/files/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    page = client.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and 'lang="fr"' in page.text
    # a sign-in form without its double-submit token is refused
    r = client.post("/login", data={"email": alice.email, "password": alice.password})
    assert r.status_code == 403
    # an open redirect through ?next= is not possible
    sign_in(client, alice)
    evil = client.get("/login?next=//evil.example/x")
    assert 'value="/files/"' in evil.text


def test_every_message_has_both_languages() -> None:
    missing = [k for k, (fr, en) in MESSAGES.items() if not fr.strip() or not en.strip()]
    assert missing == []
    assert translator("en")("login.title") == "Sign in"
    assert translator("fr")("login.title") == "Connexion"


@pytest.mark.parametrize(
    ("cookie", "header", "expected"),
    [
        (None, None, "fr"),
        (None, "en-GB,en;q=0.9", "en"),
        (None, "de-DE, en;q=0.5, fr;q=0.8", "fr"),
        (None, "de, es", "fr"),
        ("en", "fr-FR", "en"),
        ("xx", "en", "en"),
        (None, "en;q=0, fr;q=0.1", "fr"),
    ],
)
def test_language_choice(cookie: str | None, header: str | None, expected: str) -> None:
    assert pick_language(cookie, header) == expected
