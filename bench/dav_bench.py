"""WebDAV at ``/dav/`` beside peer WebDAV servers, on the same machine in the same run.

Run:  .venv/bin/python bench/dav_bench.py [--quick] [--repeat 3] [--runs 3] [--size-mib 512]
      [--small 2000] [--conns 8] [--clients 2] [--entries 10000]
      [--servers rclone,apache,nginx,ours-plain,ours-tls] [--no-install] [--json out.json]
      [--keep] [--quiet-wait 30] [--quiet-cores 0.3] [--phase-seconds 300] [--max-minutes 40]
      (--quick = --size-mib 64 --small 200 --entries 1000 --repeat 1 --runs 1, a smoke run)

Servers (each on 127.0.0.1 only, on a port of its own, over a fresh directory or data dir in a
temporary directory under ``--tmp``, stopped by its PID):

- ``rclone serve webdav DIR`` (Debian's rclone, empty config, its defaults);
- Apache ``mod_dav_fs`` (mpm_event, our own config file: ``Dav On``, ``DavLockDB``,
  ``LimitRequestBody 0``, unlimited keep-alive; children run as www-data);
- nginx with ``ngx_http_dav_module`` + dav-ext (``dav_ext_methods PROPFIND OPTIONS``,
  ``create_full_put_path on``, ``client_max_body_size 0``, sendfile, worker_processes auto);
- ours, ``allset-server`` (via ``tests/serverproc.py``) in plain-HTTP proxy mode (the
  side-by-side row) and over TLS (second row; the client verifies the server's certificate).
  HTTP Basic auth (email, app password) on every request to ``/dav/``.

Missing Debian packages (apache2, nginx, libnginx-mod-http-dav-ext, rclone) are installed with
apt-get (services are not started: a policy-rc.d is put in place when there is none). A peer
that cannot be installed or started is reported and skipped; the others still run.

Each server's folder ``many/`` with ``--entries`` small files is made before the server starts
(rclone caches listings; ours is filled through its own library in a subprocess). Then, in
``--repeat`` rounds, the servers take turns (the order rotates every round); on its turn a
server is started, measured and stopped:

a. PUT of a ``--size-mib`` file of random data (ChaCha20 keystream, new for each run, made in
   memory in advance and sent in 1 MiB pieces with a Content-Length by ``http.client``), to a
   name that was DELETEd and ``sync``ed just before (fresh disk blocks are much slower on this
   machine than just-freed ones). MB/s with MB = 10^6 bytes.
b. GET of it into one reused 1 MiB buffer, not hashed; the SHA-256 is checked once per round
   by an extra untimed GET.
c. ``--small`` PUTs of 4 KiB into a freshly MKCOLed collection over ``--conns`` keep-alive
   connections from ``--clients`` client processes (this script with a hidden option, one
   ``http.client`` connection per thread, connected and warmed before the clock starts);
   files/s = files / wall time from "go" to the last answer; every answer must be 201/204.
d. PROPFIND ``Depth: 1`` on ``many/``: allprop (empty body) and a body naming resourcetype,
   getcontentlength, getlastmodified, getetag. One warm-up, then ``--runs`` timed runs of
   each (request and whole body); each answer must be 207 with entries + 1 ``response``
   elements.
e. Peak RSS during a-d: VmHWM from /proc/PID/status, reset through /proc/PID/clear_refs at the
   start of the turn and sampled every 0.1 s for every process of the server (the sample keeps
   the peak of workers that exit): "main" = the server's first process, "all" = the sum over
   its processes (shared pages counted more than once).

Phases a, b and c run ``--runs`` times per round; every cell is median (min-max) over all runs
of all rounds. Before each timed phase the script waits (up to ``--quiet-wait`` s) until other
processes use less than ``--quiet-cores``; the highest such load seen is printed per server.
References from ``server_bench.py``: ``dd`` 512 MiB with fsync into a new file (fresh blocks)
and over it (reused blocks), before and after the servers.

Goals (issue tracker): PROPFIND <= 0.25 s (ours plain, both request kinds); GET >= 600 MB/s
(ours plain); small-file PUT at least rclone's rate in the same run (ours plain).

A full run (3 rounds x 3 runs) takes ~15 min on the 2-core VM when it is quiet, most of it
ours' small-file phase; it needs ~20 GB free under ``--tmp`` (ours keeps every 512 MiB PUT,
twice, in its trash). ``--max-minutes`` stops it and prints what was measured by then.

Only loopback addresses are used; every loop is bounded in count and in time; servers are
stopped and temporary directories removed even on failure (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from proctree import proc_status_kb, wait_quiet  # noqa: E402 - beside this file
from server_bench import (  # noqa: E402
    MiB,
    StdlibClient,
    Timeout,
    dd_references,
    get_discard,
    keystream,
    machine_info,
    mbps,
    sha256_of,
)

from serverproc import ServerProcess  # noqa: E402 - on sys.path through server_bench

PACKAGES = {  # Debian package -> a file that shows it is installed
    "rclone": "/usr/bin/rclone",
    "apache2": "/usr/sbin/apache2",
    "nginx": "/usr/sbin/nginx",
    "libnginx-mod-http-dav-ext": "/usr/lib/nginx/modules/ngx_http_dav_ext_module.so",
}
APACHE_MODULES = Path("/usr/lib/apache2/modules")
NGINX_DAV_EXT = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")
POLICY_RC = Path("/usr/sbin/policy-rc.d")
NAMED_PROPS = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/>"
    b"</D:prop></D:propfind>"
)
RESPONSE_TAG = re.compile(rb"<([A-Za-z0-9_.-]+:)?response[\s>]")
SERVER_LABELS = {
    "rclone": "rclone serve webdav (Go)",
    "apache": "Apache2 mod_dav_fs (C)",
    "nginx": "nginx dav + dav-ext (C)",
    "ours-plain": "allset /dav/, plain HTTP (proxy mode)",
    "ours-tls": "allset /dav/, TLS",
}
Log = Callable[[str], None]


# ---- small helpers ---------------------------------------------------------------------
def free_port() -> int:
    """An unused loopback port (closed again at once; a small race we accept)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    for _ in range(int(seconds * 20)):
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not listening on 127.0.0.1:{port} after {seconds:.0f} s")


