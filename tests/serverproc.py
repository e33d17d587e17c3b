"""A real ``allset-server`` subprocess on an ephemeral loopback port, for system tests
and benchmarks. Start, kill -9, restart; run operator commands on the same data dir."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
SERVER = str(BIN / "allset-server")


class ServerProcess:
    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, plain_http: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "ALLSET_LOG_JSON": "1", **(env or {})}
        self.plain_http = plain_http
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        # 0: an ephemeral port. A test that restarts the server under a browser sets the
        # port it had, so the page's origin (cookies, localStorage, upload URLs) survives.
        self.port = 0
        self.fingerprint = ""
        self.operator_password: str | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``allset-server --data DIR ARGS`` and return the completed process."""
        res = subprocess.run(
            [SERVER, "--data", str(self.data_dir), *args],
            capture_output=True,
            check=False,
            text=True,
            input=input,
            env=self.env,
            timeout=120,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"allset-server {' '.join(args)} failed: {res.stderr}")
        return res

    def cli_json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.cli("--json", *args, input=input).stdout)

    def start(self, timeout: float = 60) -> None:
        args = [SERVER, "--data", str(self.data_dir), "serve", "--port", str(self.port)]
        if self.plain_http:
            args.append("--plain-http")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its life
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, env=self.env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        self.url, self.operator_password = "", None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
                continue
            lines.append(line)
            if m := re.search(r"serving (https?://\S+)/", line):
                self.url = m.group(1)
            if m := re.search(r"fingerprint: ([0-9A-F:]+)", line):
                self.fingerprint = m.group(1)
            if m := re.search(r"one-time password \(shown once\): (\S+)", line):
                self.operator_password = m.group(1)
            if self.url:
                break
        else:
            raise RuntimeError("server did not start: " + "".join(lines))
        # Wait until the socket answers (startup maintenance runs before it does).
        for _ in range(300):
            try:
                with self.client() as c:
                    if c.get("/healthz").status_code == 200:
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server never became healthy")

    @property
    def cert(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def client(self, **kw: Any) -> httpx.Client:
        verify: Any = True if self.plain_http else ssl.create_default_context(cafile=str(self.cert))
        kw.setdefault("timeout", 60)
        return httpx.Client(base_url=self.url, verify=verify, **kw)

    def kill(self) -> None:
        """kill -9: the crash a power cut or OOM killer would cause."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def make_account(self, tenant: str, email: str, quota: str = "10GiB") -> tuple[str, str]:
        """A Client with an owner; returns (email, app password) for Basic auth."""
        self.cli("tenant", "create", tenant, "--quota", quota)
        self.cli("user", "create", "--tenant", tenant, email, "--role", "owner")
        return email, self.cli_json("token", "create", email)["password"]
