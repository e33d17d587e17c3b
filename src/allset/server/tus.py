"""``/tus/``: tus 1.0.0 resumable uploads (core, creation, creation-with-upload, expiration,
checksum with sha1/sha256, termination, concatenation), over ``files.resumable``.

``Upload-Metadata`` keys: ``filename`` (the file's name) and ``path`` (the destination
folder, default the root). When the last byte is in, the file is committed into the tree
like a REST PUT (a new version if it exists) and the answer carries ``Repr-Digest`` with
the stored SHA-256 (proof of transfer). Errors are problem+json, as in ``/api/v1/``.
"""

from __future__ import annotations

import base64
import binascii
import functools
from email.utils import format_datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from allset.core.errors import (
    AllsetError,
    InvalidInput,
    PreconditionFailed,
    UnsupportedMediaType,
)
from allset.core.principal import Principal
from allset.files.resumable import CHECKSUMS, Appender, ResumableInfo, Resumables
from allset.runtime import Runtime
from allset.server.auth import authenticate
from allset.server.problem import from_error
from allset.server.transfer import pump_request, repr_digest

MOUNT = "/tus"
VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,expiration,checksum,termination,concatenation"
OFFSET_TYPE = "application/offset+octet-stream"


def parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64,key base64,key`` -> dict; values must be UTF-8."""
    meta: dict[str, str] = {}
    if not header:
        return meta
    for item in header.split(","):
        key, _, value = item.strip().partition(" ")
        if not key or " " in value.strip():
            raise InvalidInput("Upload-Metadata is 'key base64value' pairs separated by commas.")
        try:
            meta[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput(f"Upload-Metadata {key!r} is not base64 of UTF-8 text.") from exc
    return meta


def encode_metadata(meta: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    algo, _, value = header.strip().partition(" ")
    if algo not in CHECKSUMS:
        raise InvalidInput(
            f"Upload-Checksum algorithm {algo!r} is not supported; use sha1 or sha256."
        )
    try:
        return algo, base64.b64decode(value.strip(), validate=True)
    except binascii.Error as exc:
        raise InvalidInput("Upload-Checksum value is not base64.") from exc


def parse_int(request: Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer.")
    return int(raw)


def parse_concat(header: str | None) -> tuple[str, list[str]]:
    if not header:
        return "", []
    if header.strip() == "partial":
        return "partial", []
    kind, _, urls = header.partition(";")
    if kind.strip() != "final" or not urls.strip():
        raise InvalidInput("Upload-Concat is 'partial' or 'final;URL URL …'.")
    return "final", [u.rstrip("/").rsplit("/", 1)[-1] for u in urls.split()]


def info_headers(info: ResumableInfo) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(info.offset),
        "Upload-Expires": format_datetime(info.expires_at, usegmt=True),
        "Cache-Control": "no-store",
    }
    if info.done and info.result:
        headers["Repr-Digest"] = repr_digest(info.result["sha256"])
        headers["X-Allset-Version"] = info.result["version"]
        headers["X-Allset-Path"] = base64.b64encode(info.result["path"].encode()).decode()
    return headers


class TusFront:
    """The ASGI app mounted at ``/tus``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.uploads: Resumables = runtime.resumables
        self.router = Router(
            routes=[
                Route("/", self.options, methods=["OPTIONS"]),
                Route("/", self.create, methods=["POST"]),
                Route("/{upload_id}", self.options, methods=["OPTIONS"]),
                Route("/{upload_id}", self.head, methods=["HEAD", "GET"]),
                Route("/{upload_id}", self.patch, methods=["PATCH"]),
                Route("/{upload_id}", self.delete, methods=["DELETE"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tus_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [
                    *msg.get("headers", []),
                    (b"tus-resumable", VERSION.encode()),
                ]
            await send(msg)

        try:
            if scope["type"] == "http" and scope["method"] != "OPTIONS":
                version = dict(scope["headers"]).get(b"tus-resumable", b"").decode()
                if version != VERSION:
                    raise PreconditionFailed(
                        f"Send Tus-Resumable: {VERSION} (this server speaks tus {VERSION}).",
                        tus_version=VERSION,
                    )
            # Errors are rendered here (with Upload-Offset), not by the app's handlers,
            # which Starlette would otherwise apply inside the router.
            handlers = scope.pop("starlette.exception_handlers", None)
            try:
                await self.router(scope, receive, tus_send)
            finally:
                if handlers is not None:
                    scope["starlette.exception_handlers"] = handlers
        except AllsetError as exc:
            resp = from_error(exc)
            if isinstance(exc, PreconditionFailed) and "tus_version" in exc.extra:
                resp.headers["Tus-Version"] = VERSION
            offset = exc.extra.get("upload_offset")
            if offset is not None:
                resp.headers["Upload-Offset"] = str(offset)
            await resp(scope, receive, tus_send)

    async def _principal(self, request: Request) -> Principal:
        return await authenticate(request, self.runtime.accounts, cookie=True)

    async def options(self, request: Request) -> Response:
        return Response(
            status_code=204,
            headers={
                "Tus-Version": VERSION,
                "Tus-Extension": EXTENSIONS,
                "Tus-Max-Size": str(self.uploads.max_size),
                "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            },
        )

    async def create(self, request: Request) -> Response:
        p = await self._principal(request)
        if request.headers.get("upload-defer-length"):
            raise InvalidInput("Upload-Defer-Length is not supported; send Upload-Length.")
        concat, parts = parse_concat(request.headers.get("upload-concat"))
        info = await run_in_threadpool(
            functools.partial(
                self.uploads.create,
                p,
                parse_int(request, "upload-length"),
                parse_metadata(request.headers.get("upload-metadata")),
                concat,
                parts,
            )
        )
        if concat == "final":
            info = await run_in_threadpool(self.uploads.commit, p, info.id)
        elif request.headers.get("content-type") == OFFSET_TYPE:  # creation-with-upload
            info = await self._append(request, p, info.id, 0)
        else:
            info = await self._commit_if_complete(p, info)  # an empty file is complete
        location = str(request.url.replace(path=f"{request.scope.get('root_path', '')}/{info.id}"))
        headers = info_headers(info)
        headers["Location"] = location
        return Response(status_code=201, headers=headers)

    async def head(self, request: Request) -> Response:
        p = await self._principal(request)
        info = await run_in_threadpool(self.uploads.status, p, request.path_params["upload_id"])
        headers = info_headers(info)
        headers["Upload-Length"] = str(info.length)
        if info.meta:
            headers["Upload-Metadata"] = encode_metadata(info.meta)
        if info.concat == "partial":
            headers["Upload-Concat"] = "partial"
        elif info.concat == "final":
            headers["Upload-Concat"] = "final;" + " ".join(
                f"{request.scope.get('root_path', '')}/{pid}" for pid in info.parts
            )
        return Response(status_code=200, headers=headers)

    async def patch(self, request: Request) -> Response:
        p = await self._principal(request)
        if request.headers.get("content-type") != OFFSET_TYPE:
            raise UnsupportedMediaType(f"PATCH bodies must be sent as Content-Type: {OFFSET_TYPE}.")
        offset = parse_int(request, "upload-offset")
        if offset is None:
            raise InvalidInput("PATCH needs Upload-Offset: where these bytes start.")
        info = await self._append(request, p, request.path_params["upload_id"], offset)
        return Response(status_code=204, headers=info_headers(info))

    async def _append(
        self, request: Request, p: Principal, upload_id: str, offset: int
    ) -> ResumableInfo:
        current = await run_in_threadpool(self.uploads.status, p, upload_id)
        if current.offset == current.length and offset == current.length:
            # Nothing left to send (a retry after a failed commit, or an empty file).
            return await self._commit_if_complete(p, current)
        appender: Appender = await run_in_threadpool(
            self.uploads.open_append,
            p,
            upload_id,
            offset,
            parse_checksum(request.headers.get("upload-checksum")),
        )
        try:
            await pump_request(request, appender)
        except BaseException:
            # The client went away (or the body was refused): keep what arrived, durably.
            # Called directly, not in a thread: a cancelled task cannot await any more.
            appender.interrupted()
            raise
        info = await run_in_threadpool(appender.finish)
        return await self._commit_if_complete(p, info)

    async def _commit_if_complete(self, p: Principal, info: ResumableInfo) -> ResumableInfo:
        if info.offset == info.length and info.concat == "" and not info.done:
            return await run_in_threadpool(self.uploads.commit, p, info.id)
        return info

    async def delete(self, request: Request) -> Response:
        p = await self._principal(request)
        await run_in_threadpool(self.uploads.terminate, p, request.path_params["upload_id"])
        return Response(status_code=204)


__all__ = ["MOUNT", "TusFront"]
