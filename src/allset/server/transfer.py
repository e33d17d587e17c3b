"""Moving bytes between the network and the façade without holding a file in memory.

Both directions overlap network and disk: while one block is being chunked, hashed and
fsynced in a worker thread, the next is being received (or sent). Memory stays at a
couple of blocks per transfer whatever the file size.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from allset.core.errors import InvalidInput
from allset.files.entries import ChunkRef

BLOCK = 1 << 20
# pump_request: blocks handed to the writing thread, and how much may arrive meanwhile.
# 1 and 2 MiB made the socket wait for the writer ~0.7 s of a 2.4 s 512 MiB PUT. A/B,
# plain HTTP, 512 MiB: 1/2 MiB ~250 MB/s, 2/4 ~283, 2/8 ~284; peak RSS of a 2 GiB PUT
# 164-173, 174-180, 187-192 MB (the goal is < 200).
RECEIVE_BLOCK = 2 << 20
RECEIVE_AHEAD = 4 << 20


class Sink(Protocol):
    def write(self, data: bytes | bytearray) -> None: ...


async def pump_request(request: Request, upload: Sink) -> None:
    """Feed the request body into ``upload`` (an Upload, a resumable Appender) in a worker
    thread, in blocks of at least ``RECEIVE_BLOCK``; never two writes at once.

    While a block is being written the next one keeps arriving, up to ``RECEIVE_AHEAD``:
    the worker's time per block varies (a chunk to cut, a replica's fsync to wait for),
    and stopping the socket at exactly one block ahead made network and disk take turns.
    A block that grew while the worker was busy is handed over whole."""
    buf = bytearray()
    pending: asyncio.Future[None] | None = None
    try:
        async for piece in request.stream():
            if not piece:
                continue
            buf += piece
            if len(buf) < RECEIVE_BLOCK:
                continue
            if pending is not None:
                if not pending.done() and len(buf) < RECEIVE_AHEAD:
                    continue
                await pending
            data, buf = buf, bytearray()  # handed over, not copied: never touched again
            pending = asyncio.ensure_future(run_in_threadpool(upload.write, data))
        if pending is not None:
            await pending
            pending = None
        if buf:
            await run_in_threadpool(upload.write, bytes(buf))
    finally:
        if pending is not None and not pending.done():
            # The client went away mid-write: let the write finish before anyone aborts.
            await asyncio.wait([pending])


# Chunks read and verified in parallel ahead of the socket. Big chunks are written with
# O_DIRECT, so a file just uploaded is read from the disk, not the page cache: 3 gave
# ~580 MB/s for a 512 MiB GET (plain HTTP), 6 ~720 (TLS 400 -> 470-580).
READ_AHEAD = 6
SEND_PIECE = 256 * 1024  # TLS encrypts each write into a growing buffer; smaller is faster


async def open_stream(
    read: Callable[[ChunkRef, int, int], bytes], plan: list[tuple[ChunkRef, int, int]]
) -> AsyncIterator[bytes | memoryview]:
    """Read (and so verify) the first chunk *before* the status line goes out, so that a
    file whose first chunk has no valid copy gets a clean error response; later failures
    can only cut the body short (the client sees a length mismatch, never wrong bytes)."""
    pending: deque[asyncio.Future[bytes]] = deque()
    todo = iter(plan)

    def refill() -> None:
        while len(pending) < READ_AHEAD:
            step = next(todo, None)
            if step is None:
                return
            pending.append(asyncio.ensure_future(run_in_threadpool(read, *step)))

    refill()
    first = await pending[0] if pending else None
    return _send(first, pending, refill)


async def _send(
    first: bytes | None, pending: deque[asyncio.Future[bytes]], refill: Callable[[], None]
) -> AsyncIterator[bytes | memoryview]:
    try:
        while pending:
            block = first if first is not None else await pending[0]
            first = None
            pending.popleft()
            refill()
            view = memoryview(block)
            for i in range(0, len(view), SEND_PIECE):
                yield view[i : i + SEND_PIECE]
    finally:
        for f in pending:
            f.cancel()
        if pending:
            await asyncio.wait(list(pending))


def repr_digest(sha256_hex: str) -> str:
    """RFC 9530 ``Repr-Digest`` value (R-STORE-7)."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256_hex)).decode() + ":"


_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
_DIGEST = re.compile(r"sha-256\s*=\s*:([A-Za-z0-9+/=]+):")


def parse_digest(value: str | None) -> str | None:
    """The sender's SHA-256 from ``Repr-Digest``/``Content-Digest``, as hex."""
    if not value:
        return None
    m = _DIGEST.search(value)
    if not m:
        if "sha-256" in value:
            raise InvalidInput(
                "Cannot read the sha-256 digest; send Repr-Digest: sha-256=:BASE64:."
            )
        return None  # other algorithms: nothing we can check
    try:
        raw = base64.b64decode(m.group(1), validate=True)
    except ValueError as exc:
        raise InvalidInput("The sha-256 digest is not valid base64.") from exc
    if len(raw) != 32:
        raise InvalidInput("A sha-256 digest has 32 bytes.")
    return raw.hex()


def parse_mtime(value: str | None) -> datetime | None:
    """Modification time sent by the client: epoch seconds or ISO 8601 with offset."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(
                f"Cannot read modification time {value!r}; send epoch seconds or ISO 8601."
            ) from exc
        if when.tzinfo is None:
            raise InvalidInput("The modification time needs a time zone offset.") from None
        return when.astimezone(UTC)
    if not (0 <= seconds < 253402300800):
        raise InvalidInput("The modification time is out of range.")
    return datetime.fromtimestamp(seconds, UTC)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One byte range ``[start, end)``; None means "send everything".

    Several ranges are answered with the whole file, which RFC 9110 allows and which
    every client handles; malformed ranges are ignored the same way.
    """
    m = _RANGE.match(header or "")
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise ValueError
            return (max(0, size - n), size) if size else (-1, -1)
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start < 0 or (last and end <= start):
        return None
    if start >= size:
        return (-1, -1)  # unsatisfiable
    return start, min(end, size)
