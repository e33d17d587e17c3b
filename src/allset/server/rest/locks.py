"""The Client's WebDAV locks: see them and break the one an editor left behind.

An editor that crashes, or a laptop closed mid-edit, keeps its lock until the lock's
timeout (Office asks for an hour, some clients for weeks): meanwhile everyone else gets
423 on that document. Owners and admins see and break every lock of their Client, a
member their own. Rendering only: who may see what is decided in ``files.locks``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from allset.core.principal import Principal
from allset.files.locks import break_lock, client_locks
from allset.server.rest.deps import principal, runtime

router = APIRouter(tags=["locks"])
Caller = Annotated[Principal, Depends(principal)]


@router.get("/locks", summary="The live WebDAV locks you may see")
async def list_locks(request: Request, caller: Caller) -> JSONResponse:
    """Owners and admins: every lock of the Client; members: the locks they took.
    ``user`` took the lock; ``owner`` is what their client wrote in it."""
    rt = runtime(request)
    return JSONResponse({"locks": await run_in_threadpool(client_locks, rt.db, caller)})


@router.delete("/locks/{lock_id}", summary="Break a WebDAV lock (its holder loses it)")
async def delete_lock(request: Request, caller: Caller, lock_id: str) -> JSONResponse:
    """The holder's next write with its token fails (412) and others may write again.
    Answers the lock that was broken; recorded as a ``lock.break`` event."""
    rt = runtime(request)
    return JSONResponse(await run_in_threadpool(break_lock, rt.db, caller, lock_id))
