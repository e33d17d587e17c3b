"""What a sync client needs besides the chunk protocol: the change feed (with
long-poll), a whole subtree in one answer, and many commits per request (R-SYNC-1).
Rendering only: the policy is in ``files.events``, ``files.snapshot``, ``files.batch``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from allset.core.principal import Principal
from allset.files.batch import MAX_COMMIT_ITEMS, CommitItem, commit_batch
from allset.files.events import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_WAIT_SECONDS,
    Feed,
    long_poll,
    read_changes,
)
from allset.files.snapshot import take_snapshot
from allset.server.problem import problem_body
from allset.server.rest.chunks import CommitBody
from allset.server.rest.deps import lock_proof, path_after, principal, runtime

router = APIRouter(tags=["sync"])
Caller = Annotated[Principal, Depends(principal)]


@router.get("/changes", summary="This Client's tree changes after a cursor (long-poll)")
async def changes(
    request: Request,
    caller: Caller,
    since: Annotated[
        int | None,
        Query(ge=0, description="The cursor of a previous answer; omitted: only the cursor"),
    ] = None,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="Seconds to hold the request if nothing new"),
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> JSONResponse:
    """``{"cursor", "changes": [{"id", "kind", "path", "source", "at"}], "more"}``, in
    id order. Store ``cursor`` and pass it as ``since`` next time: nothing is skipped."""
    rt = runtime(request)

    async def fetch() -> Feed:
        return await run_in_threadpool(read_changes, rt.files, caller, since, limit)

    if since is None or wait == 0:
        feed = await fetch()
    else:
        feed = await long_poll(
            rt.files.changes, caller.tenant_id, fetch, wait, request.is_disconnected
        )
    return JSONResponse(
        {
            "cursor": feed.cursor,
            "changes": [c.to_json() for c in feed.changes],
            "more": feed.more,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/snapshot/{path:path}", summary="A folder's whole live subtree, with its cursor")
async def snapshot(request: Request, caller: Caller) -> Response:
    """Every live descendant with paths relative to the folder, sorted, and the feed
    cursor read in the same transaction: follow ``/changes?since=cursor`` from there."""
    rt = runtime(request)
    path = path_after(request, "/api/v1/snapshot")
    snap = await run_in_threadpool(take_snapshot, rt.files, caller, path)
    if "application/x-ndjson" in request.headers.get("accept", ""):
        # One JSON object per line, the first with path and cursor: a client can store
        # 100,000 entries as they arrive instead of decoding one 20 MB document at once.
        def lines() -> Iterator[str]:
            yield json.dumps({"path": snap.path, "cursor": snap.cursor}) + "\n"
            for i in range(0, len(snap.entries), 1000):
                yield "".join(
                    json.dumps(e, ensure_ascii=False) + "\n" for e in snap.entries[i : i + 1000]
                )

        return StreamingResponse(
            lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"}
        )
    return JSONResponse(
        {"path": snap.path, "cursor": snap.cursor, "entries": snap.entries},
        headers={"Cache-Control": "no-store"},
    )


class BatchCommitBody(BaseModel):
    files: list[CommitBody] = Field(
        max_length=MAX_COMMIT_ITEMS,
        description=f"Up to {MAX_COMMIT_ITEMS:,} commits, each as for POST /commit",
    )


@router.post("/commit/batch", summary="Make many file versions from their chunks")
async def commit_many(request: Request, caller: Caller, body: BatchCommitBody) -> JSONResponse:
    """One result per item, in order: ``{"status": 201|200, "path", "version", "sha256",
    "size"}`` or a problem (``status``, ``type``, ``title``, ``detail``). Items are
    independent; each success is proven as for ``/commit`` (R-STORE-7). An item under a
    live WebDAV lock gets a 423 problem of its own (``If`` tokens apply to every item)."""
    rt = runtime(request)
    items = [
        CommitItem(
            path=f.path,
            sha256=f.sha256,
            chunks=f.chunks,
            size=f.size,
            base_version=f.base_version,
            mtime=f.mtime,
            if_absent=f.if_absent,
            parents=f.parents,
        )
        for f in body.files
    ]
    results = await run_in_threadpool(commit_batch, rt.files, caller, items, lock_proof(request))
    out: list[dict[str, Any]] = []
    for r in results:
        if isinstance(r, tuple):
            entry, created = r
            out.append(
                {
                    "status": 201 if created else 200,
                    "path": entry.path,
                    "version": entry.version,
                    "sha256": entry.sha256,
                    "size": entry.size,
                }
            )
        else:
            out.append(problem_body(r))
    return JSONResponse({"results": out})
