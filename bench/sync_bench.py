"""Sync client: initial sync up and down, no-change rescan, peak RSS, idle CPU of --watch.

Run:  .venv/bin/python bench/sync_bench.py [--quick] [--json out.json]

1. Initial sync of 10,000 files x 4 KiB (100 folders of 100) up to an empty server
   folder, then down to an empty local folder on a second "computer" (another config
   dir): files/s each way (goal >= 500/s both ways).
2. A tree of 100,000 files (1,000 folders of 100, 1 KiB each) synced up, then a sync
   with nothing changed: seconds (goal < 5 s), and the client's peak RSS on that tree
   (goal < 150 MB).
3. ``allset sync --watch`` left idle on that tree for 30 s after its first pass: CPU
   time / wall time (goal < 1 %).

Each measurement runs the real ``allset`` command in its own process against a real
``allset-server`` over TLS on 127.0.0.1 (the SQLite default); peak RSS is the child's
VmHWM, sampled every 10 ms until it exits. Every wait is bounded; the server and temp
dirs are removed even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from server_bench import machine_info  # noqa: E402

from allset.client.profile import Profile, save  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

ALLSET = str(Path(sys.executable).parent / "allset")


def make_tree(root: Path, folders: int, per_folder: int, size: int) -> None:
    block = os.urandom(size * per_folder)
    for d in range(folders):
        folder = root / f"folder{d:04}"
        folder.mkdir(parents=True)
        for f in range(per_folder):
            # distinct contents (the folder number makes them differ across folders)
            data = d.to_bytes(4, "big") + block[f * size + 4 : (f + 1) * size]
            (folder / f"file{f:03}.bin").write_bytes(data)


def run(cfg: Path, *args: str, timeout: float = 3600) -> tuple[float, int, list[dict[str, Any]]]:
    """(seconds, peak RSS in bytes, JSON events) of one ``allset`` command."""
    out = cfg / "out.jsonl"
    env = {**os.environ, "ALLSET_CONFIG_DIR": str(cfg)}
    with out.open("w") as sink:
        start = time.monotonic()
        proc = subprocess.Popen([ALLSET, *args], env=env, stdout=sink, stderr=subprocess.PIPE)
        deadline = start + timeout
        hwm = 0
        for _ in range(10**9):
            hwm = max(hwm, _vm_hwm(proc.pid))
            pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"allset {' '.join(args)} did not finish in {timeout} s")
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"allset {' '.join(args)} failed ({proc.returncode}): {err}")
    events = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    return elapsed, hwm, events


def _vm_hwm(pid: int) -> int:
    """The process's peak RSS so far (VmHWM). Not ``ru_maxrss``: after a fork, Linux
    carries the parent's high-water mark into the child's, so a big parent would be
    measured instead of the client."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    return next(e for e in events if e["event"] == "summary")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(cfg: Path, local: Path, remote: str, seconds: float) -> float:
    env = {**os.environ, "ALLSET_CONFIG_DIR": str(cfg)}
    out = cfg / "watch.jsonl"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [ALLSET, "sync", str(local), remote, "--watch", "--json"],
            env=env,
            stdout=sink,
            stderr=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 600
        while '"summary"' not in out.read_text():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("--watch did not finish its first pass")
            time.sleep(0.2)
        time.sleep(2.0)  # let the settle timer and the first long-poll start
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1,000 / 10,000 files, 10 s idle")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    small = (10, 100) if args.quick else (100, 100)
    large = (100, 100) if args.quick else (1000, 100)
    idle_s = 10.0 if args.quick else 30.0

    work = Path(tempfile.mkdtemp(prefix="allset-syncbench-"))
    srv = ServerProcess(work / "srv")
    results: dict[str, Any] = {"machine": machine_info()}
    try:
        srv.start()
        srv.cli("tenant", "create", "bench", "--quota", "1TiB", "--bandwidth", "100Gbit")
        email = "bench@bench.example"
        srv.cli("user", "create", "--tenant", "bench", email, "--role", "owner")
        password = srv.cli_json("token", "create", email)["password"]

        def computer(name: str) -> Path:
            cfg = work / name
            save(Profile(srv.url, email, password, ca_file=str(srv.cert)), cfg)
            return cfg

        # 1. 10,000 x 4 KiB up, then down
        n_small = small[0] * small[1]
        up_dir = work / "small-up"
        make_tree(up_dir, *small, 4096)
        secs, rss, ev = run(computer("pc1"), "sync", str(up_dir), "/small", "--once", "--json")
        assert summary(ev)["uploaded"] == n_small, summary(ev)
        results["initial_up"] = {
            "files": n_small,
            "seconds": secs,
            "files_per_s": n_small / secs,
            "peak_rss_mb": rss / 1e6,
        }
        down_dir = work / "small-down"
        secs, rss, ev = run(computer("pc2"), "sync", str(down_dir), "/small", "--once", "--json")
        assert summary(ev)["downloaded"] == n_small, summary(ev)
        results["initial_down"] = {
            "files": n_small,
            "seconds": secs,
            "files_per_s": n_small / secs,
            "peak_rss_mb": rss / 1e6,
        }
        print(json.dumps({k: results[k] for k in ("initial_up", "initial_down")}), flush=True)

        # 2. 100,000 files: initial sync, then no-change rescans
        n_large = large[0] * large[1]
        big = work / "large"
        make_tree(big, *large, 1024)
        cfg = computer("pc3")
        secs, rss, ev = run(cfg, "sync", str(big), "/large", "--once", "--json")
        assert summary(ev)["uploaded"] == n_large, summary(ev)
        results["large_initial_up"] = {
            "files": n_large,
            "seconds": secs,
            "files_per_s": n_large / secs,
            "peak_rss_mb": rss / 1e6,
        }
        rescans = []
        for _ in range(3):
            secs, rss, ev = run(cfg, "sync", str(big), "/large", "--once", "--json")
            s = summary(ev)
            assert s["uploaded"] == s["downloaded"] == 0, s
            rescans.append((secs, rss))
        results["no_change_rescan"] = {
            "files": n_large,
            "seconds": sorted(r[0] for r in rescans)[1],
            "all_seconds": [r[0] for r in rescans],
            "peak_rss_mb": max(r[1] for r in rescans) / 1e6,
        }
        print(json.dumps(results["no_change_rescan"]), flush=True)

        # 3. --watch idle
        results["watch_idle_cpu_percent"] = 100 * idle_cpu(cfg, big, "/large", idle_s)
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps(results, indent=2))
    u, d, r = results["initial_up"], results["initial_down"], results["no_change_rescan"]
    print(
        f"\ninitial sync {u['files']:,} x 4 KiB: up {u['files_per_s']:.0f} files/s, "
        f"down {d['files_per_s']:.0f} files/s (goal >= 500)\n"
        f"no-change rescan of {r['files']:,} files: {r['seconds']:.2f} s (goal < 5), "
        f"peak RSS {max(r['peak_rss_mb'], results['large_initial_up']['peak_rss_mb']):.0f} MB "
        "(goal < 150)\n"
        f"--watch idle CPU: {results['watch_idle_cpu_percent']:.2f} % (goal < 1)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
