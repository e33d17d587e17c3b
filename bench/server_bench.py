"""Throughput and memory of a real ``allset-server``, beside the machine's own limits.

Run:  /tmp/venv/bin/python bench/server_bench.py [--quick] [--workers 1,2] [--size-mib 512]
      [--small 2000] [--conns 8] [--big-gib 2] [--repeat 3] [--json out.json] [--profile DIR]
      (--quick = --size-mib 64 --small 200 --big-gib 0.25 --repeat 1 --quiet-wait 0 and
      64 MiB references: a smoke run that proves the script works, NOT a measurement; its
      report says so on its second line)

Every figure is measured over TLS and in plain-HTTP mode (``--plain-http``, the
reverse-proxy mode), and for each server size of ``--workers`` (``serve --workers N``: N
server processes on one port, default 1 and 2), each against a server started on a fresh
data directory in a temporary directory on the same disk as /tmp (``--tmp``). Phases per
(mode, workers):

0. ``--conns`` simultaneous first requests of one account (cold credential cache): time
   and peak RSS (each verification is an argon2id hash).
1. PUT of one big file (MB/s, MB = 10^6 bytes), ``--repeat`` times. The body is random data
   made in advance (ChaCha20 keystream, new for every repetition so nothing is
   deduplicated), sent by httpx from a list of 1 MiB ``bytes`` with a Content-Length, so
   the client does no work per byte but the socket write.
2. GET of those files, ``--repeat`` times, each twice: first as the upload left it (its big
   chunks were written with O_DIRECT, so from the disk), then again from the page cache;
   the body is read into one reused 1 MiB buffer and discarded, NOT hashed in the timed
   loop. Client: ``http.client`` by default
   (``--big-client``), because over TLS httpx alone tops out near the 400 MB/s goal on a
   slow core. The SHA-256 is verified once, by one extra GET outside the timed part, and
   each PUT's answer is checked against the digest computed before sending.
3. ``--small`` uploads of 4 KiB over ``--conns`` keep-alive connections, one thread with
   its own ``httpx.Client`` per connection (``--small-client stdlib`` for http.client);
   min/median/max over the repetitions, latency p50/p99.
4. One upload of ``--big-gib`` GiB produced by a streaming generator (never in client
   memory; its digest comes from an untimed pre-pass over the same keystream), on a freshly
   restarted server so that its peak RSS is the upload's own.

Phases 0 and 3 run for every worker count; 1, 2 and 4 only for the smallest and the
largest count (with the default 1,2: both). Why: the small-file rate is what workers are
for (one process is GIL-bound there), while one big PUT or GET is one connection, served
by one worker whatever N is; what N changes for them is the server's memory (the 2 GiB
phase's goal is for the whole server, now N + 1 processes), which the largest count shows.
Running 1, 2 and 4 for every count would take a 2-count run from ~3 min (one count, as
before) to ~5.5 min, where phases 0 and 3 alone for the second count make it ~4 min: per
(mode, workers) ~10 s of big PUTs, ~4 s of GETs, ~20 s of small files, ~13 s for 2 GiB,
~25 s of start-ups (two per run: phase 4 restarts the server; a server with workers
takes ~10 s more to start), hashing and quiet checks; references ~30 s. That is over the
1.5x this script allows itself, so a third count (``--workers 1,2,4``) adds only the
~35 s of phases 0 and 3 per mode. The client ceiling (below) does not depend on the
server, so it runs once per mode.

Before a timed phase the connection is opened and the credential cache warmed with one
authenticated request (the cold case is phase 0); a server with workers is only measured
once every worker has started (its log says so). "The server" is every process of it
(proctree.py): with N > 1 workers, the supervisor and its N workers. During every phase
the server's VmRSS is sampled every 50 ms from /proc/PID/status, summed over its
processes at each sample (the memory it holds at once); the kernel's own high-water mark
(VmHWM, reset through /proc/PID/clear_refs at the start of the phase) is reported beside
it, summed over the processes: with one process it is the exact peak, so a peak between
two samples is not missed; with several it is an upper bound (their peaks need not
coincide). The table shows both, "sampled / HWM"; RSS verdicts use the larger. Server CPU
(utime+stime of every process over wall time, in cores), the client's CPU and the CPU of
every other process on the machine are reported too: a small machine shared with test
runs gives meaningless figures, so each timed phase first waits (up to ``--quiet-wait``
s) until other processes (the server's own excluded) use less than ``--quiet-cores``.

References measured in the same run: ``dd`` to a new file and over an existing one (both
conv=fsync, 512 MiB, before and after the servers), single-core hashlib SHA-256 on
256 MiB, the store's durable small-file recipe straight on the disk, the same recipe for
a PUT's chunks (1 MiB files on two replica directories: the disk's limit for a PUT in
this layout, with none of the CPU work), and the client's own
ceiling against a trivial sink/source HTTP server (a lower bound of the client's limit).
``--profile DIR`` adds untimed PUT, GET and small-file runs under ``py-spy record`` (one
py-spy per worker, each to its own file, summarised each; the supervisor, which only
waits for its workers, is not profiled) and prints where each kind of server thread
spends its wall time.

The report: a summary with one row per (mode, workers), the detailed table (one row per
figure and worker count, TLS and plain HTTP side by side, goals and verdicts), the
references, the profiles, and the README's "Benchmarks" table in markdown (rows named
with their worker count). ``--json`` writes every figure, one entry of ``runs`` per
(mode, workers).

The benchmark tenant gets a 1 TiB quota and a 100 Gbit/s bandwidth setting so that quota
and per-Client throttling (R-BW-1) do not cap the server's raw speed.

Only loopback addresses are used; every loop is bounded in count and in time; servers are
stopped and data directories removed even on failure (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import linecache
import math
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from proctree import PhaseMonitor, ServerTree, wait_quiet  # noqa: E402 - beside this file

from serverproc import ServerProcess  # noqa: E402

WARM = "/api/v1/me"  # a cheap authenticated request: the connection and the credential
# cache are warm before a timed phase (the cold case is measured on its own)
MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000
BLOCK = MiB


# ---- data ------------------------------------------------------------------------------
def keystream(seed: str, total: int, block: int = BLOCK) -> Iterator[bytes]:
    """``total`` pseudo-random bytes in ``block`` pieces (ChaCha20, several GB/s)."""
    key = hashlib.sha256(seed.encode()).digest()
    enc = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    zero = bytes(block)
    left = total
    for _ in range(math.ceil(total / block)):
        n = min(block, left)
        yield enc.update(zero if n == block else zero[:n])
        left -= n


def sha256_of(blocks: Iterator[bytes] | list[bytes]) -> str:
    h = hashlib.sha256()
    for b in blocks:
        h.update(b)
    return h.hexdigest()


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds if seconds > 0 else float("nan")


# ---- machine ---------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = int(m.group(1)) * 1024 if m else 0
    rev = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        rev = head + (" + uncommitted changes in src/" if dirty else "")
    return {
        "date": dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "revision": rev,
        "database": os.environ.get("ALLSET_DATABASE_URL", "").split("@")[-1]
        or "embedded SQLite (default)",
    }


# ---- physical references ---------------------------------------------------------------
_DD = re.compile(r"^(\d+) bytes .* copied, ([0-9.,]+) s", re.M)


def run_dd(target: Path, extra_conv: str, count: int = 512) -> float:
    """MB/s of ``dd if=/dev/zero bs=1M count=N conv=...fsync``, from dd's own stderr."""
    conv = f"{extra_conv},fsync" if extra_conv else "fsync"
    res = subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", f"conv={conv}"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"dd failed: {res.stderr}")
    m = _DD.search(res.stderr)
    if not m:
        raise RuntimeError(f"cannot read dd output: {res.stderr!r}")
    return mbps(int(m.group(1)), float(m.group(2).replace(",", ".")))


