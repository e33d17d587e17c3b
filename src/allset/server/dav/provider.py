"""WsgiDAV resources over the files façade: WebDAV is one more adapter, not a second store.

Every resource is built for one authenticated principal (read from the ASGI scope that
a2wsgi hands over as ``environ["asgi.scope"]``), and every operation goes through
``FileService`` with that principal, so a Client never reaches another Client's tree
(another Client's paths answer 404, as in the REST API).

What WsgiDAV expects and we adapt (see also docs/design/webdav.md):
- ETags are returned unquoted; WsgiDAV quotes them. A file's ETag is its version id.
- A new file's PUT calls ``create_empty_resource`` before the body is read; we answer
  with a *pending* resource that exists only in memory until the body has been stored
  and committed, so an interrupted or refused upload leaves nothing (R-STORE-8).
- Errors of the façade become ``DAVError`` with the same status (404, 409, 412, 507…).
- Every write passes ``locks=DAV_CHECKED``: WsgiDAV has enforced the WebDAV locks (the
  same rules, ``files/locks.py``) with the request's ``If`` header, and answers a
  conflict in WebDAV's own form; the façade checks locks for every other protocol.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import mimetypes
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, unquote

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_PRECONDITION_FAILED,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
    PRECONDITION_CODE_ProtectedProperty,
)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from allset.core.errors import AllsetError, InvalidInput, NotFound
from allset.core.paths import RemotePath, parse_path
from allset.core.principal import Principal
from allset.files.entries import Entry, Readable
from allset.files.locks import DAV_CHECKED
from allset.files.service import FileService
from allset.files.upload import Upload, begin_upload, store_bytes
from allset.server.dav import propfind
from allset.server.transfer import repr_digest

NS = "urn:allset:dav:"
SHA256_PROP = "{" + NS + "}sha256"
QUOTA_PROPS = ("{DAV:}quota-used-bytes", "{DAV:}quota-available-bytes")
APPLE_MODES = ("allow", "hide", "refuse")
READ_AHEAD = 5  # chunks fetched (and verified) ahead of the one being sent; see transfer
_READ_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dav-read")


def is_apple_metadata(name: str) -> bool:
    """macOS Finder's AppleDouble files (``._name``) and folder settings (``.DS_Store``)."""
    return name.startswith("._") or name == ".DS_Store"


def principal_of(environ: dict[str, Any]) -> Principal:
    scope = environ.get("asgi.scope") or {}
    p = scope.get("allset.principal")
    if not isinstance(p, Principal):  # the ASGI front authenticates before WsgiDAV runs
        raise DAVError(HTTP_FORBIDDEN, "Not authenticated.")
    return p


def dav_error(exc: AllsetError) -> DAVError:
    headers = []
    retry_after = getattr(exc, "retry_after", None)
    if retry_after:
        headers.append(("Retry-After", str(retry_after)))
    return DAVError(exc.status, exc.detail, add_headers=headers or None)


@contextlib.contextmanager
def as_dav_errors() -> Iterator[None]:
    """Façade errors become the same HTTP status in WebDAV."""
    try:
        yield
    except AllsetError as exc:
        raise dav_error(exc) from exc


def to_remote(path: str) -> RemotePath:
    with as_dav_errors():
        return parse_path(path or "/")


