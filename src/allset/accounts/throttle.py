"""Throttling of failed logins (R-SEC-3), per account+IP and per IP.

Why these keys: a guesser is slowed per (account, IP) after a few misses and per IP
after many misses across accounts. There is deliberately *no* account-wide lock: that
would let anyone lock a user out from anywhere by failing on purpose. A distributed
guesser against one account is instead slowed by the per-IP keys and by argon2's cost;
every failure is logged with its IP for the operator. Backoff doubles from 1 s up to a
cap, and a success from an IP clears that IP's keys for the account, so a user who
mistyped is never locked out for long, and never from another IP at all.

State is in a ``SharedTable`` (``core.shared_table``): the server passes the data dir's
table (``DATA/run/throttles.shm``), so every worker process serving that data dir counts
the same failures and an attacker spreading guesses over the processes is throttled
exactly as by one. Without a table the state is private to the process. A full table
forgets the record touched least recently: sign-in never fails for lack of room.
Times are the clock's readings (``time.monotonic``: system-wide on Linux, and the table
starts afresh after a reboot); records survive a server restart, which only means a
block or a count outlives it by at most ``max_backoff`` / ``forget_after``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from allset.core.shared_table import SharedTable, Values

# 32 Ki records of 48 bytes (1.5 MiB): the data dir's table, and private ones alike.
TABLE_SETS = 4096
TABLE_FIELDS = 3  # failures, blocked_until, last
CLOCK_SLACK = 60.0  # seconds a record may lie in the future (another process's clock read)


def open_table(path: Path) -> SharedTable:
    """The throttles' table file, shared by every process that opens it (close it)."""
    return SharedTable.open(path, sets=TABLE_SETS, fields=TABLE_FIELDS)


def _plausible(count: float, stamp: float, blocked_until: float, now: float, block: float) -> bool:
    """Whether a record's values can be ours: the table file is only a hint, written by
    other processes, so garbage (a count out of range, a time too far ahead, a block
    longer than any we set) must never block anyone for long; such a record is ignored."""
    return (
        0 <= count <= 1e9
        and stamp <= now + CLOCK_SLACK
        and (blocked_until <= now + block + CLOCK_SLACK)
    )


class LoginThrottle:
    def __init__(
        self,
        free_attempts: int = 5,
        ip_free_attempts: int = 30,
        max_backoff: float = 900.0,
        forget_after: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        table: SharedTable | None = None,
        scope: str = "login",
    ) -> None:
        """``scope`` separates throttles sharing one table (sign-in, link passwords)."""
        self.free = free_attempts
        self.ip_free = ip_free_attempts
        self.max_backoff = max_backoff
        self.forget_after = forget_after
        self.clock = clock
        self.table = table or SharedTable.private(sets=TABLE_SETS, fields=TABLE_FIELDS)
        self.scope = scope

    def _acct_ip(self, account: str, ip: str) -> bytes:
        return self.table.key(f"{self.scope}\0acct-ip\0{account.lower()}|{ip}")

    def _keys(self, account: str, ip: str) -> list[tuple[bytes, int]]:
        ip_key = self.table.key(f"{self.scope}\0ip\0{ip}")
        return [(self._acct_ip(account, ip), self.free), (ip_key, self.ip_free)]

    def _sane(self, record: Values | None, now: float) -> Values | None:
        failures, blocked_until, last = record or (0.0, 0.0, 0.0)
        return record if _plausible(failures, last, blocked_until, now, self.max_backoff) else None

    def retry_after(self, account: str, ip: str) -> int:
        """Seconds the caller must wait before trying again; 0 when allowed."""
        now = self.clock()
        wait = 0.0
        for key, _ in self._keys(account, ip):
            e = self._sane(self.table.get(key), now)
            if e is not None and e[1] > now:
                wait = max(wait, e[1] - now)
        return math.ceil(min(wait, self.max_backoff))

    def failure(self, account: str, ip: str) -> None:
        now = self.clock()
        for key, free in self._keys(account, ip):

            def count(record: Values | None, free: int = free) -> Values:
                failures, blocked_until, last = self._sane(record, now) or (0.0, 0.0, 0.0)
                if last and now - last > self.forget_after:
                    failures = 0.0
                failures += 1
                if failures >= free:
                    backoff = min(self.max_backoff, 2.0 ** min(failures - free, 64))
                    blocked_until = now + backoff
                return (failures, blocked_until, now)

            self.table.update(key, count)

    def success(self, account: str, ip: str) -> None:
        key = self._acct_ip(account, ip)
        if self.table.get(key) is not None:  # usually absent: no lock taken then
            self.table.update(key, lambda _record: None)


class GuessThrottle:
    """R-SHARE-3: per IP, more than ``limit`` misses (unknown link tokens) within a
    ``window`` blocks that IP for ``block`` seconds (429 + Retry-After).

    In the same ``SharedTable`` as the sign-in throttles, so a guesser spreading its
    requests over the worker processes is counted once. A record is (misses, start of
    the window, blocked until): the window starts at the first miss and ends ``window``
    seconds later, so more than ``limit`` misses in it block; an IP that spreads its
    misses across two windows gets at most twice ``limit`` per ``window`` (a sliding
    window would need the time of every miss, which a fixed record cannot hold)."""

    def __init__(
        self,
        limit: int,
        window: float,
        block: float,
        clock: Callable[[], float] = time.monotonic,
        table: SharedTable | None = None,
        scope: str = "link-guess",
    ) -> None:
        self.limit, self.window, self.block, self.clock = limit, window, block, clock
        self.table = table or SharedTable.private(sets=TABLE_SETS, fields=TABLE_FIELDS)
        self.scope = scope

    def _key(self, ip: str) -> bytes:
        return self.table.key(f"{self.scope}\0ip\0{ip}")

    def _sane(self, record: Values | None, now: float) -> Values | None:
        misses, start, blocked_until = record or (0.0, 0.0, 0.0)
        return record if _plausible(misses, start, blocked_until, now, self.block) else None

    def retry_after(self, ip: str) -> int:
        """Seconds this IP must wait; 0 when it is not blocked."""
        now = self.clock()
        record = self._sane(self.table.get(self._key(ip)), now)
        return math.ceil(record[2] - now) if record is not None and record[2] > now else 0

    def miss(self, ip: str) -> bool:
        """Count a miss; True when it is the one that blocks the IP."""
        now = self.clock()
        blocked = False

        def count(record: Values | None) -> Values:
            nonlocal blocked
            misses, start, blocked_until = self._sane(record, now) or (0.0, now, 0.0)
            if now - start > self.window:
                misses, start = 0.0, now
            misses += 1
            if misses > self.limit:
                blocked = True
                return (0.0, now, now + self.block)
            return (misses, start, blocked_until)

        self.table.update(self._key(ip), count)
        return blocked
