"""Change-feed wake-ups across the server processes of one data dir (R-SYNC-1).

A commit wakes the long-polls of the Clients it changed through ``ChangeNotifier``, but
that lives in one process's memory. With several server processes (``serve --workers``),
and the operator CLI writing beside them, each process also tells the others:

* every server process binds a Unix datagram socket ``<pid>-<random>.sock`` in one
  directory per data dir (``directory_for``) and runs a receiver thread that hands
  what it hears to its own ``ChangeNotifier`` (``join`` / ``leave``);
* after each commit that changed trees, the committing process sends the changed Client
  ids to every other socket in that directory (``send``; the CLI sends without joining).

Why datagrams in a directory, for PostgreSQL too, rather than ``LISTEN/NOTIFY`` there:
one mechanism for both databases, no dedicated database connection per process held
open in LISTEN, no transaction-bound payloads, and a send costs a directory listing plus
one ``sendto`` per peer (tens of microseconds) without a database round trip. The
processes of one data dir always share a machine (they share the volumes), so a local
socket reaches all of them.

A wake-up is a hint, never data: a waiter woken re-reads the feed from the database, and
every waiter also re-reads it every ``events.RECHECK_SECONDS`` anyway. So a datagram
lost for any reason (a receiver's full buffer, a process joining between a commit and
its send, a socket directory another program cleaned) only delays that waiter's answer
until its next re-check; nothing is ever skipped. That is what lets the sender be
careless on purpose: it never blocks (non-blocking sends; a full receiver is skipped),
and it never raises into the commit that called it.

Sockets of processes that died without leaving (kill -9, power cut) stay behind as
files nobody is bound to; a send to one fails with ECONNREFUSED and the sender removes
it. Names carry a random part, so a restarted process (even with a reused pid) never
takes over or removes a live sibling's socket. The directory is 0700 and each socket
0600, checked to be ours before use: only the data dir's owner can wake or be told.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from allset.core.ids import is_id

log = logging.getLogger("allset.wakeups")

MAGIC = b"allset-wake 1\n"
"""First line of every datagram: anything else that lands on the socket is ignored."""
MAX_DATAGRAM = 8192
"""Bytes per datagram: ~300 Client ids. Far below the kernel's limit (the socket send
buffer, ~200 KiB), and small enough that a busy receiver's queue holds many."""
NAME_CHARS = 30
"""The longest socket name: a pid (7 digits at most on Linux), ``-``, 16 hex, ``.sock``.
``directory_for`` keeps the directory short enough for the 107 bytes of a Unix socket
path."""
SUFFIX = ".sock"
HEALTH_SECONDS = 5.0
"""How often an idle receiver checks that its socket file is still there (a cleaner of
temporary files may remove it), binding a new one if not."""


class WakeupError(Exception):
    """The socket directory cannot be used safely (not ours, or open to others)."""