class AllsetProvider(DAVProvider):  # type: ignore[misc]
    def __init__(self, files: FileService, apple_files: str = "hide") -> None:
        super().__init__()
        if apple_files not in APPLE_MODES:
            raise InvalidInput(
                f"dav_apple_files must be one of {', '.join(APPLE_MODES)}, not {apple_files!r}."
            )
        self.files = files
        self.apple_files = apple_files

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        p = principal_of(environ)
        try:
            rp = parse_path(path or "/")
        except AllsetError:
            return None  # a name that cannot exist is simply not there
        if self.apple_files == "refuse" and rp.parts and is_apple_metadata(rp.name):
            return None
        try:
            entry = self.files.stat(p, rp)
        except NotFound:
            return None
        except AllsetError as exc:
            raise dav_error(exc) from exc
        return self.resource(path, environ, entry)

    def resource(self, path: str, environ: dict[str, Any], entry: Entry) -> Any:
        if entry.kind == "dir":
            return Folder(path, environ, entry, self)
        return File(path, environ, entry, self)

    def custom_request_handler(
        self, environ: dict[str, Any], start_response: Any, default: Any
    ) -> Any:
        method = environ["REQUEST_METHOD"]
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").lower() == "infinity":
            # RFC 4918 §9.1: a server may refuse Depth: infinity; walking a whole tree in
            # one request is a denial of service waiting to happen.
            raise DAVError(
                HTTP_FORBIDDEN,
                "PROPFIND with Depth: infinity is not supported; use Depth: 1.",
                err_condition=PRECONDITION_CODE_PropfindFiniteDepth,
            )
        if method == "PROPFIND":
            answered = self._propfind(environ, start_response)
            if answered is not None:
                return answered
        if self.apple_files == "refuse" and method in ("PUT", "MKCOL", "COPY", "MOVE", "LOCK"):
            names = [environ.get("PATH_INFO", "")]
            if method in ("COPY", "MOVE"):
                names.append(unquote(environ.get("HTTP_DESTINATION", "")))
            if any(is_apple_metadata(n.rstrip("/").rsplit("/", 1)[-1]) for n in names):
                raise DAVError(
                    HTTP_FORBIDDEN,
                    "macOS metadata files (._*, .DS_Store) are refused by this server "
                    "(dav_apple_files = refuse).",
                )
        return default(environ, start_response)

    def _propfind(self, environ: dict[str, Any], start_response: Any) -> list[bytes] | None:
        """The native PROPFIND (see propfind.py); None hands the request to WsgiDAV."""
        if "HTTP_IF" in environ:
            return None
        body = propfind.read_body(environ)
        request = propfind.parse_request(body) if body is not None else None
        if request is None:
            return None
        mode, names = request
        path = environ.get("PATH_INFO") or "/"
        p = principal_of(environ)
        try:
            rp = parse_path(path)
            target = self.files.stat(p, rp)
        except AllsetError:
            return None  # WsgiDAV answers 404 (or the matching error) its own way
        if rp.parts and self.apple_files == "refuse" and is_apple_metadata(rp.name):
            return None
        lm = self.lock_manager
        ref = quote("/" + "/".join(rp.parts))
        if lm is not None and lm.has_locks_near(ref):  # a SharedLockManager: one query
            return None  # lock discovery is WsgiDAV's (locks are rare and short-lived)
        members: list[Entry] = []
        if environ.get("HTTP_DEPTH") == "1" and target.kind == "dir":
            hide = self.apple_files != "allow"
            members = [e for e in self.list_all(p, rp) if not (hide and is_apple_metadata(e.name))]
        with as_dav_errors():
            if members:
                dead = self.files.folder_properties(p, target.id)
            else:
                dead = self.files.properties_of(p, [target.id])

        def quota() -> tuple[int, int]:
            with as_dav_errors():
                u = self.files.usage(p)
            return u.used, max(0, u.quota - u.used - u.inflight)

        writer = propfind.PropfindWriter(mode, names, SHA256_PROP, quota)
        base = "/" + "/".join(rp.parts)
        mount = self.mount_path or ""
        responses = [
            writer.response(
                target, propfind.href_of(mount, base, target.kind == "dir"), dead.get(target.id, {})
            )
        ]
        prefix = base.rstrip("/") + "/"
        for e in members:
            child = prefix + e.name
            responses.append(
                writer.response(
                    e, propfind.href_of(mount, child, e.kind == "dir"), dead.get(e.id, {})
                )
            )
        data = b"".join(propfind.multistatus(responses))
        start_response(
            "207 Multi-Status",
            [
                ("Content-Type", "application/xml; charset=utf-8"),
                ("Content-Length", str(len(data))),
            ],
        )
        return [data]

    def list_all(self, p: Principal, rp: RemotePath) -> list[Entry]:
        """A whole folder, page by page (bounded at ten million entries)."""
        entries: list[Entry] = []
        after = ""
        with as_dav_errors():
            for _ in range(10_000):
                _, page, after_next = self.files.list_dir(p, rp, after=after, limit=1000)
                entries.extend(page)
                if after_next is None:
                    break
                after = after_next
        return entries