def run_text(args: list[str], timeout: float = 60) -> str:
    """stdout + stderr of a short command ('' when it cannot run)."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (r.stdout + r.stderr).strip()


def deb_version(pkg: str) -> str:
    return run_text(["dpkg-query", "-W", "-f=${Version}", pkg])


def children_of(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, todo = [pid], [pid]
    for _ in range(10_000):  # bounded walk
        if not todo:
            break
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in tree]
        tree += kids
        todo += kids
    return tree


def start_time(pid: int) -> str:
    """The process's start time (field 22 of /proc/PID/stat): with the PID, it names one
    process, so a PID reused by another program is never signalled."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def stop_pids(main: subprocess.Popen[bytes] | None, pids: dict[int, str], log: Log) -> None:
    """SIGTERM the server's first process and wait; then SIGKILL those of its other
    processes (PID and start time as recorded while it ran) still there after 5 s."""
    if main is not None and main.poll() is None:
        main.send_signal(signal.SIGTERM)
        try:
            main.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"  pid {main.pid} did not stop in 20 s; SIGKILL")
            main.kill()
            main.wait(timeout=10)
    others = {p: t for p, t in pids.items() if main is None or p != main.pid}
    for _ in range(50):
        others = {p: t for p, t in others.items() if t and start_time(p) == t}
        if not others:
            return
        time.sleep(0.1)
    for p in others:
        log(f"  pid {p} left over; SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ---- package installation --------------------------------------------------------------
def ensure_packages(wanted: list[str], log: Log) -> dict[str, str]:
    """apt-get install what is missing (services are not started). Returns package -> error
    for packages that are still missing afterwards."""
    missing = [p for p in wanted if not Path(PACKAGES[p]).exists()]
    if not missing:
        return {}
    if os.geteuid() != 0:
        return dict.fromkeys(missing, "not installed and not root (cannot apt-get)")
    print(
        "installing Debian packages: " + " ".join(missing) + " (apt-get update, then apt-get "
        "install -y --no-install-recommends; their services are not started)",
        flush=True,
    )
    made_policy = False
    if not POLICY_RC.exists():  # keep the packages' own services from starting on port 80
        POLICY_RC.write_text(
            "#!/bin/sh\n# dav_bench.py: no service starts during install\nexit 101\n"
        )
        POLICY_RC.chmod(0o755)
        made_policy = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        ):
            log(" ".join(cmd))
            r = subprocess.run(
                cmd, capture_output=True, text=True, timeout=900, env=env, check=False
            )
            if r.returncode != 0:
                log(f"{cmd[1]} failed ({r.returncode}): {r.stderr.strip()[-1000:]}")
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"apt-get failed: {exc!r}")
    finally:
        if made_policy:
            POLICY_RC.unlink(missing_ok=True)
    return {p: "apt-get could not install it" for p in missing if not Path(PACKAGES[p]).exists()}


# ---- the servers -----------------------------------------------------------------------
def make_many(folder: Path, entries: int) -> None:
    folder.mkdir(parents=True)
    for i in range(entries):
        (folder / f"f{i:05d}.txt").write_bytes(b"x" * (i % 100))


