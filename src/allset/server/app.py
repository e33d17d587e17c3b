"""build_app(runtime): the whole HTTP surface, one ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

import allset
from allset.core.errors import AllsetError
from allset.core.flock import HeldLock
from allset.db.models import Tenant
from allset.files import maintenance
from allset.files.wakeups import WakeupError
from allset.observability import REGISTRY, scrape_registry
from allset.runtime import Runtime
from allset.server.control import ControlServer, worker_socket
from allset.server.dav.app import MOUNT as DAV_MOUNT
from allset.server.dav.app import DavFront, DavRootAlias, ServerOptions
from allset.server.links import api as links_api
from allset.server.links.public import MOUNT as LINKS_MOUNT
from allset.server.links.public import LinksFront
from allset.server.middleware import ObservabilityMiddleware
from allset.server.problem import from_error, problem_response
from allset.server.rest import account, chunks, feed, files, locks, tree, users
from allset.server.transfers import TransferMiddleware, Transfers, open_bucket_table
from allset.server.tus import MOUNT as TUS_MOUNT
from allset.server.tus import TusFront
from allset.server.web.app import WebFront

log = logging.getLogger("allset.server")


async def _allset_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AllsetError)
    return from_error(exc)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: answered in the API's one error format. Starlette re-raises it afterwards,
    and ObservabilityMiddleware logs it with its traceback."""
    return problem_response(500, "Internal error", "The server failed; the error was logged.")


def _busy(exc: OperationalError) -> bool:
    """PostgreSQL gave up on this transaction because of a concurrent one (deadlock or
    serialization failure): nothing was written, and the same request will succeed."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("40P01", "40001")


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OperationalError)
    if not _busy(exc):
        raise exc  # a real failure: the generic 500 path logs it with its traceback
    log.warning("transaction lost to a concurrent one; answered 503: %s", exc.orig)
    resp = problem_response(
        503,
        "Busy",
        "A concurrent change to the same files won; nothing was changed. Send the request again.",
        "busy",
    )
    resp.headers["Retry-After"] = "1"
    return resp


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"where": ".".join(str(x) for x in e.get("loc", ())), "problem": e.get("msg", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['where']}: {e['problem']}" for e in errors) or "Invalid request."
    return problem_response(400, "Invalid request", detail, "invalid-input", errors=errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    titles = {400: "Invalid request", 404: "Not found", 405: "Method not allowed"}
    slugs = {400: "invalid-input", 404: "not-found"}
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"No such URL: {request.url.path}"
    elif exc.status_code == 400 and "parsing the body" in detail:
        detail = "The request body is not valid JSON (or not UTF-8); send a JSON object."
    resp = problem_response(
        exc.status_code,
        titles.get(exc.status_code, "Error"),
        detail,
        slugs.get(exc.status_code, "about:blank"),
    )
    for k, v in (exc.headers or {}).items():
        resp.headers[k] = v
    return resp


HANDLERS: dict[Any, Any] = {
    AllsetError: _allset_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    OperationalError: _database_error,
    Exception: _internal_error,
}


def build_api(runtime: Runtime) -> FastAPI:
    api = FastAPI(
        title="allset API",
        version=allset.__version__,
        description=(
            "Files, folders, versions and trash of the signed-in user's Client. "
            "Authenticate with HTTP Basic (email + password or app password) or a Bearer "
            "token. Errors are application/problem+json (RFC 9457). Stored files carry "
            "their SHA-256 in Repr-Digest (RFC 9530)."
        ),
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        exception_handlers=HANDLERS,
        servers=[{"url": "/api/v1"}],
    )
    api.state.runtime = runtime
    for r in (files.router, tree.router, chunks.router, feed.router, account.router):
        api.include_router(r)
    api.include_router(users.router)  # R-SHARE-1: the Client's users and their access
    api.include_router(links_api.router)
    api.include_router(locks.router)  # WebDAV locks a crashed editor left behind
    return api


class _StorageCollector:
    """Storage used per Client, read from the database at scrape time."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Any:
        used = GaugeMetricFamily(
            "allset_storage_used_bytes", "Bytes stored per Client", labels=["tenant"]
        )
        quota = GaugeMetricFamily(
            "allset_storage_quota_bytes", "Quota per Client", labels=["tenant"]
        )
        with self.runtime.db.read() as s:
            for name, u, q in s.execute(select(Tenant.name, Tenant.used_bytes, Tenant.quota_bytes)):
                used.add_metric([name], u)
                quota.add_metric([name], q)
        yield used
        yield quota


_COLLECTOR: dict[str, _StorageCollector] = {}


