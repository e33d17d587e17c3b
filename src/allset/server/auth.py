"""Reading credentials off a request (HTTP Basic over TLS, or Bearer)."""

from __future__ import annotations

import base64

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from allset.accounts.service import Accounts
from allset.core.errors import Unauthenticated
from allset.core.principal import Principal


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


async def authenticate(conn: HTTPConnection, accounts: Accounts) -> Principal:
    cached = conn.scope.get("allset.principal")
    if isinstance(cached, Principal):
        return cached
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    ip = client_ip(conn)
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError, non-ASCII input
            raise Unauthenticated(
                "Malformed Basic credentials: expected base64 of email:password."
            ) from exc
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise Unauthenticated("Malformed Basic credentials: expected email:password.")
        principal = await run_in_threadpool(accounts.authenticate_basic, user, password, ip)
    elif scheme.lower() == "bearer" and value:
        principal = await run_in_threadpool(accounts.authenticate_token, value.strip(), ip)
    else:
        raise Unauthenticated(
            "Sign in first: send HTTP Basic credentials (email and password or app password) "
            "or an Authorization: Bearer token."
        )
    conn.scope["allset.principal"] = principal
    return principal