def dd_references(tmp: Path, files: int = 3, count: int = 512) -> dict[str, float]:
    """The disk's fresh-block rate as the issue defines it, measured the way the peers'
    study did: ``files`` new 512 MiB files written one after the other and kept side by
    side, so that each one needs blocks no file just freed (median reported). One new
    file alone mostly lands on just-freed blocks on this thin-provisioned disk (562 then
    1,197 MB/s in one run), which made the PUT goal a reused-block goal. Then the same
    over an existing file (reused blocks)."""
    stem = f"dd-{os.getpid()}-{time.monotonic_ns()}"
    targets = [tmp / f"{stem}-{i}.bin" for i in range(files)]
    assert not any(t.exists() for t in targets)
    try:
        fresh = [run_dd(t, "", count) for t in targets]
        reused = run_dd(targets[0], "notrunc", count)
    finally:
        for t in targets:
            with contextlib.suppress(FileNotFoundError):
                t.unlink()
    return {
        "dd_fresh_MBps": statistics.median(fresh),
        "dd_first_new_file_MBps": fresh[0],
        "dd_reused_MBps": reused,
    }


def durable_files(tmp: Path, threads: int, n: int, size: int, dirs: int = 1) -> float:
    """Seconds to store ``n`` files of ``size`` bytes in each of ``dirs`` directories with
    the store's durable-write recipe, straight on the disk: new temp file, write, fsync,
    rename, fsync the directory (allset does this once per replica for every new chunk)."""
    root = tmp / f"fsync-{threads}-{time.monotonic_ns()}"
    targets = [root / f"r{i}" for i in range(dirs)]
    for d in targets:
        d.mkdir(parents=True)
    payload = os.urandom(size)

    def one(job: tuple[Path, int]) -> None:
        d, i = job
        t = d / f"f{i}.tmp"
        fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(t, d / f"f{i}")
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(one, [(d, i) for i in range(n) for d in targets]))
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def durable_small_files(tmp: Path, threads: int, n: int = 400, size: int = 4096) -> float:
    """Files/s of the durable-write recipe for one small file (one copy)."""
    return n / durable_files(tmp, threads, n, size)


def chunk_layout_rate(tmp: Path, mib: int = 512) -> float:
    """MB/s of *file* when it is stored as the server stores it, minus all the CPU work:
    1 MiB chunk files, each durably on two replica directories, 16 writers (the replica
    pool). The disk's limit for a PUT in this layout, beside dd's single stream."""
    return mib * MiB / MB / durable_files(tmp, 16, mib, MiB, dirs=2)


def sha256_speed(nbytes: int = 256 * MiB) -> float:
    data = b"".join(keystream("sha-speed", nbytes))
    best = 0.0
    for _ in range(2):  # best of two: the first may pay page faults
        t = time.perf_counter()
        hashlib.sha256(data).digest()
        best = max(best, mbps(nbytes, time.perf_counter() - t))
    return best


# ---- server profiles (what is measured from /proc is in proctree.py) -------------------
class Profiler:
    """py-spy record (raw collapsed stacks, every thread, idle included) around a block."""

    def __init__(self, pid: int, out: Path, native: bool = False, rate: int = 200) -> None:
        self.pid, self.out, self.native, self.rate = pid, out, native, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        exe = Path(sys.executable).parent / "py-spy"
        spy = str(exe) if exe.exists() else shutil.which("py-spy")
        if not spy:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        args = [
            spy,
            "record",
            "--pid",
            str(self.pid),
            "--format",
            "raw",
            "-o",
            str(self.out),
            "--idle",
            "--threads",
            "--rate",
            str(self.rate),
            "--duration",
            "600",
        ]
        args += ["--native"] if self.native else ["--nonblocking"]
        self.log = self.out.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def _state(py_leaf: str, native: list[str], ours: list[str]) -> str:
    """What a sampled thread was doing, from its deepest Python frame, the native frames
    below it, and whether any frame of ours (other than the CLI entry) is on the stack."""
    chain = " ".join(native)
    named = [f for f in native if not f.startswith("0x")]  # unnamed: inside libc's internals
    leaf = named[-1] if named else (native[-1] if native else "")
    busy_ours = [f for f in ours if "cli/server.py" not in f]
    if any(
        k in py_leaf
        for k in (
            "Condition.wait",
            "thread.py:81",
            "Event.wait",
            "Thread.join",
            "_wait_for_tstate_lock",
            "Queue.get",
        )
    ):
        return "waiting on another thread" if busy_ours else "idle (waiting for work)"
    if "sqlite3InvokeBusyHandler" in chain:
        return "sqlite busy-wait"
    if "lock_PyThread_acquire_lock" in chain:
        return "waiting for a Python lock"
    if "epoll" in leaf or ("Runner.run" in py_leaf and not native):
        return "idle (event loop poll)"
    if "take_gil" in chain or leaf.startswith("pthread_cond_timedwait"):
        return "GIL wait"  # take_gil is inlined: a cond wait right under C code is the GIL
    if any(k in leaf for k in ("fsync", "fdatasync")) or "os.fsync" in py_leaf:
        return "fsync"
    if any(k in leaf for k in ("clock_nanosleep", "pthread_cond", "futex", "sem_")):
        return "blocked (other)"
    return "running"


def _source(frame: str) -> str:
    """The source text of an ``func (allset/x.py:N)`` frame, from this checkout."""
    m = re.search(r"\((allset/[^:]+):(\d+)\)", frame)
    if not m:
        return ""
    return linecache.getline(str(REPO / "src" / m.group(1)), int(m.group(2))).strip()[:70]


def summarise_profile(raw: Path, top: int = 10) -> str:
    """Per kind of thread: how its time splits between states, and where the time not
    idle goes (deepest allset frame | deepest Python frame -> native leaf). Figures are
    percent of wall time of ONE thread (py-spy samples every thread at each tick), so
    "running 80%" for a pool of 8 threads means 0.8 of a thread was busy on average."""
    if not raw.exists():
        return f"(no profile written: see {raw.with_suffix('.log')})\n"
    states: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    where: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    per_thread: collections.Counter[str] = collections.Counter()
    threads: dict[str, set[str]] = collections.defaultdict(set)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        tid, _, tname = frames[0].partition(": ")
        kind = re.sub(r"[-_ ]?\d+(_\d+)?$", "", tname.split(" (")[0]) or "?"
        kind = {
            "MainThread": "event loop (MainThread)",
            "ThreadPoolExecutor": "replica writer pool (ThreadPoolExecutor)",
            "AnyIO worker thread": "AnyIO worker threads (run_in_threadpool)",
        }.get(kind, kind)
        threads[kind].add(tid)
        per_thread[tid] += n
        body = frames[1:]
        py_idx = [i for i, f in enumerate(body) if ".py:" in f]
        py_leaf = body[py_idx[-1]] if py_idx else "(no Python frame)"
        native = list(body[py_idx[-1] + 1 :]) if py_idx else body
        named = [f for f in native if not f.startswith("0x")]
        ours = [f for f in body if "allset/" in f]
        state = _state(py_leaf, native, ours)
        text = _source(ours[-1]) if ours else ""
        if state == "running" and not native:  # without --native: tell from the source line
            if "fsync" in text:
                state = "fsync"
            elif "BEGIN IMMEDIATE" in text:
                state = "BEGIN IMMEDIATE (sqlite lock wait)"
        states[kind][state] += n
        if state.startswith("idle"):
            continue
        short = re.sub(r"/.*/(site-packages|lib/python3\.\d+)/", "", py_leaf)
        loc = (
            ours[-1].replace("allset/", "") + " | " if ours and ours[-1] != py_leaf else ""
        ) + short
        if named:
            loc += "  ->  " + named[-1]
        if text:
            loc += f"   `{text}`"
        where[kind][f"[{state}] {loc}"] += n
    ticks = max(per_thread.values(), default=1)
    out = [f"  ({ticks} ticks; % = share of wall time of one thread)"]
    for kind, counter in sorted(
        states.items(), key=lambda kv: -sum(v for k, v in kv[1].items() if not k.startswith("idle"))
    ):
        busy = sum(v for k, v in counter.items() if not k.startswith("idle"))
        split = ", ".join(
            f"{k} {100 * v / ticks:.0f}%"
            for k, v in counter.most_common()
            if not k.startswith("idle")
        )
        out.append(
            f"  {kind} x{len(threads[kind])}: not idle {100 * busy / ticks:.0f}%"
            + (f" = {split}" if split else "")
        )
        for loc, n in where[kind].most_common(top):
            if 100 * n / ticks >= 0.5:
                out.append(f"    {100 * n / ticks:5.1f}%  {loc}")
    return "\n".join(out) + "\n"


