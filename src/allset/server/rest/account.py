"""Sign-in, the caller's identity and usage, sessions and app passwords."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from allset.core.principal import Principal
from allset.files import access
from allset.server.auth import client_ip
from allset.server.rest.deps import principal, runtime

router = APIRouter(tags=["account"])
Caller = Annotated[Principal, Depends(principal)]


class LoginBody(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class AppPasswordBody(BaseModel):
    name: str = Field(
        min_length=1, max_length=200, description="What it is for, e.g. 'laptop sync'"
    )


@router.post("/auth/login", summary="Exchange email and password for a session token")
async def login(request: Request, body: LoginBody) -> JSONResponse:
    """Failed attempts are throttled per account+IP and per IP (429 with Retry-After)."""
    rt = runtime(request)
    p = await run_in_threadpool(
        rt.accounts.login_password, body.email, body.password, client_ip(request)
    )
    issued = await run_in_threadpool(
        rt.accounts.issue_for, p, "session", request.headers.get("user-agent", "")[:200]
    )
    return JSONResponse(
        {"token": issued["password"], "id": issued["id"], "expires": issued["expires"]}
    )


@router.post("/auth/logout", status_code=204, summary="End the current session")
async def logout(request: Request, caller: Caller) -> Response:
    rt = runtime(request)
    # Only a session ends here; an app password sent by a program stays valid.
    if caller.credential_id and caller.credential_kind == "session":
        await run_in_threadpool(rt.accounts.revoke_credential, caller, caller.credential_id)
    return Response(status_code=204)


@router.get("/auth/credentials", summary="Sessions and app passwords of the caller")
async def credentials(request: Request, caller: Caller) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse(
        {"credentials": await run_in_threadpool(rt.accounts.list_credentials, caller)}
    )


@router.post("/auth/app-passwords", status_code=201, summary="Create an app password (shown once)")
async def create_app_password(
    request: Request, caller: Caller, body: AppPasswordBody
) -> JSONResponse:
    rt = runtime(request)
    issued = await run_in_threadpool(rt.accounts.issue_for, caller, "app_password", body.name)
    return JSONResponse(issued, status_code=201)


@router.delete(
    "/auth/credentials/{credential_id}", status_code=204, summary="Revoke a session or app password"
)
async def revoke(request: Request, caller: Caller, credential_id: str) -> Response:
    rt = runtime(request)
    await run_in_threadpool(rt.accounts.revoke_credential, caller, credential_id)
    return Response(status_code=204)


@router.get("/me", summary="Who is signed in, and the Client's storage usage")
async def me(request: Request, caller: Caller) -> JSONResponse:
    rt = runtime(request)
    body: dict[str, Any] = {"email": caller.email, "role": caller.role, "kind": caller.kind}
    if not caller.is_operator:
        u = await run_in_threadpool(rt.files.usage, caller)
        body["usage"] = {
            "used_bytes": u.used,
            "quota_bytes": u.quota,
            "in_flight_bytes": u.inflight,
        }
        # R-SHARE-1: what this user may reach ("all" for owners and admins).
        body["access"] = (
            "all"
            if caller.is_manager
            else await run_in_threadpool(access.grants_of, rt.files, caller, caller.id)
        )
    return JSONResponse(body)
