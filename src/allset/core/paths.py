"""The ONE name normaliser and validator (every protocol calls it at its boundary).

Names are stored NFC so that a macOS client (NFD) and a Windows client (NFC) agree on
what a file is called. The rules are the intersection that every peer file system can
hold: no empty names, no ``.``/``..``, no NUL, no ``/`` inside a name, at most 255 UTF-8
bytes per name and 4096 bytes per path.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from allset.core.errors import InvalidName

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096


def decode_utf8(raw: bytes, what: str = "path") -> str:
    """Decode bytes from the wire; invalid UTF-8 is the sender's error, said clearly."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidName(
            f"The {what} is not valid UTF-8 (byte {exc.start}); encode names as UTF-8.",
        ) from exc


def normalise_name(name: str) -> str:
    """Validate one path component and return it in NFC."""
    if name == "":
        raise InvalidName("A name cannot be empty.")
    if "\x00" in name:
        raise InvalidName("A name cannot contain the NUL character.")
    if "/" in name:
        raise InvalidName(f"A name cannot contain '/': {name!r}.")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise InvalidName("A name cannot contain lone surrogates (invalid UTF-8).")
    nfc = unicodedata.normalize("NFC", name)
    if nfc in (".", ".."):
        raise InvalidName(f"'{nfc}' is reserved and cannot be used as a name.")
    size = len(nfc.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidName(
            f"A name is limited to {MAX_NAME_BYTES} bytes in UTF-8; this one has {size}.",
            limit=MAX_NAME_BYTES,
            actual=size,
        )
    return nfc


@dataclass(frozen=True, slots=True)
class RemotePath:
    """A validated absolute path in a Client's space; the root has no parts."""

    parts: tuple[str, ...]

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.parts[:-1])

    def child(self, name: str) -> RemotePath:
        return parse_path("/".join((*self.parts, name)))

    def is_within(self, other: RemotePath) -> bool:
        """True when ``self`` is ``other`` or lies below it."""
        return self.parts[: len(other.parts)] == other.parts

    def __str__(self) -> str:
        return "/" + "/".join(self.parts)


ROOT = RemotePath(())


def parse_path(path: str) -> RemotePath:
    """Split and validate a path; leading, trailing and doubled slashes are tolerated.

    Doubled slashes are folded because clients (and users typing URLs) produce them, and
    no name can be empty, so ``a//b`` can only mean ``a/b``.
    """
    if "\x00" in path:
        raise InvalidName("A path cannot contain the NUL character.")
    parts = tuple(normalise_name(p) for p in path.split("/") if p != "")
    size = sum(len(p.encode("utf-8")) + 1 for p in parts)
    if size > MAX_PATH_BYTES:
        raise InvalidName(
            f"A path is limited to {MAX_PATH_BYTES} bytes in UTF-8; this one has {size}.",
            limit=MAX_PATH_BYTES,
            actual=size,
        )
    return RemotePath(parts)