class _Base:
    """What files and folders share: identity, dates, quota and our live properties."""

    provider: AllsetProvider
    environ: dict[str, Any]
    path: str
    remove_all_locks: Callable[..., None]  # WsgiDAV's DAVResource's (declared, not shadowed)
    get_preferred_path: Callable[[], str]  # likewise

    def _init(self, entry: Entry) -> None:
        self.entry = entry
        self.principal = principal_of(self.environ)
        self.files = self.provider.files
        self.rp = to_remote(self.path)

    def get_ref_url(self) -> str:
        """The key WsgiDAV keeps and checks locks under: the path as it is stored, NFC
        (core/paths.py), not as this request spelled it. macOS sends names decomposed
        (NFD), Windows composed: without this, a spreadsheet a Mac user has open as
        "Données.xlsx" would not be locked for a colleague saving "Données.xlsx" from
        Windows — the same file, overwritten under its editor. WsgiDAV's documented
        hook for several URLs naming one resource (``DAVResource.get_ref_url``)."""
        return quote(
            self.provider.share_path + unicodedata.normalize("NFC", self.get_preferred_path())
        )

    def get_creation_date(self) -> float:
        return self.entry.created_at.timestamp()

    def get_last_modified(self) -> float:
        return self.entry.mtime.timestamp()

    def get_display_name(self) -> str:
        return self.entry.name

    def _usage(self) -> tuple[int, int]:
        with as_dav_errors():
            u = self.files.usage(self.principal)
        return u.used, max(0, u.quota - u.used - u.inflight)

    def get_used_bytes(self) -> int:
        return self._usage()[0]

    def get_available_bytes(self) -> int:
        return self._usage()[1]

    def _live_names(self, names: list[str], is_allprop: bool) -> list[str]:
        if is_allprop:  # RFC 4331 §3: quota properties are not part of allprop
            names = [n for n in names if n not in QUOTA_PROPS]
        return names

    def delete(self) -> None:
        with as_dav_errors():
            self.files.delete(self.principal, self.rp, locks=DAV_CHECKED)
        # RFC 4918 §9.6.1: a DELETE destroys the locks rooted at and below the resource
        # (they are kept in the database, so they would otherwise outlive it until their
        # timeout and refuse a new file of that name).
        self.remove_all_locks(recursive=True)

    def support_recursive_delete(self) -> bool:
        return True

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> None:
        # WsgiDAV has already put an existing destination aside when Overwrite: T.
        with as_dav_errors():
            self.files.move(self.principal, self.rp, to_remote(dest_path), locks=DAV_CHECKED)
        self.remove_all_locks(recursive=True)  # RFC 4918 §9.9: locks do not move along

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """WsgiDAV copies a tree one resource at a time, parents first: a folder is created
        without its members (or kept if it exists: RFC 4918 §9.8.4 merges into it after
        WsgiDAV removed what the source lacks), a file replaces the destination (the
        replaced file goes to the trash, never destroyed)."""
        dest = to_remote(dest_path)
        with as_dav_errors():
            if is_move:
                self.files.move(self.principal, self.rp, dest, locks=DAV_CHECKED)
                self.remove_all_locks(recursive=True)
                return
            if self.entry.kind == "dir":
                try:
                    if self.files.stat(self.principal, dest).kind == "dir":
                        return
                except NotFound:
                    pass
            self.files.copy(
                self.principal, self.rp, dest, overwrite=True, recursive=False, locks=DAV_CHECKED
            )


