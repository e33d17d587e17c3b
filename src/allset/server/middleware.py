"""Pure-ASGI middleware: metrics, access log, security headers, last-resort errors.

Pure ASGI (not BaseHTTPMiddleware) so that streamed bodies pass through untouched and
the per-request cost stays in microseconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allset.observability import BYTES_IN, BYTES_OUT, HTTP_DURATION, HTTP_ERRORS, HTTP_REQUESTS
from allset.server.problem import problem_response
from allset.server.transfers import DownloadInterrupted

access_log = logging.getLogger("allset.access")
error_log = logging.getLogger("allset.error")

_AREAS = (("/api/", "api"), ("/dav", "dav"), ("/tus", "tus"), ("/s/", "links"))


def area_of(path: str) -> str:
    for prefix, name in _AREAS:
        if path.startswith(prefix):
            return name
    return "web"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, tls: bool) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        area = area_of(scope["path"])
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 0, "in": 0, "out": 0, "started": False}

        async def counting_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["in"] += len(msg.get("body", b""))
            return msg

        async def wrapped_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                state["status"] = msg["status"]
                state["started"] = True
                headers = list(msg.get("headers", []))
                names = {h[0].lower() for h in headers}
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if b"content-security-policy" not in names:
                    headers.append(
                        (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
                    )
                if self.tls:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                msg["headers"] = headers
            elif msg["type"] == "http.response.body":
                state["out"] += len(msg.get("body", b""))
            await send(msg)

        try:
            await self.app(scope, counting_receive, wrapped_send)
        except DownloadInterrupted:
            # The operator cut a download mid-body (R-BW-2): the connection closes, the
            # client resumes with Range. Expected, so not an error in the log.
            state["status"] = state["status"] or 503
            access_log.info("transfer interrupted", extra={"path": scope["path"]})
        except Exception:
            # Handlers turn every expected error into problem+json; reaching here is a bug.
            # The client still gets a clean answer, never a traceback.
            error_log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not state["started"]:
                resp = problem_response(
                    500, "Internal error", "The server failed; the error was logged."
                )
                await resp(scope, receive, wrapped_send)
            state["status"] = state["status"] or 500
        finally:
            status = state["status"]
            HTTP_REQUESTS.labels(area, scope["method"], f"{status // 100}xx").inc()
            if status >= 500:
                HTTP_ERRORS.labels(area).inc()
            BYTES_IN.labels(area).inc(state["in"])
            BYTES_OUT.labels(area).inc(state["out"])
            elapsed = time.perf_counter() - start
            HTTP_DURATION.labels(area).observe(elapsed)
            client = scope.get("client")
            principal = scope.get("allset.principal")
            access_log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                    "bytes_in": state["in"],
                    "bytes_out": state["out"],
                    "ip": client[0] if client else "",
                    "user": getattr(principal, "email", ""),
                },
            )
