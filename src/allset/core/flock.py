"""Locks shared by the server's processes: ``flock`` on a file in the data dir.

Why ``flock`` and not ``fcntl``/``lockf`` record locks: a record lock belongs to the
process, so two threads of one process never exclude each other and closing *any*
descriptor of the file drops every lock the process holds on it. A ``flock`` belongs to
an open file description: each thread here opens its own, so threads and processes
exclude each other alike, and the kernel drops the lock when its holder dies (a killed
worker never leaves the others waiting). Waiters are woken by the kernel at once, not by
polling. Windows has no ``flock``; the server runs on Linux (the client never uses
this module).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class FileLock:
    """A reader-writer lock over one file, for threads of this and other processes.

    Each thread keeps its own descriptor (opening the file per use would cost a few
    microseconds on every commit); shared holds are re-entrant per thread, so a commit
    that already holds the lock may enter code that takes it again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # made once, here
        os.close(fd)
        self._local = threading.local()

    def _fd(self) -> int:
        fd: int | None = getattr(self._local, "fd", None)
        if fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._local.fd = fd
            self._local.depth = 0
        return fd

    def held_shared(self) -> bool:
        return bool(getattr(self._local, "depth", 0)) and not getattr(self._local, "alone", False)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        fd = self._fd()
        if self._local.depth == 0:
            fcntl.flock(fd, fcntl.LOCK_SH)
        self._local.depth += 1
        try:
            yield
        finally:
            self._local.depth -= 1
            if self._local.depth == 0:
                fcntl.flock(fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[bool]:
        """Hold the lock alone; yields False (not holding it) if ``timeout`` seconds
        passed first. Blocking waits are woken by the kernel; with a timeout the wait
        polls every 10 ms (Linux has no timed ``flock``)."""
        fd = self._fd()
        if self._local.depth:
            raise RuntimeError(f"{self.path}: exclusive lock asked while holding it shared")
        got = True
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            got = _poll(fd, fcntl.LOCK_EX, timeout)
        if not got:
            yield False
            return
        self._local.depth, self._local.alone = 1, True
        try:
            yield True
        finally:
            self._local.depth, self._local.alone = 0, False
            fcntl.flock(fd, fcntl.LOCK_UN)


def _poll(fd: int, op: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


class HeldLock:
    """A lock one process holds for as long as it lives, if it can get it: the one
    process that runs the maintenance loops among several workers. Another process
    takes over when the holder dies (the kernel releases its lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None  # opened at the first try
        self.held = False

    def try_take(self) -> bool:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not self.held:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
            except BlockingIOError:
                pass
        return self.held

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases it
        self._fd, self.held = None, False
