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
import sqlite3
from collections.abc import Iterable, Iterator
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


class State:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL + NORMAL: a crash may lose the last few records, never corrupt the file; a
        # lost record only makes the next pass re-check that file (both sides then agree
        # by SHA-256 and nothing is sent again).
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ---- meta ----------------------------------------------------------------------
    def meta(self, key: str, default: str = "") -> str:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else default

    def put_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- base ------------------------------------------------------------------------
    def load_base(self) -> dict[str, BaseEntry]:
        rows = self.db.execute(
            "SELECT key, kind, size, mtime_ns, inode, checked_ns, sha256, version, local FROM base"
        )
        return {r[0]: BaseEntry(*r[1:]) for r in rows}

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
    def load_remote(self) -> dict[str, RemoteEntry]:
        rows = self.db.execute("SELECT key, kind, size, sha256, version, mtime FROM remote")
        return {r[0]: RemoteEntry(*r[1:]) for r in rows}

    def replace_remote(self, entries: dict[str, RemoteEntry], cursor: int) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM remote")
            self.db.executemany(
                "INSERT INTO remote(key, kind, size, sha256, version, mtime) VALUES (?,?,?,?,?,?)",
                ((k, e.kind, e.size, e.sha256, e.version, e.mtime) for k, e in entries.items()),
            )
            self.put_meta("cursor", str(cursor))

    def invalidate_remote(self) -> None:
        """Our own changes moved the server on: the cache is no longer the server's state."""
        self.put_meta("cursor", "")

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
