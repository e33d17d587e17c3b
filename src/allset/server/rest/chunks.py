"""The chunk protocol of our own client: send only the chunks the server lacks, then
commit a manifest; download a manifest, then only the chunks the client lacks.

The client cuts files with the same content-defined chunking as the server
(``blobstore.chunker``: FastCDC 256 KiB / 1 MiB / 4 MiB), so an edit in the middle of a big
file changes one or two chunks, and an insertion near the start does not shift the rest.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from allset.core.errors import InvalidInput, TooLarge
from allset.core.paths import parse_path
from allset.core.principal import Principal
from allset.files.batch import (
    FRAME_HEADER,
    MAX_BATCH_BODY,
    FrameReader,
    fetch_groups,
    plan_fetch,
    put_chunks,
    read_frames,
)
from allset.files.upload import MAX_CHUNK, commit_manifest, missing_chunks, put_chunk
from allset.server.files_http import stored_answer
from allset.server.rest.deps import LOCKED, lock_proof, path_after, principal, runtime
from allset.server.transfer import repr_digest

router = APIRouter(tags=["chunks"])
Caller = Annotated[Principal, Depends(principal)]
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_LIST = 100_000  # chunks per request: a 100 GB file at the average chunk size


def _check_digests(values: list[str]) -> list[str]:
    if len(values) > MAX_LIST:
        raise ValueError(f"at most {MAX_LIST:,} chunks per request")
    for v in values:
        if not HEX64.match(v):
            raise ValueError(f"{v[:80]!r} is not a lowercase hex SHA-256")
    return values


class MissingBody(BaseModel):
    chunks: list[str] = Field(description="SHA-256 (hex) of each chunk, any order")

    @field_validator("chunks")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        return _check_digests(v)


class CommitBody(BaseModel):
    path: str = Field(description="Where the file goes, e.g. /Reports/q3.xlsx")
    sha256: str = Field(description="SHA-256 (hex) of the whole file: verified by the server")
    chunks: list[str] = Field(description="The file's chunks, in order")
    size: int | None = Field(None, ge=0, description="Total size, checked if given")
    base_version: str | None = Field(
        None, description="The version this change started from; 412 if no longer current"
    )
    mtime: datetime | None = Field(None, description="Modification time (ISO 8601)")
    if_absent: bool = Field(
        False,
        description="Refuse (412) if anything already exists at path: for a file the client "
        "believes it creates, so a concurrent creation is never overwritten",
    )
    parents: bool = Field(False, description="Create missing parent folders")

    @field_validator("chunks")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        return _check_digests(v)

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not HEX64.match(v):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return v


@router.post("/chunks/missing", summary="Which of these chunks the server lacks")
async def chunks_missing(request: Request, caller: Caller, body: MissingBody) -> JSONResponse:
    rt = runtime(request)
    missing = await run_in_threadpool(missing_chunks, rt.files, caller, body.chunks)
    return JSONResponse({"missing": missing})


def _digest_param(request: Request) -> str:
    digest = request.path_params["digest"]
    if not HEX64.match(digest):
        raise InvalidInput("A chunk is named by its SHA-256 in lowercase hex.")
    return str(digest)


@router.put("/chunks/{digest}", status_code=201, summary="Send one chunk (verified)")
async def chunk_put(request: Request, caller: Caller, digest: str) -> JSONResponse:
    rt = runtime(request)
    digest = _digest_param(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_CHUNK:
        raise InvalidInput(f"A chunk is at most {MAX_CHUNK:,} bytes.")
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > MAX_CHUNK:
            raise InvalidInput(f"A chunk is at most {MAX_CHUNK:,} bytes.")
    stored = await run_in_threadpool(put_chunk, rt.files, caller, digest, bytes(data))
    return JSONResponse(
        {"hash": digest, "size": len(data), "stored": stored},
        status_code=201,
        headers={"Repr-Digest": repr_digest(digest)},
    )


class FetchBody(BaseModel):
    chunks: list[str] = Field(
        description="SHA-256 (hex) of each chunk wanted, in the order of the answer's frames"
    )

    @field_validator("chunks")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        for d in v[:100_000]:
            if not HEX64.match(d):
                raise ValueError(f"{d[:80]!r} is not a lowercase hex SHA-256")
        return v


FRAMES_BODY: dict[str, object] = {
    "requestBody": {
        "required": True,
        "description": "Frames: 32-byte SHA-256, 4-byte big-endian length, that many bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
# Verified frames handed to the store at a time: enough to share fsyncs widely, little
# enough to bound memory per request.
FLUSH_BYTES = 8 * 1024 * 1024
FLUSH_FRAMES = 2000
FETCH_GROUP_BYTES = 4 * 1024 * 1024


@router.post(
    "/chunks/batch",
    summary="Send many chunks in one body of frames (each verified)",
    openapi_extra=FRAMES_BODY,
)
async def chunks_batch(request: Request, caller: Caller) -> JSONResponse:
    """Small chunks one request each cost more in HTTP and fsyncs than in bytes: a sync
    client sends hundreds per body. Each frame is checked against its digest (400 naming
    the first bad one; nothing of it is stored) and stored durably on every replica
    before the answer. ``stored`` counts chunks new to the server."""
    rt = runtime(request)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BATCH_BODY:
        raise TooLarge(
            f"A chunk batch is at most {MAX_BATCH_BODY:,} bytes; send several.",
            limit_bytes=MAX_BATCH_BODY,
        )
    reader = FrameReader()
    pending: list[tuple[bytes, memoryview]] = []
    pending_bytes = received = stored = 0
    async for piece in request.stream():
        for f in reader.feed(piece):
            pending.append(f)
            pending_bytes += len(f[1])
        if pending_bytes >= FLUSH_BYTES or len(pending) >= FLUSH_FRAMES:
            stored += await run_in_threadpool(put_chunks, rt.files, caller, pending)
            received += len(pending)
            pending, pending_bytes = [], 0
    reader.finish()
    if pending:
        stored += await run_in_threadpool(put_chunks, rt.files, caller, pending)
        received += len(pending)
    return JSONResponse({"received": received, "stored": stored})


@router.post(
    "/chunks/fetch",
    summary="Read many chunks this Client has, as one body of frames (each verified)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def chunks_fetch(request: Request, caller: Caller, body: FetchBody) -> Response:
    """Frames in request order (32-byte SHA-256, 4-byte big-endian length, bytes). Every
    chunk is checked to be this Client's before the first byte is sent (404 otherwise),
    and verified as it is read; the answer streams, one group read ahead."""
    rt = runtime(request)
    digests = body.chunks
    sizes = await run_in_threadpool(plan_fetch, rt.files, caller, digests)
    groups = list(fetch_groups(digests, sizes, FETCH_GROUP_BYTES))

    def read(group: list[str]) -> asyncio.Future[bytes]:
        return asyncio.ensure_future(run_in_threadpool(read_frames, rt.files, caller, group))

    # The first group is read before the status line: an unreadable start is a clean error.
    first = await run_in_threadpool(read_frames, rt.files, caller, groups[0]) if groups else b""

    async def frames() -> AsyncIterator[bytes]:
        ahead = read(groups[1]) if len(groups) > 1 else None
        try:
            yield first
            for k in range(1, len(groups)):
                assert ahead is not None
                data = await ahead
                ahead = read(groups[k + 1]) if k + 1 < len(groups) else None
                yield data
        finally:  # the client went away: do not leave a read nobody awaits
            if ahead is not None and not ahead.done():
                ahead.cancel()

    total = sum(sizes) + FRAME_HEADER * len(sizes)
    return StreamingResponse(
        frames(),
        media_type="application/octet-stream",
        headers={"Content-Length": str(total), "Cache-Control": "private, no-store"},
    )


@router.get("/chunks/{digest}", summary="Read one chunk of a file this Client has")
async def chunk_get(request: Request, caller: Caller, digest: str) -> Response:
    rt = runtime(request)
    digest = _digest_param(request)

    data = await run_in_threadpool(rt.files.read_chunk, caller, digest)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Repr-Digest": repr_digest(digest), "Cache-Control": "private, immutable"},
    )


@router.post(
    "/commit", status_code=201, summary="Make a file version from its chunks", responses=LOCKED
)
async def commit(request: Request, caller: Caller, body: CommitBody) -> JSONResponse:
    """Every chunk is read back and verified and the whole is hashed: the version exists
    only if it is the announced ``sha256``. Answers like a PUT, with ``Repr-Digest``."""
    rt = runtime(request)
    locks = lock_proof(request)
    entry, created = await run_in_threadpool(
        lambda: commit_manifest(
            rt.files,
            caller,
            parse_path(body.path),
            body.chunks,
            body.sha256,
            size=body.size,
            base_version=body.base_version,
            mtime=body.mtime,
            if_absent=body.if_absent,
            parents=body.parents,
            locks=locks,
        )
    )
    return stored_answer(entry, created)


@router.get("/manifest/{path:path}", summary="A file's chunks, to fetch only those you lack")
async def manifest(request: Request, caller: Caller, version: str | None = None) -> JSONResponse:
    rt = runtime(request)
    path = path_after(request, "/api/v1/manifest")
    readable = await run_in_threadpool(rt.files.open_read, caller, path, version)
    e = readable.entry
    return JSONResponse(
        {
            "path": e.path,
            "size": e.size,
            "sha256": e.sha256,
            "version": e.version,
            "chunks": [
                {"hash": c.digest, "offset": c.offset, "size": c.size} for c in readable.chunks
            ],
        },
        headers={"ETag": e.etag, "Repr-Digest": repr_digest(e.sha256)},
    )
