"""Shared request plumbing for the REST routers."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request

from allset.core.paths import RemotePath, decode_utf8, parse_path
from allset.core.principal import Principal
from allset.files.locks import LockProof, proof_from_if
from allset.runtime import Runtime
from allset.server.auth import authenticate


def runtime(request: Request) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


async def principal(request: Request) -> Principal:
    return await authenticate(request, runtime(request).accounts, cookie=True)


def lock_proof(request: Request) -> LockProof:
    """The WebDAV lock tokens the request presents in its ``If`` header (RFC 4918
    §10.4): a lock's holder passes its own lock that way (files/locks.py)."""
    return proof_from_if(request.headers.get("if"))


LOCKED: dict[int | str, dict[str, Any]] = {
    423: {
        "description": "A live WebDAV lock covers the path (someone has the document open "
        "in an editor): nothing was done. RFC 9457 problem+json with `path`, `lock_path`, "
        "`lock_owner` (what the holder's editor wrote), `lock_user` (to owners, admins and "
        "the holder), `lock_expires_at` and `lock_id`. Close the document or wait; an "
        "owner or admin can break the lock (`DELETE /api/v1/locks/{lock_id}`). The "
        "holder passes its own lock by sending its token: `If: (<opaquelocktoken:…>)`.",
        "content": {"application/problem+json": {"schema": {"type": "object"}}},
    }
}
"""The 423 answer, for the OpenAPI ``responses`` of every route that writes."""


def path_after(request: Request, marker: str) -> RemotePath:
    """The remote path after ``marker`` in the *raw* URL, decoded as strict UTF-8.

    The raw path is used because the ASGI server's decoded path has already replaced
    invalid UTF-8, which must instead be refused with a clear message.
    """
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    raw = raw.split(b"?", 1)[0]
    idx = raw.find(marker.encode())
    tail = raw[idx + len(marker) :] if idx >= 0 else b""
    return parse_path(decode_utf8(unquote_to_bytes(tail)))


class AnyPathConvertor(PathConvertor):
    """Like Starlette's ``path`` but across line feeds too: a name may hold any character
    except NUL and '/', and a file that can be created must be reachable by every route.
    Registered under the name ``path`` so that mounts and routes all use it."""

    regex = "(?s:.*)"


register_url_convertor("path", AnyPathConvertor())
