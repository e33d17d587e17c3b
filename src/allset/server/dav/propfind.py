"""PROPFIND (Depth 0 and 1) answered natively, in one pass over one listing.

Why not WsgiDAV's own: it builds an element tree per property and asks the provider and
the property manager resource by resource. For a folder of 10,000 entries that was
24 s with our database-backed resources (one dead-property query and one quota query per
entry) and 1.6 s even for its own filesystem provider; the goal is 0.25 s. Here the
listing is one paged query, the dead properties one query per 500 entries, the quota
one query, and the XML is written as text.

Only the common, well-understood requests are answered here; anything else (a body we
do not fully understand, an ``If`` header, a target that does not exist, a locked
resource's lock discovery) goes to WsgiDAV unchanged, so behaviour stays identical to
the conformance-tested path.
"""

from __future__ import annotations

import functools
import io
import mimetypes
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from defusedxml.ElementTree import ParseError, fromstring

from allset.core.errors import AllsetError
from allset.files.entries import Entry

DAV = "{DAV:}"
MAX_BODY = 1 << 20
_SUPPORTEDLOCK = (
    "<D:supportedlock>"
    + "".join(
        f"<D:lockentry><D:lockscope><D:{scope}/></D:lockscope>"
        "<D:locktype><D:write/></D:locktype></D:lockentry>"
        for scope in ("exclusive", "shared")
    )
    + "</D:supportedlock>"
)
_OK = "<D:status>HTTP/1.1 200 OK</D:status>"
_MISSING = "<D:status>HTTP/1.1 404 Not Found</D:status>"


def read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body (at most 1 MiB), put back for WsgiDAV in case we hand over."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length > MAX_BODY:
        return None
    stream = environ["wsgi.input"]
    if length:
        body: bytes = stream.read(length)
    elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        body = stream.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return None
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return body


def parse_request(body: bytes) -> tuple[str, list[str]] | None:
    """('allprop' | 'propname' | 'prop', names) or None when we leave it to WsgiDAV."""
    if not body.strip():
        return "allprop", []
    try:
        root = fromstring(body)
    except (ParseError, ValueError):
        return None
    if root.tag != DAV + "propfind" or len(root) != 1:
        return None  # includes allprop + <include>: rare, WsgiDAV handles it
    child = root[0]
    if child.tag == DAV + "allprop":
        return "allprop", []
    if child.tag == DAV + "propname":
        return "propname", []
    if child.tag == DAV + "prop":
        return "prop", [e.tag for e in child if isinstance(e.tag, str)]
    return None


