"""Metrics and structured logs shared by every layer (cross-cutting, imports nothing of ours).

Prometheus metrics are process-global by nature; defining them once here keeps their
names in one place.

Several server processes (``serve --workers``): a scrape reaches one of them, so each
counts into files that any of them can sum. That is ``prometheus_client``'s
multiprocess mode, on when ``PROMETHEUS_MULTIPROC_DIR`` names a directory *before*
``prometheus_client`` is first imported (it chooses where values live at import). The
process that starts the workers calls ``prepare_metrics_dir`` and sets the variable for
them, and ``worker_exited`` for each that ends; ``/metrics`` then answers from
``scrape_registry``. Without the variable, one process counts in memory as always.
Gauges must say how processes combine (``multiprocess_mode``); gauges read from the
database at scrape time (storage per Client) are collected by the scraped process only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import structlog

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The shared metrics directory when several processes count together, else None."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


# Set but empty means off, for prometheus_client too (it would look for files in "").
if os.environ.get(MULTIPROC_ENV) == "":
    del os.environ[MULTIPROC_ENV]
# A process started with the variable but without the directory would fail on the
# first metric below with a bare FileNotFoundError: create it (never wipe it here,
# siblings may be counting in it).
if (_dir := multiprocess_dir()) is not None:
    _dir.mkdir(mode=0o700, parents=True, exist_ok=True)

from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

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


# What prometheus_client writes there: one file per process and kind of metric.
_VALUE_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")


def prepare_metrics_dir(path: Path) -> None:
    """For the process that starts the workers, before it starts them: create ``path``
    (0700) and remove the value files a previous run left there, so that counts start
    from zero with the new processes. Then set ``MULTIPROC_ENV`` to ``path`` in the
    workers' environment. Removes only files named as prometheus_client names them."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    for entry in path.iterdir():
        if _VALUE_FILE.fullmatch(entry.name) and entry.is_file():
            entry.unlink()


def worker_exited(pid: int, path: Path | None = None) -> None:
    """For the process that starts the workers, when worker ``pid`` has ended: its
    gauges of the "live" modes stop counting. Its counters stay (a counter must not go
    down because a worker was replaced)."""
    directory = path or multiprocess_dir()
    if directory is not None:
        mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def scrape_registry(*collectors: Collector) -> CollectorRegistry:
    """What ``/metrics`` answers from: ``REGISTRY`` (with ``collectors`` registered on it)
    in one process; in multiprocess mode, the sum of every process's files plus
    ``collectors``, which this process alone reports (they read shared state, e.g. the
    database, so summing them over processes would count it N times)."""
    directory = multiprocess_dir()
    registry = REGISTRY if directory is None else CollectorRegistry()
    if directory is not None:
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    return registry


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
