"""Throttling of failed logins (R-SEC-3), per account+IP and per IP.

Why these keys: a guesser is slowed per (account, IP) after a few misses and per IP
after many misses across accounts. There is deliberately *no* account-wide lock: that
would let anyone lock a user out from anywhere by failing on purpose. A distributed
guesser against one account is instead slowed by the per-IP keys and by argon2's cost;
every failure is logged with its IP for the operator. Backoff doubles from 1 s up to a
cap, and a success from an IP clears that IP's keys for the account, so a user who
mistyped is never locked out for long, and never from another IP at all.

State is in process memory: the server runs as one process. (A multi-node deployment
would move it to the database or Redis; the interface does not change.)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        free_attempts: int = 5,
        ip_free_attempts: int = 30,
        max_backoff: float = 900.0,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free_attempts
        self.ip_free = ip_free_attempts
        self.max_backoff = max_backoff
        self.forget_after = forget_after
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def _keys(self, account: str, ip: str) -> list[tuple[tuple[str, str], int]]:
        return [(("acct-ip", f"{account.lower()}|{ip}"), self.free), (("ip", ip), self.ip_free)]

    def retry_after(self, account: str, ip: str) -> int:
        """Seconds the caller must wait before trying again; 0 when allowed."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key, _ in self._keys(account, ip):
                e = self._entries.get(key)
                if e and e.blocked_until > now:
                    wait = max(wait, e.blocked_until - now)
        return math.ceil(wait)

    def failure(self, account: str, ip: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._entries) > 100_000:
                self._prune(now)
            for key, free in self._keys(account, ip):
                e = self._entries.setdefault(key, _Entry())
                if e.last and now - e.last > self.forget_after:
                    e.failures = 0
                e.failures += 1
                e.last = now
                if e.failures >= free:
                    backoff = min(self.max_backoff, 2.0 ** (e.failures - free))
                    e.blocked_until = now + backoff

    def success(self, account: str, ip: str) -> None:
        with self._lock:
            self._entries.pop(("acct-ip", f"{account.lower()}|{ip}"), None)

    def _prune(self, now: float) -> None:
        stale = [
            k
            for k, e in self._entries.items()
            if e.blocked_until < now and now - e.last > self.forget_after
        ]
        for k in stale:
            del self._entries[k]
