"""Reading the local folder: what is there now, under the names the server knows.

A rescan of 100,000 unchanged files must take seconds and little memory, so the scanner
hashes nothing and, in sync, keeps nothing: each entry's stat goes to the state database
(``sink``), where one query against the base finds the few that changed (``State``). A
file whose size, mtime and inode match the base keeps the base's SHA-256 unless it was
modified within the file system's timestamp granularity of the moment it was recorded —
the "racy file" rule git uses, since an edit in that window could keep the same stat.
Everything else is hashed later, only when a decision needs it.

What the scanner will not touch is listed, never guessed at: symbolic links (not
followed, reported once), folders it cannot read (their contents are *unknown*, so
nothing under them is taken as deleted), names the server cannot hold, and two local names
that mean the same remote name (``é`` composed and decomposed, on Linux).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from allset.core.errors import InvalidName
from allset.core.paths import normalise_name
from allset.sync.ignore import PART_SUFFIX, IgnoreRules
from allset.sync.names import Platform
from allset.sync.state import BaseEntry

RACY_NS = 2_000_000_000  # coarser than any file system's mtime granularity (FAT: 2 s)
HASH_BLOCK = 1 << 20
SINK_BATCH = 5000

# (key, local, kind, size, mtime_ns, inode): one scanned entry, as the state stores it
Row = tuple[str, str, str, int, int, int]


@dataclass(slots=True)
class LocalItem:
    kind: str  # 'file' | 'dir'
    local: str  # relative local path, '/'-separated, as spelled on disk
    size: int = 0
    mtime_ns: int = 0
    inode: int = 0
    sha256: str = ""  # "" until known


@dataclass
class Scan:
    items: dict[str, LocalItem] = field(default_factory=dict)
    # Keys whose local state is unknown or not ours to decide: nothing is done to them
    # nor, for folders, to anything under them.
    frozen: set[str] = field(default_factory=set)
    notices: dict[str, str] = field(default_factory=dict)  # key -> why it is not synced
    partials: list[Path] = field(default_factory=list)  # our own leftover part files
    started_ns: int = 0
    file_bytes: int = 0
    files: int = 0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def trusted(item: LocalItem, base: BaseEntry | None) -> bool:
    """The base's hash still describes this file (stat unchanged and not racy)."""
    return (
        base is not None
        and base.kind == "file"
        and bool(base.sha256)
        and base.size == item.size
        and base.mtime_ns == item.mtime_ns
        and base.inode == item.inode
        and item.mtime_ns + RACY_NS < base.checked_ns
    )


def scan(
    root: Path,
    aliases: dict[str, str],
    rules: IgnoreRules,
    platform: Platform,
    sink: Callable[[list[Row]], None] | None = None,
) -> Scan:
    """Walk ``root``. ``aliases``: local path -> key where the local spelling is not the
    default one. With a ``sink``, entries are handed over in batches and not kept in
    ``items``; without one (``allset verify``), they are kept."""
    out = Scan(started_ns=time.time_ns())
    batch: list[Row] = []

    def keep(key: str, item: LocalItem) -> None:
        if item.kind == "file":
            out.file_bytes += item.size
            out.files += 1
        if sink is None:
            out.items[key] = item
            return
        batch.append((key, item.local, item.kind, item.size, item.mtime_ns, item.inode))
        if len(batch) >= SINK_BATCH:
            sink(batch)
            batch.clear()

    # (local dir path, its key); the root is ("", "")
    stack: list[tuple[str, str]] = [("", "")]
    for _ in range(50_000_000):  # bounded: a loop here would be a bug, not a hang
        if not stack:
            break
        local_dir, key_dir = stack.pop()
        folder = root / local_dir if local_dir else root
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            # An unreadable folder is unknown, not empty: never a reason to delete.
            if key_dir:
                out.frozen.add(key_dir)
                out.notices[key_dir] = f"cannot be read ({exc.strerror or exc}); left alone"
                continue
            raise
        taken: dict[str, str] = {}  # key -> local name, within this folder
        for entry in entries:
            name = entry.name
            local = f"{local_dir}/{name}" if local_dir else name
            key = aliases.get(local)
            if key is None:
                try:
                    remote_name = normalise_name(platform.to_remote(name))
                except InvalidName as exc:
                    out.frozen.add(f"{key_dir}/{name}" if key_dir else name)
                    out.notices[local] = f"not synced: {exc.detail}"
                    continue
                key = f"{key_dir}/{remote_name}" if key_dir else remote_name
            try:
                is_link = entry.is_symlink()
                is_dir = not is_link and entry.is_dir(follow_symlinks=False)
            except OSError:
                out.frozen.add(key)
                continue
            if name.endswith(PART_SUFFIX) and not is_dir:
                out.partials.append(Path(entry.path))
                continue
            if rules.ignored(key, is_dir):
                continue
            if is_link:
                out.frozen.add(key)
                out.notices[key] = "is a symbolic link: not followed, not synced"
                continue
            if key in taken:
                # Only siblings can collide (é composed and decomposed): neither is synced,
                # since either could be the one the other device knows.
                out.frozen.add(key)
                out.notices[key] = (
                    f"two local names mean {key!r} on the server ({name!r} and "
                    f"{taken[key]!r}); rename one of them"
                )
                continue
            taken[key] = name
            if is_dir:
                keep(key, LocalItem("dir", local))
                stack.append((local, key))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                out.frozen.add(key)
                continue
            if not stat.S_ISREG(st.st_mode):
                out.frozen.add(key)
                out.notices[key] = "is not a regular file (device, socket or pipe); not synced"
                continue
            keep(key, LocalItem("file", local, st.st_size, st.st_mtime_ns, st.st_ino))
    if sink is not None and batch:
        sink(batch)
    return out
