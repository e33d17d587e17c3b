"""Metadata, listing, folders, move/copy, versions and trash."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from allset.core.paths import parse_path
from allset.core.principal import Principal
from allset.files.maintenance import purge_trash
from allset.server.rest.deps import LOCKED, lock_proof, path_after, principal, runtime

router = APIRouter(tags=["tree"])
Caller = Annotated[Principal, Depends(principal)]


class PathBody(BaseModel):
    path: str = Field(description="Absolute path in the Client's space, e.g. /Reports/2026")
    parents: bool = Field(False, description="Create missing parent folders too")


class TransferBody(BaseModel):
    source: str = Field(alias="from")
    destination: str = Field(alias="to")
    overwrite: bool = Field(
        False, description="Replace an existing destination (it goes to the trash)"
    )


class RestoreBody(BaseModel):
    version: str


@router.get(
    "/tree/{path:path}", summary="Metadata of a file or folder; a folder lists entries, paged"
)
async def get_tree(
    request: Request,
    caller: Caller,
    after: Annotated[str, Query(description="Cursor: the `next` value of the previous page")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> JSONResponse:
    rt = runtime(request)
    path = path_after(request, "/api/v1/tree")
    entry, entries, nxt = await run_in_threadpool(rt.files.list_dir, caller, path, after, limit)
    body: dict[str, Any] = entry.to_json()
    if entry.kind == "dir":
        body["entries"] = [e.to_json() for e in entries]
        body["next"] = nxt
    return JSONResponse(body, headers={"ETag": entry.etag})


@router.post("/mkdir", status_code=201, summary="Create a folder", responses=LOCKED)
async def mkdir(request: Request, caller: Caller, body: PathBody) -> JSONResponse:
    rt = runtime(request)
    entry = await run_in_threadpool(
        functools.partial(
            rt.files.mkdir, caller, parse_path(body.path), body.parents, locks=lock_proof(request)
        )
    )
    return JSONResponse(entry.to_json(), status_code=201)


@router.post("/move", summary="Move or rename a file or folder", responses=LOCKED)
async def move(request: Request, caller: Caller, body: TransferBody) -> JSONResponse:
    """423 if a live WebDAV lock covers the source (or is below it) or the destination."""
    rt = runtime(request)
    entry, replaced = await run_in_threadpool(
        functools.partial(
            rt.files.move,
            caller,
            parse_path(body.source),
            parse_path(body.destination),
            body.overwrite,
            locks=lock_proof(request),
        )
    )
    return JSONResponse({**entry.to_json(), "replaced": replaced})


@router.post(
    "/copy",
    status_code=201,
    summary="Copy a file or folder (no bytes are duplicated)",
    responses=LOCKED,
)
async def copy(request: Request, caller: Caller, body: TransferBody) -> JSONResponse:
    """423 if a live WebDAV lock covers the destination (reading the source is free)."""
    rt = runtime(request)
    entry, replaced = await run_in_threadpool(
        functools.partial(
            rt.files.copy,
            caller,
            parse_path(body.source),
            parse_path(body.destination),
            body.overwrite,
            locks=lock_proof(request),
        )
    )
    return JSONResponse({**entry.to_json(), "replaced": replaced}, status_code=201)


@router.get("/versions/{path:path}", summary="Versions of a file, newest first")
async def versions(request: Request, caller: Caller) -> JSONResponse:
    rt = runtime(request)
    path = path_after(request, "/api/v1/versions")
    return JSONResponse({"versions": await run_in_threadpool(rt.files.versions, caller, path)})


@router.post(
    "/versions/{path:path}",
    summary="Restore a version (creates a new current version)",
    responses=LOCKED,
)
async def restore_version(request: Request, caller: Caller, body: RestoreBody) -> JSONResponse:
    rt = runtime(request)
    path = path_after(request, "/api/v1/versions")
    entry = await run_in_threadpool(
        functools.partial(
            rt.files.restore_version, caller, path, body.version, locks=lock_proof(request)
        )
    )
    return JSONResponse(entry.to_json())


@router.get("/trash", summary="Items in the trash, with when they will be purged")
async def trash(request: Request, caller: Caller) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse({"items": await run_in_threadpool(rt.files.trash_list, caller)})


@router.post(
    "/trash/{item_id}/restore", summary="Put a trashed item back where it was", responses=LOCKED
)
async def trash_restore(request: Request, caller: Caller, item_id: str) -> JSONResponse:
    rt = runtime(request)
    entry = await run_in_threadpool(
        functools.partial(rt.files.trash_restore, caller, item_id, locks=lock_proof(request))
    )
    return JSONResponse(entry.to_json())


@router.delete("/trash/{item_id}", status_code=204, summary="Destroy one trashed item now")
async def trash_purge_one(request: Request, caller: Caller, item_id: str) -> Response:
    rt = runtime(request)
    await run_in_threadpool(purge_trash, rt.files, caller, item_id)
    return Response(status_code=204)


@router.delete("/trash", status_code=204, summary="Empty the trash")
async def trash_empty(request: Request, caller: Caller) -> Response:
    rt = runtime(request)
    await run_in_threadpool(purge_trash, rt.files, caller, None)
    return Response(status_code=204)
