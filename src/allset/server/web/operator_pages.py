"""Operator console (operator accounts only): Clients and their usage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from allset.server.web.app import WebFront


def routes(front: WebFront) -> list[BaseRoute]:
    async def operator(request: Request) -> Response:
        ctx, away = await front.signed_in(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        if not ctx.principal.is_operator:
            return front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))
        tenants = await run_in_threadpool(front.runtime.accounts.list_tenants)
        return front.render(ctx, "operator.html", tenants=tenants)

    return [Route("/operator", operator, methods=["GET"])]
