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
import os
import secrets as pysecrets
import threading
import time
from collections import defaultdict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults follow RFC 9106's second recommendation (t=3, 64 MiB, p=4).
_hasher = PasswordHasher()
_cache_key = pysecrets.token_bytes(32)
_cache: dict[bytes, float] = {}
_cache_lock = threading.Lock()
CACHE_SECONDS = 300.0
_CACHE_MAX = 50_000
# Each argon2 check takes 64 MiB: eight connections of one client reconnecting at once
# once reached 645 MB. So checks run at most one per core, and concurrent checks of the
# same credential wait for the first one instead of repeating it.
_argon2_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
_inflight: defaultdict[bytes, threading.Lock] = defaultdict(threading.Lock)
_inflight_lock = threading.Lock()


def hash_secret(secret: str) -> str:
    with _argon2_slots:
        return _hasher.hash(secret)


def _cache_id(stored_hash: str, secret: str) -> bytes:
    return hmac.new(_cache_key, f"{stored_hash}\0{secret}".encode(), hashlib.sha256).digest()


def verify_secret(stored_hash: str, secret: str) -> bool:
    """True when ``secret`` matches; constant-time; cached for a few minutes on success."""
    cid = _cache_id(stored_hash, secret)
    if _cached(cid):
        return True
    with _inflight_lock:
        same = _inflight[cid]
    try:
        with same:  # a concurrent check of the same secret finishes first; reuse its answer
            if _cached(cid):
                return True
            with _argon2_slots:
                try:
                    _hasher.verify(stored_hash, secret)
                except (VerifyMismatchError, VerificationError, InvalidHashError):
                    return False
            with _cache_lock:
                if len(_cache) >= _CACHE_MAX:
                    _cache.clear()
                _cache[cid] = time.monotonic() + CACHE_SECONDS
            return True
    finally:
        with _inflight_lock:
            if not same.locked():
                _inflight.pop(cid, None)


class NeedsThread(Exception):
    """Raised by a check asked to run ``inline`` (on the event loop) when it would have
    to do slow work (an argon2 verification, a write): run it again in a worker thread.
    Nothing was recorded before it is raised."""


def verified_recently(stored_hash: str, secret: str) -> bool:
    """Whether ``verify_secret`` would answer from its cache (True) without argon2."""
    return _cached(_cache_id(stored_hash, secret))


def _cached(cid: bytes) -> bool:
    with _cache_lock:
        until = _cache.get(cid)
        return until is not None and until > time.monotonic()


# A hash to verify against when the account does not exist, so that timing does not
# reveal which emails have accounts.
DUMMY_HASH = _hasher.hash(pysecrets.token_urlsafe(16))
