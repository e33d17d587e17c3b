"""What the server's processes use, read from /proc: CPU time, resident memory, and the
load of everything else on the machine, for ``server_bench.py``.

A server started with ``--workers N`` (N > 1) is a process tree: the supervisor that
``ServerProcess`` started and its N worker children (``serve-worker``; replaced only when
one dies). Everything measured about "the server" covers that whole tree:

* CPU seconds: the sum over the supervisor and every worker seen during the phase
  (utime + stime of each, never the reaped children's cutime, so nothing counts twice).
  A worker that appears during a phase counts from zero; one that dies counts up to its
  last sample.
* memory: the sum of the processes' VmRSS read together every 50 ms (what the server
  holds at once; shared library pages of the exec'd workers are counted once per
  process, a few MB each), and beside it the sum of each process's own VmHWM since the
  phase began: an upper bound, since the processes' peaks need not coincide.

``ServerTree(pid, 1)`` is exactly one process (``serve`` without workers serves in the
process itself, cli/server.py): no /proc scan is made for it, so single-process figures
are read the same way as before this module existed.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
REFRESH_SECONDS = 1.0  # how often a sampler looks for new worker processes (a /proc scan)


# ---- one process -----------------------------------------------------------------------
def proc_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime (fields 14, 15)


def proc_cpu_seconds(pid: int) -> float:
    return sum(proc_cpu_split(pid))


def proc_status(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/status in kB (one read: VmRSS and VmHWM of the same moment)."""
    out = dict.fromkeys(keys, 0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in out:
            out[key] = int(line.split()[1])
    return out


def proc_status_kb(pid: int, key: str) -> int:
    return proc_status(pid, (key,))[key]


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS ("5" to clear_refs); False if denied."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# ---- the machine -----------------------------------------------------------------------
def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (from /proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    guest = sum(f[8:10]) if len(f) > 9 else 0  # already counted in user/nice
    return (sum(f) - idle - guest) / TICKS


def _cpu_of(pids: list[int]) -> dict[int, float]:
    out = {}
    for p in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[p] = proc_cpu_seconds(p)
    return out


def others_busy_cores(seconds: float, pids: list[int]) -> float:
    """Cores used by processes other than ``pids`` and this one over ``seconds``. A pid
    that exits meanwhile is left out of the subtraction (its time shows as others')."""
    own0 = _cpu_of(pids)
    p0 = time.process_time()
    m0 = machine_busy_seconds()
    time.sleep(seconds)
    own1 = _cpu_of(pids)
    own = sum(own1[p] - own0[p] for p in own0 if p in own1) + time.process_time() - p0
    return max(0.0, (machine_busy_seconds() - m0 - own) / seconds)


def wait_quiet(
    pids: list[int], max_seconds: float, threshold: float, log: Callable[[str], None]
) -> float:
    """Wait (at most ``max_seconds``) until other processes use < ``threshold`` cores; this
    machine may be shared with test runs. Returns the last reading."""
    load = others_busy_cores(0.5, pids)
    if load < threshold or max_seconds <= 0:
        return load
    log(f"  other processes use {load:.2f} cores; waiting up to {max_seconds:.0f} s for quiet")
    for _ in range(int(max_seconds)):
        load = others_busy_cores(1.0, pids)
        if load < threshold:
            break
    return load


# ---- the server's tree -----------------------------------------------------------------
def descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, from one scan of /proc/*/stat (this kernel has
    no /proc/PID/task/TID/children). About 2 ms for a hundred processes."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] != "Z":  # a zombie uses nothing and has no /proc/PID/status figures
                parent[int(entry)] = int(stat[1])
    found: list[int] = []
    todo = [root]
    for _ in range(10_000):  # bounded walk
        if not todo:
            break
        p = todo.pop()
        kids = sorted(c for c, pp in parent.items() if pp == p and c not in found)
        found += kids
        todo += kids
    return found


class ServerTree:
    """The server's processes: ``root`` (the pid ``ServerProcess`` started) and, when it
    runs ``workers`` > 1, its worker children."""

    def __init__(self, root: int, workers: int) -> None:
        self.root, self.workers = root, workers

    @property
    def has_children(self) -> bool:
        return self.workers > 1

    def pids(self) -> list[int]:
        """The root first, then every live descendant (none looked for with 1 worker)."""
        return [self.root, *(descendants(self.root) if self.has_children else [])]

    def worker_pids(self) -> list[tuple[int, int]]:
        """(worker index, pid) of the processes that serve requests: the root itself with
        one worker, else its ``serve-worker`` children (index from their command line)."""
        if not self.has_children:
            return [(0, self.root)]
        out = []
        for pid in descendants(self.root):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"serve-worker" in argv and b"--index" in argv:
                    out.append((int(argv[argv.index(b"--index") + 1]), pid))
        return sorted(out)

    def rss_kb(self) -> int:
        """The sum of VmRSS over the tree now."""
        total = 0
        for p in self.pids():
            with contextlib.suppress(OSError, ValueError):
                total += proc_status_kb(p, "VmRSS")
        return total

    def wait_ready(self, log_path: Path, log_offset: int, seconds: float = 120) -> None:
        """Until every worker has logged uvicorn's "Application startup complete." (its
        lifespan has run: runtime built, control socket open). A server whose first worker
        answers /healthz may still be starting the others, and connections that the
        kernel hands to a starting worker's socket would wait in its queue and skew the
        first phase. Nothing to wait for with 1 worker: ServerProcess.start waits for
        /healthz, which only that process answers."""
        if not self.has_children:
            return
        deadline = time.monotonic() + seconds
        ready: set[int] = set()
        for _ in range(int(seconds / 0.1) + 1):
            with contextlib.suppress(OSError):
                with log_path.open("rb") as f:
                    f.seek(log_offset)
                    text = f.read().decode(errors="replace")
                for line in text.splitlines():
                    if "Application startup complete" not in line or not line.startswith("{"):
                        continue
                    with contextlib.suppress(ValueError):
                        ready.add(int(json.loads(line).get("worker", -1)))
            if len(ready & set(range(self.workers))) == self.workers:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"only workers {sorted(ready)} of {self.workers} started in {seconds:.0f} s"
        )


class PhaseMonitor:
    """Over one phase: the tree's summed VmRSS every 50 ms, the sum of each process's
    VmHWM since the phase began, the tree's CPU time, this client's and the machine's."""

    def __init__(
        self, tree: ServerTree | int, interval: float = 0.05, max_seconds: float = 3600
    ) -> None:
        self.tree = tree if isinstance(tree, ServerTree) else ServerTree(tree, 1)
        self.interval = interval
        self.max_samples = int(max_seconds / interval)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = False
        # per pid: CPU (user, system) at the start, and at its latest reading; VmHWM
        self.base: dict[int, tuple[float, float]] = {}
        self.last: dict[int, tuple[float, float]] = {}
        self.hwm: dict[int, int] = {}
        self.pids: list[int] = []

    def _child_reading(self, pid: int) -> int:
        """VmRSS of a worker, and its CPU and VmHWM kept in case it dies before the end."""
        status = proc_status(pid, ("VmRSS", "VmHWM"))
        self.last[pid] = proc_cpu_split(pid)
        self.base.setdefault(pid, (0.0, 0.0))  # appeared during the phase: all of it counts
        self.hwm[pid] = status["VmHWM"]
        return status["VmRSS"]

    def _sample(self) -> None:
        """One sample: the root's VmRSS plus that of every child alive now. No sample when
        the root cannot be read (as before trees were measured)."""
        try:
            total = proc_status_kb(self.tree.root, "VmRSS")
        except (OSError, ValueError):
            return
        for pid in self.pids[1:]:
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += self._child_reading(pid)
        self.samples.append(total)

    def _run(self) -> None:
        every = max(1, round(REFRESH_SECONDS / self.interval))
        for i in range(self.max_samples):
            if self.tree.has_children and i and i % every == 0:
                self.pids = self.tree.pids()  # a worker restarted after a crash
            self._sample()
            if self._stop.wait(self.interval):
                break

    def __enter__(self) -> PhaseMonitor:
        self.pids = self.tree.pids()
        resets = [reset_hwm(p) for p in self.pids]  # every one, even after a refusal
        self.hwm_reset = all(resets)
        for p in self.pids:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.base[p] = self.last[p] = proc_cpu_split(p)
        if self.tree.root not in self.base:
            raise RuntimeError(f"the server (pid {self.tree.root}) is gone")
        self.client_cpu0 = time.process_time()
        self.machine0 = machine_busy_seconds()
        self.t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join(timeout=5)
        if self.tree.has_children:
            self.pids = self.tree.pids()
        self._sample()
        self.last[self.tree.root] = proc_cpu_split(self.tree.root)
        self.client_cpu = time.process_time() - self.client_cpu0
        self.machine = machine_busy_seconds() - self.machine0
        if self.hwm_reset:
            self.hwm[self.tree.root] = proc_status_kb(self.tree.root, "VmHWM")
        used = [
            (self.last[p][0] - b[0], self.last[p][1] - b[1])
            for p, b in self.base.items()
            if p in self.last
        ]
        self.sys_cpu = sum(s for _u, s in used)
        self.cpu = sum(u + s for u, s in used)
        self.hwm_kb = sum(self.hwm.values()) if self.hwm_reset else 0

    def result(self) -> dict[str, Any]:
        return {
            "rss_peak_sampled_MB": max(self.samples, default=0) * 1024 / MB,
            "rss_hwm_MB": self.hwm_kb * 1024 / MB if self.hwm_reset else None,
            "rss_hwm_MB_each": {str(p): kb * 1024 / MB for p, kb in self.hwm.items()}
            if self.hwm_reset
            else None,
            "processes": len(self.base),
            "rss_samples": len(self.samples),
            "server_cpu_cores": self.cpu / self.wall if self.wall > 0 else 0.0,
            "server_sys_share": self.sys_cpu / self.cpu if self.cpu > 0 else 0.0,
            "client_cpu_cores": self.client_cpu / self.wall if self.wall > 0 else 0.0,
            "other_cpu_cores": max(0.0, self.machine - self.cpu - self.client_cpu) / self.wall
            if self.wall > 0
            else 0.0,
            "seconds": self.wall,
        }
