"""Sending and fetching files with the chunk protocol, with proof of transfer.

A file is cut with the server's own content-defined chunking, so after a small edit
only the changed chunks travel; the server answers which chunks it lacks, the client
sends those, then commits the manifest. The server verifies every chunk and the whole
file's SHA-256 and answers with the SHA-256 it stored (``Repr-Digest``); the client
compares it with its own and fails loudly on a difference (R-STORE-7).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from allset.blobstore.chunker import StreamChunker

BLOCK = 1 << 20
PIECE = 64 * 1024  # the pacing step of --bwlimit


class RateLimiter:
    """``--bwlimit``: a token bucket the client's own transfers draw from (in debt, then
    sleep), so the average over a transfer is the limit. Thread-unsafe by design: one per
    command."""

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = max(1.0, bytes_per_second)
        self.burst = max(65536.0, self.rate * 0.05)
        self.tokens = self.burst
        self.updated = time.monotonic()

    def consume(self, n: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= n
        if self.tokens < 0:
            time.sleep(-self.tokens / self.rate)


def _paced(data: bytes, limiter: RateLimiter | None) -> Iterator[bytes]:
    for i in range(0, len(data), PIECE):
        piece = data[i : i + PIECE]
        if limiter is not None:
            limiter.consume(len(piece))
        yield piece


class TransferError(Exception):
    """A transfer failed in a way the user must hear about (the message says what to do)."""


class ProofMismatch(TransferError):
    """The server stored something other than what we sent."""


class LockedOnServer(TransferError):
    """423 because of a WebDAV lock: someone has the document open in an editor on the
    server, and only they may write it until the lock goes. Not a failed transfer and
    not a conflict: nothing was changed on either side, and the same request will work
    once the document is closed (or an owner or admin breaks the lock)."""

    def __init__(self, path: str, holder: str, until: str, lock_id: str) -> None:
        self.path, self.holder, self.until, self.lock_id = path, holder, until, lock_id
        fix = f"allset unlock {lock_id}" if lock_id else "allset locks"
        super().__init__(
            f"{path} is locked on the server by {holder} until {until} UTC (a document open "
            f"in an editor). Close the document or wait; an owner or admin can break the "
            f"lock: {fix}"
        )

    @classmethod
    def from_problem(cls, body: dict[str, Any]) -> LockedOnServer | None:
        """The lock a 423 problem+json names (``files/locks.py`` on the server), or None
        for another 423 (a tus upload another request holds)."""
        if not str(body.get("type", "")).endswith("/resource-locked"):
            return None
        return cls(
            str(body.get("lock_path") or body.get("path") or "?"),
            str(body.get("lock_owner") or body.get("lock_user") or "another user"),
            str(body.get("lock_expires_at") or "?")[:16].replace("T", " "),
            str(body.get("lock_id") or ""),
        )


@dataclass(frozen=True)
class ChunkPlan:
    sha256: str
    size: int
    chunks: list[tuple[str, int, int]]  # (hash, offset, size)


@dataclass(frozen=True)
class PushResult:
    path: str
    version: str
    sha256: str
    size: int
    bytes_sent: int
    chunks_sent: int
    chunks_total: int


def plan_file(local: Path) -> ChunkPlan:
    """Chunk a file in constant memory: hashes and offsets only, no bytes kept."""
    whole = hashlib.sha256()
    chunker = StreamChunker()
    chunks: list[tuple[str, int, int]] = []
    offset = 0

    def take(piece: bytes) -> None:
        nonlocal offset
        chunks.append((hashlib.sha256(piece).hexdigest(), offset, len(piece)))
        offset += len(piece)

    with local.open("rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            whole.update(block)
            for piece in chunker.feed(block):
                take(piece)
    for piece in chunker.finish():
        take(piece)
    return ChunkPlan(whole.hexdigest(), offset, chunks)


def digest_of(header: str | None) -> str | None:
    """``sha-256=:base64:`` -> hex, or None."""
    if not header or not header.startswith("sha-256=:"):
        return None
    return base64.b64decode(header.removeprefix("sha-256=:").rstrip(":")).hex()


def check_response(resp: httpx.Response, what: str) -> Any:
    """The JSON of a successful answer, or TransferError with the server's own words."""
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransferError(f"{what}: {resp.status_code} {resp.text}")
        locked = LockedOnServer.from_problem(body) if resp.status_code == 423 else None
        if locked is not None:
            raise locked
        raise TransferError(f"{what}: {resp.status_code} {body.get('detail', resp.text)}")
    return resp.json() if resp.content else None


