"""Unguessable identifiers (R-STORE-3): 128 random bits, URL-safe, no ordering leak."""

from __future__ import annotations

import secrets
import string

_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_FIRST = string.ascii_letters + string.digits


def _no_dash_first(token: str) -> str:
    """``token`` with its first character drawn again from letters and digits, so that it
    never starts with "-": a command line takes ``-2J_5dQ…`` for an option
    (``allset-server link history -2J_5dQ…`` failed with "No such option '-2'"). Costs
    0.05 of a bit of the first character's 6."""
    return secrets.choice(_FIRST) + token[1:]


def new_id() -> str:
    """A 22-character id carrying ~128 random bits; guessing one is hopeless."""
    return _no_dash_first(secrets.token_urlsafe(16))


def is_id(value: str) -> bool:
    """Could ``value`` be one of our ids? Anything else is simply not found, without
    asking the database (PostgreSQL refuses some strings outright, e.g. with NUL)."""
    return 0 < len(value) <= 32 and _ID_CHARS.issuperset(value)


def new_secret(nbytes: int = 32) -> str:
    """A secret for tokens and app passwords (256 bits by default), never starting with
    "-" (see ``_no_dash_first``)."""
    return _no_dash_first(secrets.token_urlsafe(nbytes))
