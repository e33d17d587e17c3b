"""The users of a Client and their folder access (R-SHARE-1). Rendering only: who may
do what is decided in ``accounts.invitations`` and ``files.access``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from allset.accounts.invitations import Members, invitation_email, invite_link
from allset.core.principal import Principal
from allset.files import access
from allset.mail import Mailer, MailFailed
from allset.runtime import Runtime
from allset.server.auth import client_ip
from allset.server.rest.deps import principal, runtime

log = logging.getLogger("allset.users")
router = APIRouter(tags=["users"])
Caller = Annotated[Principal, Depends(principal)]
Role = Literal["owner", "admin", "member"]


class InviteBody(BaseModel):
    email: str = Field(max_length=320)
    role: Role = "member"


class RoleBody(BaseModel):
    role: Role


class GrantBody(BaseModel):
    path: str = Field(max_length=65536, description="A folder of your Client, e.g. /Projects")
    access: Literal["read", "write"]


class AcceptBody(BaseModel):
    token: str = Field(max_length=200)
    password: str = Field(max_length=1024)


def members(rt: Runtime) -> Members:
    return Members(rt.accounts, rt.settings)


async def _send_invitation(
    rt: Runtime, caller: Principal, invited: dict[str, Any]
) -> dict[str, Any]:
    """Email the one-time link, off the event loop and bounded by the SMTP timeout.
    Without an SMTP server the link is returned to the owner or admin, who passes it on;
    a failed send is a 502 naming the server, and the invitation stays (send it again
    with ``POST /users/{id}/invitation``)."""
    token = invited.pop("token")
    expires: datetime = invited.pop("expires_at")
    tenant = invited.pop("tenant")
    link = invite_link(rt.settings, token)
    mailer = Mailer.from_settings(rt.settings)
    invited["invitation_expires_at"] = expires.isoformat()
    if not mailer.configured:
        invited.update(email_sent=False, link=link)
        return invited
    subject, body = invitation_email(tenant, caller.email, link, expires)
    try:
        await run_in_threadpool(mailer.send, invited["email"], subject, body)
    except MailFailed as exc:
        log.warning("invitation email not sent: %s", exc.detail)
        raise MailFailed(
            exc.detail + " The invitation is kept: send it again with "
            f"POST /api/v1/users/{invited['id']}/invitation.",
            user_id=invited["id"],
        ) from exc
    invited["email_sent"] = True
    return invited


@router.get("/users", summary="The users of your Client (owners and admins)")
async def list_users(request: Request, caller: Caller) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse({"users": await run_in_threadpool(members(rt).list_users, caller)})


@router.post("/users", status_code=201, summary="Invite a user by email (owners and admins)")
async def invite(request: Request, caller: Caller, body: InviteBody) -> JSONResponse:
    """Creates the user (status ``invited``) and emails a one-time link valid
    ``invitation_days``. Without SMTP configured the answer carries ``link`` instead
    (``email_sent: false``)."""
    rt = runtime(request)
    invited = await run_in_threadpool(members(rt).invite, caller, body.email, body.role)
    return JSONResponse(await _send_invitation(rt, caller, invited), status_code=201)


@router.post("/users/{user_id}/invitation", status_code=201, summary="Send a new invitation link")
async def reinvite(request: Request, caller: Caller, user_id: str) -> JSONResponse:
    rt = runtime(request)
    invited = await run_in_threadpool(members(rt).reinvite, caller, user_id)
    return JSONResponse(await _send_invitation(rt, caller, invited), status_code=201)


@router.get("/users/{user_id}", summary="One user of your Client")
async def get_user(request: Request, caller: Caller, user_id: str) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse(await run_in_threadpool(members(rt).get_user, caller, user_id))


@router.patch("/users/{user_id}", summary="Change a user's role")
async def set_role(request: Request, caller: Caller, user_id: str, body: RoleBody) -> JSONResponse:
    rt = runtime(request)
    return JSONResponse(await run_in_threadpool(members(rt).set_role, caller, user_id, body.role))


@router.delete("/users/{user_id}", status_code=204, summary="Remove a user (revokes everything)")
async def remove_user(request: Request, caller: Caller, user_id: str) -> Response:
    """Every session and app password of the user stops working at once; their grants
    are withdrawn; the files they stored stay with the Client."""
    rt = runtime(request)
    await run_in_threadpool(members(rt).remove, caller, user_id)
    return Response(status_code=204)


@router.get("/users/{user_id}/grants", summary="A user's folder access")
async def list_grants(request: Request, caller: Caller, user_id: str) -> JSONResponse:
    rt = runtime(request)
    grants = await run_in_threadpool(access.grants_of, rt.files, caller, user_id)
    return JSONResponse({"grants": grants})


@router.put("/users/{user_id}/grants", summary="Give a user read or write access to a folder")
async def put_grant(
    request: Request, caller: Caller, user_id: str, body: GrantBody
) -> JSONResponse:
    rt = runtime(request)
    grant = await run_in_threadpool(
        access.set_grant, rt.files, caller, user_id, body.path, body.access
    )
    return JSONResponse(grant)


@router.delete(
    "/users/{user_id}/grants/{grant_id}", status_code=204, summary="Withdraw a folder access"
)
async def delete_grant(request: Request, caller: Caller, user_id: str, grant_id: str) -> Response:
    rt = runtime(request)
    await run_in_threadpool(access.remove_grant, rt.files, caller, user_id, grant_id)
    return Response(status_code=204)


@router.post("/invitations/accept", summary="Accept an invitation: choose a password (public)")
async def accept(request: Request, body: AcceptBody) -> JSONResponse:
    """No authentication: the one-time token is the proof. Answers the account and a
    session token, so a client can go on signed in."""
    rt = runtime(request)
    user = await run_in_threadpool(
        members(rt).accept, body.token, body.password, client_ip(request)
    )
    p = await run_in_threadpool(
        rt.accounts.login_password, user["email"], body.password, client_ip(request)
    )
    issued = await run_in_threadpool(
        rt.accounts.issue_for, p, "session", request.headers.get("user-agent", "")[:200]
    )
    user.update(token=issued["password"], expires=issued["expires"])
    return JSONResponse(user)
