"""A folder as a zip, streamed as it is read, in constant memory: one implementation for
the signed-in download (``GET /api/v1/zip/{path}``, the web interface's "download as
zip") and public folder links (``/s/{token}/zip``).

Why stored (not deflated): most files people keep are already compressed, and deflating
would cost CPU per byte for nothing. Why a write-only pipe: ``zipfile`` cannot seek it, so
it writes a data descriptor after each member instead of patching headers — which is what
lets the archive go out while it is being made. Every chunk is verified as it is read
(``FileService.read_piece``), and every listing and read goes through the façade as the
given principal, so access rules (R-SHARE-1) apply to each member.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator
from urllib.parse import quote

from allset.core.errors import Conflict, NotFound
from allset.core.paths import RemotePath
from allset.core.principal import Principal
from allset.files.service import FileService

ZIP_FLUSH = 256 * 1024  # bytes buffered before a piece is handed to the response


class _Pipe:
    """A write-only sink for ``zipfile`` (see the module docstring)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def zip_headers(top: str) -> dict[str, str]:
    """Always an attachment, never rendered in our origin."""
    return {
        "Content-Disposition": "attachment; filename*=UTF-8''" + quote(top + ".zip", safe=""),
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "private, no-store",
    }


def zip_folder(files: FileService, p: Principal, folder: RemotePath, top: str) -> Iterator[bytes]:
    """Blocking generator (Starlette runs it in a thread): the folder's whole subtree as
    ``top/…`` members; at most ~one chunk plus ``ZIP_FLUSH`` in memory. A file that goes
    away while the zip is made is skipped; an empty folder is kept as a folder entry."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        stack: list[tuple[RemotePath, str]] = [(folder, top)]
        while stack:
            here, prefix = stack.pop()
            after, empty = "", True
            while True:
                _, entries, more = files.list_dir(p, here, after, 1000)
                for e in entries:
                    empty = False
                    path = RemotePath((*here.parts, e.name))
                    name = f"{prefix}/{e.name}"
                    if e.kind == "dir":
                        stack.append((path, name))
                        continue
                    with contextlib.suppress(NotFound, Conflict):  # gone meanwhile: skipped
                        yield from _zip_member(files, p, zf, pipe, path, name)
                if more is None:
                    break
                after = more
            if empty:
                zf.writestr(zipfile.ZipInfo(prefix + "/"), b"")
            if pipe.buf:
                yield pipe.take()
    yield pipe.take()


def _zip_member(
    files: FileService,
    p: Principal,
    zf: zipfile.ZipFile,
    pipe: _Pipe,
    path: RemotePath,
    name: str,
) -> Iterator[bytes]:
    readable = files.open_read(p, path)
    e = readable.entry
    when = e.mtime.timetuple()[:6] if e.mtime.year >= 1980 else (1980, 1, 1, 0, 0, 0)
    info = zipfile.ZipInfo(name, date_time=when)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = e.size
    with zf.open(info, "w", force_zip64=e.size >= 2**31) as w:
        for ref, lo, hi in files.plan_read(readable):
            w.write(files.read_piece(readable.tenant_id, ref, lo, hi))
            if len(pipe.buf) >= ZIP_FLUSH:
                yield pipe.take()
