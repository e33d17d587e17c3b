"""Reading credentials off a request (HTTP Basic over TLS, Bearer, or the web
interface's session cookie).

The cookie (``__Host-`` prefixed: Secure, path /, no Domain; HttpOnly; SameSite=Lax)
holds a session token. A browser sends it with any request to this origin, including
ones a hostile page triggers, so a request authenticated by the cookie alone may only
read: anything that changes state must also carry the CSRF token in ``X-CSRF-Token``
(or a form's ``csrf`` field, checked by the web pages). The CSRF token is derived from
the session token (a hash), so only a page that can read our own responses has it, and
it dies with the session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from allset.accounts.hashing import NeedsThread
from allset.accounts.service import Accounts
from allset.core.errors import Forbidden, Unauthenticated
from allset.core.principal import Principal


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


SESSION_COOKIE = "__Host-allset-session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: a one-way function of its (secret) token."""
    return hashlib.sha256(b"allset-csrf\0" + session_token.encode()).hexdigest()[:40]


def csrf_ok(session_token: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(csrf_token(session_token), sent or "")


async def _check(accounts: Accounts, check: Callable[..., Principal], *args: str) -> Principal:
    """A credential check on the event loop when it is quick (SQLite, the verification
    cached, nothing to write: ~0.1 ms, less than a thread hop's hand-offs), else in a
    worker thread (argon2, or PostgreSQL's network round trip, must never stall the loop)."""
    if accounts.db.is_sqlite:
        try:
            return check(*args, inline=True)
        except NeedsThread:
            pass
    return await run_in_threadpool(check, *args)


async def authenticate(conn: HTTPConnection, accounts: Accounts, cookie: bool = False) -> Principal:
    """The caller, from ``Authorization`` or (``cookie=True``: the API and tus, which the
    web interface calls) the session cookie, with the CSRF rule above."""
    cached = conn.scope.get("allset.principal")
    if isinstance(cached, Principal):
        return cached
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    ip = client_ip(conn)
    session = conn.cookies.get(SESSION_COOKIE, "") if cookie and not header else ""
    if session:
        method = conn.scope.get("method", "GET")
        if method not in SAFE_METHODS and not csrf_ok(session, conn.headers.get("x-csrf-token")):
            raise Forbidden(
                "This request comes with the web session's cookie but without its CSRF "
                "token (X-CSRF-Token); reload the page and try again."
            )
        principal = await _check(accounts, accounts.authenticate_token, session, ip)
    elif scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII input
            raise Unauthenticated(
                "Malformed Basic credentials: expected base64 of email:password."
            ) from exc
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise Unauthenticated("Malformed Basic credentials: expected email:password.")
        principal = await _check(accounts, accounts.authenticate_basic, user, password, ip)
    elif scheme.lower() == "bearer" and value:
        principal = await _check(accounts, accounts.authenticate_token, value.strip(), ip)
    else:
        raise Unauthenticated(
            "Sign in first: send HTTP Basic credentials (email and password or app password) "
            "or an Authorization: Bearer token."
        )
    conn.scope["allset.principal"] = principal
    return principal
