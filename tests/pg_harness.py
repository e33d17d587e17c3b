"""Throwaway PostgreSQL servers for tests.

Each ``PostgresServer`` runs ``initdb`` into a fresh temporary directory and starts a private
postmaster that listens *only* on a Unix socket inside that directory. Nothing binds a TCP port,
so any number of servers (parallel test workers, several CI jobs on one host) can run at once
without port clashes, and nothing outside the machine can reach them. Durability is switched off
(``fsync=off`` and friends) because the data is deleted on ``stop()`` anyway.

PostgreSQL refuses to run as root. When we are root (the dev container and CI are), the
binaries are run as the ``postgres`` OS user via ``runuser`` on a directory chowned to that
user; the user is created if missing. As a normal user the binaries run directly.

Usage::

    with PostgresServer() as server:
        url = server.create_database("allset_test")  # SQLAlchemy URL
        ...

Self-check: ``python tests/pg_harness.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from types import TracebackType
from typing import Final

import psycopg
import sqlalchemy
from psycopg import sql

PG_USER: Final = "postgres"
"""Both the OS user the server runs as (when we are root) and the database superuser."""

PORT: Final = 5432
"""Only names the socket file (``.s.PGSQL.5432``); no TCP port is opened, so it never clashes."""

START_TIMEOUT_S: Final = 30
"""Bound on ``pg_ctl start -w``; a healthy throwaway cluster is ready in well under a second."""

STOP_TIMEOUT_S: Final = 30
INITDB_TIMEOUT_S: Final = 120
"""initdb is a few seconds normally, but slow CI disks deserve slack; it is still bounded."""

CONNECT_TIMEOUT_S: Final = 10
SUBPROCESS_SLACK_S: Final = 15
"""Extra time on top of pg_ctl's own ``-t`` before we give up on the pg_ctl process itself."""

LOG_TAIL_LINES: Final = 30

MAX_IDENTIFIER_BYTES: Final = 63
"""PostgreSQL silently truncates longer identifiers (NAMEDATALEN - 1), which would make the
returned URL point at a database that does not exist, so longer names are rejected."""

SUN_PATH_MAX: Final = 103
"""Unix socket paths are limited to 108 bytes on Linux and 104 on macOS (including the NUL)."""

INSTALL_HINT: Final = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    "/usr/lib/postgresql/*/bin. Fix: apt-get install postgresql "
    "(or put the directory containing initdb and pg_ctl on PATH)."
)

SERVER_SETTINGS: Final[dict[str, str]] = {
    # Unix socket only: no TCP listener at all.
    "listen_addresses": "''",
    # Throwaway data: trade durability for speed.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Headroom for connection pools of many test engines against one server.
    "max_connections": "200",
}


def _is_root() -> bool:
    """Tell whether we are root, in which case PostgreSQL must run as another OS user."""
    return os.geteuid() == 0


