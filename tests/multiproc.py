"""What a second worker process does in the multi-process tests: functions run in a
child started with the spawn method (a fresh interpreter, like ``serve --workers``), on
the same data dir and database as the test's own runtime. Kept out of the test modules
so that the child imports only the server's code."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from allset.accounts.throttle import open_table
from allset.core.errors import NotFound, TooManyAttempts, Unauthenticated
from allset.runtime import Runtime, build_runtime
from allset.settings import Settings


def _outcomes(
    settings: Settings, attempt: Callable[[Runtime, Any], object], items: list[Any]
) -> list[str]:
    """Each item tried in a runtime of this process: "ok", "401", "404" or "429"."""
    rt = build_runtime(settings)
    try:
        outcomes = []
        for item in items:
            try:
                attempt(rt, item)
                outcomes.append("ok")
            except TooManyAttempts:
                outcomes.append("429")
            except Unauthenticated:
                outcomes.append("401")
            except NotFound:
                outcomes.append("404")
        return outcomes
    finally:
        rt.close()


def sign_in(settings: Settings, attempts: list[tuple[str, str, str]]) -> list[str]:
    """``(username, password or app password, ip)`` through HTTP Basic's checks."""
    return _outcomes(settings, lambda rt, a: rt.accounts.authenticate_basic(*a), attempts)


def fill_throttles(settings: Settings, n: int) -> None:
    """``n`` fresh records of unknown keys in the data dir's throttle table: a flood of
    guesses from everywhere, without paying for the guesses."""
    table = open_table(settings.run_dir / "throttles.shm")
    try:
        for _ in range(n):
            key = table.key(os.urandom(12).hex())
            table.update(key, lambda _r: (1.0, 0.0, time.monotonic()))
    finally:
        table.close()


def link_visits(settings: Settings, tokens: list[str], ip: str) -> list[str]:
    """Public-link lookups of ``tokens`` from ``ip``."""
    return _outcomes(settings, lambda rt, token: rt.links.resolve(token, ip), tokens)