def push_file(
    http: httpx.Client,
    local: Path,
    remote: str,
    base_version: str | None = None,
    limiter: RateLimiter | None = None,
    progress: Callable[[int], None] | None = None,
) -> PushResult:
    """Upload ``local`` to ``remote`` sending only the chunks the server lacks.
    ``base_version``: the version this edit started from (412 if someone changed it).
    ``progress`` is told each chunk's size once it is on the server (sent or known)."""
    plan = plan_file(local)
    hashes = [h for h, _, _ in plan.chunks]
    missing = set(
        check_response(
            http.post("/api/v1/chunks/missing", json={"chunks": hashes}), "asking for chunks"
        )["missing"]
    )
    sent, sent_bytes = set(), 0
    with local.open("rb") as f:
        for h, offset, size in plan.chunks:
            if h not in missing or h in sent:
                if progress is not None:
                    progress(size)
                continue
            f.seek(offset)
            data = f.read(size)
            if hashlib.sha256(data).hexdigest() != h:
                raise TransferError(f"{local} changed while it was being sent; try again.")
            check_response(
                http.put(
                    f"/api/v1/chunks/{h}",
                    content=_paced(data, limiter),
                    headers={"Content-Length": str(len(data))},
                ),
                f"sending chunk {h[:12]}",
            )
            sent.add(h)
            sent_bytes += size
            if progress is not None:
                progress(size)
    body = {"path": remote, "sha256": plan.sha256, "chunks": hashes, "size": plan.size}
    if base_version:
        body["base_version"] = base_version
    resp = http.post("/api/v1/commit", json=body)
    result = check_response(resp, f"committing {remote}")
    stored = digest_of(resp.headers.get("repr-digest"))
    if stored != plan.sha256 or result["sha256"] != plan.sha256:
        raise ProofMismatch(
            f"The server stored {stored} for {remote} but {local} has SHA-256 {plan.sha256}; "
            "the upload is NOT trustworthy. Upload again and report this to the operator."
        )
    return PushResult(
        result["path"],
        result["version"],
        plan.sha256,
        plan.size,
        sent_bytes,
        len(sent),
        len(set(hashes)),
    )


def local_chunks(*paths: Path) -> dict[str, tuple[Path, int, int]]:
    """Chunks already on this computer (hash -> where), from files that may share content
    with a download: the old version of the file, an interrupted download of it."""
    out: dict[str, tuple[Path, int, int]] = {}
    for p in paths:
        try:
            for h, offset, size in plan_file(p).chunks:
                out.setdefault(h, (p, offset, size))
        except OSError:
            continue
    return out


def _read_local(where: tuple[Path, int, int]) -> bytes | None:
    path, offset, size = where
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(size)
    except OSError:
        return None


def pull_file(
    http: httpx.Client,
    remote: str,
    local: Path,
    have: Mapping[str, bytes | tuple[Path, int, int]],
    limiter: RateLimiter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Download ``remote`` fetching only chunks not in ``have`` (hash -> the bytes, or
    where a local file holds them); returns the bytes fetched. Verified chunk by chunk
    (local ones too: a file may have changed since it was chunked) and as a whole before
    it takes its name."""
    man = check_response(http.get("/api/v1/manifest" + quote(remote)), f"reading {remote}")
    if progress is not None:
        progress(0, int(man["size"]))  # the total, once known
    whole = hashlib.sha256()
    fetched = 0
    tmp = local.with_name(local.name + ".allset-part")
    with tmp.open("wb") as out:
        for c in man["chunks"]:
            known = have.get(c["hash"])
            data = _read_local(known) if isinstance(known, tuple) else known
            if data is not None and hashlib.sha256(data).hexdigest() != c["hash"]:
                data = None  # changed since: fetch it after all
            if data is None:
                with http.stream("GET", f"/api/v1/chunks/{c['hash']}") as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        check_response(resp, f"fetching chunk {c['hash'][:12]}")
                    pieces = []
                    for piece in resp.iter_bytes(PIECE):
                        if limiter is not None:
                            limiter.consume(len(piece))
                        pieces.append(piece)
                data = b"".join(pieces)
                fetched += len(data)
            if hashlib.sha256(data).hexdigest() != c["hash"]:
                raise ProofMismatch(f"Chunk {c['hash'][:12]} of {remote} arrived damaged.")
            whole.update(data)
            out.write(data)
            if progress is not None:
                progress(len(data), 0)
        out.flush()
        os.fsync(out.fileno())  # durable before it takes the real name
    if whole.hexdigest() != man["sha256"]:
        tmp.unlink(missing_ok=True)
        raise ProofMismatch(f"{remote} does not match its SHA-256 {man['sha256']}.")
    tmp.replace(local)
    return fetched