class Server:
    """One server under test: ``prepare`` once (directory, config, the folder of many
    entries), then ``start``/``stop`` once per round."""

    name = ""
    packages: tuple[str, ...] = ()
    prefix = ""  # URL path of the WebDAV root, without the trailing slash

    def __init__(self, root: Path, log: Log) -> None:
        self.dir = root / self.name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.auth: tuple[str, str] | None = None
        self.cafile: Path | None = None
        self.version = ""
        self.error = ""
        self.known_pids: dict[int, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def prepare(self, entries: int) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        self.port = free_port()
        self.write_config()
        out = (self.dir / "server.log").open("ab")
        try:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env()
            )
        finally:
            out.close()
        try:
            wait_port(self.port, self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log: {self.log_tail()}") from exc
        time.sleep(0.3)  # workers started
        self.known_pids = {p: start_time(p) for p in children_of(self.pid)}

    def write_config(self) -> None:
        pass

    def stop(self) -> None:
        pids = dict(self.known_pids)
        if self.proc is not None:
            with contextlib.suppress(OSError):
                pids |= {p: start_time(p) for p in children_of(self.proc.pid)}
        stop_pids(self.proc, pids, self.log)
        self.proc = None

    def pids(self) -> list[int]:
        return children_of(self.pid) if self.proc is not None else []

    def log_tail(self) -> str:
        out = ""
        for f in sorted(self.dir.glob("*.log")):
            with contextlib.suppress(OSError):
                out += f"[{f.name}] " + f.read_text(errors="replace")[-800:]
        return out

    def client(self) -> StdlibClient:
        return StdlibClient(self.url, self.auth, self.cafile)


class Rclone(Server):
    name = "rclone"
    packages = ("rclone",)

    def prepare(self, entries: int) -> None:
        self.serve = self.dir / "root"
        make_many(self.serve / "many", entries)
        (self.dir / "cache").mkdir()
        self.version = run_text(["rclone", "version"]).splitlines()[0:1][0]

    def env(self) -> dict[str, str]:
        return {**os.environ, "RCLONE_CONFIG": "/dev/null"}

    def command(self) -> list[str]:
        return [
            "rclone",
            "serve",
            "webdav",
            str(self.serve),
            "--addr",
            f"127.0.0.1:{self.port}",
            "--cache-dir",
            str(self.dir / "cache"),
        ]


class Apache(Server):
    name = "apache"
    packages = ("apache2",)

    def prepare(self, entries: int) -> None:
        import grp  # noqa: PLC0415 - Unix-only, needed here alone
        import pwd  # noqa: PLC0415

        self.serve = self.dir / "root"
        make_many(self.serve / "many", entries)
        (self.dir / "lock").mkdir()
        (self.dir / "run").mkdir()
        uid, gid = pwd.getpwnam("www-data").pw_uid, grp.getgrnam("www-data").gr_gid
        for d in (self.serve, self.dir / "lock"):
            os.chown(d, uid, gid)
            for p in d.rglob("*"):
                os.chown(p, uid, gid)
        self.version = run_text(["apache2", "-v"]).splitlines()[0].split(":", 1)[-1].strip()

    def write_config(self) -> None:
        mods = "\n".join(
            f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so"
            for m in ("mpm_event", "authz_core", "dav", "dav_fs")
        )
        d = self.dir
        (d / "apache.conf").write_text(
            f"""ServerRoot {d}
{mods}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
User www-data
Group www-data
PidFile {d}/run/apache.pid
DefaultRuntimeDir {d}/run
Mutex file:{d}/run default
ErrorLog {d}/apache-error.log
LogLevel warn
# Debian's mpm_event settings
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
Timeout 300
LimitRequestBody 0
DavLockDB {d}/lock/DavLock
DocumentRoot {self.serve}
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory {self.serve}>
    Dav On
    AllowOverride None
    Require all granted
</Directory>
"""
        )

    def command(self) -> list[str]:
        return ["apache2", "-f", str(self.dir / "apache.conf"), "-DFOREGROUND"]


class Nginx(Server):
    name = "nginx"
    packages = ("nginx", "libnginx-mod-http-dav-ext")

    def prepare(self, entries: int) -> None:
        self.serve = self.dir / "root"
        make_many(self.serve / "many", entries)
        for t in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "temp" / t).mkdir(parents=True)
        self.version = (
            run_text(["nginx", "-v"]).split(":", 1)[-1].strip()
            + " dav-ext "
            + deb_version("libnginx-mod-http-dav-ext")
        )

    def write_config(self) -> None:
        d, t = self.dir, self.dir / "temp"
        (d / "nginx.conf").write_text(
            f"""daemon off;
user root;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
load_module {NGINX_DAV_EXT};
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    server {{
        listen 127.0.0.1:{self.port};
        root {self.serve};
        client_max_body_size 0;
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
        }}
    }}
}}
"""
        )

    def command(self) -> list[str]:
        return ["nginx", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)]


POPULATE = """
import sys
from allset.core.paths import parse_path
from allset.files.upload import store_bytes
from allset.runtime import build_runtime
from allset.settings import load_settings

data, email, password, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rt = build_runtime(load_settings(data))
try:
    p = rt.accounts.authenticate_basic(email, password, "127.0.0.1")
    rt.files.mkdir(p, "/many")
    for i in range(n):
        store_bytes(rt.files, p, parse_path(f"/many/f{i:05d}.txt"), b"x" * (i % 100))
finally:
    rt.close()
"""


