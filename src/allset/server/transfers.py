"""Live transfers: per-Client bandwidth shaping (R-BW-1), the list of what is moving, and
the operator's interrupt (R-BW-2) — for every protocol at once.

It is one pure-ASGI middleware around the whole app, so REST, WebDAV (whose WSGI
adapter reads and writes through the same ASGI receive/send), tus and public links are
all shaped by the same per-Client buckets, one per direction. A request is charged to
the Client of its authenticated principal (``scope["allset.principal"]``) or, for
anonymous requests served on a Client's behalf (public links), to
``scope["allset.tenant_id"]``.

Shaping is a token bucket that may go into debt: each body piece takes its size from
the bucket and sleeps until the debt is repaid, so all connections of a Client share
the rate and the total is exact over time (burst: 64 KiB or 50 ms of rate). Delaying
``receive`` stops reading from the socket, so TCP back-pressure slows the sender.
The buckets' state is a record in a ``SharedTable`` (``DATA/run/buckets.shm`` when the
app is built on a data dir): connections of one Client served by different worker
processes draw from the same bucket, so they share one rate, and a lone transfer still
gets all of it (splitting the rate by the number of processes would not).

An interrupted transfer raises ``TransferInterrupted`` in its next receive or send: an
upload is aborted like any failed upload (nothing half-committed; tus keeps what was
made durable, to resume), a download's connection is cut (the client resumes with Range).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from allset.core.errors import StorageUnavailable
from allset.core.shared_table import SharedTable, Values

RATE_TTL = 10.0  # seconds a Client's limits are cached (the CLI also asks for a reload)
BUCKET_SETS = 512  # x 8 ways: 4,096 buckets (two per Client transferring), 160 KiB
BUCKET_FIELDS = 2  # tokens, time of the last refill (time.monotonic)
MAX_DEBT_SECONDS = 60.0  # a bucket's debt read back is capped (the file is only a hint)


def open_bucket_table(path: Path) -> SharedTable:
    """The buckets' table file, shared by every process that opens it (close it)."""
    return SharedTable.open(path, sets=BUCKET_SETS, fields=BUCKET_FIELDS)


class TransferInterrupted(StorageUnavailable):
    """The operator cut this Client's transfers; the client may resume later."""

    title = "Transfer interrupted"
    slug = "transfer-interrupted"


class DownloadInterrupted(Exception):
    """Raised in ``send`` once the response has started: not an AllsetError, since no
    error answer can follow; the connection is cut and the client resumes with Range."""


class SharedBucket:
    """A token bucket whose state is a record of a ``SharedTable``: every process's
    connections of one Client, one way, take from it. The rate is this process's
    reading of the Client's limit (every process reads the same setting, each within
    ``RATE_TTL`` of a change)."""

    def __init__(self, table: SharedTable, key: bytes, rate: float) -> None:
        self.table = table
        self.key = key
        self.rate = max(1.0, rate)

    @property
    def burst(self) -> float:
        return max(65536.0, self.rate * 0.05)

    def set_rate(self, rate: float) -> None:
        self.rate = max(1.0, rate)

    def take(self, n: int) -> float:
        """Take ``n`` bytes' worth of tokens; the seconds to wait until the debt is repaid."""
        rate, burst = self.rate, self.burst

        def refill_and_take(record: Values | None) -> Values:
            now = time.monotonic()  # under the lock: records only move forward in time
            tokens, updated = record or (burst, now)
            tokens = max(tokens, -rate * MAX_DEBT_SECONDS)
            tokens = min(burst, tokens + max(0.0, now - updated) * rate)
            return (tokens - n, now)

        left = self.table.update(self.key, refill_and_take)
        return -left[0] / rate if left and left[0] < 0 else 0.0

    async def consume(self, n: int) -> None:
        wait = self.take(n)
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class Transfer:
    id: int
    tenant_id: str
    user: str
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    bytes_in: int = 0
    bytes_out: int = 0
    interrupted: bool = False

    def to_json(self, tenant_name: str = "") -> dict[str, Any]:
        elapsed = max(1e-6, time.monotonic() - self.started)
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "tenant": tenant_name,
            "user": self.user,
            "method": self.method,
            "path": self.path,
            "seconds": round(elapsed, 1),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "rate_in_bps": int(self.bytes_in * 8 / elapsed),
            "rate_out_bps": int(self.bytes_out * 8 / elapsed),
        }


