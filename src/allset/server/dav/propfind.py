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
    """Renders one resource at a time; the caller supplies what is shared per request."""

    def __init__(
        self,
        mode: str,
        names: list[str],
        sha_prop: str,
        quota: Callable[[], tuple[int, int]],
        lockdiscovery: Callable[[str], str | None],
    ) -> None:
        self.mode, self.names = mode, names
        self.sha_prop = sha_prop
        self._quota = quota
        self._quota_cache: tuple[int, int] | None = None
        self.lockdiscovery = lockdiscovery
        opening = _element(sha_prop, "")
        self._sha_open = opening[: opening.index("></") + 1]
        self._sha_close = opening[opening.index("></") + 1 :]

    def quota(self) -> tuple[int, int]:
        if self._quota_cache is None:
            self._quota_cache = self._quota()
        return self._quota_cache

    def live(self, e: Entry) -> dict[str, str | None]:
        """Live properties as rendered XML fragments (lockdiscovery: filled in later)."""
        props: dict[str, str | None] = {}
        if e.kind == "dir":
            props[DAV + "resourcetype"] = "<D:resourcetype><D:collection/></D:resourcetype>"
        else:
            props[DAV + "resourcetype"] = "<D:resourcetype/>"
        props[DAV + "creationdate"] = (
            f"<D:creationdate>{_iso(int(e.created_at.timestamp()))}</D:creationdate>"
        )
        if e.kind != "dir":
            props[DAV + "getcontentlength"] = f"<D:getcontentlength>{e.size}</D:getcontentlength>"
            props[DAV + "getcontenttype"] = _content_type(e.name)
        props[DAV + "getlastmodified"] = (
            f"<D:getlastmodified>{_http_date(int(e.mtime.timestamp()))}</D:getlastmodified>"
        )
        props[DAV + "displayname"] = f"<D:displayname>{escape(e.name)}</D:displayname>"
        if e.kind != "dir":
            props[DAV + "getetag"] = f"<D:getetag>{escape(e.etag)}</D:getetag>"
        props[DAV + "lockdiscovery"] = None
        props[DAV + "supportedlock"] = _SUPPORTEDLOCK
        if e.kind != "dir":
            props[self.sha_prop] = self._sha_open + e.sha256 + self._sha_close
        return props

    def _value(self, name: str, live: dict[str, str | None], path: str) -> str:
        if name == DAV + "lockdiscovery":
            return self.lockdiscovery(path) or "<D:lockdiscovery/>"
        value = live[name]
        assert value is not None
        return value

    def response(self, e: Entry, href: str, path: str, dead: dict[str, bytes]) -> str:
        live = self.live(e)
        found: list[str] = []
        missing: list[str] = []
        if self.mode == "propname":
            found = [_empty_element(n) for n in (*live, *dead)]
        elif self.mode == "allprop":
            found = [self._value(n, live, path) for n in live]
            found += [v.decode() for v in dead.values()]
        else:
            for name in self.names:
                if name in live:
                    found.append(self._value(name, live, path))
                elif name in dead:
                    found.append(dead[name].decode())
                elif name == DAV + "quota-used-bytes":
                    found.append(f"<D:quota-used-bytes>{self.quota()[0]}</D:quota-used-bytes>")
                elif name == DAV + "quota-available-bytes":
                    avail = self.quota()[1]
                    found.append(f"<D:quota-available-bytes>{avail}</D:quota-available-bytes>")
                else:
                    missing.append(_empty_element(name))
        parts = [f"<D:response><D:href>{escape(href)}</D:href>"]
        if found or not missing:
            parts.append(f"<D:propstat><D:prop>{''.join(found)}</D:prop>{_OK}</D:propstat>")
        if missing:
            parts.append(f"<D:propstat><D:prop>{''.join(missing)}</D:prop>{_MISSING}</D:propstat>")
        parts.append("</D:response>")
        return "".join(parts)


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
