"""The operator's local channel to the running server: a Unix socket in the data dir.

``allset-server transfers list|interrupt`` and ``tenant limit`` run in another process;
live transfers exist only in the server's memory, so the CLI asks the server. The socket
is mode 0600 in the 0700 data dir: whoever may run the CLI on the data dir may use it,
nobody else (no network exposure, no password to manage).

Protocol: one JSON object per line each way. Requests: ``{"cmd": "transfers",
"tenant_id": optional}``, ``{"cmd": "interrupt", "tenant_id": ...}``, ``{"cmd": "reload",
"tenant_id": optional}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from allset.server.transfers import Transfers

log = logging.getLogger("allset.control")
MAX_LINE = 64 * 1024


class ControlServer:
    def __init__(self, path: Path, transfers: Transfers, tenant_names: Any) -> None:
        self.path = path
        self.transfers = transfers
        self.tenant_names = tenant_names  # () -> {tenant_id: name}, blocking
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a killed server
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            try:
                request = json.loads(line)
                answer = await self.handle(request if isinstance(request, dict) else {})
            except (ValueError, KeyError, TypeError) as exc:
                answer = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        tenant_id = request.get("tenant_id") or None
        if cmd == "transfers":
            names = await asyncio.to_thread(self.tenant_names)
            return {
                "ok": True,
                "transfers": [
                    t.to_json(names.get(t.tenant_id, ""))
                    for t in self.transfers.snapshot(tenant_id)
                ],
            }
        if cmd == "interrupt":
            if not tenant_id:
                return {"ok": False, "error": "interrupt needs tenant_id"}
            cut = self.transfers.interrupt(tenant_id)
            log.warning("transfers interrupted", extra={"tenant_id": tenant_id, "count": cut})
            return {"ok": True, "interrupted": cut}
        if cmd == "reload":
            self.transfers.reload(tenant_id)
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


def worker_socket(path: Path, index: int) -> Path:
    """Worker ``index`` of ``serve --workers`` listens on its own socket beside ``path``
    (live transfers are in each worker's memory): ``control.sock``, ``control.1.sock``..."""
    return path if index == 0 else path.with_name(f"{path.stem}.{index}{path.suffix}")


def ask_all(path: Path, request: dict[str, Any], timeout: float = 10) -> dict[str, Any] | None:
    """Ask every worker and merge: transfers listed together, interrupts counted together.
    None when no server is running on this data dir; the first refusal if any refused."""
    siblings = sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))
    answers = [a for p in [path, *siblings] if (a := ask(p, request, timeout)) is not None]
    if not answers:
        return None
    refused = [a for a in answers if not a.get("ok")]
    if refused:
        return refused[0]
    merged: dict[str, Any] = {"ok": True}
    if any("transfers" in a for a in answers):
        merged["transfers"] = [t for a in answers for t in a.get("transfers", [])]
    if any("interrupted" in a for a in answers):
        merged["interrupted"] = sum(int(a.get("interrupted", 0)) for a in answers)
    return merged


def ask(path: Path, request: dict[str, Any], timeout: float = 10) -> dict[str, Any] | None:
    """CLI side: None when no server is running on this data dir."""
    if not path.exists():
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < 16 * MAX_LINE:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    answer = json.loads(data)
    return answer if isinstance(answer, dict) else None