def build_app(runtime: Runtime, tls: bool = True, worker: int | None = None) -> Starlette:
    """``worker``: this process's index among ``serve --workers``; None when it serves
    alone. Workers skip the startup maintenance: their parent ran it before starting
    them (``cli.server.serve``), so none takes uploads while another still reclaims."""
    settings = runtime.settings
    # One storage collector per process: tests build several apps, the last one reports
    # (on REGISTRY; in multiprocess mode each app scrapes its own registry).
    previous = _COLLECTOR.pop("current", None)
    if previous is not None:
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(previous)
    collector = _StorageCollector(runtime)
    # Several processes (PROMETHEUS_MULTIPROC_DIR): the sum of all of them, and the
    # storage gauges once (read from the database here, not summed per process).
    registry = scrape_registry(collector)
    _COLLECTOR["current"] = collector

    async def healthz(request: Request) -> Response:
        def ping() -> None:
            with runtime.db.read() as s:
                s.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # the point of a health check is to report, not raise
            return JSONResponse({"status": "error", "database": str(exc)[:200]}, status_code=503)
        return JSONResponse({"status": "ok", "version": allset.__version__})

    async def metrics(request: Request) -> Response:
        host = request.client.host if request.client else ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not (loopback or settings.metrics_public):
            return problem_response(
                404, "Not found", f"No such URL: {request.url.path}", "not-found"
            )
        data = await run_in_threadpool(generate_latest, registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    async def robots(request: Request) -> Response:
        """R-SHARE-3: crawlers keep out of public links (which also say noindex)."""
        return Response(
            "User-agent: *\nDisallow: /s/\nDisallow: /api/\nDisallow: /dav/\n",
            media_type="text/plain",
        )

    # One process runs the maintenance among workers; another takes over if it dies.
    maintainer = HeldLock(settings.run_dir / "maintenance.lock")

    async def maintenance_loop() -> None:
        interval = max(5, settings.maintenance_interval_seconds)
        for _ in range(10**9):  # bounded in count, effectively forever at any interval >= 5 s
            await asyncio.sleep(interval)
            if not maintainer.try_take():
                continue
            try:
                report = await run_in_threadpool(
                    maintenance.run_all,
                    runtime.files,
                    settings.gc_grace_seconds,
                    runtime.resumables,
                )
                log.info("maintenance", extra={"report": report.__dict__})
            except Exception:
                log.exception("maintenance failed; will retry next cycle")

    async def usage_loop() -> None:
        """Usage history for the charts: transfer counts to the database every minute
        (a crash loses at most that minute), storage sampled every ten."""
        for i in range(10**9):
            try:
                if i % 10 == 0 and maintainer.try_take():  # each process flushes its own
                    await run_in_threadpool(runtime.usage.sample_storage)
                await run_in_threadpool(runtime.usage.flush)
            except Exception:
                log.exception("usage history not recorded; will retry next minute")
            await asyncio.sleep(60)

    # R-BW-1: the buckets are shared by every process serving this data dir.
    transfers = Transfers(
        runtime.accounts.bandwidth,
        runtime.usage.meter.add,
        runtime.shared_table("buckets", open_bucket_table),
    )
    control = ControlServer(
        worker_socket(settings.control_socket, worker or 0),
        transfers,
        runtime.accounts.tenant_names,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Reclaim what a crash left behind before taking new uploads.
        if worker is None and maintainer.try_take():
            report = await run_in_threadpool(
                maintenance.run_all, runtime.files, settings.gc_grace_seconds, runtime.resumables
            )
            log.info("startup maintenance", extra={"report": report.__dict__})
        task = asyncio.create_task(maintenance_loop())
        usage_task = asyncio.create_task(usage_loop())
        await control.start()
        # Hear the change-feed wake-ups of the data dir's other processes (R-SYNC-1).
        # Without them long-polls still answer, at their next re-check: not fatal.
        try:
            runtime.wakeups.join(runtime.files.changes.notify)
        except (OSError, WakeupError) as exc:
            log.warning("no change-feed wake-ups from other processes: %s", exc)
        try:
            yield
        finally:
            await run_in_threadpool(runtime.wakeups.leave)
            await control.stop()
            task.cancel()
            usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(asyncio.CancelledError):
                await usage_task
            with contextlib.suppress(Exception):  # best effort: a stop keeps the counts
                await run_in_threadpool(runtime.usage.flush)
            maintainer.close()

    dav = DavFront(runtime)
    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET"]),
            # The hot file routes skip FastAPI's machinery (see ``files.content``).
            Route(files.PREFIX + "/{path:path}", files.content, methods=files.CONTENT_METHODS),
            Mount("/api/v1", app=build_api(runtime)),
            Route("/", ServerOptions(), methods=["OPTIONS"]),
            Route(DAV_MOUNT, DavRootAlias(dav)),
            Mount(DAV_MOUNT, app=dav),
            Mount(TUS_MOUNT, app=TusFront(runtime)),
            Route("/robots.txt", robots, methods=["GET"]),
            Mount(LINKS_MOUNT, app=LinksFront(runtime)),
            Mount("/", app=WebFront(runtime)),  # the web interface: last, it takes the rest
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.transfers = transfers
    # Outermost last: observability sees what shaping and interrupts did.
    app.add_middleware(TransferMiddleware, transfers=transfers)
    app.add_middleware(ObservabilityMiddleware, tls=tls)
    return app