class Ours(Server):
    packages = ()
    prefix = "/dav"

    def __init__(self, root: Path, log: Log, plain: bool) -> None:
        self.plain = plain
        self.name = "ours-plain" if plain else "ours-tls"
        super().__init__(root, log)
        self.srv: ServerProcess | None = None
        self.populate_proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.srv.url if self.srv else ""

    def prepare(self, entries: int) -> None:
        """Data dir and account now; ``many/`` is filled by a subprocess that ``finish``
        waits for (both of ours fill at the same time; nothing is timed then)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.srv = ServerProcess(self.dir / "data", plain_http=self.plain)
        self.srv.cli("init")
        self.srv.cli("tenant", "create", "bench", "--quota", "1TiB", "--bandwidth", "100Gbit")
        email = "bench@example.com"
        self.srv.cli("user", "create", "--tenant", "bench", email, "--role", "owner")
        self.auth = (email, self.srv.cli_json("token", "create", email)["password"])
        self.cafile = None if self.plain else self.srv.cert
        self.version = (
            "allset "
            + run_text([str(Path(sys.executable).parent / "allset-server"), "--version"]).split()[
                -1
            ]
        )
        self.populate_log = (self.dir / "populate.log").open("wb")
        self.populate_proc = subprocess.Popen(
            [sys.executable, "-c", POPULATE, str(self.srv.data_dir), *self.auth, str(entries)],
            stdout=self.populate_log,
            stderr=subprocess.STDOUT,
            env=self.srv.env,
        )

    def finish(self, timeout: float) -> None:
        assert self.populate_proc is not None
        try:
            rc = self.populate_proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.populate_proc.kill()
            self.populate_proc.wait(timeout=10)
            raise RuntimeError(f"filling many/ took more than {timeout:.0f} s") from None
        finally:
            self.populate_log.close()
        if rc != 0:
            tail = (self.dir / "populate.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"filling many/ failed ({rc}): {tail}")

    def start(self) -> None:
        assert self.srv is not None
        self.srv.url = ""  # read the new port on every start
        self.srv.start()
        assert self.srv.proc is not None
        self.proc = self.srv.proc
        self.known_pids = {self.proc.pid: start_time(self.proc.pid)}

    def stop(self) -> None:
        if self.srv is not None:
            self.srv.stop()
        self.proc = None

    def log_tail(self) -> str:
        if self.srv is None:
            return ""
        with contextlib.suppress(OSError):
            return str(self.srv.log_path.read_text(errors="replace")[-1500:])
        return ""


# ---- peak RSS over all processes of a server -------------------------------------------
class TreeRss:
    """VmHWM of every process of the server every 0.1 s (reset at the start through
    clear_refs); keeps each PID's peak, so a worker that exits still counts."""

    def __init__(self, main: int, interval: float = 0.1, max_seconds: float = 3600) -> None:
        self.main, self.interval = main, interval
        self.max_samples = int(max_seconds / interval)
        self.peak_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for p in children_of(self.main):
            with contextlib.suppress(OSError, ValueError):
                kb = proc_status_kb(p, "VmHWM")
                self.peak_kb[p] = max(self.peak_kb.get(p, 0), kb)

    def _run(self) -> None:
        for _ in range(self.max_samples):
            self._sample()
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> TreeRss:
        for p in children_of(self.main):  # "5" resets VmHWM to the current RSS
            with contextlib.suppress(OSError):
                Path(f"/proc/{p}/clear_refs").write_text("5")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def result(self) -> dict[str, Any]:
        return {
            "main_MiB": self.peak_kb.get(self.main, 0) / 1024,
            "all_MiB": sum(self.peak_kb.values()) / 1024,
            "processes": len(self.peak_kb),
        }