def _pg_version_key(bin_dir: pathlib.Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` so that 15 > 9.6 (not lexicographic)."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name)) or (-1,)


def find_pg_binaries() -> tuple[pathlib.Path, pathlib.Path]:
    """Return ``(initdb, pg_ctl)``.

    PATH wins so that a developer can pick a version explicitly; otherwise the highest version
    under ``/usr/lib/postgresql`` (the Debian/Ubuntu layout, which does not put initdb on PATH).
    pg_ctl finds ``postgres`` next to its own resolved location, so it is not looked up here.
    """
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return pathlib.Path(initdb), pathlib.Path(pg_ctl)
    candidates = [
        d
        for d in pathlib.Path("/usr/lib/postgresql").glob("*/bin")
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file()
    ]
    if not candidates:
        raise RuntimeError(INSTALL_HINT)
    bin_dir = max(candidates, key=_pg_version_key)
    return bin_dir / "initdb", bin_dir / "pg_ctl"


def _ensure_pg_os_user() -> pwd.struct_passwd:
    """Return the ``postgres`` OS user, creating it if needed (only called when we are root).

    Tolerates a concurrent creator (e.g. parallel test workers): if ``useradd`` fails but the
    user exists afterwards, that is success.
    """
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_USER)
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", PG_USER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        raise RuntimeError(
            f"could not create OS user {PG_USER!r} (needed because PostgreSQL refuses to run "
            f"as root): useradd exited {result.returncode}: {result.stderr.strip()}"
        ) from None


def _conf_quote(value: str) -> str:
    """Quote a string for postgresql.conf (single quotes, embedded quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


class PostgresServer:
    """A private, disposable PostgreSQL cluster reachable only through a Unix socket.

    The temporary directory (created by ``start()``) holds the data directory, the server log
    and the socket; ``stop()`` kills the server and deletes all of it. An ``atexit`` hook stops
    a server that a crashed or interrupted test run forgot, so postmasters are not leaked.
    """

    def __init__(self, base_dir: pathlib.Path | None = None) -> None:
        """Prepare (but do not start) a server.

        ``base_dir`` is the parent for the temporary directory (default: the system temp dir,
        normally /tmp). When running as root, every ancestor must be searchable by the
        ``postgres`` user; pytest's ``tmp_path`` is mode 0700 and is therefore NOT suitable.
        Keep it short, too: the socket path must fit in ~100 bytes.
        """
        self._base_dir = base_dir
        self._root: pathlib.Path | None = None
        self._running = False
        self._as_pg_user = _is_root()
        self._pg_ctl: pathlib.Path | None = None

    # ----------------------------------------------------------------------------- properties

    @property
    def root(self) -> pathlib.Path:
        """The temporary directory; it is also the socket directory."""
        if self._root is None:
            raise RuntimeError("PostgresServer has not been started")
        return self._root

    @property
    def socket_dir(self) -> pathlib.Path:
        """Directory holding ``.s.PGSQL.<port>``; pass as ``host=`` to libpq/psycopg."""
        return self.root

    @property
    def data_dir(self) -> pathlib.Path:
        """The cluster's PGDATA."""
        return self.root / "data"

    @property
    def log_path(self) -> pathlib.Path:
        """Server log written by ``pg_ctl -l``; its tail is quoted in start-up errors."""
        return self.root / "server.log"

    @property
    def port(self) -> int:
        """Port number (only used to name the socket file; no TCP listener exists)."""
        return PORT

    @property
    def running(self) -> bool:
        """Whether ``start()`` succeeded and ``stop()`` has not been called since."""
        return self._running

    # ---------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the temp dir, ``initdb`` it and start the server, waiting until it is ready.

        Readiness is ``pg_ctl start -w -t 30``: pg_ctl itself polls until the postmaster
        reports it accepts connections, so the wait is bounded and needs no loop here. On any
        failure the directory is removed and the error carries the tail of the server log.
        """
        if self._root is not None:
            raise RuntimeError("PostgresServer.start() called twice")
        initdb, pg_ctl = find_pg_binaries()
        self._pg_ctl = pg_ctl
        self._root = pathlib.Path(tempfile.mkdtemp(prefix="allset-pg-", dir=self._base_dir))
        try:
            self._prepare_root()
            self._run(
                [
                    str(initdb),
                    "-D", str(self.data_dir),
                    "-A", "trust",
                    "-U", PG_USER,
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",  # throwaway: skip fsyncing the fresh cluster
                ],
                timeout=INITDB_TIMEOUT_S,
                what="initdb",
            )  # fmt: skip
            self._write_config()
            self._run(
                [
                    str(pg_ctl),
                    "start",
                    "-w",
                    "-t", str(START_TIMEOUT_S),
                    "-D", str(self.data_dir),
                    "-l", str(self.log_path),
                ],
                timeout=START_TIMEOUT_S + SUBPROCESS_SLACK_S,
                what="pg_ctl start",
            )  # fmt: skip
        except BaseException:
            self._kill_and_remove()
            raise
        self._running = True
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the server immediately (no checkpoint: the data is discarded) and delete the dir.

        Idempotent. If ``pg_ctl stop`` fails or hangs, the postmaster is SIGKILLed using the
        pid from ``postmaster.pid`` so that a test run never leaks a server.
        """
        atexit.unregister(self.stop)
        if self._root is None:
            return
        self._kill_and_remove()

    def __enter__(self) -> PostgresServer:
        """Start the server; ``with PostgresServer() as pg:`` guarantees it is stopped."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and remove its directory, even if the body raised."""
        self.stop()

    # ---------------------------------------------------------------------------- databases

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` and return a SQLAlchemy URL for it.

        The URL has the form ``postgresql+psycopg://postgres@/NAME?host=<socketdir>``: an
        empty host part plus ``host=`` in the query makes libpq use the Unix socket directory.
        A fresh database per test (or per module) gives isolation without re-running initdb.
        With ``template``, the new database is a copy of that one (``CREATE DATABASE …
        TEMPLATE``), which must have no open connection.
        """
        self._check_name(name)
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            self._check_name(template)
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        with self._admin_connection() as conn:
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists.

        ``WITH (FORCE)`` terminates sessions still connected to it (e.g. an engine a test
        forgot to ``dispose()``), which would otherwise make the DROP fail.
        """
        self._check_name(name)
        with self._admin_connection() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def url(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` on this server (no existence check)."""
        db = urllib.parse.quote(name, safe="")
        host = urllib.parse.quote(str(self.socket_dir), safe="/")
        return f"postgresql+psycopg://{PG_USER}@/{db}?host={host}"

    # ------------------------------------------------------------------------------ helpers

    def _admin_connection(self) -> psycopg.Connection[tuple[object, ...]]:
        """Autocommit superuser connection to the ``postgres`` database.

        Autocommit is required: CREATE/DROP DATABASE cannot run inside a transaction block.
        """
        if not self._running:
            raise RuntimeError("PostgresServer is not running; call start() first")
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=PG_USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
        )

    @staticmethod
    def _check_name(name: str) -> None:
        """Reject names PostgreSQL would silently mangle (empty, NUL, truncated at 63 bytes)."""
        if not name or "\x00" in name:
            raise ValueError(f"invalid database name: {name!r}")
        if len(name.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(
                f"database name longer than {MAX_IDENTIFIER_BYTES} bytes would be truncated "
                f"by PostgreSQL: {name!r}"
            )

    def _prepare_root(self) -> None:
        """Make the temp dir usable by the server's OS user and check the socket path length.

        mkdtemp creates 0700 dirs owned by us; as root we chown it to ``postgres`` and make it
        0755, then verify the ``postgres`` user can actually reach it (every ancestor must be
        searchable), because otherwise initdb fails with an obscure permission error.
        """
        root = self.root
        socket_path = root / f".s.PGSQL.{self.port}"
        if len(os.fsencode(socket_path)) > SUN_PATH_MAX:
            raise RuntimeError(
                f"Unix socket path too long ({len(os.fsencode(socket_path))} bytes > "
                f"{SUN_PATH_MAX}): {socket_path}; use a shorter base_dir"
            )
        root.chmod(0o755)
        if not self._as_pg_user:
            return
        user = _ensure_pg_os_user()
        os.chown(root, user.pw_uid, user.pw_gid)
        probe = subprocess.run(
            ["runuser", "-u", PG_USER, "--", "test", "-w", str(root), "-a", "-x", str(root)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            raise RuntimeError(
                f"OS user {PG_USER!r} cannot access {root}: some ancestor directory is not "
                "searchable by other users (pytest's tmp_path is 0700, for example). "
                "Use base_dir=None (system temp dir) or a world-searchable base_dir."
            )

    def _write_config(self) -> None:
        """Append our settings to postgresql.conf (later lines win over initdb's defaults)."""
        settings = {
            **SERVER_SETTINGS,
            "unix_socket_directories": _conf_quote(str(self.socket_dir)),
            "port": str(self.port),
        }
        lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# --- allset test harness ---\n" + lines)

    def _command(self, args: list[str]) -> list[str]:
        """Wrap ``args`` with ``runuser -u postgres --`` when we are root."""
        if self._as_pg_user:
            return ["runuser", "-u", PG_USER, "--", *args]
        return args

    def _run(self, args: list[str], *, timeout: float, what: str) -> None:
        """Run a PostgreSQL tool with a hard timeout; raise RuntimeError with full diagnostics.

        cwd is the temp dir because the ``postgres`` user usually cannot enter our cwd
        (e.g. /root), which makes initdb/pg_ctl print warnings or fail.
        """
        command = self._command(args)
        try:
            result = subprocess.run(
                command,
                cwd=self.root,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"{what} did not finish within {timeout:.0f} s: {' '.join(command)}"
                + self._diagnostics(_text(exc.stdout), _text(exc.stderr))
            ) from None
        except FileNotFoundError as exc:
            raise RuntimeError(f"{what}: cannot execute {exc.filename}: {exc.strerror}") from None
        if result.returncode != 0:
            raise RuntimeError(
                f"{what} failed with exit code {result.returncode}: {' '.join(command)}"
                + self._diagnostics(result.stdout, result.stderr)
            )

    def _diagnostics(self, stdout: str, stderr: str) -> str:
        """Format tool output plus the last lines of the server log for an error message."""
        parts = []
        if stdout.strip():
            parts.append(f"--- stdout ---\n{stdout.strip()}")
        if stderr.strip():
            parts.append(f"--- stderr ---\n{stderr.strip()}")
        try:
            log_lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            log_lines = []
        if log_lines:
            tail = "\n".join(log_lines[-LOG_TAIL_LINES:])
            parts.append(f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n{tail}")
        return "".join("\n" + part for part in parts)

    def _kill_and_remove(self) -> None:
        """Stop the postmaster if one is running for our data dir, then delete the temp dir."""
        root = self._root
        if root is None:
            return
        self._running = False
        try:
            if self._pg_ctl is not None and (self.data_dir / "postmaster.pid").exists():
                try:
                    self._run(
                        [
                            str(self._pg_ctl),
                            "stop",
                            "-m", "immediate",
                            "-w",
                            "-t", str(STOP_TIMEOUT_S),
                            "-D", str(self.data_dir),
                        ],
                        timeout=STOP_TIMEOUT_S + SUBPROCESS_SLACK_S,
                        what="pg_ctl stop",
                    )  # fmt: skip
                except RuntimeError:
                    self._sigkill_postmaster()
        finally:
            self._root = None
            shutil.rmtree(root, ignore_errors=True)

    def _sigkill_postmaster(self) -> None:
        """Last resort when pg_ctl cannot stop the server: SIGKILL the pid in postmaster.pid.

        Backends notice their postmaster died and exit on their own.
        """
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _text(output: str | bytes | None) -> str:
    """Normalise the captured output attached to ``TimeoutExpired`` (may be bytes or None)."""
    if output is None:
        return ""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output


def main() -> int:
    """Self-check: start a server, create a database, query it through SQLAlchemy, stop."""
    name = "allset_selfcheck"
    with PostgresServer() as server:
        url = server.create_database(name)
        print(url)
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as conn:
                print(conn.execute(sqlalchemy.text("SELECT version()")).scalar_one())
        finally:
            engine.dispose()
        server.drop_database(name)
        root = server.root
    if root.exists():
        print(f"FAIL: {root} was not removed", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
