"""Unguessable identifiers (R-STORE-3): 128 random bits, URL-safe, no ordering leak."""

from __future__ import annotations

import secrets
import string

_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


def new_id() -> str:
    """A 22-character id carrying 128 random bits; guessing one is hopeless."""
    return secrets.token_urlsafe(16)


def is_id(value: str) -> bool:
    """Could ``value`` be one of our ids? Anything else is simply not found, without
    asking the database (PostgreSQL refuses some strings outright, e.g. with NUL)."""
    return 0 < len(value) <= 32 and _ID_CHARS.issuperset(value)


def new_secret(nbytes: int = 32) -> str:
    """A secret for tokens and app passwords (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)