# ---- requests --------------------------------------------------------------------------
def request(
    c: StdlibClient,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    c.conn.request(method, path, body=body, headers={**c.headers, **(headers or {})})
    r = c.conn.getresponse()
    return r.status, r.read()


def expect(status: int, body: bytes, ok: tuple[int, ...], what: str) -> None:
    if status not in ok:
        raise RuntimeError(f"{what}: {status} {body[:300]!r}")


def propfind(c: StdlibClient, path: str, body: bytes, entries: int) -> float:
    """Seconds for one PROPFIND Depth 1 (request and whole answer); checks the answer."""
    headers = {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"}
    t = time.perf_counter()
    status, data = request(c, "PROPFIND", path, body, headers)
    secs = time.perf_counter() - t
    expect(status, data, (207,), f"PROPFIND {path}")
    n = len(RESPONSE_TAG.findall(data))
    if n != entries + 1:
        raise RuntimeError(f"PROPFIND {path}: {n} <response> elements, expected {entries + 1}")
    return secs


def small_child_main(spec_json: str) -> None:
    """Hidden ``--_smallput SPEC``: PUT the files i = first, first + step, ... below ``n``
    over ``threads`` connections; prints "ready" when connected, waits for a line on stdin,
    then prints one JSON line with the results and the monotonic time of its last answer."""
    spec = json.loads(spec_json)
    auth = tuple(spec["auth"]) if spec["auth"] else None
    cafile = Path(spec["cafile"]) if spec["cafile"] else None
    mine = list(range(spec["first"], spec["n"], spec["step"]))
    payloads = {i: os.urandom(spec["size"]) for i in mine}
    clients = [StdlibClient(spec["url"], auth, cafile) for _ in range(spec["threads"])]
    for c in clients:  # connected (TLS handshake done) and credentials cached
        request(c, "OPTIONS", spec["coll"])
    todo = iter(mine)
    lock = threading.Lock()
    errors: list[str] = []
    statuses: dict[int, int] = {}
    deadline = [0.0]

    def worker(c: StdlibClient) -> None:
        for _ in range(len(mine)):
            with lock:
                i = next(todo, None)
            if i is None:
                return
            if time.monotonic() > deadline[0]:
                errors.append("phase time limit reached")
                return
            path = f"{spec['coll']}f{i:05d}.dat"
            for attempt in range(2):  # one retry if the server closed an idle connection
                try:
                    status, body = request(c, "PUT", path, payloads[i])
                    break
                except (http.client.RemoteDisconnected, ConnectionError) as exc:
                    c.conn.close()
                    if attempt:
                        status, body = 0, repr(exc).encode()
                except (OSError, http.client.HTTPException) as exc:
                    c.conn.close()
                    status, body = 0, repr(exc).encode()
                    break
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            if status not in (201, 204):
                errors.append(f"PUT {path}: {status} {body[:200]!r}")

    print("ready", flush=True)
    sys.stdin.readline()
    deadline[0] = time.monotonic() + spec["max_seconds"]
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=spec["max_seconds"] + 60)
    end = time.monotonic()
    for c in clients:
        c.close()
    print(
        json.dumps(
            {"end": end, "statuses": statuses, "errors": errors[:5], "error_count": len(errors)}
        ),
        flush=True,
    )


def read_line(proc: subprocess.Popen[str], seconds: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    if not ready:
        raise RuntimeError(f"client process {proc.pid} said nothing for {seconds:.0f} s")
    return proc.stdout.readline()


def small_puts(srv: Server, coll: str, args: argparse.Namespace) -> float:
    """files/s of ``args.small`` PUTs from ``args.clients`` processes."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for k in range(args.clients):
            spec = {
                "url": srv.url,
                "auth": list(srv.auth) if srv.auth else None,
                "cafile": str(srv.cafile) if srv.cafile else None,
                "coll": coll,
                "first": k,
                "step": args.clients,
                "n": args.small,
                "size": args.small_size,
                "threads": max(1, args.conns // args.clients),
                "max_seconds": args.phase_seconds,
            }
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--_smallput",
                        json.dumps(spec),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            if read_line(p, 120).strip() != "ready":
                raise RuntimeError(f"client process {p.pid} failed to connect")
        t0 = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(read_line(p, args.phase_seconds + 120)) for p in procs]
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    errors = [e for o in outs for e in o["errors"]]
    if errors:
        raise RuntimeError(f"small PUTs: {sum(o['error_count'] for o in outs)} errors: {errors}")
    done = sum(v for o in outs for k, v in o["statuses"].items() if int(k) in (201, 204))
    if done != args.small:
        raise RuntimeError(f"small PUTs: {done} of {args.small} answered 201/204")
    return float(args.small / (max(o["end"] for o in outs) - t0))


# ---- one server's turn -----------------------------------------------------------------
def run_turn(
    srv: Server, rnd: int, args: argparse.Namespace, res: dict[str, Any], log: Log
) -> None:
    """Start ``srv``, run a-d ``args.runs`` times each, stop it; figures go into ``res``."""
    size = args.size_mib * MiB
    pre = srv.prefix
    big = f"{pre}/big.bin"

    def quiet() -> None:
        load = wait_quiet(srv.pids(), args.quiet_wait, args.quiet_cores, log)
        res["other_cpu_cores"].append(load)

    srv.start()
    try:
        with TreeRss(srv.pid) as rss:
            c = srv.client()
            try:
                request(c, "OPTIONS", f"{pre}/")  # connected; our credential cache warm
                # a. PUT -------------------------------------------------------------------
                blocks: list[bytes] = []
                for run in range(args.runs):
                    blocks = []
                    blocks = list(keystream(f"{srv.name}-{rnd}-{run}-{time.time_ns()}", size))
                    st, body = request(c, "DELETE", big)
                    expect(st, body, (200, 204, 404), f"DELETE {big}")
                    subprocess.run(["sync"], timeout=300, check=True)
                    quiet()
                    log(f"[{srv.name}] round {rnd + 1}: PUT {args.size_mib} MiB #{run + 1}")
                    headers = {
                        "Content-Length": str(size),
                        "Content-Type": "application/octet-stream",
                    }
                    t = time.perf_counter()
                    st, body = request(c, "PUT", big, iter(blocks), headers)
                    secs = time.perf_counter() - t
                    expect(st, body, (201, 204), f"PUT {big}")
                    res["put_MBps"].append(mbps(size, secs))
                sha = sha256_of(blocks)
                del blocks
                # b. GET -------------------------------------------------------------------
                quiet()
                for run in range(args.runs):
                    log(f"[{srv.name}] round {rnd + 1}: GET {args.size_mib} MiB #{run + 1}")
                    t = time.perf_counter()
                    n, _h = get_discard(c, big)
                    secs = time.perf_counter() - t
                    if n != size:
                        raise RuntimeError(f"GET {big}: {n} bytes, expected {size}")
                    res["get_MBps"].append(mbps(size, secs))
                h = hashlib.sha256()
                n, _h = get_discard(c, big, h)  # untimed check of the content
                res["get_verified"].append(n == size and h.hexdigest() == sha)
                if not res["get_verified"][-1]:
                    raise RuntimeError(f"GET {big}: content differs from what was PUT")
            finally:
                c.close()
            # c. small files ---------------------------------------------------------------
            for run in range(args.runs):
                coll = f"{pre}/small-{rnd}-{run}-{time.monotonic_ns()}/"
                c = srv.client()
                try:
                    st, body = request(c, "MKCOL", coll)
                finally:
                    c.close()
                expect(st, body, (201,), f"MKCOL {coll}")
                quiet()
                log(
                    f"[{srv.name}] round {rnd + 1}: {args.small} x {args.small_size} B PUT, "
                    f"{args.conns} conns from {args.clients} processes #{run + 1}"
                )
                res["small_files_per_s"].append(small_puts(srv, coll, args))
            # d. PROPFIND --------------------------------------------------------------------
            many = f"{pre}/many/"
            c = srv.client()
            try:
                quiet()
                log(f"[{srv.name}] round {rnd + 1}: PROPFIND Depth 1 on {args.entries} entries")
                for key, body in (("propfind_allprop_s", b""), ("propfind_named_s", NAMED_PROPS)):
                    propfind(c, many, body, args.entries)  # warm-up
                    for _ in range(args.runs):
                        res[key].append(propfind(c, many, body, args.entries))
            finally:
                c.close()
        r = rss.result()
        res["rss_main_MiB"].append(r["main_MiB"])
        res["rss_all_MiB"].append(r["all_MiB"])
        res["processes"] = max(res.get("processes", 0), r["processes"])
        res["rounds_done"] += 1
    finally:
        srv.stop()


# ---- report ----------------------------------------------------------------------------
def cell(values: list[float], digits: int = 0) -> str:
    s = summary(values)
    if s is None:
        return "-"
    med = f"{s['median']:,.{digits}f}"
    if len(values) == 1:
        return med
    return f"{med} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def goals(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The three goals, judged on ours in plain mode (None = not measured)."""
    ours = results.get("ours-plain", {})
    rclone = results.get("rclone", {})

    def med(r: dict[str, Any], key: str) -> float | None:
        s = summary(r.get(key, []))
        return s["median"] if s else None

    pf = [v for v in (med(ours, "propfind_allprop_s"), med(ours, "propfind_named_s")) if v]
    get = med(ours, "get_MBps")
    small, small_rclone = med(ours, "small_files_per_s"), med(rclone, "small_files_per_s")
    return {
        "propfind": {
            "goal": "PROPFIND Depth 1 <= 0.25 s (ours plain, allprop and named, medians)",
            "measured": f"{max(pf):.3f} s" if pf else "-",
            "ok": max(pf) <= 0.25 if len(pf) == 2 else None,
        },
        "get": {
            "goal": "GET >= 600 MB/s (ours plain, median)",
            "measured": f"{get:,.0f} MB/s" if get else "-",
            "ok": get >= 600 if get else None,
        },
        "small": {
            "goal": "small-file PUT >= rclone's rate in the same run (medians)",
            "measured": (
                f"{small:,.0f} vs rclone {small_rclone:,.0f} files/s"
                if small and small_rclone
                else "-"
            ),
            "ok": small >= small_rclone if small and small_rclone else None,
        },
    }


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "MISS")


def report(result: dict[str, Any]) -> str:
    m, a, refs = result["machine"], result["args"], result["references"]
    results: dict[str, dict[str, Any]] = result["servers"]
    g = goals(results)
    lines = [
        f"allset WebDAV benchmark — {m['date']}",
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_bytes'] / (1 << 30):.1f} GiB RAM, "
        f"kernel {m['kernel']}, Python {m['python']}, {m['openssl']}",
        f"code: {m['revision']}   database: {m['database']}   temp dirs under {result['tmp_root']}",
        f"command: {result['command']}",
        f"{a['repeat']} round(s) x {a['runs']} run(s), servers taking turns; cells: median "
        "(min–max) over all runs of all rounds; MB = 10^6 bytes, MiB = 2^20 bytes; all on "
        "127.0.0.1",
        "",
    ]
    head = (
        "server",
        "version",
        f"a. PUT {a['size_mib']} MiB, MB/s",
        f"b. GET {a['size_mib']} MiB, MB/s",
        f"c. PUT {a['small']:,} x {a['small_size'] // 1024} KiB, {a['conns']} conns, files/s",
        f"d. PROPFIND Depth 1, {a['entries']:,} entries, allprop, s",
        "d'. same, 4 named props, s",
        "e. peak RSS a–d, MiB (main / all)",
        "runs",
        "verdict",
    )
    rows: list[tuple[str, ...]] = []
    for name, r in results.items():
        if r.get("error") and not r.get("rounds_done"):
            rows.append((SERVER_LABELS[name], r.get("version") or "-", "FAILED", *["-"] * 7))
            continue
        rss = (
            f"{max(r['rss_main_MiB']):,.0f}"
            + (
                f" / {max(r['rss_all_MiB']):,.0f} ({r['processes']} procs)"
                if r.get("processes", 1) > 1
                else ""
            )
            if r["rss_main_MiB"]
            else "-"
        )
        if name == "ours-plain":
            v = ", ".join(f"{k} {verdict(x['ok'])}" for k, x in g.items())
        elif name == "ours-tls":
            v = "(goals are for plain)"
        else:
            v = ""
        rows.append(
            (
                SERVER_LABELS[name],
                r.get("version") or "-",
                cell(r["put_MBps"]),
                cell(r["get_MBps"]),
                cell(r["small_files_per_s"]),
                cell(r["propfind_allprop_s"], 3),
                cell(r["propfind_named_s"], 3),
                rss,
                f"{r['rounds_done']}x{a['runs']}",
                v,
            )
        )
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "goals (ours, plain HTTP):"]
    for x in g.values():
        lines.append(f"  {verdict(x['ok']):4}  {x['goal']}: {x['measured']}")
    lines += ["", "physical references (same run, before / after the servers):"]
    lines.append(
        "  dd 512 MiB bs=1M conv=fsync into a NEW file (fresh blocks): "
        + " / ".join(f"{x:,.0f}" for x in refs.get("dd_fresh_MBps", []))
        + " MB/s"
    )
    lines.append(
        "  dd 512 MiB bs=1M conv=notrunc,fsync over that file (reused blocks): "
        + " / ".join(f"{x:,.0f}" for x in refs.get("dd_reused_MBps", []))
        + " MB/s"
    )
    lines += ["", "noise: highest CPU use of other processes seen before a timed phase (cores):"]
    lines.append(
        "  "
        + ", ".join(
            f"{n} {max(r['other_cpu_cores']):.2f}"
            for n, r in results.items()
            if r.get("other_cpu_cores")
        )
    )
    for name, r in results.items():
        if r.get("error"):
            lines.append(f"\n{SERVER_LABELS[name]}: FAILED: {r['error']}")
    return "\n".join(lines)


