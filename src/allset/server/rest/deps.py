"""Shared request plumbing for the REST routers."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request

from allset.core.paths import RemotePath, decode_utf8, parse_path
from allset.core.principal import Principal
from allset.runtime import Runtime
from allset.server.auth import authenticate


def runtime(request: Request) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


async def principal(request: Request) -> Principal:
    return await authenticate(request, runtime(request).accounts, cookie=True)


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