def directory_for(data_dir: Path) -> Path:
    """Where the processes of ``data_dir`` bind their sockets: ``DATA/run/notify``. A
    socket path must fit in 107 bytes, so a data dir too deep for that uses a private
    directory in the temp dir instead, named by the data dir's hash (as the control
    socket does). Every process of a data dir computes the same one."""
    data = data_dir.resolve()
    path = data / "run" / "notify"
    if len(os.fsencode(path)) + 1 + NAME_CHARS <= 107:
        return path
    digest = hashlib.sha256(os.fsencode(data)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"allset-{digest}-notify"


def pack(tenant_ids: Iterable[str]) -> list[bytes]:
    """The datagrams carrying ``tenant_ids``, each at most ``MAX_DATAGRAM`` bytes."""
    packets: list[bytes] = []
    body: list[bytes] = []
    size = len(MAGIC)
    for tenant_id in sorted(tenant_ids):
        raw = tenant_id.encode("ascii", "replace")
        if body and size + len(raw) + 1 > MAX_DATAGRAM:
            packets.append(MAGIC + b"\n".join(body))
            body, size = [], len(MAGIC)
        body.append(raw)
        size += len(raw) + 1
    if body:
        packets.append(MAGIC + b"\n".join(body))
    return packets


def unpack(datagram: bytes) -> set[str]:
    """The Client ids in a datagram; nothing for anything that is not one of ours."""
    if not datagram.startswith(MAGIC):
        return set()
    words = datagram[len(MAGIC) :].decode("ascii", "replace").split("\n")
    return {w for w in words if is_id(w)}


def ensure_private_dir(path: Path, create: bool) -> bool:
    """Is ``path`` a real directory of ours that nobody else may enter? Creates it (0700)
    when ``create``; False when it does not exist and was not to be created. Raises
    ``WakeupError`` for a directory that is not safe (the temp-dir fallback lives where
    anyone may create names first)."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise WakeupError(f"{path} is not a directory owned by this user; remove it.")
    if st.st_mode & 0o077:
        raise WakeupError(f"{path} is open to other users (mode {st.st_mode & 0o777:o}).")
    return True


class PeerWakeups:
    """This process's end of the wake-up directory: ``send`` to the others after a
    commit (thread-safe, never blocks, never raises); ``join`` to hear them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._out: socket.socket | None = None
        self._out_lock = threading.Lock()
        self._lock = threading.Lock()  # join / leave / rebind
        self._sock: socket.socket | None = None
        self._name = ""
        self._ino = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._deliver: Callable[[set[str]], None] | None = None
        self._warned = False

    # ---- sending -----------------------------------------------------------------------
    def send(self, tenant_ids: set[str]) -> None:
        """Tell every other live process of the data dir that these Clients changed.
        Called in the committing thread after the commit: must stay cheap and quiet."""
        try:
            peers = list(self._peers())
            if not peers:
                return
            out = self._outgoing()
        except (OSError, WakeupError) as exc:
            self._warn_once(exc)
            return
        packets = pack(tenant_ids)
        for path in peers:
            for packet in packets:
                try:
                    out.sendto(packet, path)
                except (BlockingIOError, InterruptedError):
                    break  # its queue is full: it wakes by its re-check instead
                except ConnectionRefusedError:
                    # Nobody is bound to it: a process that died without leaving.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    break
                except FileNotFoundError:
                    break  # left between the listing and the send
                except OSError as exc:
                    self._warn_once(exc)
                    break

    def peers(self) -> list[str]:
        """The sockets a send goes to now (other processes', live or stale)."""
        return list(self._peers())

    def _peers(self) -> Iterator[str]:
        if not ensure_private_dir(self.directory, create=False):
            return
        own = self._name
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.endswith(SUFFIX) and entry.name != own:
                    yield entry.path

    def _outgoing(self) -> socket.socket:
        with self._out_lock:
            if self._out is None:
                out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                out.setblocking(False)
                self._out = out
            return self._out

    def _warn_once(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "change-feed wake-ups to other processes failed (%s); their sync clients "
                "see changes at their next re-check instead",
                exc,
            )

    # ---- receiving ---------------------------------------------------------------------
    @property
    def joined(self) -> bool:
        return self._thread is not None

    @property
    def socket_path(self) -> Path | None:
        return self.directory / self._name if self._name else None

    def join(self, deliver: Callable[[set[str]], None]) -> None:
        """Bind this process's socket and hand every Client id heard to ``deliver`` (on
        the receiver thread). Joining again while joined changes nothing. Raises
        ``OSError`` / ``WakeupError`` when the directory cannot be used."""
        with self._lock:
            if self._thread is not None:
                return
            self._deliver = deliver
            self._stop.clear()
            for attempt in range(2):  # a sibling leaving may remove the empty directory
                ensure_private_dir(self.directory, create=True)
                try:
                    self._bind()
                    break
                except FileNotFoundError:
                    if attempt:
                        raise
            self._thread = threading.Thread(
                target=self._receive, name="allset-wakeups", daemon=True
            )
            self._thread.start()
        log.info("listening for change-feed wake-ups at %s", self.socket_path)

    def leave(self) -> None:
        """Stop hearing, and remove this process's socket (idempotent)."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stop.set()
            path = self.socket_path
        if path is not None:  # wake the receiver at once rather than at its timeout
            with contextlib.suppress(OSError):
                self._outgoing().sendto(b"", str(path))
        thread.join(timeout=HEALTH_SECONDS + 5)
        with self._lock:
            self._unbind()
        # The last to leave removes the directory (rmdir refuses a non-empty one): the
        # temp-dir fallback leaves nothing behind.
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    def close(self) -> None:
        self.leave()
        with self._out_lock:
            if self._out is not None:
                self._out.close()
                self._out = None

    def _bind(self) -> None:
        """A fresh socket under a fresh name (caller holds ``_lock``)."""
        name = f"{os.getpid()}-{secrets.token_hex(8)}{SUFFIX}"
        path = self.directory / name
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)  # the 0700 directory already keeps others out
            sock.settimeout(HEALTH_SECONDS)
            self._ino = os.stat(path).st_ino
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._sock, self._name = sock, name

    def _unbind(self) -> None:
        path, sock = self.socket_path, self._sock
        self._sock, self._name, self._ino = None, "", 0
        if sock is not None:
            sock.close()
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _still_bound(self) -> bool:
        path = self.socket_path
        try:
            return path is not None and os.stat(path).st_ino == self._ino
        except OSError:
            return False

    def _receive(self) -> None:
        # Bounded in count; at one datagram or HEALTH_SECONDS per turn, effectively for
        # the life of the process.
        for _ in range(10**12):
            if self._stop.is_set():
                return
            sock = self._sock
            if sock is None:
                return
            try:
                datagram = sock.recv(MAX_DATAGRAM + 1)
            except TimeoutError:
                self._heal()
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    log.warning("wake-up receiver stopped: %s", exc)
                return
            ids = unpack(datagram)
            if ids and self._deliver is not None:
                try:
                    self._deliver(ids)
                except Exception:  # a listener's bug must not end the wake-ups
                    log.exception("change-feed wake-up delivery failed")

    def _heal(self) -> None:
        """Our socket file was removed (a temp-dir cleaner, an operator): the others can
        no longer reach us, so bind a new one."""
        if self._stop.is_set() or self._still_bound():
            return
        with self._lock:
            if self._stop.is_set() or self._thread is None:
                return
            old = self._sock
            try:
                ensure_private_dir(self.directory, create=True)
                self._bind()
            except (OSError, WakeupError) as exc:
                self._warn_once(exc)
                return
            if old is not None:
                old.close()
        log.warning("wake-up socket was removed; listening again at %s", self.socket_path)
