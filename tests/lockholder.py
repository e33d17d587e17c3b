"""Another process holding a ``flock`` (allset.core.flock) on a file, for tests of what
the server's processes must do when a sibling holds a lock: a real process, since a
lock held by this one would prove nothing about others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


class OtherProcess:
    """A process holding a lock on ``lock``: ``mode`` "shared" or "exclusive"."""

    def __init__(self, lock: Path, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(lock), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"held\n"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0
