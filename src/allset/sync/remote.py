"""The server, as the sync engine sees it: a snapshot, a change feed, and batched
transfers — all over the public ``/api/v1`` (sync talks HTTP only, like any client).

Batching is what makes 10,000 small files take seconds rather than minutes: chunks travel
many to a request in a simple framing (32-byte SHA-256, 4-byte big-endian length, bytes),
and commits go 500 to a request, each answered on its own (one stale base does not fail
the others).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from allset.client.transfer import RateLimiter, TransferError, check_response
from allset.sync.state import RemoteEntry

API = "/api/v1"
FRAME = struct.Struct(">32sI")
COMMIT_BATCH = 500
FETCH_BYTES = 32 << 20  # per chunks/fetch request
SEND_BYTES = 32 << 20  # per chunks/batch request
PIECE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    kind: str
    path: str
    source: str | None


class Remote:
    def __init__(self, http: httpx.Client, root: str, limiter: RateLimiter | None = None) -> None:
        self.http = http
        self.root = "/" + root.strip("/") if root.strip("/") else ""
        self.limiter = limiter

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else (self.root or "/")

    def url(self, prefix: str, key: str) -> str:
        return f"{API}/{prefix}{quote(self.path(key))}"

    # ---- reading the server's state ------------------------------------------------
    def exists_root(self) -> bool:
        resp = self.http.get(f"{API}/tree{quote(self.root or '/')}", params={"limit": 1})
        if resp.status_code == 404:
            return False
        body = check_response(resp, f"reading {self.root or '/'}")
        if body.get("type") != "folder":
            raise TransferError(f"{self.root} on the server is a file, not a folder.")
        return True

    def snapshot(self) -> tuple[dict[str, RemoteEntry], int]:
        """Everything under the synced folder, and the feed cursor it was read at."""
        resp = self.http.get(f"{API}/snapshot{quote(self.root or '/')}")
        body = check_response(resp, f"listing {self.root or '/'}")
        out: dict[str, RemoteEntry] = {}
        for e in body["entries"]:
            if e["type"] == "folder":
                out[e["path"]] = RemoteEntry("dir", mtime=e.get("mtime", ""))
            else:
                out[e["path"]] = RemoteEntry(
                    "file", e["size"], e["sha256"], e["version"], e.get("mtime", "")
                )
        return out, int(body["cursor"])

    def snapshot_into(
        self, sink: Callable[[list[tuple[str, str, int, str, str, str]]], None]
    ) -> int:
        """The same as ``snapshot``, streamed (NDJSON) into ``sink`` in batches of rows
        (key, kind, size, sha256, version, mtime): memory stays flat on 100,000 files.
        Returns the cursor."""
        what = f"listing {self.root or '/'}"
        headers = {"Accept": "application/x-ndjson"}
        with self.http.stream(
            "GET", f"{API}/snapshot{quote(self.root or '/')}", headers=headers
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                check_response(resp, what)
            lines = resp.iter_lines()
            head = json.loads(next(lines, "") or "null")
            if not isinstance(head, dict) or "cursor" not in head:
                raise TransferError(f"{what}: the server's answer does not start with a cursor.")
            batch: list[tuple[str, str, int, str, str, str]] = []
            for line in lines:
                if not line:
                    continue
                e = json.loads(line)
                if e["type"] == "folder":
                    batch.append((e["path"], "dir", 0, "", "", e.get("mtime", "")))
                else:
                    batch.append(
                        (
                            e["path"],
                            "file",
                            e["size"],
                            e["sha256"],
                            e["version"],
                            e.get("mtime", ""),
                        )
                    )
                if len(batch) >= 5000:
                    sink(batch)
                    batch = []
            if batch:
                sink(batch)
        return int(head["cursor"])

    def changes(self, since: int | None, wait: float = 0) -> tuple[list[Change], int, bool]:
        params: dict[str, Any] = {"wait": int(wait)}
        if since is not None:
            params["since"] = since
        timeout = httpx.Timeout(wait + 30.0, connect=15.0)
        resp = self.http.get(f"{API}/changes", params=params, timeout=timeout)
        body = check_response(resp, "reading the change feed")
        changes = [Change(c["id"], c["kind"], c["path"], c.get("source")) for c in body["changes"]]
        return changes, int(body["cursor"]), bool(body.get("more"))

    def concerns_us(self, change: Change) -> bool:
        root = self.root + "/"
        return any(
            p is not None and (p == self.root or p.startswith(root) or not self.root)
            for p in (change.path, change.source)
        )

    # ---- chunks ------------------------------------------------------------------------
    def missing(self, hashes: list[str]) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(hashes), 50_000):
            body = check_response(
                self.http.post(f"{API}/chunks/missing", json={"chunks": hashes[i : i + 50_000]}),
                "asking which chunks the server lacks",
            )
            out.update(body["missing"])
        return out

    def send_chunks(self, frames: Iterable[tuple[str, bytes]]) -> int:
        """Send (hash, bytes) frames, grouped into requests of about 32 MiB; returns bytes."""
        sent = 0
        group: list[tuple[str, bytes]] = []
        size = 0
        for h, data in frames:
            group.append((h, data))
            size += len(data)
            if size >= SEND_BYTES:
                sent += self._send(group)
                group, size = [], 0
        if group:
            sent += self._send(group)
        return sent

    def _send(self, group: list[tuple[str, bytes]]) -> int:
        limiter = self.limiter

        def body() -> Iterator[bytes]:
            for h, data in group:
                yield FRAME.pack(bytes.fromhex(h), len(data))
                for i in range(0, len(data), PIECE):
                    piece = data[i : i + PIECE]
                    if limiter is not None:
                        limiter.consume(len(piece))
                    yield piece

        total = sum(len(d) for _, d in group)
        check_response(
            self.http.post(
                f"{API}/chunks/batch",
                content=body(),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(total + FRAME.size * len(group)),
                },
            ),
            f"sending {len(group)} chunks",
        )
        return total

    def fetch_chunks(self, hashes: list[str]) -> Iterator[tuple[str, bytes]]:
        """(hash, bytes) for each requested chunk, in order; the caller verifies."""
        with self.http.stream("POST", f"{API}/chunks/fetch", json={"chunks": hashes}) as resp:
            if resp.status_code >= 400:
                resp.read()
                check_response(resp, f"fetching {len(hashes)} chunks")
            buf = bytearray()
            it = resp.iter_bytes(PIECE)
            for want in hashes:
                for _ in range(1 << 30):
                    if len(buf) >= FRAME.size:
                        break
                    piece = next(it, b"")
                    if not piece:
                        raise TransferError("The server's answer ended in the middle of a chunk.")
                    buf += piece
                digest, size = FRAME.unpack_from(buf)
                if digest.hex() != want:
                    raise TransferError(
                        f"The server answered chunk {digest.hex()[:12]}, not {want[:12]}."
                    )
                del buf[: FRAME.size]
                for _ in range(1 << 30):
                    if len(buf) >= size:
                        break
                    piece = next(it, b"")
                    if not piece:
                        raise TransferError("The server's answer ended in the middle of a chunk.")
                    if self.limiter is not None:
                        self.limiter.consume(len(piece))
                    buf += piece
                data = bytes(buf[:size])
                del buf[:size]
                yield want, data

    def manifest(self, key: str) -> dict[str, Any]:
        resp = self.http.get(self.url("manifest", key))
        return check_response(resp, f"reading the manifest of {self.path(key)}")  # type: ignore[no-any-return]

    # ---- changes ---------------------------------------------------------------------
    def commit(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = self.http.post(f"{API}/commit/batch", json={"files": items})
        body = check_response(resp, f"committing {len(items)} files")
        return list(body["results"])

    def delete(self, key: str, version: str = "") -> int:
        """Move to the server's trash; returns the status (412: it changed meanwhile)."""
        headers = {"If-Match": f'"{version}"'} if version else {}
        resp = self.http.delete(self.url("files", key), headers=headers)
        if resp.status_code in (404, 412):
            return resp.status_code
        check_response(resp, f"deleting {self.path(key)}")
        return resp.status_code

    def mkdir(self, key: str) -> None:
        resp = self.http.post(f"{API}/mkdir", json={"path": self.path(key), "parents": True})
        if resp.status_code in (409,) and self._is_folder(key):
            return
        check_response(resp, f"creating {self.path(key)}")

    def _is_folder(self, key: str) -> bool:
        resp = self.http.get(self.url("tree", key), params={"limit": 1})
        return resp.status_code == 200 and resp.json().get("type") == "folder"

    def move(self, key: str, to_key: str) -> int:
        resp = self.http.post(f"{API}/move", json={"from": self.path(key), "to": self.path(to_key)})
        if resp.status_code in (404, 409, 412):
            return resp.status_code
        check_response(resp, f"moving {self.path(key)}")
        return resp.status_code