# ---- client ceiling: a trivial HTTP/1.1 sink and source --------------------------------
def sink_server_main(argv: list[str]) -> None:
    """``--_sink PORTFILE [CERT KEY]``: accept PUT (discard body, answer 201) and
    ``GET /get/N`` (N zero bytes) on 127.0.0.1, a thread per connection; exits when its
    parent's pipe closes."""
    portfile = argv[0]
    ctx = None
    if len(argv) == 3:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(argv[1], argv[2])
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    Path(portfile).write_text(str(lsock.getsockname()[1]))
    zeros = bytes(MiB)

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError, ssl.SSLError):
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            f: Any = conn.makefile("rb", buffering=256 * 1024)
            buf = bytearray(MiB)
            view = memoryview(buf)
            for _ in range(10**7):  # requests on this keep-alive connection
                line = f.readline(65537)
                if not line:
                    return
                method, target = line.split(b" ")[:2]
                length, chunked = 0, False
                for _ in range(200):
                    h = f.readline(65537)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    elif (
                        name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower()
                    ):
                        chunked = True
                if chunked:
                    for _ in range(10**7):
                        size = int(f.readline(1024).split(b";")[0], 16)
                        f.read(size + 2)
                        if size == 0:
                            break
                else:
                    left = length
                    for _ in range(length // 4096 + 2):
                        if left <= 0:
                            break
                        got = f.readinto(view[: min(left, MiB)])
                        if not got:
                            return
                        left -= got
                if method == b"GET" and target.startswith(b"/get/"):
                    n = int(target[5:])
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                        b"Content-Length: %d\r\n\r\n" % n
                    )
                    for i in range(0, n, MiB):
                        conn.sendall(zeros[: min(MiB, n - i)])
                else:
                    status = b"201 Created" if method == b"PUT" else b"200 OK"
                    conn.sendall(
                        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 2\r\n\r\n{}"
                    )
        with contextlib.suppress(OSError):
            conn.close()

    def watch_parent() -> None:
        sys.stdin.read()  # EOF when the parent exits or closes the pipe
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    for _ in range(10**6):
        c, _addr = lsock.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


class SinkServer:
    def __init__(self, workdir: Path, cert: Path | None, key: Path | None) -> None:
        self.workdir, self.cert, self.key = workdir, cert, key
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> SinkServer:
        portfile = self.workdir / f"sink-{time.monotonic_ns()}.port"
        args = [sys.executable, str(Path(__file__).resolve()), "--_sink", str(portfile)]
        if self.cert and self.key:
            args += [str(self.cert), str(self.key)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE)
        for _ in range(200):
            if portfile.exists() and portfile.read_text().strip():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("sink server did not start")
        scheme = "https" if self.cert else "http"
        self.url = f"{scheme}://127.0.0.1:{portfile.read_text().strip()}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ---- the measured operations -----------------------------------------------------------
def put_blocks(
    client: httpx.Client,
    url: str,
    blocks: list[bytes] | Iterator[bytes],
    size: int,
    sha: str | None = None,
) -> httpx.Response:
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    if sha is not None:
        headers["Repr-Digest"] = "sha-256=:" + base64.b64encode(bytes.fromhex(sha)).decode() + ":"
    return client.put(url, content=iter(blocks), headers=headers)


def get_discard(client: Any, url: str, hasher: Any = None) -> tuple[int, Any]:
    """GET ``url``, count the body and throw it away (hashing it only when asked)."""
    n = 0
    if isinstance(client, StdlibClient):
        client.conn.request("GET", url, headers=client.headers)
        resp = client.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: {resp.status} {resp.read()[:300]!r}")
        view = memoryview(bytearray(MiB))
        for _ in range(10**9):  # bounded: one pass per received piece
            got = resp.readinto(view)
            if not got:
                break
            n += got
            if hasher is not None:
                hasher.update(view[:got])
        return n, resp.headers
    with client.stream("GET", url) as r:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:300]}")
        for piece in r.iter_raw():
            n += len(piece)
            if hasher is not None:
                hasher.update(piece)
        return n, r.headers


class StdlibResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.content = status, body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class StdlibClient:
    """One keep-alive connection with ``http.client``: several times less client CPU per
    request than httpx (``--small-client stdlib``), for when the client is the limit."""

    def __init__(self, base_url: str, auth: tuple[str, str] | None, cafile: Path | None) -> None:
        u = urllib.parse.urlsplit(base_url)
        host, port = u.hostname or "127.0.0.1", u.port
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, context=ctx, timeout=60
            )
        else:
            self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.headers = {}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = "Basic " + token

    def _request(self, method: str, path: str, body: bytes | None = None) -> StdlibResponse:
        self.conn.request(method, path, body=body, headers=self.headers)
        r = self.conn.getresponse()
        return StdlibResponse(r.status, r.read())

    def get(self, path: str) -> StdlibResponse:
        return self._request("GET", path)

    def put(self, path: str, content: bytes) -> StdlibResponse:
        return self._request("PUT", path, content)

    def close(self) -> None:
        self.conn.close()


