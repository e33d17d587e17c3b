"""Files area: folder browsing (breadcrumbs, paging, the quota bar), downloads.

Handlers are plain functions of the ``WebFront`` (``front``) and the request; they call
the façade and render. Words live in ``MESSAGES`` below, registered with ``i18n``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from allset.core.errors import NotFound
from allset.server.rest.deps import path_after

if TYPE_CHECKING:
    from allset.server.web.app import WebFront

PAGE = 200


def routes(front: WebFront) -> list[BaseRoute]:
    async def files_root(request: Request) -> Response:
        return RedirectResponse("/files/", status_code=308)

    async def files(request: Request) -> Response:
        ctx, away = await front.signed_in(request)
        if away is not None or ctx.principal is None:
            return away or front.to_login(ctx)
        p = ctx.principal
        if p.is_operator:
            return RedirectResponse("/operator", status_code=303)
        path = path_after(request, "/files")
        after = request.query_params.get("after", "")
        svc = front.runtime.files
        try:
            entry, entries, nxt = await run_in_threadpool(svc.list_dir, p, path, after, PAGE)
        except NotFound:
            return front.render(ctx, "error.html", 404, message=ctx.t("files.notfound"))
        if entry.kind != "dir":
            return RedirectResponse("/api/v1/files" + quote(str(path)), status_code=303)
        usage = await run_in_threadpool(svc.usage, p)
        crumbs = [(ctx.t("files.root"), "/files/")]
        for i, part in enumerate(path.parts):
            crumbs.append((part, "/files/" + "/".join(quote(x) for x in path.parts[: i + 1])))
        return front.render(
            ctx,
            "files.html",
            folder=entry,
            entries=entries,
            crumbs=crumbs,
            next_after=nxt,
            paged=bool(after),
            here="/files" + "".join("/" + quote(x) for x in path.parts),
            api="/api/v1/files" + quote(str(path).rstrip("/")),
            used=usage.used,
            quota=usage.quota,
            percent=min(100, round(100 * usage.used / usage.quota)) if usage.quota else 0,
        )

    return [
        Route("/files", files_root, methods=["GET"]),
        Route("/files/{path:path}", files, methods=["GET"]),
    ]