class Folder(_Base, DAVCollection):  # type: ignore[misc]
    def __init__(
        self, path: str, environ: dict[str, Any], entry: Entry, provider: AllsetProvider
    ) -> None:
        DAVCollection.__init__(self, path, environ)
        self.provider = provider
        self._init(entry)
        self._members: dict[str, Entry] | None = None

    def _listing(self) -> dict[str, Entry]:
        if self._members is None:
            hide = self.provider.apple_files != "allow"
            self._members = {
                e.name: e
                for e in self.provider.list_all(self.principal, self.rp)
                if not (hide and is_apple_metadata(e.name))
            }
        return self._members

    def get_member_names(self) -> list[str]:
        return list(self._listing())

    def get_member(self, name: str) -> Any:
        entry = self._listing().get(name)
        if entry is None:
            return self.provider.get_resource_inst(self._child_path(name), self.environ)
        return self.provider.resource(self._child_path(name), self.environ, entry)

    def get_member_list(self) -> list[Any]:
        return [
            self.provider.resource(self._child_path(n), self.environ, e)
            for n, e in self._listing().items()
        ]

    def _child_path(self, name: str) -> str:
        return self.path.rstrip("/") + "/" + name

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        return self._live_names(list(super().get_property_names(is_allprop=is_allprop)), is_allprop)

    def create_empty_resource(self, name: str) -> Any:
        path = self._child_path(name)
        if self.environ["REQUEST_METHOD"] == "PUT":
            if "HTTP_IF_MATCH" in self.environ:  # RFC 9110 §13.1.1: nothing to match
                raise DAVError(HTTP_PRECONDITION_FAILED, "There is no file at this path.")
            return PendingFile(path, self.environ, self.provider)
        # LOCK on an unmapped URL creates an empty file (RFC 4918 §7.3).
        with as_dav_errors():
            entry, _ = store_bytes(
                self.files, self.principal, to_remote(path), b"", locks=DAV_CHECKED
            )
        return File(path, self.environ, entry, self.provider)

    def create_collection(self, name: str) -> Any:
        path = self._child_path(name)
        with as_dav_errors():
            entry = self.files.mkdir(self.principal, to_remote(path), locks=DAV_CHECKED)
        return Folder(path, self.environ, entry, self.provider)


class File(_Base, DAVNonCollection):  # type: ignore[misc]
    def __init__(
        self, path: str, environ: dict[str, Any], entry: Entry, provider: AllsetProvider
    ) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.provider = provider
        self._init(entry)
        self._upload: Upload | None = None

    def get_content_length(self) -> int:
        return self.entry.size

    def get_content_type(self) -> str:
        return mimetypes.guess_type(self.entry.name)[0] or "application/octet-stream"

    def get_etag(self) -> str:
        return self.entry.version

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> ChunkReader:
        with as_dav_errors():
            # The version the headers were computed from, even if a new one lands meanwhile.
            readable = self.files.open_read(self.principal, self.rp, self.entry.version)
        return ChunkReader(self.files, readable)

    def finalize_headers(self, environ: dict[str, Any], headers: list[tuple[str, str]]) -> None:
        headers.append(("Repr-Digest", repr_digest(self.entry.sha256)))
        headers.append(("X-Allset-Version", self.entry.version))
        # A user's HTML or SVG must never run script in the service's origin.
        headers.append(("Content-Security-Policy", "sandbox; default-src 'none'"))

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names = list(super().get_property_names(is_allprop=is_allprop))
        return [*self._live_names(names, is_allprop), SHA256_PROP]

    def get_property_value(self, name: str) -> Any:
        if name == SHA256_PROP:
            return self.entry.sha256
        if name == "{DAV:}getetag":  # RFC 4918 §15.6: an entity-tag, quotes included
            return self.entry.etag
        return super().get_property_value(name)

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> Any:
        if name == SHA256_PROP:
            raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_ProtectedProperty)
        return super().set_property_value(name, value, dry_run=dry_run)

    # ---- writing ---------------------------------------------------------------------
    def begin_write(self, *, content_type: str | None = None) -> Writer:
        env = self.environ
        length = env.get("CONTENT_LENGTH") or env.get("HTTP_X_EXPECTED_ENTITY_LENGTH")
        try:
            expected = int(length) if length else None
        except ValueError as exc:
            raise DAVError(HTTP_BAD_REQUEST, "Content-Length is not a number.") from exc
        with as_dav_errors():
            self._upload = begin_upload(
                self.files, self.principal, self.rp, expected_size=expected, locks=DAV_CHECKED
            )
        return Writer(self._upload)

    def end_write(self, *, with_errors: bool) -> None:
        upload, self._upload = self._upload, None
        if upload is None:
            return
        if with_errors:
            upload.abort()
            return
        with as_dav_errors():
            self.entry, _ = upload.commit()
        scope = self.environ.get("asgi.scope")
        if isinstance(scope, dict):  # the ASGI front adds it to the response (proof)
            scope["allset.repr_digest"] = repr_digest(self.entry.sha256)