def small_uploads(
    make_client: Callable[[], Any],
    url_of: Callable[[int], str],
    payloads: list[bytes],
    conns: int,
    max_seconds: float,
    ok_status: int = 201,
    warm_path: str = "/healthz",
) -> dict[str, Any]:
    """len(payloads) PUTs over ``conns`` keep-alive connections; files/s and latencies.
    Connections (TLS handshakes) are made, one after the other, before the clock starts."""
    clients = [make_client() for _ in range(conns)]
    try:
        for c in clients:
            c.get(warm_path)
        lock = threading.Lock()
        todo = iter(range(len(payloads)))
        latencies: list[float] = []
        errors: list[str] = []
        barrier = threading.Barrier(conns + 1)
        deadline = [0.0]

        def worker(client: httpx.Client) -> None:
            mine: list[float] = []
            barrier.wait(timeout=60)
            for _ in range(len(payloads)):
                with lock:
                    i = next(todo, None)
                if i is None:
                    break
                if time.monotonic() > deadline[0]:
                    errors.append("phase time limit reached")
                    break
                t = time.perf_counter()
                try:
                    r = client.put(url_of(i), content=payloads[i])
                    if r.status_code != ok_status:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                except (httpx.HTTPError, OSError, http.client.HTTPException) as exc:
                    errors.append(repr(exc))
                mine.append(time.perf_counter() - t)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
        for t in threads:
            t.start()
        deadline[0] = time.monotonic() + max_seconds
        t0 = time.perf_counter()
        barrier.wait(timeout=60)
        for t in threads:
            t.join(timeout=max_seconds + 120)
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
    latencies.sort()
    done = len(latencies) - len(errors)
    return {
        "files": len(payloads),
        "ok": done,
        "errors": errors[:5],
        "error_count": len(errors),
        "seconds": wall,
        "files_per_s": done / wall if wall > 0 else 0.0,
        "latency_ms_p50": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "latency_ms_p99": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


# ---- one run: a mode (TLS or plain HTTP) and a number of worker processes -------------
def start_server(srv: ServerProcess, workers: int) -> ServerTree:
    """Start ``srv`` and wait until every worker serves; returns its process tree."""
    offset = srv.log_path.stat().st_size if srv.log_path.exists() else 0  # the log appends
    srv.start()
    assert srv.proc is not None
    tree = ServerTree(srv.proc.pid, workers)
    tree.wait_ready(srv.log_path, offset)
    return tree


@contextlib.contextmanager
def profiling(tree: ServerTree, stem: Path, native: bool) -> Iterator[list[Path]]:
    """One py-spy per process that serves requests: the server itself with one worker,
    else each worker (not the supervisor, which only sleeps and reaps). Raw stacks go to
    ``STEM.txt``, or ``STEM-workerI.txt`` per worker."""
    with contextlib.ExitStack() as stack:
        outs = []
        for index, pid in tree.worker_pids():
            suffix = f"-worker{index}" if tree.has_children else ""
            out = stem.with_name(f"{stem.name}{suffix}.txt")
            stack.enter_context(Profiler(pid, out, native))
            outs.append(out)
        yield outs


def summarise_profiles(outs: list[Path]) -> str:
    """``summarise_profile`` of each raw file (each also saved beside it as .summary)."""
    text = ""
    for out in outs:
        summary = summarise_profile(out)
        out.with_suffix(".summary").write_text(summary)
        head = f"  {out.stem.rsplit('-', 1)[-1]} ({out.name}):\n" if len(outs) > 1 else ""
        text += head + summary
    return text


def run_mode(
    mode: str,
    workers: int,
    root: Path,
    args: argparse.Namespace,
    log: Callable[[str], None],
    big_phases: bool = True,
    ceiling: bool = True,
) -> dict[str, Any]:
    """Every phase against one server of ``workers`` processes in ``mode``, on a fresh data
    dir. ``big_phases``: the big PUT/GET, their profiles and the huge streamed upload
    (see the docstring: not for every worker count); ``ceiling``: the client-ceiling runs
    (the client against a trivial server: the same for every worker count, run once)."""
    plain = mode == "plain"
    data = root / f"{mode}-w{workers}" / "data"
    data.parent.mkdir(parents=True)
    srv = ServerProcess(data, env={"ALLSET_WORKERS": str(workers)}, plain_http=plain)
    res: dict[str, Any] = {"mode": mode, "workers": workers, "big_phases": big_phases}
    size = args.size_mib * MiB
    big = int(args.big_gib * GiB)
    phase_limit = args.phase_seconds
    tag = f"[{mode} w={workers}]"
    try:
        tree = start_server(srv, workers)
        res["url"] = srv.url
        res["rss_idle_MB"] = tree.rss_kb() * 1024 / MB
        email, password = srv.make_account("bench", "bench@example.com", quota="1TiB")
        srv.cli("tenant", "limit", "bench", "--bandwidth", "100Gbit")
        auth = (email, password)

        def client() -> httpx.Client:
            return srv.client(auth=auth)

        def big_get_client() -> Any:
            if args.big_client == "stdlib":
                return StdlibClient(srv.url, auth, None if plain else srv.cert)
            return client()

        def small_client() -> Any:
            if args.small_client == "stdlib":
                return StdlibClient(srv.url, auth, None if plain else srv.cert)
            return client()

        def quiet() -> None:  # sees ``tree`` as rebound by the restart below
            wait_quiet(tree.pids(), args.quiet_wait, args.quiet_cores, log)

        # 0. the first authenticated requests, all at once (the credential cache is cold)
        quiet()
        log(f"{tag} {args.conns} simultaneous first requests (cold credential cache)")
        clients = [client() for _ in range(args.conns)]
        try:
            for c in clients:
                c.get("/healthz")
            statuses: list[int] = []
            with PhaseMonitor(tree) as mon:
                threads = [
                    threading.Thread(target=lambda c=c: statuses.append(c.get(WARM).status_code))
                    for c in clients
                ]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join(timeout=120)
        finally:
            for c in clients:
                c.close()
        res["cold_auth"] = {"statuses": statuses, "monitor": mon.result()}

        with client() as c:
            for d in ("/big", "/huge"):
                r = c.post("/api/v1/mkdir", json={"path": d})
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"mkdir {d}: {r.status_code} {r.text[:300]}")

        # 1. big PUT, 2. big GET -------------------------------------------------------
        last_blocks: list[bytes] = []
        if big_phases:
            puts, gets, put_mon, get_mon, warm_gets = [], [], [], [], []
            first: tuple[str, str] | None = None
            for rep in range(args.repeat):
                last_blocks = []  # free the previous repetition's data first
                blocks = list(keystream(f"{mode}-put-{rep}-{time.time_ns()}", size))
                sha = sha256_of(blocks)
                url = f"/api/v1/files/big/file-{rep}.bin"
                log(f"{tag} PUT {args.size_mib} MiB #{rep + 1}")
                with client() as c:
                    c.get(WARM)  # connection ready and credentials cached before the clock starts
                    quiet()
                    with PhaseMonitor(tree) as mon:
                        t = time.perf_counter()
                        r = put_blocks(c, url, blocks, size, sha)
                        secs = time.perf_counter() - t
                if r.status_code != 201:
                    raise RuntimeError(f"PUT {url}: {r.status_code} {r.text[:300]}")
                body = r.json()
                if body.get("sha256") != sha or body.get("size") != size:
                    raise RuntimeError(f"PUT {url}: server stored {body}, expected sha256 {sha}")
                puts.append(mbps(size, secs))
                put_mon.append(mon.result())
                last_blocks = blocks
                del blocks
                if first is None:
                    first = (url, sha)
            assert first is not None
            for rep in range(args.repeat):
                url = f"/api/v1/files/big/file-{rep}.bin"
                log(f"{tag} GET {args.size_mib} MiB #{rep + 1}")
                c = big_get_client()
                try:
                    c.get(WARM).content  # noqa: B018 - read it whole: the connection is reused
                    quiet()
                    with PhaseMonitor(tree) as mon:
                        t = time.perf_counter()
                        n, _h = get_discard(c, url)
                        secs = time.perf_counter() - t
                    # The same file again: now from the page cache, which the upload no
                    # longer fills (big chunks are written with O_DIRECT). The first read
                    # is what a download of a stored file costs, this one compares with
                    # servers that GET what their PUT left in the cache.
                    quiet()
                    t = time.perf_counter()
                    n2, _h = get_discard(c, url)
                    warm_secs = time.perf_counter() - t
                finally:
                    c.close()
                if n != size or n2 != size:
                    raise RuntimeError(f"GET {url}: {n} and {n2} bytes, expected {size}")
                gets.append(mbps(size, secs))
                warm_gets.append(mbps(size, warm_secs))
                get_mon.append(mon.result())
            # Verification, outside the timed part: one more GET, hashed.
            c = big_get_client()
            try:
                h = hashlib.sha256()
                n, _headers = get_discard(c, first[0], h)
            finally:
                c.close()
            res["get_verified"] = h.hexdigest() == first[1] and n == size
            if not res["get_verified"]:
                raise RuntimeError(f"GET {first[0]}: content differs from what was uploaded")
            res["put"] = {"MBps": spread(puts), "runs": puts, "monitor": put_mon}
            res["get"] = {"MBps": spread(gets), "runs": gets, "monitor": get_mon}
            res["get_warm"] = {"MBps": spread(warm_gets), "runs": warm_gets}

        # 3. small files -----------------------------------------------------------------
        smalls, small_runs, small_mon = [], [], []
        for rep in range(args.repeat):
            d = f"/small-{rep}"
            with client() as c:
                r = c.post("/api/v1/mkdir", json={"path": d})
                if r.status_code not in (200, 201):
                    raise RuntimeError(f"mkdir {d}: {r.status_code} {r.text[:300]}")
            payloads = [os.urandom(args.small_size) for _ in range(args.small)]
            log(f"{tag} {args.small} x {args.small_size} B, {args.conns} connections #{rep + 1}")
            quiet()
            with PhaseMonitor(tree) as mon:
                out = small_uploads(
                    small_client,
                    f"/api/v1/files{d}/f{{:05d}}.dat".format,
                    payloads,
                    args.conns,
                    phase_limit,
                    warm_path=WARM,
                )
            if out["error_count"]:
                raise RuntimeError(f"small uploads failed: {out['errors']}")
            smalls.append(out["files_per_s"])
            small_runs.append(out)
            small_mon.append(mon.result())
        res["small"] = {"files_per_s": spread(smalls), "runs": small_runs, "monitor": small_mon}

        # client ceiling against a trivial server -----------------------------------------
        if ceiling and big_phases and not args.no_ceiling:
            cert = None if plain else srv.cert
            key = None if plain else srv.data_dir / "tls" / "key.pem"
            with SinkServer(root, cert, key) as sink:

                def sclient() -> httpx.Client:
                    return httpx.Client(
                        base_url=sink.url, verify=str(cert) if cert else False, timeout=60
                    )

                def ssmall() -> Any:
                    if args.small_client == "stdlib":
                        return StdlibClient(sink.url, None, cert)
                    return sclient()

                log(f"{tag} client ceiling (trivial sink server)")
                assert sink.proc is not None
                wait_quiet([*tree.pids(), sink.proc.pid], args.quiet_wait, args.quiet_cores, log)
                with sclient() as c:
                    c.get("/healthz")
                    t = time.perf_counter()
                    r = put_blocks(c, "/put", last_blocks, size)
                    put_ceiling = mbps(size, time.perf_counter() - t)
                g = StdlibClient(sink.url, None, cert) if args.big_client == "stdlib" else sclient()
                try:
                    g.get("/healthz")
                    t = time.perf_counter()
                    n, _h = get_discard(g, f"/get/{size}")
                    get_ceiling = mbps(n, time.perf_counter() - t)
                finally:
                    g.close()
                payloads = [os.urandom(args.small_size) for _ in range(args.small)]
                out = small_uploads(ssmall, "/small/{}".format, payloads, args.conns, phase_limit)
            res["ceiling"] = {
                "put_MBps": put_ceiling,
                "get_MBps": get_ceiling,
                "small_files_per_s": out["files_per_s"],
            }
        del last_blocks

        # profiles (not timed) -------------------------------------------------------------
        if args.profile:
            pdir = Path(args.profile)
            pdir.mkdir(parents=True, exist_ok=True)
            res["profiles"] = {}
            native = args.profile_native
            blocks = list(keystream(f"{mode}-profile-{time.time_ns()}", size))
            url = "/api/v1/files/big/profiled.bin"
            with client() as c:
                c.get(WARM)
                log(f"{tag} profiling PUT")
                quiet()
                stem = pdir / f"{mode}-w{workers}"
                with profiling(tree, stem.with_name(stem.name + "-put"), native) as out_put:
                    t = time.perf_counter()
                    r = put_blocks(c, url, blocks, size)
                    p_put = mbps(size, time.perf_counter() - t)
                del blocks
                log(f"{tag} profiling GET")
                quiet()
                g = big_get_client()
                try:
                    g.get(WARM).content  # noqa: B018
                    with profiling(tree, stem.with_name(stem.name + "-get"), native) as out_get:
                        t = time.perf_counter()
                        get_discard(g, url)
                        p_get = mbps(size, time.perf_counter() - t)
                finally:
                    g.close()
                c.post("/api/v1/mkdir", json={"path": "/small-profiled"})
            payloads = [os.urandom(args.small_size) for _ in range(args.small)]
            log(f"{tag} profiling small files")
            quiet()
            with profiling(tree, stem.with_name(stem.name + "-small"), native) as out_small:
                o = small_uploads(
                    small_client,
                    "/api/v1/files/small-profiled/f{:05d}.dat".format,
                    payloads,
                    args.conns,
                    phase_limit,
                    warm_path=WARM,
                )
            for name, paths, rate in (
                ("put", out_put, f"{p_put:.0f} MB/s"),
                ("get", out_get, f"{p_get:.0f} MB/s"),
                ("small", out_small, f"{o['files_per_s']:.0f} files/s"),
            ):
                res["profiles"][name] = {
                    "raw": ", ".join(str(x) for x in paths),
                    "rate_under_profiler": rate,
                    "summary": summarise_profiles(paths),
                }
        # 4. the huge streamed upload (RSS) ----------------------------------------------
        if big > 0 and big_phases:
            # On a freshly restarted server, so that the figure is the upload's own memory and
            # not what earlier phases left in the heap (reported beside it).
            res["rss_before_restart_MB"] = tree.rss_kb() * 1024 / MB
            srv.stop()
            tree = start_server(srv, workers)
            res["rss_idle_after_restart_MB"] = tree.rss_kb() * 1024 / MB
            seed = f"{mode}-huge-{time.time_ns()}"
            log(f"{tag} hashing the {args.big_gib} GiB stream (untimed pre-pass)")
            sha = sha256_of(keystream(seed, big))
            log(f"{tag} PUT {args.big_gib} GiB streamed")
            with client() as c:
                c.get(WARM)
                quiet()
                with PhaseMonitor(tree) as mon:
                    t = time.perf_counter()
                    r = put_blocks(c, "/api/v1/files/huge/huge.bin", keystream(seed, big), big, sha)
                    secs = time.perf_counter() - t
            if r.status_code != 201 or r.json().get("sha256") != sha:
                raise RuntimeError(f"huge PUT: {r.status_code} {r.text[:300]}")
            res["huge"] = {"bytes": big, "MBps": mbps(big, secs), "monitor": mon.result()}

        res["rss_end_MB"] = tree.rss_kb() * 1024 / MB
        return res
    except Exception as exc:  # reported in the table; the other runs still run
        log(f"{tag} FAILED: {exc!r}")
        res["error"] = repr(exc)
        with contextlib.suppress(OSError):
            res["server_log_tail"] = srv.log_path.read_text(errors="replace")[-4000:]
        return res
    finally:
        srv.stop()


