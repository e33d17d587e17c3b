"""Unguessable identifiers (R-STORE-3): 128 random bits, URL-safe, no ordering leak."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """A 22-character id carrying 128 random bits; guessing one is hopeless."""
    return secrets.token_urlsafe(16)


def new_secret(nbytes: int = 32) -> str:
    """A secret for tokens and app passwords (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)