class Transfers:
    """The registry (this process's transfers) and the buckets (shared through ``table``,
    or private to the process without one). ``load_limits(tenant_id) -> (up, down)`` in
    bytes/s, or None for an unknown Client."""

    def __init__(
        self,
        load_limits: Callable[[str], tuple[int, int] | None],
        count: Callable[[str, int, int], None] | None = None,
        table: SharedTable | None = None,
    ) -> None:
        self.load_limits = load_limits
        # ``count(tenant_id, bytes_in, bytes_out)`` for the usage history: every byte
        # of every protocol passes here, so this is where a Client's traffic is known.
        self.count = count
        self.live: dict[int, Transfer] = {}
        self._ids = itertools.count(1)
        self.table = table or SharedTable.private(sets=BUCKET_SETS, fields=BUCKET_FIELDS)
        self._buckets: dict[str, tuple[SharedBucket, SharedBucket, float]] = {}

    async def buckets(self, tenant_id: str) -> tuple[SharedBucket, SharedBucket]:
        cached = self._buckets.get(tenant_id)
        if cached is None or time.monotonic() - cached[2] > RATE_TTL:
            limits = await run_in_threadpool(self.load_limits, tenant_id)
            up_rate, down_rate = limits or (1 << 40, 1 << 40)
            if cached is None:
                cached = (
                    SharedBucket(self.table, self.table.key(f"up\0{tenant_id}"), up_rate),
                    SharedBucket(self.table, self.table.key(f"down\0{tenant_id}"), down_rate),
                    time.monotonic(),
                )
            else:
                cached[0].set_rate(up_rate)
                cached[1].set_rate(down_rate)
                cached = (cached[0], cached[1], time.monotonic())
            self._buckets[tenant_id] = cached
        return cached[0], cached[1]

    def reload(self, tenant_id: str | None = None) -> None:
        """Forget cached limits (all, or one Client's): the next piece reads them anew."""
        for tid, (up, down, _) in list(self._buckets.items()):
            if tenant_id is None or tid == tenant_id:
                self._buckets[tid] = (up, down, -1e9)

    def interrupt(self, tenant_id: str) -> int:
        cut = 0
        for t in self.live.values():
            if t.tenant_id == tenant_id and not t.interrupted:
                t.interrupted = True
                cut += 1
        return cut

    def snapshot(self, tenant_id: str | None = None) -> list[Transfer]:
        return [t for t in self.live.values() if tenant_id is None or t.tenant_id == tenant_id]


def _tenant_of(scope: Scope) -> tuple[str, str]:
    principal = scope.get("allset.principal")
    if principal is not None and principal.tenant_id:
        return principal.tenant_id, principal.email
    return scope.get("allset.tenant_id", ""), ""


class TransferMiddleware:
    def __init__(self, app: ASGIApp, transfers: Transfers) -> None:
        self.app = app
        self.transfers = transfers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reg = self.transfers
        state: dict[str, Any] = {"transfer": None, "told": False}

        def current(sending: bool = False) -> Transfer | None:
            t: Transfer | None = state["transfer"]
            if t is None:
                tenant_id, user = _tenant_of(scope)
                if not tenant_id:
                    return None
                t = Transfer(next(reg._ids), tenant_id, user, scope["method"], scope["path"])
                state["transfer"] = t
                reg.live[t.id] = t
            if t.interrupted and not state.get("told"):
                state["told"] = True  # once: the error answer itself must go out
                if sending and state.get("started"):
                    raise DownloadInterrupted(scope["path"])
                raise TransferInterrupted(
                    "The operator interrupted this Client's transfers; nothing partial was "
                    "kept as a file. Retry later (uploads over tus resume where they stopped)."
                )
            return t

        async def shaped_receive() -> Message:
            msg = await receive()
            body = msg.get("body", b"") if msg["type"] == "http.request" else b""
            if body:
                t = current()
                if t is not None:
                    t.bytes_in += len(body)
                    if reg.count is not None:
                        reg.count(t.tenant_id, len(body), 0)
                    up, _ = await reg.buckets(t.tenant_id)
                    await up.consume(len(body))
                    current()  # an interrupt during the wait takes effect now
            return msg

        async def shaped_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                state["started"] = True
            elif msg["type"] == "http.response.body":
                body = msg.get("body", b"")
                if body:
                    t = current(sending=True)
                    if t is not None:
                        t.bytes_out += len(body)
                        if reg.count is not None:
                            reg.count(t.tenant_id, 0, len(body))
                        _, down = await reg.buckets(t.tenant_id)
                        await down.consume(len(body))
                        current(sending=True)
            await send(msg)

        try:
            await self.app(scope, shaped_receive, shaped_send)
        finally:
            t = state["transfer"]
            if t is not None:
                reg.live.pop(t.id, None)