# ---- report ----------------------------------------------------------------------------
def fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


def fmt_spread(s: dict[str, float] | None, digits: int = 0) -> str:
    if not s:
        return "-"
    if s["min"] == s["max"]:
        return fmt(s["median"], digits)
    return f"{fmt(s['min'], digits)} / {fmt(s['median'], digits)} / {fmt(s['max'], digits)}"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("ok" if ok else "MISS")


MODES = ("tls", "plain")


def workers_label(n: int) -> str:
    return f"{n} worker" + ("s" if n > 1 else "")


def mon_max(phase: str, field: str) -> Callable[[dict[str, Any]], str]:
    """The largest ``field`` over a phase's monitors (one per repetition), formatted."""

    def get(r: dict[str, Any]) -> str:
        mons = r.get(phase, {}).get("monitor", [])
        mons = mons if isinstance(mons, list) else [mons]
        vals = [x[field] for x in mons if x.get(field) is not None]
        return fmt(max(vals), 2 if ("cores" in field or "share" in field) else 0) if vals else "-"

    return get


def rss_pair(phase: str) -> Callable[[dict[str, Any]], str]:
    """'sampled / HWM' peak RSS of a phase (sums over the server's processes)."""
    return lambda r: (
        mon_max(phase, "rss_peak_sampled_MB")(r) + " / " + mon_max(phase, "rss_hwm_MB")(r)
    )


