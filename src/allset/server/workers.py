"""``serve --workers N``: N server processes behind one listening socket.

Why processes: one Python process is bound by its GIL at ~3 ms of CPU per small upload,
whatever the machine has (docs/design/multi-process.md). The parent initialises the
data dir once and opens one listening socket per worker on the same port
(``SO_REUSEPORT``: the kernel spreads new connections evenly over them; with one shared
socket, whichever worker woke first took them all, and 8 keep-alive connections could
land in one process). It then starts the workers with ``exec`` (not ``fork``: a forked
copy of a process that already has threads, database connections and locks is a trap),
each with its socket's descriptor. The parent keeps every socket open, so connections
that arrive while a worker restarts wait in its queue. Each worker builds its own
runtime and serves exactly as a single server does. What they share goes through the
data dir and the database (see the design note for each piece of state).

The parent only supervises: a worker that dies is started again (at most ``MAX_RESTARTS``
in ``RESTART_WINDOW`` seconds, then the whole server stops rather than flap), a TERM or
INT stops every worker gracefully, and if the parent itself is killed the kernel kills
the workers (``PR_SET_PDEATHSIG``), so a killed server never leaves half of itself
running.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from allset.observability import MULTIPROC_ENV, prepare_metrics_dir, worker_exited

log = logging.getLogger("allset.workers")

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_GRACE = 30.0


PARENT_ENV = "ALLSET_SUPERVISOR"
"""The supervisor's pid, for the worker to check it is still its parent."""


def die_with_parent() -> None:
    """Called first thing in a worker: the kernel sends it SIGKILL when the supervisor
    dies (Linux ``PR_SET_PDEATHSIG``), so a killed server leaves no worker serving."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if str(os.getppid()) != os.environ.get(PARENT_ENV):  # it died before prctl took effect
        os._exit(1)


def listeners(first: socket.socket, n: int) -> list[socket.socket]:
    """``first`` (bound with ``SO_REUSEPORT``) and n - 1 more on its address, listening."""
    socks = [first]
    for _ in range(n - 1):
        s = socket.socket(first.family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(first.getsockname())
        socks.append(s)
    for s in socks:
        s.listen(2048)
        s.set_inheritable(True)
    return socks


class Supervisor:
    """Starts and watches the worker processes of one server."""

    def __init__(self, command: Callable[[int, int], list[str]], fds: list[int]) -> None:
        self.n = len(fds)
        self.command = command  # (worker index, socket fd) -> argv
        self.fds = fds
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.restarts: list[float] = []
        self.stopping = False

    def _start(self, index: int) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        fd = self.fds[index]
        self.procs[index] = subprocess.Popen(self.command(index, fd), pass_fds=(fd,), env=env)

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signum)

    def run(self, metrics_dir: Path) -> int:
        """Until stopped; returns the exit code for the whole server. The workers count
        their metrics in files under ``metrics_dir`` (prometheus_client's multiprocess
        mode), so that /metrics, answered by any one of them, sums them all."""
        prepare_metrics_dir(metrics_dir)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)  # read by the workers at import
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        for i in range(self.n):
            self._start(i)
        code = 0
        for _ in range(10**12):  # bounded in count; ends when stopped
            if self.stopping:
                break
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                status = proc.poll()
                if status is None or self.stopping:
                    continue
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
                if len(self.restarts) > MAX_RESTARTS:
                    log.error(
                        "workers keep dying (%d restarts in %.0f s); stopping the server",
                        len(self.restarts),
                        RESTART_WINDOW,
                    )
                    self._signal(signal.SIGTERM, None)
                    code = 1
                    break
                log.error("worker %d exited with %s; starting it again", index, status)
                worker_exited(proc.pid)
                self._start(index)
        return self._wait(code)

    def _wait(self, code: int) -> int:
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop in %.0f s; killing it", proc.pid, STOP_GRACE)
                proc.kill()
                proc.wait()
            worker_exited(proc.pid)
        return code


def worker_command(data_dir: Path, plain_http: bool) -> Callable[[int, int], list[str]]:
    """The argv of worker ``index``: this program's hidden ``serve-worker`` command."""

    def argv(index: int, fd: int) -> list[str]:
        args = [sys.executable, "-m", "allset.cli.server", "--data", str(data_dir)]
        args += ["serve-worker", "--fd", str(fd), "--index", str(index)]
        return args + (["--plain-http"] if plain_http else [])

    return argv
