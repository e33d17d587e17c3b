"""Public links in the REST API: the Client creates, lists, reads and revokes its links
(R-SHARE-2); operator accounts list them with their counters (R-SHARE-5) and suspend or
resume one (R-SHARE-4). Another Client's link ids answer 404; so do the operator routes
for anyone but an operator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from allset.core.principal import Principal
from allset.core.units import parse_duration
from allset.files.links import LinkService
from allset.server.rest.deps import principal, runtime

router = APIRouter(tags=["links"])
Caller = Annotated[Principal, Depends(principal)]


class LinkBody(BaseModel):
    path: str = Field(max_length=8192, description="The file or folder to publish")
    expires_in: str | None = Field(
        default=None, max_length=40, description="A duration, e.g. 30m, 12h, 7d (default 7d)"
    )
    expires_at: datetime | None = Field(default=None, description="An instant with offset")
    password: str | None = Field(default=None, max_length=1024)
    max_downloads: int | None = Field(default=None, ge=1, le=1_000_000_000)
    drop: bool = Field(default=False, description="An upload-only drop folder")


class SuspendBody(BaseModel):
    reason: str = Field(min_length=1, max_length=4000, description="The complaint or cause")


def _links(request: Request) -> LinkService:
    return runtime(request).links


def link_url(request: Request, token: str) -> str:
    """The address people will be given: ``public_url`` when the operator set it (behind
    a reverse proxy the request's own host may be an internal one), else this request's."""
    base = runtime(request).settings.public_url.rstrip("/")
    return f"{base or f'{request.url.scheme}://{request.url.netloc}'}/s/{token}"


@router.post("/links", status_code=201, summary="Publish a file or folder (public link)")
async def create_link(request: Request, body: LinkBody, caller: Caller) -> JSONResponse:
    """The answer carries the URL once: only a hash of its token is kept."""
    links = _links(request)
    expires_in = parse_duration(body.expires_in) if body.expires_in else None
    view, token = await run_in_threadpool(
        lambda: links.create(
            caller,
            body.path,
            expires_at=body.expires_at,
            expires_in=expires_in,
            password=body.password,
            max_downloads=body.max_downloads,
            drop=body.drop,
        )
    )
    view["url"] = link_url(request, token)
    return JSONResponse(view, status_code=201, headers={"Location": f"/api/v1/links/{view['id']}"})


@router.get("/links", summary="The Client's public links, with counters and takedowns")
async def list_links(request: Request, caller: Caller) -> JSONResponse:
    links = _links(request)
    return JSONResponse({"links": await run_in_threadpool(links.list_mine, caller)})


@router.get("/links/{link_id}", summary="One public link")
async def get_link(request: Request, link_id: str, caller: Caller) -> JSONResponse:
    links = _links(request)
    return JSONResponse(await run_in_threadpool(links.get, caller, link_id))


@router.delete("/links/{link_id}", summary="Revoke a public link (effective at once)")
async def revoke_link(request: Request, link_id: str, caller: Caller) -> JSONResponse:
    links = _links(request)
    return JSONResponse(await run_in_threadpool(links.revoke, caller, link_id))


@router.get("/operator/links", summary="Operator: every public link and its counters")
async def operator_links(
    request: Request, caller: Caller, tenant: Annotated[str | None, Query(max_length=100)] = None
) -> JSONResponse:
    links = _links(request)
    found: list[dict[str, Any]] = await run_in_threadpool(links.list_all, tenant, caller)
    return JSONResponse({"links": found})


@router.post("/operator/links/{ref}/suspend", summary="Operator: take a public link down")
async def operator_suspend(
    request: Request, ref: str, body: SuspendBody, caller: Caller
) -> JSONResponse:
    """``ref`` is the link's token or id. Recorded with who, when and why (R-OPS-4)."""
    links = _links(request)
    return JSONResponse(await run_in_threadpool(links.suspend, ref, body.reason, caller))


@router.post("/operator/links/{ref}/resume", summary="Operator: put a suspended link back")
async def operator_resume(request: Request, ref: str, caller: Caller) -> JSONResponse:
    links = _links(request)
    return JSONResponse(await run_in_threadpool(links.resume, ref, caller))