def text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def report(result: dict[str, Any]) -> str:
    """The printed report: a summary with one row per (mode, workers), the detailed table
    (one row per figure and worker count, TLS and plain HTTP side by side), references,
    profiles, and the README's "Benchmarks" table in markdown."""
    m, refs, a = result["machine"], result["references"], result["args"]
    runs = {(r["mode"], r["workers"]): r for r in result["runs"]}
    counts: list[int] = a["workers"]
    lines = [f"allset server benchmark — {m['date']}"]
    if a["quick"]:
        lines.append(
            "*** --quick SMOKE RUN: every phase shrunk to seconds; "
            "the figures below are NOT measurements ***"
        )
    lines += [
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_bytes'] / GiB:.1f} GiB RAM, "
        f"kernel {m['kernel']}, Python {m['python']}, {m['openssl']}",
        f"code: {m['revision']}   database: {m['database']}   data dirs under {result['tmp_root']}",
        f"command: {result['command']}",
        "MB = 10^6 bytes. 'a / b / c' = min / median / max over repetitions; "
        "PUT/GET: random data; each GET reads a file PUT earlier in the run, whose big chunks "
        "were written with O_DIRECT: from the disk, then once more from the page cache.",
        "workers = server processes (serve --workers N). 'server' = all of its processes: with "
        "N > 1 the supervisor and its N workers; CPU is their sum.",
        "RSS 'sampled / HWM': the peak of the processes' VmRSS summed at each 50 ms sample (the "
        "memory the server holds at once) / the sum of each process's own VmHWM (an upper "
        "bound: their peaks need not coincide; with 1 worker, the exact peak). Verdicts use "
        "the larger.",
        "",
    ]
    dd_fresh = statistics.mean(refs["dd_fresh_MBps"])
    durable_key = f"durable_4k_files_per_s_{a['conns']}_threads"
    put_goal = 0.8 * dd_fresh / 2
    size_label = f"{a['size_mib']} MiB"
    small_label = f"{a['small']:,} x {a['small_size'] // 1024} KiB PUT, {a['conns']} conns"

    def put_ok(r: dict[str, Any]) -> bool | None:
        return r["put"]["MBps"]["median"] >= put_goal if "put" in r else None

    def get_ok(r: dict[str, Any], phase: str = "get") -> bool | None:
        if phase not in r:
            return None
        return bool(r[phase]["MBps"]["median"] >= (600 if r["mode"] == "plain" else 400))

    def warm_get_ok(r: dict[str, Any]) -> bool | None:
        return get_ok(r, "get_warm")

    def small_ok(r: dict[str, Any]) -> bool | None:
        return r["small"]["files_per_s"]["median"] >= 1000 if "small" in r else None

    def huge_rss(r: dict[str, Any]) -> float:
        mon = r["huge"]["monitor"]
        return float(max(mon["rss_peak_sampled_MB"], mon["rss_hwm_MB"] or 0))

    def huge_ok(r: dict[str, Any]) -> bool | None:
        return huge_rss(r) < 200 if "huge" in r else None

    def cold(r: dict[str, Any]) -> str:
        if "cold_auth" not in r:
            return "-"
        c = r["cold_auth"]["monitor"]
        rss = c["rss_hwm_MB"] or c["rss_peak_sampled_MB"]
        return f"{fmt(c['seconds'], 2)} s, RSS {fmt(rss)} MB"

    def present(n: int, phase: str | None) -> list[dict[str, Any] | None] | None:
        """The runs of ``n`` workers (TLS, plain), None when neither has ``phase``."""
        rs = [runs.get((x, n)) for x in MODES]
        if phase is not None and not any(r is not None and phase in r for r in rs):
            return None
        return rs

    # the summary: one row per (mode, workers) ------------------------------------------
    lines.append(
        "summary (CPU and RSS of the small-file phase, max over its runs; PUT and GET: median; "
        "RSS: sampled / HWM):"
    )
    summary = []
    for r in result["runs"]:
        summary.append(
            [
                r["mode"] + (" FAILED" if "error" in r else ""),
                str(r["workers"]),
                fmt_spread(r.get("small", {}).get("files_per_s")),
                _small_latency(r),
                mon_max("small", "server_cpu_cores")(r),
                rss_pair("small")(r),
                fmt(r["put"]["MBps"]["median"]) if "put" in r else "-",
                fmt(r["get"]["MBps"]["median"]) if "get" in r else "-",
                rss_pair("huge")(r),
            ]
        )
    lines += text_table(
        [
            "mode",
            "workers",
            f"{small_label} (files/s)",
            "p50 / p99 ms",
            "server CPU (cores)",
            "server RSS MB",
            f"PUT {size_label} MB/s",
            "GET MB/s",
            f"RSS MB, {a['big_gib']:g} GiB PUT",
        ],
        summary,
    )
    lines.append("")

    # the details: one row per figure and worker count ----------------------------------
    rows: list[list[str]] = []

    def row(
        label: str,
        key: Callable[[dict[str, Any]], str],
        goal: str = "",
        ok: Callable[[dict[str, Any]], bool | None] | None = None,
        phase: str | None = None,
    ) -> None:
        for n in counts:
            rs = present(n, phase)
            if rs is None:
                continue
            vals = [key(r) if r is not None else "-" for r in rs]
            verdicts = [f"{x}:{verdict(ok(r))}" for x, r in zip(MODES, rs, strict=True) if ok and r]
            rows.append([str(n), label, *vals, goal, " ".join(verdicts)])

    row(
        f"PUT {size_label} (MB/s)",
        lambda r: fmt_spread(r.get("put", {}).get("MBps")),
        f">= {put_goal:,.0f} (80% of dd/2)",
        put_ok,
        "put",
    )
    row("  server CPU (cores, max)", mon_max("put", "server_cpu_cores"), phase="put")
    row("  of which kernel (share, max)", mon_max("put", "server_sys_share"), phase="put")
    row("  server peak RSS (MB) sampled/HWM", rss_pair("put"), phase="put")
    row("  other processes' CPU (cores, max)", mon_max("put", "other_cpu_cores"), phase="put")
    row(
        "  client ceiling PUT (MB/s)",
        lambda r: fmt(r.get("ceiling", {}).get("put_MBps")),
        phase="ceiling",
    )
    row(
        f"GET {size_label} (MB/s) [{'http.client' if a['big_client'] == 'stdlib' else 'httpx'}]",
        lambda r: fmt_spread(r.get("get", {}).get("MBps")),
        ">= 400 TLS, >= 600 plain",
        get_ok,
        "get",
    )
    row(
        f"  the same {size_label} again, page cache warm (MB/s)",
        lambda r: fmt_spread(r.get("get_warm", {}).get("MBps")),
        ">= 400 TLS, >= 600 plain",
        warm_get_ok,
        "get",
    )
    row("  server CPU (cores, max)", mon_max("get", "server_cpu_cores"), phase="get")
    row("  of which kernel (share, max)", mon_max("get", "server_sys_share"), phase="get")
    row("  server peak RSS (MB) sampled/HWM", rss_pair("get"), phase="get")
    row("  other processes' CPU (cores, max)", mon_max("get", "other_cpu_cores"), phase="get")
    row(
        "  client ceiling GET (MB/s)",
        lambda r: fmt(r.get("ceiling", {}).get("get_MBps")),
        phase="ceiling",
    )
    row(
        "  SHA-256 verified (1 untimed GET)",
        lambda r: "yes" if r.get("get_verified") else "NO",
        phase="get",
    )
    row(
        f"{small_label} (files/s)" + (" [http.client]" if a["small_client"] == "stdlib" else ""),
        lambda r: fmt_spread(r.get("small", {}).get("files_per_s")),
        ">= 1,000",
        small_ok,
    )
    row("  latency p50 / p99 (ms, median run)", _small_latency)
    row("  server CPU (cores, max)", mon_max("small", "server_cpu_cores"))
    row("  of which kernel (share, max)", mon_max("small", "server_sys_share"))
    row("  client CPU (cores, max)", mon_max("small", "client_cpu_cores"))
    row("  server peak RSS (MB) sampled/HWM", rss_pair("small"))
    row("  other processes' CPU (cores, max)", mon_max("small", "other_cpu_cores"))
    row(
        "  client ceiling small (files/s)",
        lambda r: fmt(r.get("ceiling", {}).get("small_files_per_s")),
        phase="ceiling",
    )
    row(f"{a['conns']} simultaneous first requests, cold credential cache", cold)
    if a["big_gib"] > 0:
        row(
            "server RSS after the phases above / after restart (MB)",
            lambda r: (
                f"{fmt(r.get('rss_before_restart_MB'))} / {fmt(r.get('rss_idle_after_restart_MB'))}"
            ),
            phase="huge",
        )
        row(
            f"PUT {a['big_gib']:g} GiB streamed (MB/s)",
            lambda r: fmt(r.get("huge", {}).get("MBps")),
            phase="huge",
        )
        row("  server peak RSS (MB) sampled/HWM", rss_pair("huge"), "< 200", huge_ok, "huge")
        row("  server CPU (cores)", mon_max("huge", "server_cpu_cores"), phase="huge")
        row("  other processes' CPU (cores)", mon_max("huge", "other_cpu_cores"), phase="huge")
    row(
        "server RSS idle after first start / at end (MB)",
        lambda r: f"{fmt(r.get('rss_idle_MB'))} / {fmt(r.get('rss_end_MB'))}",
    )
    lines += text_table(["workers", "", "TLS", "plain HTTP", "goal", "verdict"], rows)
    ref = f"bs=1M count={a['ref_mib']}"
    lines += [
        "",
        "physical references (same run):",
        f"  dd {ref} conv=fsync, 3 NEW files kept side by side (fresh blocks), median: "
        + ", ".join(f"{x:,.0f}" for x in refs["dd_fresh_MBps"])
        + " MB/s (before/after the servers)"
        f" -> PUT goal 0.8 x {dd_fresh:,.0f} / 2 replicas = {put_goal:,.0f} MB/s",
        "  (the first of those new files alone: "
        + ", ".join(f"{x:,.0f}" for x in refs.get("dd_first_new_file_MBps", []))
        + " MB/s: mostly just-freed blocks)",
        f"  dd {ref} conv=notrunc,fsync, existing file (reused blocks): "
        + ", ".join(f"{x:,.0f}" for x in refs["dd_reused_MBps"])
        + " MB/s",
        f"  hashlib SHA-256, one core, {a['ref_mib'] // 2} MiB: {refs['sha256_MBps']:,.0f} MB/s",
        "  durable 4 KiB file (write, fsync, rename, fsync dir) straight on the disk: "
        f"{refs['durable_4k_files_per_s_1_thread']:,.0f} files/s with 1 thread, "
        f"{refs[durable_key]:,.0f} with {a['conns']} threads",
        f"  the PUT's storage work alone ({a['ref_mib']} x 1 MiB chunk files, each durable on "
        f"2 replica dirs, 16 writers): {refs.get('chunk_layout_MBps', float('nan')):,.0f} MB/s "
        "of file",
        "  other processes' CPU just before the references (cores): "
        + ", ".join(f"{x:.2f}" for x in refs["other_cpu_cores_before"])
        + "  (this machine may be shared; phases wait up to --quiet-wait s for quiet)",
        "  client ceiling = this client against a trivial Python sink/source server on the same "
        "machine (a lower bound of the client's limit), measured once per mode.",
    ]
    for r in result["runs"]:
        profiles = r.get("profiles")
        if profiles:
            kind = "--native (pauses the server)" if a["profile_native"] else "--nonblocking"
            lines += [
                "",
                f"profiles ({r['mode']}, {workers_label(r['workers'])}; py-spy record --idle "
                f"--threads {kind} on each worker, wall-clock samples of every thread; "
                "separate untimed runs):",
            ]
            for name, p in profiles.items():
                lines.append(
                    f" {r['mode']} w={r['workers']} {name} ({p['rate_under_profiler']} under "
                    f"the profiler), raw: {p['raw']}"
                )
                lines.append(p["summary"].rstrip())

    # the README's "Benchmarks" table -------------------------------------------------
    md = [
        "| | TLS | plain HTTP (proxy mode) | goal |",
        "| --- | --- | --- | --- |",
    ]

    def md_row(
        label: str,
        key: Callable[[dict[str, Any]], str],
        goal: str = "",
        ok: Callable[[dict[str, Any]], bool | None] | None = None,
        phase: str | None = None,
    ) -> None:
        for n in counts:
            rs = present(n, phase)
            if rs is None:
                continue
            cells = [key(r) if r is not None else "-" for r in rs]
            oks = [v for r in rs if r is not None and ok and (v := ok(r)) is not None]
            met = "" if not oks else (" — met" if all(oks) else " — **missed**")
            md.append(
                f"| {label.format(w=workers_label(n))} | {cells[0]} | {cells[1]} | {goal}{met} |"
            )

    def small_md(r: dict[str, Any]) -> str:
        lat = _small_latency(r).split(" / ")
        spread_ = fmt_spread(r.get("small", {}).get("files_per_s"))
        return spread_ + (f" (p50 {lat[0]} ms, p99 {lat[1]} ms)" if len(lat) == 2 else "")

    md_row(
        f"PUT {size_label}, {{w}}, MB/s",
        lambda r: fmt_spread(r.get("put", {}).get("MBps")),
        f"≥ {put_goal:,.0f} (80 % of the fresh-block dd ÷ 2 replicas)",
        put_ok,
        "put",
    )
    md_row(
        f"GET {size_label}, {{w}}, MB/s (from the disk)",
        lambda r: fmt_spread(r.get("get", {}).get("MBps")),
        "≥ 400 TLS, ≥ 600 plain",
        get_ok,
        "get",
    )
    md_row(
        f"GET {size_label} again, {{w}}, MB/s (page cache warm)",
        lambda r: fmt_spread(r.get("get_warm", {}).get("MBps")),
        "≥ 400 TLS, ≥ 600 plain",
        warm_get_ok,
        "get",
    )
    md_row(
        f"{a['small']:,} × {a['small_size'] // 1024} KiB PUT, {a['conns']} connections, "
        "{w}, files/s",
        small_md,
        "≥ 1,000",
        small_ok,
    )
    if a["big_gib"] > 0:
        md_row(
            f"server peak RSS during a {a['big_gib']:g} GiB PUT, {{w}}, MB (sampled / HWM)",
            rss_pair("huge"),
            "< 200",
            huge_ok,
            "huge",
        )
    md_row(f"{a['conns']} simultaneous first sign-ins (cold argon2 cache), {{w}}", cold)
    lines += ["", "README table (markdown):", *md]
    return "\n".join(lines)


