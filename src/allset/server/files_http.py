"""Sending and receiving file content over HTTP: one implementation for every adapter
that speaks plain HTTP semantics (the REST API, WebDAV's GET/HEAD/PUT).

GET/HEAD: Range, ETag, 304 (If-None-Match / If-Modified-Since), If-Match (412), If-Range,
``Repr-Digest``; every chunk verified as it is read, 3 chunks read ahead.
PUT: streamed in constant memory (small bodies in one thread hand-off), conditional with
If-Match / If-None-Match, the sender's digest verified, answered with the stored SHA-256.
"""

from __future__ import annotations

import functools
import mimetypes
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from allset.core.errors import InvalidInput, RangeNotSatisfiable
from allset.core.paths import RemotePath
from allset.core.principal import Principal
from allset.files.entries import Entry
from allset.files.locks import proof_from_if
from allset.files.service import FileService, check_etag
from allset.files.upload import begin_upload, store_bytes
from allset.server.transfer import (
    open_stream,
    parse_digest,
    parse_mtime,
    parse_range,
    pump_request,
    repr_digest,
)

SMALL_BODY = 256 * 1024  # read at once, stored in one thread hand-off (see store_bytes)
FILES = "/api/v1/files"


def stored_answer(entry: Entry, created: bool) -> JSONResponse:
    """The answer to any completed upload of the API (PUT, chunk commit): what was stored,
    with the stored SHA-256 as ``Repr-Digest`` — the proof of transfer (R-STORE-7)."""
    return JSONResponse(
        {
            "path": entry.path,
            "size": entry.size,
            "sha256": entry.sha256,
            "version": entry.version,
            "created": created,
            "mtime": entry.mtime.isoformat(),
        },
        status_code=201,
        headers={
            "ETag": entry.etag,
            "Repr-Digest": repr_digest(entry.sha256),
            "Location": FILES + quote(entry.path),
        },
    )


def file_headers(e: Entry) -> dict[str, str]:
    ctype = mimetypes.guess_type(e.name)[0] or "application/octet-stream"
    return {
        "ETag": e.etag,
        "Last-Modified": format_datetime(e.mtime, usegmt=True),
        "Repr-Digest": repr_digest(e.sha256),
        "Accept-Ranges": "bytes",
        "Content-Type": ctype,
        # Stored content is never rendered in our origin (user files may be HTML/SVG).
        "Content-Disposition": "attachment; filename*=UTF-8''" + quote(e.name, safe=""),
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Allset-Version": e.version,
        "X-Allset-Mtime": f"{e.mtime.timestamp():.6f}",
    }


def _not_modified(request: Request, e: Entry) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or e.etag in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        return since.tzinfo is not None and int(e.mtime.timestamp()) <= int(since.timestamp())
    return False


async def send_file(
    request: Request, files: FileService, caller: Principal, path: RemotePath, version: str | None
) -> Response:
    readable = await run_in_threadpool(files.open_read, caller, path, version)
    e = readable.entry
    headers = file_headers(e)
    if_match = request.headers.get("if-match")
    if if_match is not None:
        check_etag(e.etag, if_match, None)
    if _not_modified(request, e):
        return Response(status_code=304, headers={k: headers[k] for k in ("ETag", "Last-Modified")})
    rng = parse_range(request.headers.get("range"), e.size)
    if_range = request.headers.get("if-range")
    if rng is not None and if_range is not None and if_range.strip() != e.etag:
        rng = None
    status = 200
    start, end = 0, e.size
    if rng is not None:
        if rng == (-1, -1):
            raise RangeNotSatisfiable(
                f"The file has {e.size} bytes; the requested range starts beyond its end.",
                size=e.size,
            )
        start, end = rng
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{e.size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    body = await open_stream(
        functools.partial(files.read_piece, readable.tenant_id),
        files.plan_read(readable, start, end),
    )
    return StreamingResponse(body, status_code=status, headers=headers)


async def receive_file(
    request: Request, files: FileService, caller: Principal, path: RemotePath
) -> tuple[Entry, bool]:
    """Store the request body at ``path``; returns the entry and whether it is new."""
    length_header = request.headers.get("content-length")
    if length_header is None:  # macOS Finder announces the size of its chunked bodies
        length_header = request.headers.get("x-expected-entity-length")
    expected_size = None
    if length_header is not None:
        try:
            expected_size = int(length_header)
        except ValueError as exc:
            raise InvalidInput("Content-Length is not a number.") from exc
    expected_sha = parse_digest(
        request.headers.get("repr-digest") or request.headers.get("content-digest")
    )
    mtime = parse_mtime(request.headers.get("x-allset-mtime") or request.headers.get("x-oc-mtime"))
    options: dict[str, Any] = {
        "if_match": request.headers.get("if-match"),
        "if_none_match": request.headers.get("if-none-match"),
        "mtime": mtime,
        "expected_size": expected_size,
        "expected_sha256": expected_sha,
        # The lock tokens of the If header: a document's lock holder may write it.
        "locks": proof_from_if(request.headers.get("if")),
    }
    if expected_size is not None and expected_size <= SMALL_BODY:
        data = await request.body()
        return await run_in_threadpool(
            functools.partial(store_bytes, files, caller, path, data, **options)
        )
    upload = await run_in_threadpool(
        functools.partial(begin_upload, files, caller, path, **options)
    )
    try:
        await pump_request(request, upload)
        return await run_in_threadpool(upload.commit)
    except BaseException:
        await run_in_threadpool(upload.abort)
        raise
