"""``/s/{token}``: what a visitor of a public link gets (R-SHARE-2..5). A thin adapter:
``files.links.LinkService`` decides, this module parses and renders.

URLs under ``/s/{token}``:

* ``/s/{t}`` GET: the file's page (name, size, SHA-256, download button), the folder's
  listing (paged), the drop folder's upload form, or the password form; POST: the
  password form's answer (sets a short-lived signed cookie, path ``/s/{t}``).
* ``/s/{t}/download`` the shared file; ``/s/{t}/file/{sub}`` a file inside a shared
  folder; ``/s/{t}/browse/{sub}`` a sub-folder; ``/s/{t}/zip[/{sub}]`` a folder as a
  zip streamed in constant memory.
* ``/s/{t}/upload`` POST (multipart form) and ``/s/{t}/upload/{name}`` PUT (raw body):
  a drop folder receives a file under a free name.

Every response — pages, files, zips, errors of any status — carries
``X-Robots-Tag: noindex, nofollow, noarchive, nosnippet`` (R-SHARE-3), and
``Cache-Control: no-store`` so that no cache keeps serving a revoked link. Files are
``attachment`` except a safe list of inline types, always with ``nosniff`` and
``CSP: sandbox`` (from ``files_http.file_headers``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from allset.core.errors import (
    AllsetError,
    Conflict,
    InvalidInput,
    Locked,
    RangeNotSatisfiable,
    ResourceLocked,
    TooManyAttempts,
)
from allset.core.paths import RemotePath
from allset.files.links import LinkNotFound, LinkService, Resolved
from allset.files.upload import begin_upload
from allset.runtime import Runtime
from allset.server.auth import client_ip
from allset.server.files_http import send_file
from allset.server.links.pages import PAGE_CSP, ROBOTS, human_size, render
from allset.server.rest.deps import path_after
from allset.server.transfer import pump_request
from allset.server.transfers import SharedBucket, open_bucket_table
from allset.server.zipstream import zip_folder, zip_headers

log = logging.getLogger("allset.links")

MOUNT = "/s"
PAGE_SIZE = 200
ACCESS_COOKIE = "allset_access"
CSRF_COOKIE = "allset_csrf"
# R-SHARE-2 item 4: shown in the browser only when they cannot run script in our origin.
SAFE_INLINE = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "application/pdf",
        "text/plain",
    }
)
UPLOAD_BLOCK = 1024 * 1024

_STATUS_TITLES = {
    404: ("Link not found", "This link does not exist or was withdrawn."),
    410: ("Link no longer available", "This link has expired or reached its download limit."),
    451: ("Not available", "This content is not available."),
    429: ("Too many requests", "Too many requests from your address; wait and try again."),
}


def _page(html: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    h = {"Content-Security-Policy": PAGE_CSP}
    h.update(headers or {})
    return HTMLResponse(html, status_code=status, headers=h)


def error_page(exc: AllsetError) -> HTMLResponse:
    """An error as a neutral HTML page: for 404/410/451/429 the fixed wording, so a page
    never tells a revoked link from a never-existing one, nor says why a link was taken
    down (the Client sees the reason in its own listing)."""
    title, message = _STATUS_TITLES.get(exc.status, (exc.title, exc.detail))
    if exc.status == 410:
        message = exc.detail
    headers: dict[str, str] = {}
    if isinstance(exc, TooManyAttempts):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, RangeNotSatisfiable) and isinstance(exc.extra.get("size"), int):
        headers["Content-Range"] = f"bytes */{exc.extra['size']}"
    return _page(render("error.html", title, message=message), exc.status, headers)


def _link_url(token: str, *parts: str) -> str:
    return f"{MOUNT}/{token}" + "".join("/" + quote(p, safe="") for p in parts)


def _sub_url(token: str, area: str, path: RemotePath) -> str:
    return f"{MOUNT}/{token}/{area}" + "".join("/" + quote(p, safe="") for p in path.parts)


class LinksFront:
    """The ASGI app mounted at ``/s``: routes, then headers and HTML errors for all."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.links: LinkService = runtime.links
        self.files = runtime.files
        # R-SHARE-5 throttled rate, per Client: in the data dir's shared bucket table, so
        # every server process's link downloads of one Client share that one rate.
        self._slow: dict[str, SharedBucket] = {}
        self.router = Router(
            routes=[
                Route("/{token}", self.page, methods=["GET", "POST"]),
                Route("/{token}/download", self.download, methods=["GET"]),
                Route("/{token}/file/{sub:path}", self.folder_file, methods=["GET"]),
                Route("/{token}/browse", self.browse, methods=["GET"]),
                Route("/{token}/browse/{sub:path}", self.browse, methods=["GET"]),
                Route("/{token}/zip", self.zip, methods=["GET"]),
                Route("/{token}/zip/{sub:path}", self.zip, methods=["GET"]),
                Route("/{token}/upload", self.upload_form, methods=["POST"]),
                Route("/{token}/upload/{name:path}", self.upload_put, methods=["PUT", "POST"]),
                Route("/{rest:path}", self.nothing, methods=["GET", "POST", "PUT"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = [h for h in msg.get("headers", []) if h[0].lower() != b"cache-control"]
                headers.append((b"x-robots-tag", ROBOTS.encode()))  # R-SHARE-3
                headers.append((b"cache-control", b"private, no-store"))
                msg["headers"] = headers
            await send(msg)

        state = {"started": False}

        async def tracking(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                state["started"] = True
            await with_headers(msg)

        # The app's handlers would answer problem+json inside the route; here every
        # error must become an HTML page with the link headers, so they come to us.
        scope = {**scope, "starlette.exception_handlers": ({}, {})}
        try:
            await self.router(scope, receive, tracking)
        except AllsetError as exc:
            if state["started"]:
                raise
            await error_page(exc)(scope, receive, with_headers)
        except HTTPException as exc:
            if state["started"]:
                raise
            err = AllsetError(str(exc.detail))
            err.status, err.title = exc.status_code, "Error"
            if exc.status_code == 404:
                err = LinkNotFound("This link does not exist or was withdrawn.")
            await error_page(err)(scope, receive, with_headers)
        except Exception:
            if state["started"]:
                raise
            log.exception("public link request failed: %s", scope.get("path"))
            err = AllsetError("The server failed; the error was logged.")
            err.status, err.title = 500, "Internal error"
            await error_page(err)(scope, receive, with_headers)

    # ---- common steps --------------------------------------------------------------
    async def _resolve(self, request: Request, need_access: bool = True) -> Resolved:
        token = request.path_params["token"]
        r = await run_in_threadpool(self.links.resolve, token, client_ip(request))
        # Bandwidth (R-BW-1): anonymous link traffic is charged to the link's Client.
        request.scope["allset.tenant_id"] = r.tenant_id
        if need_access and not self.links.access_ok(r, request.cookies.get(ACCESS_COOKIE)):
            raise _NeedPassword(r)
        return r

    async def nothing(self, request: Request) -> Response:
        """Anything else under /s/: an unknown token, counted as a guess (R-SHARE-3)."""
        rest = request.path_params["rest"].split("/", 1)[0]
        await run_in_threadpool(self.links.resolve, "\x00" + rest, client_ip(request))
        raise LinkNotFound("This link does not exist or was withdrawn.")  # pragma: no cover

    def _csrf(self, r: Resolved, request: Request) -> tuple[str, bool]:
        """The form's anti-forgery value (double submit: the same random value in a
        SameSite=Strict cookie and in a hidden field); True when a new cookie is due."""
        current = request.cookies.get(CSRF_COOKIE, "")
        if len(current) == 43:
            return current, False
        return secrets.token_urlsafe(32), True

    def _set_csrf(self, resp: Response, token: str, value: str) -> None:
        resp.set_cookie(
            CSRF_COOKIE,
            value,
            path=f"{MOUNT}/{token}",
            secure=True,
            httponly=True,
            samesite="strict",
        )

    def _password_form(
        self, request: Request, r: Resolved, error: str = "", status: int = 200
    ) -> Response:
        token = request.path_params["token"]
        csrf, new = self._csrf(r, request)
        resp = _page(
            render(
                "password.html",
                "Password required",
                action=_link_url(token),
                csrf=csrf,
                error=error,
            ),
            status,
        )
        if new:
            self._set_csrf(resp, token, csrf)
        return resp

    def _csrf_ok(self, request: Request, sent: Any) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return (
            isinstance(sent, str)
            and bool(cookie)
            and secrets.compare_digest(cookie.encode(), sent.encode())
        )

    # ---- pages ---------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        try:
            if request.method == "POST":
                return await self._password_post(request)
            r = await self._resolve(request)
        except _NeedPassword as need:
            return self._password_form(request, need.r)
        token = request.path_params["token"]
        if r.kind == "drop":
            csrf, new = self._csrf(r, request)
            resp = _page(
                render(
                    "drop.html",
                    "Send files",
                    name=r.name or "this folder",
                    action=_link_url(token, "upload"),
                    csrf=csrf,
                )
            )
            if new:
                self._set_csrf(resp, token, csrf)
            return resp
        if r.is_file:
            e = await run_in_threadpool(self.files.stat, r.acting, r.root)
            return _page(
                render(
                    "file.html",
                    e.name,
                    name=e.name,
                    size=human_size(e.size),
                    sha256=e.sha256,
                    download=_link_url(token, "download") + "?dl=1",
                )
            )
        return await self._listing(request, r, RemotePath(()))

    async def _password_post(self, request: Request) -> Response:
        r = await self._resolve(request, need_access=False)
        token = request.path_params["token"]
        if r.password_hash is None:
            return RedirectResponse(_link_url(token), status_code=303)
        form = await request.form(max_files=0, max_fields=5)
        if not self._csrf_ok(request, form.get("csrf")):
            return self._password_form(
                request, r, "The form expired; enter the password again.", 403
            )
        password = form.get("password")
        ok = isinstance(password, str) and await run_in_threadpool(
            self.links.check_password, r, password, client_ip(request)
        )
        if not ok:
            return self._password_form(request, r, "Wrong password.", 403)
        resp = RedirectResponse(_link_url(token), status_code=303)
        resp.set_cookie(
            ACCESS_COOKIE,
            self.links.access_cookie(r),
            max_age=3600,
            path=f"{MOUNT}/{token}",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return resp

    async def browse(self, request: Request) -> Response:
        try:
            r = await self._resolve(request)
        except _NeedPassword as need:
            return self._password_form(request, need.r, status=403)
        if r.kind == "drop" or r.is_file:
            raise LinkNotFound("This link does not exist or was withdrawn.")
        token = request.path_params["token"]
        sub = path_after(request, f"{MOUNT}/{token}/browse")
        return await self._listing(request, r, sub)

    async def _listing(self, request: Request, r: Resolved, sub: RemotePath) -> Response:
        """One page of a folder inside the shared folder, never above it."""
        token = request.path_params["token"]
        after = request.query_params.get("after", "")
        folder, entries, more = await run_in_threadpool(
            functools.partial(
                self.files.list_dir, r.acting, self.links.inside(r, str(sub)), after, PAGE_SIZE
            )
        )
        if folder.kind != "dir":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        crumbs = [(r.name or "Shared folder", _link_url(token))]
        for i in range(len(sub.parts)):
            crumbs.append((sub.parts[i], _sub_url(token, "browse", RemotePath(sub.parts[: i + 1]))))
        rows = []
        for e in entries:
            child = RemotePath((*sub.parts, e.name))
            folder_entry = e.kind == "dir"
            rows.append(
                {
                    "name": e.name,
                    "folder": folder_entry,
                    "size": "" if folder_entry else human_size(e.size),
                    "href": _sub_url(token, "browse" if folder_entry else "file", child),
                }
            )
        here = _sub_url(token, "browse", sub) if sub.parts else _link_url(token)
        return _page(
            render(
                "folder.html",
                r.name or "Shared folder",
                crumbs=crumbs,
                entries=rows,
                zip=_sub_url(token, "zip", sub),
                more=f"{here}?after={quote(more, safe='')}" if more else "",
            )
        )

    # ---- downloads -----------------------------------------------------------------
    async def download(self, request: Request) -> Response:
        try:
            r = await self._resolve(request)
        except _NeedPassword as need:
            return self._password_form(request, need.r, status=403)
        if not r.is_file or r.kind == "drop":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        return await self._send(request, r, r.root)

    async def folder_file(self, request: Request) -> Response:
        try:
            r = await self._resolve(request)
        except _NeedPassword as need:
            return self._password_form(request, need.r, status=403)
        if r.kind == "drop":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        token = request.path_params["token"]
        sub = path_after(request, f"{MOUNT}/{token}/file")
        return await self._send(request, r, self.links.inside(r, str(sub)))

    async def _send(self, request: Request, r: Resolved, path: RemotePath) -> Response:
        """The existing download code (Range, ETag, verified chunks), then the link's
        rules: counted, metered, throttled above the threshold, safe disposition."""
        if request.method == "GET" and "range" not in request.headers:
            await run_in_threadpool(self.links.start_download, r)
        try:
            resp = await send_file(request, self.files, r.acting, path, None)
        except Conflict as exc:  # a folder: not a download
            raise LinkNotFound("This link does not exist or was withdrawn.") from exc
        ctype = resp.headers.get("content-type", "").split(";")[0]
        if ctype in SAFE_INLINE and not request.query_params.get("dl"):
            resp.headers["content-disposition"] = resp.headers["content-disposition"].replace(
                "attachment", "inline", 1
            )
        if isinstance(resp, StreamingResponse):
            await self._meter(resp, r)
        return resp

    async def _meter(self, resp: StreamingResponse, r: Resolved) -> None:
        """Count the bytes really sent (R-SHARE-5), at the throttled rate if the Client
        went over its threshold today."""
        bucket = None
        if await run_in_threadpool(self.links.throttled, r):
            bucket = self._slow.get(r.tenant_id)
            if bucket is None:
                table = self.runtime.shared_table("buckets", open_bucket_table)
                bucket = self._slow[r.tenant_id] = SharedBucket(
                    table,
                    table.key(f"link-slow\0{r.tenant_id}"),
                    self.runtime.settings.link_throttled_rate,
                )
        body = resp.body_iterator
        links = self.links

        async def metered() -> AsyncIterator[Any]:
            sent = 0
            try:
                async for piece in body:
                    sent += len(piece)
                    if bucket is not None:
                        await bucket.consume(len(piece))
                    yield piece
            except BaseException:
                # Cut short (the visitor left): still counted, without waiting for it.
                asyncio.get_running_loop().run_in_executor(None, links.add_bytes, r, sent)
                raise
            await run_in_threadpool(links.add_bytes, r, sent)

        resp.body_iterator = metered()

    async def zip(self, request: Request) -> Response:
        """A folder as a zip, streamed as it is read (constant memory; stored, not
        compressed: most files people share are already compressed). Counted as one
        download when it starts."""
        try:
            r = await self._resolve(request)
        except _NeedPassword as need:
            return self._password_form(request, need.r, status=403)
        if r.kind == "drop" or r.is_file:
            raise LinkNotFound("This link does not exist or was withdrawn.")
        token = request.path_params["token"]
        sub = (
            path_after(request, f"{MOUNT}/{token}/zip")
            if "sub" in request.path_params
            else RemotePath(())
        )
        folder = self.links.inside(r, str(sub))
        entry = await run_in_threadpool(self.files.stat, r.acting, folder)
        if entry.kind != "dir":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        await run_in_threadpool(self.links.start_download, r)
        top = folder.name or "files"
        resp = StreamingResponse(
            zip_folder(self.files, r.acting, folder, top),
            media_type="application/zip",
            headers=zip_headers(top),
        )
        await self._meter(resp, r)
        return resp

    # ---- drop folders --------------------------------------------------------------
    async def upload_form(self, request: Request) -> Response:
        """The drop form's multipart POST; the CSRF value must match its cookie."""
        try:
            r = await self._resolve(request)
        except _NeedPassword as need:
            return self._password_form(request, need.r, status=403)
        if r.kind != "drop":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        token = request.path_params["token"]
        async with request.form(max_files=100, max_fields=10) as form:
            if not self._csrf_ok(request, form.get("csrf")):
                raise _Forbidden("The form expired; reload the page and send the files again.")
            files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            if not files:
                raise InvalidInput("Choose at least one file to send.")
            received = []
            for f in files:
                target = await run_in_threadpool(self.links.drop_target, r, f.filename or "")
                e = await self._store(r, target, f.size, _read_upload(f))
                received.append(
                    {"name": target.name, "size": human_size(e.size), "sha256": e.sha256}
                )
        return _page(
            render("received.html", "Received", received=received, back=_link_url(token)), 201
        )

    async def upload_put(self, request: Request) -> Response:
        """A raw body (``curl -T file URL/upload/NAME``); JSON answer for scripts."""
        r = await self._resolve(request)
        if r.kind != "drop":
            raise LinkNotFound("This link does not exist or was withdrawn.")
        token = request.path_params["token"]
        name = path_after(request, f"{MOUNT}/{token}/upload")
        if len(name.parts) != 1:
            raise InvalidInput("Send one file name after /upload/, without folders.")
        target = await run_in_threadpool(self.links.drop_target, r, name.name)
        length = request.headers.get("content-length")
        size = int(length) if length and length.isdigit() else None
        e = await self._store(r, target, size, None, request)
        return JSONResponse({"name": target.name, "size": e.size, "sha256": e.sha256}, 201)

    async def _store(
        self,
        r: Resolved,
        target: RemotePath,
        size: int | None,
        pieces: AsyncIterator[bytes] | None,
        request: Request | None = None,
    ) -> Any:
        """Through ``files.upload`` as the link's creator: quota (507), verification,
        versions, events; ``if_absent`` so a name taken meanwhile is never overwritten."""
        try:
            upload = await run_in_threadpool(
                functools.partial(
                    begin_upload, self.files, r.acting, target, if_absent=True, expected_size=size
                )
            )
        except ResourceLocked as exc:
            raise _being_edited() from exc
        try:
            if request is not None:
                await pump_request(request, upload)
            elif pieces is not None:
                async for piece in pieces:
                    await run_in_threadpool(upload.write, piece)
            entry, _ = await run_in_threadpool(upload.commit)
        except ResourceLocked as exc:
            await run_in_threadpool(upload.abort)
            raise _being_edited() from exc
        except BaseException:
            await run_in_threadpool(upload.abort)
            raise
        await run_in_threadpool(self.links.record_upload, r)
        return entry


def _being_edited() -> Locked:
    """A drop into a folder under a WebDAV lock (files/locks.py). The visitor is outside
    the Client: the lock's holder, path and id are the Client's business (R-STORE-3), so
    the answer says only what happened and what to do."""
    return Locked(
        "The folder is being edited right now (a document is open in an editor); nothing "
        "was stored. Try again later."
    )


class _NeedPassword(Exception):  # control flow, not an error to report
    def __init__(self, r: Resolved) -> None:
        super().__init__("password required")
        self.r = r


class _Forbidden(AllsetError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


async def _read_upload(f: UploadFile) -> AsyncIterator[bytes]:
    while True:
        piece = await f.read(UPLOAD_BLOCK)
        if not piece:
            return
        yield piece