class PendingFile(File):
    """A file being created by PUT: nothing in the database until ``end_write`` commits."""

    def __init__(self, path: str, environ: dict[str, Any], provider: AllsetProvider) -> None:
        DAVNonCollection.__init__(self, path, environ)
        self.provider = provider
        self.principal = principal_of(environ)
        self.files = provider.files
        self.rp = to_remote(path)
        self._upload = None
        self.entry = None  # type: ignore[assignment]

    def get_content_length(self) -> int:
        return self.entry.size if self.entry else 0

    def get_etag(self) -> str:
        return self.entry.version if self.entry else ""

    def support_etag(self) -> bool:
        return self.entry is not None

    def get_creation_date(self) -> float:
        return self.entry.created_at.timestamp() if self.entry else 0.0

    def get_last_modified(self) -> float:
        return self.entry.mtime.timestamp() if self.entry else 0.0

    def get_display_name(self) -> str:
        return self.rp.name


class Writer:
    """The file object WsgiDAV writes a PUT body into."""

    def __init__(self, upload: Upload) -> None:
        self.upload = upload

    def write(self, data: bytes) -> None:
        with as_dav_errors():
            self.upload.write(data)

    def close(self) -> None:
        """Commit happens in ``end_write``, once WsgiDAV knows the body arrived whole."""


class ChunkReader:
    """A seekable, read-only file over a version's chunks; each chunk is verified as it is
    read and the next ones are fetched in parallel while this one is sent."""

    def __init__(self, files: FileService, readable: Readable) -> None:
        self.files = files
        self.readable = readable
        self.size = readable.entry.size
        self.pos = 0
        self._ahead: collections.deque[tuple[int, concurrent.futures.Future[bytes]]] = (
            collections.deque()
        )
        self._current: tuple[int, bytes] | None = None  # (offset, data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 1:
            offset += self.pos
        elif whence == 2:
            offset += self.size
        self.pos = max(0, min(offset, self.size))
        self._ahead.clear()
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _fetch(self, index: int) -> concurrent.futures.Future[bytes]:
        ref = self.readable.chunks[index]
        return _READ_POOL.submit(self.files.read_piece, self.readable.tenant_id, ref, 0, ref.size)

    def _chunk_at(self, pos: int) -> tuple[int, bytes]:
        if self._current and self._current[0] <= pos < self._current[0] + len(self._current[1]):
            return self._current
        chunks = self.readable.chunks
        index = next(i for i, c in enumerate(chunks) if c.offset <= pos < c.offset + c.size)
        while self._ahead and self._ahead[0][0] < index:
            self._ahead.popleft()
        if not self._ahead or self._ahead[0][0] != index:
            self._ahead.clear()
            self._ahead.append((index, self._fetch(index)))
        last = self._ahead[-1][0]
        for j in range(last + 1, min(len(chunks), index + 1 + READ_AHEAD)):
            self._ahead.append((j, self._fetch(j)))
        _, job = self._ahead.popleft()
        with as_dav_errors():
            data = job.result()
        self._current = (chunks[index].offset, data)
        return self._current

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        start, data = self._chunk_at(self.pos)
        lo = self.pos - start
        hi = len(data) if n < 0 else min(len(data), lo + n)
        self.pos += hi - lo
        return data[lo:hi]

    def close(self) -> None:
        self._ahead.clear()
        self._current = None