# ---- main ------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --size-mib 64 --small 200 --entries 1000 --repeat 1 --runs 1",
    )
    p.add_argument("--size-mib", type=int, default=None, help="big file size (default 512)")
    p.add_argument("--small", type=int, default=None, help="number of small files (default 2000)")
    p.add_argument("--small-size", type=int, default=4096, help="bytes per small file (4096)")
    p.add_argument("--conns", type=int, default=8, help="connections for small files (8)")
    p.add_argument("--clients", type=int, default=2, help="client processes for small files (2)")
    p.add_argument(
        "--entries", type=int, default=None, help="entries in the PROPFIND folder (10000)"
    )
    p.add_argument("--repeat", type=int, default=None, help="rounds (default 3)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per phase per round (3)")
    p.add_argument(
        "--servers",
        default=",".join(SERVER_LABELS),
        help="comma-separated subset of " + ",".join(SERVER_LABELS),
    )
    p.add_argument("--no-install", action="store_true", help="never run apt-get")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30,
        help="before each timed phase, wait up to this many seconds for other processes "
        "to use < --quiet-cores (30)",
    )
    p.add_argument("--quiet-cores", type=float, default=0.3, help="see --quiet-wait (0.3)")
    p.add_argument(
        "--tmp", default=tempfile.gettempdir(), help="where the temp dirs go (default /tmp)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dirs (for inspection)")
    p.add_argument("--phase-seconds", type=float, default=300, help="time limit of a phase")
    p.add_argument("--max-minutes", type=float, default=40, help="time limit of the whole run")
    a = p.parse_args(argv)
    quick = {"size_mib": 64, "small": 200, "entries": 1000, "repeat": 1, "runs": 1}
    full = {"size_mib": 512, "small": 2000, "entries": 10000, "repeat": 3, "runs": 3}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if min(a.size_mib, a.small, a.conns, a.clients, a.entries, a.repeat, a.runs) <= 0:
        p.error("sizes, counts and repetitions must be positive")
    if a.clients > a.conns:
        p.error("--clients must not exceed --conns")
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    if not set(a.servers) <= set(SERVER_LABELS):
        p.error("--servers takes " + ",".join(SERVER_LABELS))
    return a


