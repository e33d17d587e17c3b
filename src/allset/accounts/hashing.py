"""Hashing of every secret with argon2id, and a verification cache.

argon2id is deliberately slow (tens of milliseconds), which is right for a login and
wrong for WebDAV clients that send Basic credentials on every one of thousands of
requests. So a successful verification is remembered, in process memory only, as an
HMAC of the presented secret under a key that never leaves the process, bound to the
stored hash: changing the password or revoking the token changes or removes the stored
hash, so a stale cache entry can never match again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as pysecrets
import threading
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults follow RFC 9106's second recommendation (t=3, 64 MiB, p=4).
_hasher = PasswordHasher()
_cache_key = pysecrets.token_bytes(32)
_cache: dict[bytes, float] = {}
_cache_lock = threading.Lock()
CACHE_SECONDS = 300.0
_CACHE_MAX = 50_000


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def _cache_id(stored_hash: str, secret: str) -> bytes:
    return hmac.new(_cache_key, f"{stored_hash}\0{secret}".encode(), hashlib.sha256).digest()


def verify_secret(stored_hash: str, secret: str) -> bool:
    """True when ``secret`` matches; constant-time; cached for a few minutes on success."""
    cid = _cache_id(stored_hash, secret)
    now = time.monotonic()
    with _cache_lock:
        until = _cache.get(cid)
        if until is not None and until > now:
            return True
    try:
        _hasher.verify(stored_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[cid] = now + CACHE_SECONDS
    return True


# A hash to verify against when the account does not exist, so that timing does not
# reveal which emails have accounts.
DUMMY_HASH = _hasher.hash(pysecrets.token_urlsafe(16))