def _small_latency(r: dict[str, Any]) -> str:
    runs = r.get("small", {}).get("runs")
    if not runs:
        return "-"
    mid = sorted(runs, key=lambda x: x["files_per_s"])[len(runs) // 2]
    return f"{fmt(mid['latency_ms_p50'], 1)} / {fmt(mid['latency_ms_p99'], 1)}"


# ---- main ------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run, NOT a measurement: --size-mib 64 --small 200 --big-gib 0.25 "
        "--repeat 1 --quiet-wait 0, references on 64 MiB",
    )
    p.add_argument(
        "--workers",
        default="1,2",
        help="server processes (serve --workers N), comma-separated: every mode runs once per "
        "count (default 1,2); the big PUT/GET and the huge upload only for the smallest and "
        "largest count",
    )
    p.add_argument("--size-mib", type=int, default=None, help="big file size (default 512)")
    p.add_argument("--small", type=int, default=None, help="number of small files (default 2000)")
    p.add_argument("--small-size", type=int, default=4096, help="bytes per small file (4096)")
    p.add_argument(
        "--big-client",
        choices=["httpx", "stdlib"],
        default="stdlib",
        help="client of the big GET: http.client reading into a 1 MiB buffer (default; over "
        "TLS httpx tops out near 450-600 MB/s on a slow core, too close to the goal) or httpx",
    )
    p.add_argument(
        "--small-client",
        choices=["httpx", "stdlib"],
        default="stdlib",
        help="client of the small-file phase: http.client (default: the kind of client the "
        "peers were measured with, research/webdav-peers.md; it costs several times less "
        "CPU per request than httpx, and client and server share 2 cores) or httpx.Client",
    )
    p.add_argument("--conns", type=int, default=8, help="connections for small files (8)")
    p.add_argument(
        "--big-gib", type=float, default=None, help="streamed upload for RSS (2; 0 skips)"
    )
    p.add_argument("--repeat", type=int, default=None, help="repetitions (default 3)")
    p.add_argument("--modes", default="tls,plain", help="tls,plain (default both)")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the server during extra untimed "
        "PUT, GET and small-file runs; raw stacks and summaries go to DIR",
    )
    p.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native (C frames "
        "too: OpenSSL, SQLite, GIL waits), which pauses the server at each sample",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each timed phase, wait "
        "up to this many seconds for other processes to use < --quiet-cores (60; --quick 0)",
    )
    p.add_argument("--quiet-cores", type=float, default=0.3, help="see --quiet-wait (0.3)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the client-ceiling runs")
    p.add_argument(
        "--tmp",
        default=tempfile.gettempdir(),
        help="where the data dirs go (default: the temp dir, /tmp)",
    )
    p.add_argument("--keep", action="store_true", help="keep the data dirs (for inspection)")
    p.add_argument("--phase-seconds", type=float, default=600, help="time limit of a phase")
    p.add_argument("--max-minutes", type=float, default=60, help="time limit of the whole run")
    a = p.parse_args(argv)
    quick = {"size_mib": 64, "small": 200, "big_gib": 0.25, "repeat": 1, "quiet_wait": 0.0}
    full = {"size_mib": 512, "small": 2000, "big_gib": 2.0, "repeat": 3, "quiet_wait": 60.0}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.ref_mib = 64 if a.quick else 512  # dd and the chunk-layout reference; SHA-256 on half
    if a.size_mib <= 0 or a.small <= 0 or a.conns <= 0 or a.repeat <= 0 or a.big_gib < 0:
        p.error("sizes, counts and repetitions must be positive")
    try:
        a.workers = sorted({int(x) for x in a.workers.split(",") if x.strip()})
    except ValueError:
        p.error(f"--workers takes comma-separated numbers, not {a.workers!r}")
    if not a.workers or not all(1 <= n <= 64 for n in a.workers):
        p.error("--workers takes counts between 1 and 64")
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not set(a.modes) <= {"tls", "plain"}:
        p.error("--modes takes tls and/or plain")
    return a


