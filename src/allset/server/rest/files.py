"""File content: PUT (streaming upload), GET/HEAD (ranges, conditionals), DELETE (trash),
and a folder as a zip (GET /zip)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from allset.core.errors import Conflict
from allset.core.principal import Principal
from allset.server.files_http import receive_file, send_file, stored_answer
from allset.server.rest.deps import LOCKED, lock_proof, path_after, principal, runtime
from allset.server.zipstream import zip_folder, zip_headers

router = APIRouter(tags=["files"])
PREFIX = "/api/v1/files"
Caller = Annotated[Principal, Depends(principal)]

_BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


# Two routes, not one api_route(methods=[GET, HEAD]): OpenAPI needs one operationId each.
@router.head("/files/{path:path}", summary="A file's headers, as GET without the body")
@router.get("/files/{path:path}", summary="Download a file")
async def get_file(request: Request, caller: Caller, version: str | None = None) -> Response:
    """Range, ETag, If-None-Match/If-Modified-Since (304), If-Match (412), If-Range.
    ``?version=ID`` reads an older version. Every chunk is verified as it is read."""
    rt = runtime(request)
    return await send_file(request, rt.files, caller, path_after(request, PREFIX), version)


@router.put(
    "/files/{path:path}",
    status_code=201,
    summary="Upload a file",
    openapi_extra=_BINARY_BODY,
    responses=LOCKED,
)
async def put_file(request: Request, caller: Caller) -> Response:
    """Streams the body (any size, constant memory). Conditional with If-Match /
    If-None-Match: *; optional Repr-Digest/Content-Digest sha-256 is verified; the
    modification time comes from X-Allset-Mtime (epoch seconds or ISO 8601).
    Answers 201 with size, sha256 and version, and the stored digest in Repr-Digest.
    423 if a live WebDAV lock covers the path (its holder passes with ``If``)."""
    rt = runtime(request)
    entry, created = await receive_file(request, rt.files, caller, path_after(request, PREFIX))
    return stored_answer(entry, created)


@router.delete(
    "/files/{path:path}",
    status_code=204,
    summary="Move a file or folder to the trash",
    responses=LOCKED,
)
async def delete_file(request: Request, caller: Caller) -> Response:
    """423 if a live WebDAV lock covers the path, or for a folder any lock below it."""
    rt = runtime(request)
    path = path_after(request, PREFIX)
    await run_in_threadpool(
        functools.partial(
            rt.files.delete,
            caller,
            path,
            request.headers.get("if-match"),
            locks=lock_proof(request),
        )
    )
    return Response(status_code=204)


async def content(request: Request) -> Response:
    """GET, HEAD, PUT and DELETE of ``/api/v1/files/{path}`` as a plain Starlette route,
    placed ahead of the FastAPI app (``server.app``): the same functions as the routes
    above, without FastAPI's per-request routing and dependency solving, which were a
    sixth of the server's Python time on small uploads (~0.3 ms a request, measured with
    py-spy under ``bench/server_bench.py``). These four carry every client's bytes; the
    FastAPI routes above still document them in the OpenAPI schema, and any other method
    on these URLs still reaches FastAPI (405, as before)."""
    caller = await principal(request)
    if request.method == "PUT":
        return await put_file(request, caller)
    if request.method == "DELETE":
        return await delete_file(request, caller)
    return await get_file(request, caller, request.query_params.get("version"))


CONTENT_METHODS = ["GET", "HEAD", "PUT", "DELETE"]


@router.get(
    "/zip/{path:path}",
    summary="Download a folder (and everything in it) as a zip",
    response_class=StreamingResponse,
)
async def get_zip(request: Request, caller: Caller) -> Response:
    """Streamed as it is read, in constant memory, files stored (not recompressed); a
    member's zip holds only what they may read. 409 for a file (download it with
    /files instead)."""
    rt = runtime(request)
    path = path_after(request, "/api/v1/zip")
    entry = await run_in_threadpool(rt.files.stat, caller, path)
    if entry.kind != "dir":
        raise Conflict(f"{path} is a file; download it with /api/v1/files{path}.")
    top = entry.name or "files"
    return StreamingResponse(
        zip_folder(rt.files, caller, path, top),
        media_type="application/zip",
        headers=zip_headers(top),
    )
