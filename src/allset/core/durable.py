"""Durability on the local file system, shared by the store, the tus staging files and the
sync client: one place for the rule every atomic rename here relies on."""

from __future__ import annotations

import os


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a folder's entries durable: a rename, or a new file or folder in it, survives
    a crash only once its folder is synced (POSIX). Windows has no such call (NTFS
    journals its metadata itself), so there it does nothing."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
