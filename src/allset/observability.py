"""Metrics and structured logs shared by every layer (cross-cutting, imports nothing of ours).

Prometheus metrics are process-global by nature; defining them once here keeps their
names in one place.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "allset_http_requests",
    "HTTP requests by protocol area, method and status class",
    ["area", "method", "status"],
    registry=REGISTRY,
)
HTTP_ERRORS = Counter(
    "allset_http_errors", "Responses with status >= 500", ["area"], registry=REGISTRY
)
HTTP_DURATION = Histogram(
    "allset_http_request_duration_seconds",
    "Time to the end of the response",
    ["area"],
    registry=REGISTRY,
)
BYTES_IN = Counter("allset_bytes_received", "Request body bytes", ["area"], registry=REGISTRY)
BYTES_OUT = Counter("allset_bytes_sent", "Response body bytes", ["area"], registry=REGISTRY)
CHUNK_REPAIRS = Counter(
    "allset_chunk_repairs",
    "Damaged or missing chunk copies found",
    ["replica", "problem"],
    registry=REGISTRY,
)
LOGIN_FAILURES = Counter("allset_login_failures", "Failed sign-ins", registry=REGISTRY)


def configure_logging(json: bool = True, level: str = "INFO", worker: int | None = None) -> None:
    """Structured logs on stderr: JSON lines in production, readable text on a terminal.
    ``worker``: this process's index under ``serve --workers``, on every line."""
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if worker is not None:

        def add_worker(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
            event["worker"] = worker
            return event

        shared.append(add_worker)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True  # ours carries more (user, bytes)
    logging.getLogger("alembic").setLevel(logging.WARNING)