def new_result(srv: Server) -> dict[str, Any]:
    keys = (
        *("put_MBps", "get_MBps", "small_files_per_s", "propfind_allprop_s"),
        *("propfind_named_s", "rss_main_MiB", "rss_all_MiB", "other_cpu_cores"),
    )
    return {"version": srv.version, "rounds_done": 0, "get_verified": [], **{k: [] for k in keys}}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--_smallput"]:
        small_child_main(argv[1])
        return 0
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    def on_alarm(_sig: int, _frame: object) -> None:
        raise Timeout(f"the run exceeded --max-minutes {args.max_minutes}")

    started = time.monotonic()
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.max_minutes * 60))
    root = Path(tempfile.mkdtemp(prefix="allset-dav-bench-", dir=args.tmp))
    root.chmod(0o755)  # Apache's children (www-data) must reach their directory
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "args": dict(vars(args)),
        "tmp_root": str(root),
        "machine": machine_info(),
        "references": {"dd_fresh_MBps": [], "dd_reused_MBps": []},
        "servers": {},
    }
    results: dict[str, dict[str, Any]] = result["servers"]
    kinds: dict[str, Callable[[], Server]] = {
        "rclone": lambda: Rclone(root, log),
        "apache": lambda: Apache(root, log),
        "nginx": lambda: Nginx(root, log),
        "ours-plain": lambda: Ours(root, log, plain=True),
        "ours-tls": lambda: Ours(root, log, plain=False),
    }
    servers: list[Server] = []
    status = 0
    # ours keeps deleted files in the trash and stores 2 replicas: every PUT stays on disk
    ours = sum(1 for n in args.servers if n.startswith("ours"))
    need = args.size_mib * MiB * (2 * args.runs * args.repeat * ours + 4)
    free = shutil.disk_usage(root).free
    if free < need:
        log(
            f"WARNING: {free / 2**30:.0f} GiB free under {root}; "
            f"the run may need {need / 2**30:.0f} GiB"
        )
    try:
        wanted = sorted({p for n in args.servers for p in kinds[n]().packages})
        missing = (
            {p: "not installed (--no-install)" for p in wanted if not Path(PACKAGES[p]).exists()}
            if args.no_install
            else ensure_packages(wanted, log)
        )
        for name in args.servers:
            srv = kinds[name]()
            results[name] = new_result(srv)
            lacking = [f"{p}: {missing[p]}" for p in srv.packages if p in missing]
            if lacking:
                results[name]["error"] = "; ".join(lacking)
                log(f"[{name}] skipped: {results[name]['error']}")
                continue
            try:
                log(f"[{name}] preparing (folder of {args.entries} entries before the start)")
                srv.dir.mkdir(parents=True, exist_ok=True)
                srv.dir.chmod(0o755)
                srv.prepare(args.entries)
                results[name]["version"] = srv.version
                servers.append(srv)
            except Exception as exc:  # reported; the other servers still run
                results[name]["error"] = f"prepare: {exc!r}"
                log(f"[{name}] prepare failed: {exc!r}")
        for srv in list(servers):
            if isinstance(srv, Ours):
                try:
                    srv.finish(timeout=args.phase_seconds + 300)
                except Exception as exc:
                    results[srv.name]["error"] = f"prepare: {exc!r}"
                    log(f"[{srv.name}] prepare failed: {exc!r}")
                    servers.remove(srv)
        log("references: dd 512 MiB (fresh, reused blocks)")
        wait_quiet([], args.quiet_wait, args.quiet_cores, log)
        refs = dd_references(root)
        for k, v in refs.items():
            result["references"].setdefault(k, []).append(v)
        try:
            for rnd in range(args.repeat):
                n = len(servers)
                order = servers[rnd % n :] + servers[: rnd % n] if n else []  # rotate
                for srv in order:
                    r = results[srv.name]
                    if r.get("error") and not r["rounds_done"]:
                        continue  # failed to start before: not again
                    try:
                        run_turn(srv, rnd, args, r, log)
                    except Exception as exc:  # reported; the other servers still run
                        r["error"] = f"round {rnd + 1}: {exc!r}; log: {srv.log_tail()[-1500:]}"
                        log(f"[{srv.name}] FAILED: {exc!r}")
            log("references again: dd")
            wait_quiet([], args.quiet_wait, args.quiet_cores, log)
            refs = dd_references(root)
            for k, v in refs.items():
                result["references"].setdefault(k, []).append(v)
        except Timeout as exc:  # report what was measured until then
            result["timeout"] = str(exc)
            log(f"STOPPED: {exc}")
            status = 1
        result["elapsed_minutes"] = (time.monotonic() - started) / 60
        print(report(result))
        print(f"\n(run took {result['elapsed_minutes']:.1f} min)")
        if "timeout" in result:
            print(f"INCOMPLETE: {result['timeout']}; the figures above are the runs done by then")
        if any(r.get("error") for r in results.values()):
            status = 1
    finally:
        signal.alarm(0)
        for srv in servers:
            with contextlib.suppress(Exception):
                srv.stop()
        for srv in servers:
            if isinstance(srv, Ours) and srv.populate_proc and srv.populate_proc.poll() is None:
                srv.populate_proc.kill()
                srv.populate_proc.wait(timeout=10)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
