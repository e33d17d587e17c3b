"""What sync leaves alone: a built-in list of junk and temporary files, plus the user's
``.allsetignore`` (gitignore syntax, at the root of the synced folder).

The built-in list holds only files no one means to share: office lock and temporary
files (they appear and vanish while a document is open, and uploading them makes conflict
copies of nothing), operating-system litter, and partial downloads — ours and browsers'.
An ignored file is never uploaded, downloaded or deleted.
"""

from __future__ import annotations

from pathlib import Path

import pathspec

IGNORE_FILE = ".allsetignore"
PART_SUFFIX = ".allset-part"
MARKER = ".allsetsync"

BUILTIN = (
    # ours: the folder marker and partial downloads
    MARKER,
    f"*{PART_SUFFIX}",
    # office: Word/Excel/PowerPoint owner files, LibreOffice locks, temporary saves
    "~$*",
    ".~lock.*#",
    "~*.tmp",
    # operating systems
    ".DS_Store",
    "._*",
    ".Spotlight-V100/",
    ".Trashes/",
    ".fseventsd/",
    ".TemporaryItems/",
    "Icon\r",
    "Thumbs.db",
    "ehthumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN/",
    "System Volume Information/",
    # partial downloads of browsers and other tools
    "*.crdownload",
    "*.part",
    "*.partial",
    "*.download/",
    # editors' swap files
    ".*.swp",
    ".*.swx",
)


class IgnoreRules:
    """Matches paths relative to the synced folder ('/'-separated, remote spelling)."""

    def __init__(self, user_lines: list[str] | None = None) -> None:
        self.user_lines = user_lines or []
        self._builtin = pathspec.GitIgnoreSpec.from_lines(BUILTIN)
        self._user = pathspec.GitIgnoreSpec.from_lines(self.user_lines)

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        try:
            text = (root / IGNORE_FILE).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return cls()
        return cls(text.splitlines())

    def builtin(self, rel: str, is_dir: bool = False) -> bool:
        return self._builtin.match_file(rel + "/" if is_dir else rel)

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        probe = rel + "/" if is_dir else rel
        return self._builtin.match_file(probe) or self._user.match_file(probe)
