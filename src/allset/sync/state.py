"""The sync state: what both sides last agreed on, in a small SQLite database.

Two-way sync cannot tell "deleted here" from "created there" without remembering the
last agreed state (the *base*): a file missing locally but present in the base was
deleted locally; one missing from the base was created remotely. The base also keeps
each file's size, mtime and inode as seen when it was agreed, so a rescan hashes only
files whose stat changed (R-SYNC-1 at the scale of 100,000 files).

The database lives in the Software's config dir, not in the synced folder, so that a
folder that vanished (an unmounted disk) does not take the memory of it along; the folder
holds only a marker with the sync's id, which is how a vanished or replaced folder is
recognised (see ``engine``).

The ``remote`` table caches the server's last snapshot with the change-feed cursor it was
read at: when the feed has nothing after that cursor, the cache *is* the server's state
and no listing is needed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS base (
    key TEXT PRIMARY KEY,       -- remote path relative to the synced folder (NFC)
    local TEXT,                 -- local relative path when not the default spelling
    kind TEXT NOT NULL,         -- 'file' | 'dir'
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    inode INTEGER NOT NULL DEFAULT 0,
    checked_ns INTEGER NOT NULL DEFAULT 0,  -- when that stat was taken (racy-file rule)
    sha256 TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS remote (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    version TEXT NOT NULL DEFAULT '',
    mtime TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS reported (key TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""


RemoteRow = tuple[str, str, int, str, str, str]  # key, kind, size, sha256, version, mtime


@dataclass(slots=True)
class BaseEntry:
    kind: str
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    checked_ns: int = 0
    sha256: str = ""
    version: str = ""
    local: str | None = None  # None: the default local spelling of the key


@dataclass(slots=True)
class RemoteEntry:
    kind: str
    size: int = 0
    sha256: str = ""
    version: str = ""
    mtime: str = ""


def state_path(config_dir: Path, server: str, user: str, local: Path, remote: str) -> Path:
    """One database per (server, account, local folder, remote folder)."""
    ident = "\0".join([server, user.lower(), str(local.resolve()), remote])
    return config_dir / "sync" / (hashlib.sha256(ident.encode()).hexdigest()[:24] + ".db")


class Busy(Exception):
    """Another sync of the same folders is running (the message says which process)."""


class _FolderLock:
    """One sync per state at a time: two processes planning against the same base would
    each act on the other's half-done work. An OS lock (released by the kernel if the
    process dies, so a kill -9 never leaves a stale lock), on a file beside the state."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a+")
        try:
            if os.name == "nt":
                import msvcrt  # noqa: PLC0415 - Windows only

                msvcrt.locking(self.file.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl  # noqa: PLC0415 - POSIX only

                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise Busy(
                f"another allset sync of this folder is running (pid {holder}); "
                "wait for it to finish or stop it."
            ) from exc
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        self.file.close()  # closing releases the lock


class State:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = _FolderLock(path.with_suffix(".lock"))
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL + NORMAL: a crash may lose the last few records, never corrupt the file; a
        # lost record only makes the next pass re-check that file (both sides then agree
        # by SHA-256 and nothing is sent again).
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()
        self.lock.release()

    # ---- meta ----------------------------------------------------------------------
    def meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else default

    def put_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- base ------------------------------------------------------------------------
    def is_empty(self) -> bool:
        return self.db.execute("SELECT 1 FROM base LIMIT 1").fetchone() is None

    def put_base(self, items: Iterable[tuple[str, BaseEntry]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO base(key, kind, size, mtime_ns, inode, checked_ns, sha256,"
            " version, local) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                (k, e.kind, e.size, e.mtime_ns, e.inode, e.checked_ns, e.sha256, e.version, e.local)
                for k, e in items
            ),
        )

    def drop_base(self, keys: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM base WHERE key=?", ((k,) for k in keys))

    def drop_base_under(self, key: str) -> None:
        self.db.execute(
            "DELETE FROM base WHERE key=? OR substr(key, 1, ?)=?", (key, len(key) + 1, key + "/")
        )

    # ---- remote cache ----------------------------------------------------------------
    def replace_remote(self, fill: Callable[[Callable[[list[RemoteRow]], None]], int]) -> None:
        """Replace the cache with what ``fill`` feeds (rows in batches; it returns the
        cursor) — all or nothing: a snapshot cut off half-way leaves the old cache."""

        def insert(rows: list[RemoteRow]) -> None:
            self.db.executemany(
                "INSERT OR REPLACE INTO remote(key, kind, size, sha256, version, mtime)"
                " VALUES (?,?,?,?,?,?)",
                rows,
            )

        with self.transaction():
            self.db.execute("DELETE FROM remote")
            self.put_meta("cursor", str(fill(insert)))

    def invalidate_remote(self) -> None:
        """Our own changes moved the server on: the cache is no longer the server's state."""
        self.put_meta("cursor", "")

    # ---- a pass, in SQL: only what changed comes into memory ------------------------
    # A rescan of 100,000 unchanged files must not build 100,000 objects three times
    # (base, local, remote); the scanner's rows go to a temporary table and these queries
    # pick out the few keys that differ. The planner then sees only those keys (and the
    # folders around them), so memory follows the size of the change, not of the tree.
    def begin_scan(self) -> None:
        self.db.executescript(
            """
            CREATE TEMP TABLE IF NOT EXISTS seen (
                key TEXT PRIMARY KEY, local TEXT NOT NULL, kind TEXT NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL);
            CREATE TEMP TABLE IF NOT EXISTS want (key TEXT PRIMARY KEY);
            DELETE FROM seen;
            DELETE FROM want;
            """
        )

    def add_seen(self, rows: list[tuple[str, str, str, int, int, int]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO seen VALUES (?,?,?,?,?,?)", rows)

    def load_aliases(self) -> dict[str, str]:
        """local spelling -> key, for the keys not spelled the default way locally."""
        return {
            r[0]: r[1]
            for r in self.db.execute("SELECT local, key FROM base WHERE local IS NOT NULL")
        }

    def changed_keys(self, racy_ns: int) -> set[str]:
        """Keys that differ between the scan, the base and the remote cache — plus every
        key under a folder that one side deleted (the planner decides such folders as a
        whole) and every folder above them."""
        out: set[str] = set()
        queries = (
            # local: new, kind changed, stat changed, or too recent to trust its stat
            "SELECT s.key FROM seen s LEFT JOIN base b ON b.key = s.key WHERE b.key IS NULL"
            " OR b.kind != s.kind OR (s.kind = 'file' AND (b.size != s.size"
            " OR b.mtime_ns != s.mtime_ns OR b.inode != s.inode OR b.sha256 = ''"
            " OR s.mtime_ns + ? >= b.checked_ns))",
            # local: gone
            "SELECT b.key FROM base b LEFT JOIN seen s ON s.key = b.key WHERE s.key IS NULL",
            # remote: new or changed (a new version of the same content too: recorded)
            "SELECT r.key FROM remote r LEFT JOIN base b ON b.key = r.key WHERE b.key IS NULL"
            " OR b.kind != r.kind OR (r.kind = 'file' AND (b.sha256 != r.sha256"
            " OR b.version != r.version))",
            # remote: gone
            "SELECT b.key FROM base b LEFT JOIN remote r ON r.key = b.key WHERE r.key IS NULL",
        )
        for i, q in enumerate(queries):
            out.update(r[0] for r in self.db.execute(q, (racy_ns,) if i == 0 else ()))
        gone_dirs = [
            k
            for (k,) in self.db.execute(
                "SELECT b.key FROM base b WHERE b.kind = 'dir' AND (NOT EXISTS (SELECT 1 FROM"
                " seen s WHERE s.key = b.key) OR NOT EXISTS (SELECT 1 FROM remote r WHERE"
                " r.key = b.key))"
            )
        ]
        for d in gone_dirs:
            lo, hi = d + "/", d + "0"  # '0' follows '/': the range of keys under d
            for table in ("base", "remote", "seen"):
                out.update(
                    r[0]
                    for r in self.db.execute(
                        f"SELECT key FROM {table} WHERE key >= ? AND key < ?",  # noqa: S608
                        (lo, hi),
                    )
                )
        for k in list(out):
            parts = k.split("/")
            for i in range(1, len(parts)):
                out.add("/".join(parts[:i]))
        return out

    def siblings(self, parents: set[str]) -> set[str]:
        """Every key in these folders: a case-insensitive file system needs all the names
        of a folder to place a new one."""
        out: set[str] = set()
        for p in parents:
            lo, hi = (p + "/", p + "0") if p else ("", "\U0010ffff")
            for table in ("base", "remote", "seen"):
                for (k,) in self.db.execute(
                    f"SELECT key FROM {table} WHERE key >= ? AND key < ?",  # noqa: S608
                    (lo, hi),
                ):
                    if "/" not in k[len(lo) :]:
                        out.add(k)
        return out

    def _want(self, keys: set[str]) -> None:
        self.db.execute("DELETE FROM want")
        self.db.executemany("INSERT OR IGNORE INTO want VALUES (?)", ((k,) for k in keys))

    def load_for(
        self, keys: set[str]
    ) -> tuple[
        dict[str, BaseEntry], dict[str, RemoteEntry], list[tuple[str, str, str, int, int, int]]
    ]:
        """Base, remote cache and scanned rows of just these keys."""
        self._want(keys)
        base = {
            r[0]: BaseEntry(*r[1:])
            for r in self.db.execute(
                "SELECT b.key, kind, size, mtime_ns, inode, checked_ns, sha256, version, local"
                " FROM base b JOIN want w ON w.key = b.key"
            )
        }
        remote = {
            r[0]: RemoteEntry(*r[1:])
            for r in self.db.execute(
                "SELECT r.key, kind, size, sha256, version, mtime FROM remote r"
                " JOIN want w ON w.key = r.key"
            )
        }
        seen = list(
            self.db.execute(
                "SELECT s.key, local, kind, size, mtime_ns, inode FROM seen s"
                " JOIN want w ON w.key = s.key"
            )
        )
        return base, remote, seen

    def local_sources(self, shas: set[str], racy_ns: int) -> dict[str, str]:
        """SHA-256 -> local path of an unchanged synced file with that content (a download
        of the same bytes becomes a local copy)."""
        out: dict[str, str] = {}
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_sha (sha TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM wanted_sha")
        self.db.executemany("INSERT OR IGNORE INTO wanted_sha VALUES (?)", ((h,) for h in shas))
        for sha, local in self.db.execute(
            "SELECT b.sha256, s.local FROM base b JOIN wanted_sha w ON w.sha = b.sha256"
            " JOIN seen s ON s.key = b.key WHERE s.kind = 'file' AND b.size = s.size"
            " AND b.mtime_ns = s.mtime_ns AND b.inode = s.inode AND s.mtime_ns + ? < b.checked_ns",
            (racy_ns,),
        ):
            out.setdefault(sha, local)
        return out

    def base_files(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM base WHERE kind = 'file'").fetchone()[0])

    def remote_bytes(self) -> int:
        row = self.db.execute("SELECT coalesce(sum(size), 0) FROM remote WHERE kind = 'file'")
        return int(row.fetchone()[0])

    # ---- things told to the user once ---------------------------------------------
    def first_report(self, key: str, reason: str) -> bool:
        cur = self.db.execute(
            "INSERT OR IGNORE INTO reported(key, reason) VALUES (?, ?)", (key, reason)
        )
        return cur.rowcount > 0

    def forget_reports(self, keep: set[str]) -> None:
        gone = [r[0] for r in self.db.execute("SELECT key FROM reported") if r[0] not in keep]
        self.db.executemany("DELETE FROM reported WHERE key=?", ((k,) for k in gone))

    # ---- transactions ----------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN")

        def __exit__(self, exc_type: object, *_: object) -> None:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self) -> State._Tx:
        return State._Tx(self.db)

    def keys_under(self, key: str) -> Iterator[str]:
        for (k,) in self.db.execute(
            "SELECT key FROM base WHERE substr(key, 1, ?)=?", (len(key) + 1, key + "/")
        ):
            yield k