@functools.lru_cache(maxsize=4096)
def _iso(secs: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


@functools.lru_cache(maxsize=4096)
def _http_date(secs: int) -> str:
    return formatdate(secs, usegmt=True)


@functools.lru_cache(maxsize=1024)
def _content_type_of(ext: str) -> str:
    ctype = mimetypes.guess_type("x" + ext)[0] or "application/octet-stream"
    return f"<D:getcontenttype>{escape(ctype)}</D:getcontenttype>"


def _content_type(name: str) -> str:
    dot = name.rfind(".")
    return _content_type_of(name[dot:].lower() if dot > 0 else "")


def _empty_element(name: str) -> str:
    """``{ns}local`` as an empty element, declaring its namespace when not DAV:."""
    if name.startswith(DAV):
        return f"<D:{name[len(DAV) :]}/>"
    ns, _, local = name[1:].partition("}")
    return f'<X:{local} xmlns:X="{escape(ns, {chr(34): "&quot;"})}"/>'


def _element(name: str, text: str) -> str:
    if name.startswith(DAV):
        local = name[len(DAV) :]
        return f"<D:{local}>{escape(text)}</D:{local}>"
    ns, _, local = name[1:].partition("}")
    return f'<X:{local} xmlns:X="{escape(ns, {chr(34): "&quot;"})}">{escape(text)}</X:{local}>'


class PropfindWriter:
    """Renders one resource at a time; the caller supplies what is shared per request.
    Lock discovery is always empty here: requests that touch locked resources are left
    to WsgiDAV (see the module docstring)."""

    def __init__(
        self, mode: str, names: list[str], sha_prop: str, quota: Callable[[], tuple[int, int]]
    ) -> None:
        self.mode, self.names = mode, names
        self.sha_prop = sha_prop
        self._quota = quota
        self._quota_cache: tuple[int, int] | None = None
        opening = _element(sha_prop, "")
        self._sha_open = opening[: opening.index("></") + 1]
        self._sha_close = opening[opening.index("></") + 1 :]

    def quota(self) -> tuple[int, int]:
        if self._quota_cache is None:
            self._quota_cache = self._quota()
        return self._quota_cache

    def _allprop(self, e: Entry) -> str:
        """The common case, as one string (a folder of 10,000 entries is 10,000 calls)."""
        created = _iso(int(e.created_at.timestamp()))
        modified = _http_date(int(e.mtime.timestamp()))
        name = escape(e.name)
        if e.kind == "dir":
            return (
                "<D:resourcetype><D:collection/></D:resourcetype>"
                f"<D:creationdate>{created}</D:creationdate>"
                f"<D:getlastmodified>{modified}</D:getlastmodified>"
                f"<D:displayname>{name}</D:displayname><D:lockdiscovery/>{_SUPPORTEDLOCK}"
            )
        return (
            f"<D:resourcetype/><D:creationdate>{created}</D:creationdate>"
            f"<D:getcontentlength>{e.size}</D:getcontentlength>{_content_type(e.name)}"
            f"<D:getlastmodified>{modified}</D:getlastmodified>"
            f"<D:displayname>{name}</D:displayname><D:getetag>{escape(e.etag)}</D:getetag>"
            f"<D:lockdiscovery/>{_SUPPORTEDLOCK}{self._sha_open}{e.sha256}{self._sha_close}"
        )

    def _live(self, name: str, e: Entry) -> str | None:
        """One live property, or None if this resource has no such property."""
        is_dir = e.kind == "dir"
        local = name[len(DAV) :] if name.startswith(DAV) else ""
        if local == "resourcetype":
            return (
                "<D:resourcetype><D:collection/></D:resourcetype>"
                if is_dir
                else ("<D:resourcetype/>")
            )
        if local == "creationdate":
            return f"<D:creationdate>{_iso(int(e.created_at.timestamp()))}</D:creationdate>"
        if local == "getlastmodified":
            modified = _http_date(int(e.mtime.timestamp()))
            return f"<D:getlastmodified>{modified}</D:getlastmodified>"
        if local == "displayname":
            return f"<D:displayname>{escape(e.name)}</D:displayname>"
        if local == "lockdiscovery":
            return "<D:lockdiscovery/>"
        if local == "supportedlock":
            return _SUPPORTEDLOCK
        if local == "quota-used-bytes":
            return f"<D:quota-used-bytes>{self.quota()[0]}</D:quota-used-bytes>"
        if local == "quota-available-bytes":
            return f"<D:quota-available-bytes>{self.quota()[1]}</D:quota-available-bytes>"
        if is_dir:
            return None
        if local == "getcontentlength":
            return f"<D:getcontentlength>{e.size}</D:getcontentlength>"
        if local == "getcontenttype":
            return _content_type(e.name)
        if local == "getetag":
            return f"<D:getetag>{escape(e.etag)}</D:getetag>"
        if name == self.sha_prop:
            return self._sha_open + e.sha256 + self._sha_close
        return None

    def _names(self, e: Entry) -> list[str]:
        common = ["resourcetype", "creationdate", "getlastmodified", "displayname"]
        names = [DAV + n for n in common]
        if e.kind != "dir":
            names += [DAV + "getcontentlength", DAV + "getcontenttype", DAV + "getetag"]
            names.append(self.sha_prop)
        return [*names, DAV + "lockdiscovery", DAV + "supportedlock"]

    def response(self, e: Entry, href: str, dead: dict[str, bytes]) -> str:
        missing: list[str] = []
        if self.mode == "allprop":
            found = self._allprop(e) + "".join(v.decode() for v in dead.values())
        elif self.mode == "propname":
            found = "".join(_empty_element(n) for n in (*self._names(e), *dead))
        else:
            pieces: list[str] = []
            for name in self.names:
                value = self._live(name, e)
                if value is None and name in dead:
                    value = dead[name].decode()
                if value is None:
                    missing.append(_empty_element(name))
                else:
                    pieces.append(value)
            found = "".join(pieces)
        out = f"<D:response><D:href>{escape(href)}</D:href>"
        if found or not missing:
            out += f"<D:propstat><D:prop>{found}</D:prop>{_OK}</D:propstat>"
        if missing:
            out += f"<D:propstat><D:prop>{''.join(missing)}</D:prop>{_MISSING}</D:propstat>"
        return out + "</D:response>"


def href_of(mount: str, path: str, is_dir: bool) -> str:
    href = quote(mount + path, safe="/!$&'()*+,;=:@-._~")
    if is_dir and not href.endswith("/"):
        href += "/"
    return href


def multistatus(responses: Iterable[str]) -> Iterable[bytes]:
    yield b'<?xml version="1.0" encoding="utf-8" ?>\n<D:multistatus xmlns:D="DAV:">'
    batch: list[str] = []
    for r in responses:
        batch.append(r)
        if len(batch) >= 200:
            yield "".join(batch).encode()
            batch = []
    if batch:
        yield "".join(batch).encode()
    yield b"</D:multistatus>"


__all__ = ["AllsetError", "PropfindWriter", "href_of", "multistatus", "parse_request", "read_body"]
