"""How a remote name becomes a local one and back, on each platform (R-SYNC-3).

The server stores names in NFC and is case-sensitive; the computers it syncs with are
not all like that:

- **macOS** file systems hand names back decomposed (NFD) or keep what was typed. Every
  local name is read back through NFC, so ``é`` typed either way is one file, never two.
- **Case-insensitive** file systems (macOS, Windows) cannot hold ``Report.txt`` and
  ``report.txt`` side by side. The second one (in name order) is given a suffixed local
  name, ``report (case conflict).txt``, remembered in the sync state so that edits to it
  go back to ``report.txt`` on the server; the user is told once.
- **Windows** refuses ``< > : " / \\ | ? *``, control characters, a trailing dot or space,
  and the device names (``CON``, ``aux.txt``, ``COM1``…). Such characters are mapped to the
  Unicode private-use range U+F000+c, as Cygwin and WSL do, so the escaping is reversible
  and shows readably in Explorer; a name already holding one of those private-use
  characters cannot be told apart from an escaped one, so it is reported, not synced.

The rules are pure functions of a :class:`Platform`, so tests run every platform's rules
on Linux.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from dataclasses import dataclass

ESCAPE_BASE = 0xF000
_WINDOWS_FORBIDDEN = frozenset('<>:"\\|?*') | frozenset(chr(c) for c in range(1, 32))
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
    + ["COM¹", "COM²", "COM³", "LPT¹", "LPT²", "LPT³"]
)


class Unrepresentable(ValueError):
    """A remote name this platform cannot hold (the message says why)."""


@dataclass(frozen=True)
class Platform:
    """What the local file system can hold. ``current()`` describes this computer; tests
    build the others."""

    name: str
    case_insensitive: bool
    windows_names: bool

    @staticmethod
    def current() -> Platform:
        if sys.platform == "win32":
            return WINDOWS
        if sys.platform == "darwin":
            return MACOS
        return LINUX

    @staticmethod
    def named(name: str) -> Platform:
        return {"linux": LINUX, "macos": MACOS, "windows": WINDOWS}[name]

    # ---- one name ----------------------------------------------------------------
    def to_local(self, name: str) -> str:
        """The local spelling of a remote (NFC) name, or Unrepresentable."""
        if not self.windows_names:
            return name
        if any(ESCAPE_BASE <= ord(c) < ESCAPE_BASE + 0x80 for c in name):
            raise Unrepresentable(
                f"{name!r} holds characters U+F000..U+F07F, which this computer uses to "
                "store names Windows forbids; rename it on the server to sync it here."
            )
        chars = [chr(ESCAPE_BASE + ord(c)) if c in _WINDOWS_FORBIDDEN else c for c in name]
        if chars[-1] in (".", " "):
            chars[-1] = chr(ESCAPE_BASE + ord(chars[-1]))
        stem = "".join(chars).split(".", 1)[0]
        if stem.rstrip(" ").upper() in _WINDOWS_DEVICES:
            # CON, aux.txt: the stem's last character is escaped, so the name stays
            # recognisable ("CO\uf04e") and comes back exactly.
            i = len(stem.rstrip(" ")) - 1
            chars[i] = chr(ESCAPE_BASE + ord(chars[i]))
        return "".join(chars)

    def to_remote(self, local_name: str) -> str:
        """The remote (NFC) name of a local one: undo the escaping, compose accents."""
        if self.windows_names:
            local_name = "".join(
                chr(ord(c) - ESCAPE_BASE) if ESCAPE_BASE <= ord(c) < ESCAPE_BASE + 0x80 else c
                for c in local_name
            )
        return unicodedata.normalize("NFC", local_name)

    def fold(self, local_name: str) -> str:
        """The form under which the local file system considers two names the same."""
        nfc = unicodedata.normalize("NFC", local_name)
        return nfc.casefold() if self.case_insensitive else nfc


LINUX = Platform("linux", case_insensitive=False, windows_names=False)
MACOS = Platform("macos", case_insensitive=True, windows_names=False)
WINDOWS = Platform("windows", case_insensitive=True, windows_names=True)


def split_ext(name: str) -> tuple[str, str]:
    """``report.final.docx`` -> (``report.final``, ``.docx``); ``.bashrc`` has no extension."""
    stem, ext = os.path.splitext(name)
    return (stem, ext) if stem else (name, "")


def case_conflict_name(name: str, n: int) -> str:
    stem, ext = split_ext(name)
    return f"{stem} (case conflict{'' if n == 1 else f' {n}'}){ext}"


def conflict_copy_name(name: str, when: str, host: str) -> str:
    """``name (conflicted copy YYYY-MM-DD HHMMSS from HOST).ext`` — what users of other
    sync tools recognise at once."""
    stem, ext = split_ext(name)
    host = "".join(c for c in host if c not in '/\\:*?"<>|') or "this computer"
    return f"{stem} (conflicted copy {when} from {host}){ext}"