class Timeout(BaseException):  # not an Exception: a mode's error handler must not eat it
    pass


def main(argv: list[str]) -> int:
    if argv[:1] == ["--_sink"]:
        sink_server_main(argv[1:])
        return 0
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    def on_alarm(_sig: int, _frame: object) -> None:
        raise Timeout(f"the run exceeded --max-minutes {args.max_minutes}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.max_minutes * 60))
    root = Path(tempfile.mkdtemp(prefix="allset-bench-", dir=args.tmp))
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "args": dict(vars(args)),
        "tmp_root": str(root),
        "machine": machine_info(),
        "runs": [],  # one per (mode, workers), in the order run
    }
    status = 0
    try:
        log("references: dd (fresh, reused), sha256")
        loads = [wait_quiet([], args.quiet_wait, args.quiet_cores, log)]
        refs = dd_references(root, count=args.ref_mib)
        loads.append(wait_quiet([], args.quiet_wait, args.quiet_cores, log))
        result["references"] = {
            "dd_fresh_MBps": [refs["dd_fresh_MBps"]],
            "dd_first_new_file_MBps": [refs["dd_first_new_file_MBps"]],
            "dd_reused_MBps": [refs["dd_reused_MBps"]],
            "sha256_MBps": sha256_speed(args.ref_mib // 2 * MiB),
            "durable_4k_files_per_s_1_thread": durable_small_files(root, 1),
            f"durable_4k_files_per_s_{args.conns}_threads": durable_small_files(root, args.conns),
            "chunk_layout_MBps": chunk_layout_rate(root, args.ref_mib),
            "other_cpu_cores_before": loads,
        }
        for mode in args.modes:
            for n in args.workers:
                r = run_mode(
                    mode,
                    n,
                    root,
                    args,
                    log,
                    big_phases=n in (args.workers[0], args.workers[-1]),
                    ceiling=n == args.workers[0],
                )
                result["runs"].append(r)
                status = 1 if "error" in r else status
                shutil.rmtree(root / f"{mode}-w{n}", ignore_errors=True)  # its own data dir
        log("references again: dd")
        result["references"]["other_cpu_cores_before"].append(
            wait_quiet([], args.quiet_wait, args.quiet_cores, log)
        )
        refs = dd_references(root, count=args.ref_mib)
        result["references"]["dd_fresh_MBps"].append(refs["dd_fresh_MBps"])
        result["references"]["dd_first_new_file_MBps"].append(refs["dd_first_new_file_MBps"])
        result["references"]["dd_reused_MBps"].append(refs["dd_reused_MBps"])
        print(report(result))
        for r in result["runs"]:
            if "error" in r:
                print(
                    f"\n{r['mode']}, {workers_label(r['workers'])}: FAILED: {r['error']}\n"
                    "server log tail:\n" + r.get("server_log_tail", "")[-2000:]
                )
    finally:
        signal.alarm(0)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
