"""Transfers: bandwidth shaping accuracy, delta re-upload against rsync, tus against PUT.

Run:  .venv/bin/python bench/transfer_bench.py [--quick] [--repeat 3] [--json out.json]

1. Shaping (R-BW-1) at the default 100 Mbit/s of one Client: one transfer, then eight in
   parallel, upload and download; achieved rate / limit, measured at the client from the
   first to the last byte (goal 0.95-1.02).
2. Delta: a 256 MiB file (random bytes) sent with the chunk protocol
   (``allset.client.transfer.push_file``), 1 MiB changed in the middle, sent again: bytes
   sent / file size (goal <= 2 %). Beside it, ``rsync --stats`` to an rsync daemon on
   127.0.0.1 doing the same two transfers (its "Literal data" and "Total bytes sent").
3. tus against PUT, unthrottled: the same 256 MiB through one tus PATCH (create, PATCH,
   commit) and one REST PUT; MB/s each and the ratio (goal >= 0.90).

Everything runs against a real ``allset-server`` in plain-HTTP mode on 127.0.0.1 (shaping
does not depend on TLS). rsync is installed from Debian when missing. Every loop is
bounded; servers and temp dirs are removed even on failure.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from server_bench import keystream, machine_info  # noqa: E402

from allset.client.transfer import push_file  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

MiB = 1 << 20
MB = 1_000_000
LIMIT = 12_500_000  # 100 Mbit/s in bytes per second


def account(srv: ServerProcess, name: str, bandwidth: str) -> tuple[str, str]:
    srv.cli("tenant", "create", name, "--quota", "1TiB", "--bandwidth", bandwidth)
    email = f"bench@{name}.example"
    srv.cli("user", "create", "--tenant", name, email, "--role", "owner")
    return email, srv.cli_json("token", "create", email)["password"]


def timed_get(srv: ServerProcess, auth: tuple[str, str], path: str) -> tuple[int, float, float]:
    """(bytes, first byte time, last byte time) on the monotonic clock."""
    with srv.client(auth=auth, timeout=600) as c, c.stream("GET", path) as r:
        r.raise_for_status()
        n, first = 0, 0.0
        for piece in r.iter_bytes(1 << 18):
            if not n:
                first = time.monotonic()
            n += len(piece)
        return n, first, time.monotonic()


def timed_put(
    srv: ServerProcess, auth: tuple[str, str], path: str, size: int, seed: str
) -> tuple[int, float, float]:
    blocks = list(keystream(seed, size))
    with srv.client(auth=auth, timeout=600) as c:
        start = time.monotonic()
        r = c.put(path, content=iter(blocks), headers={"Content-Length": str(size)})
        r.raise_for_status()
        return size, start, time.monotonic()


def _parallel(n: int, job: Any) -> float:
    """Run ``job(i)`` n times at once; total bytes / (last byte - first byte) / limit."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        done = list(pool.map(job, range(n)))
    total = sum(b for b, _, _ in done)
    span = max(t for _, _, t in done) - min(s for _, s, _ in done)
    return total / span / LIMIT


def shaping(srv: ServerProcess, auth: tuple[str, str], size: int) -> dict[str, float]:
    """Achieved / limit for 1 and 8 transfers, each direction."""
    out: dict[str, float] = {}
    for n in (1, 8):
        each = size // n

        def up(i: int, n: int = n, each: int = each) -> tuple[int, float, float]:
            return timed_put(srv, auth, f"/api/v1/files/s{n}-{i}.bin", each, f"{n}-{i}")

        def down(i: int, n: int = n) -> tuple[int, float, float]:
            return timed_get(srv, auth, f"/api/v1/files/s{n}-{i}.bin")

        out[f"up x{n}"] = _parallel(n, up)
        out[f"down x{n}"] = _parallel(n, down)
    return out


def rsync_delta(tmp: Path, original: Path, edited: Path) -> dict[str, int]:
    """Two transfers to an rsync daemon on loopback: the original, then the edit."""
    if shutil.which("rsync") is None:
        print("installing rsync from Debian (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "rsync"],
            check=True,
            env=env,
            timeout=600,
        )
    dest = tmp / "rsync-dest"
    dest.mkdir()
    conf = tmp / "rsyncd.conf"
    conf.write_text(
        f"use chroot = no\nuid = root\ngid = root\npid file = {tmp / 'rsyncd.pid'}\n"
        f"[dest]\npath = {dest}\nread only = no\n"
    )
    port = 18873
    daemon = subprocess.Popen(
        [
            "rsync",
            "--daemon",
            "--no-detach",
            f"--config={conf}",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        stats: dict[str, int] = {}
        for label, src in (("first", original), ("edit", edited)):
            work = tmp / "rsync-src"
            work.mkdir(exist_ok=True)
            shutil.copyfile(src, work / "big.bin")
            res = subprocess.run(
                [
                    "rsync",
                    "--stats",
                    "--no-whole-file",
                    "--ignore-times",  # same size and second: rsync would skip the file
                    "-a",
                    str(work / "big.bin"),
                    f"rsync://127.0.0.1:{port}/dest/big.bin",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=True,
            )
            for line in res.stdout.splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("Literal data", "Total bytes sent"):
                    number = value.strip().split()[0].replace(",", "")
                    stats[f"{label} {key.strip()}"] = int(number)
        return stats
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def delta(srv: ServerProcess, auth: tuple[str, str], tmp: Path, size: int) -> dict[str, Any]:
    original = tmp / "original.bin"
    with original.open("wb") as f:
        for block in keystream("delta", size):
            f.write(block)
    edited = tmp / "edited.bin"
    shutil.copyfile(original, edited)
    with edited.open("r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(MiB))
    with srv.client(auth=auth, timeout=600) as http:
        first = push_file(http, original, "/delta.bin")
        second = push_file(http, edited, "/delta.bin", base_version=first.version)
    return {
        "size": size,
        "first_sent": first.bytes_sent,
        "edit_sent": second.bytes_sent,
        "edit_ratio": second.bytes_sent / size,
        "rsync": rsync_delta(tmp, original, edited),
    }


def tus_vs_put(srv: ServerProcess, auth: tuple[str, str], size: int, run: int) -> dict[str, float]:
    """New random content for each upload: nothing may be deduplicated. The order
    alternates between runs (PUT first on even runs, tus first on odd ones) so that
    neither always follows the other's disk writes."""
    with srv.client(auth=auth, timeout=600) as c:

        def put() -> float:
            blocks = list(keystream(f"put-{run}", size))
            start = time.monotonic()
            r = c.put(
                "/api/v1/files/put.bin",
                content=iter(blocks),
                headers={"Content-Length": str(size)},
            )
            r.raise_for_status()
            return time.monotonic() - start

        def tus() -> float:
            blocks = list(keystream(f"tus-{run}", size))
            name = base64.b64encode(b"tus.bin").decode()
            start = time.monotonic()
            r = c.post(
                "/tus/",
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Upload-Length": str(size),
                    "Upload-Metadata": f"filename {name}",
                },
            )
            r.raise_for_status()
            r = c.patch(
                r.headers["location"],
                content=iter(blocks),
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(size),
                },
            )
            r.raise_for_status()
            elapsed = time.monotonic() - start
            assert "repr-digest" in r.headers
            return elapsed

        if run % 2 == 0:
            put_s, tus_s = put(), tus()
        else:
            tus_s, put_s = tus(), put()
    return {"put_mbs": size / MB / put_s, "tus_mbs": size / MB / tus_s, "ratio": put_s / tus_s}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    shape_size = 16 * MiB if args.quick else 80 * MiB
    big = 32 * MiB if args.quick else 256 * MiB
    repeat = 1 if args.quick else max(1, min(args.repeat, 10))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results: dict[str, Any] = {"machine": machine_info(), "date": started}
    with tempfile.TemporaryDirectory(prefix="allset-transfer-bench-") as td:
        tmp = Path(td)
        srv = ServerProcess(tmp / "srv", plain_http=True)
        srv.start()
        try:
            shaped = account(srv, "shaped", "100Mbit")
            fast = account(srv, "fast", "100Gbit")
            runs = [shaping(srv, shaped, shape_size) for _ in range(repeat)]
            results["shaping"] = {k: [r[k] for r in runs] for k in runs[0]}
            results["delta"] = delta(srv, fast, tmp, big)
            tus_runs = [tus_vs_put(srv, fast, big, i) for i in range(repeat)]
            results["tus"] = {k: [r[k] for r in tus_runs] for k in tus_runs[0]}
        finally:
            srv.stop()
    m = results["machine"]
    print(f"allset transfer benchmark — {started}")
    print(
        f"machine: {m.get('nproc')} CPUs, {m.get('cpu')}, {m.get('ram_bytes', 0) / 2**30:.1f} GiB "
        f"RAM, kernel {m.get('kernel')}, Python {m.get('python')}; code {m.get('revision')}"
    )
    print("\nshaping at 100 Mbit/s (achieved / limit; goal 0.95-1.02), median (min-max):")
    for k, v in results["shaping"].items():
        ok = "ok" if 0.95 <= statistics.median(v) <= 1.02 else "MISS"
        print(f"  {k:<8} {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f})  {ok}")
    d = results["delta"]
    ok = "ok" if d["edit_ratio"] <= 0.02 else "MISS"
    print(f"\ndelta: {d['size'] / MiB:.0f} MiB file, 1 MiB changed in the middle")
    print(
        f"  allset chunk protocol: sent {d['edit_sent'] / MiB:.2f} MiB = "
        f"{100 * d['edit_ratio']:.2f} % of the file (goal <= 2 %)  {ok}"
    )
    rs = d["rsync"]
    if rs:
        print(
            f"  rsync (daemon on loopback): literal data {rs.get('edit Literal data', 0) / MiB:.2f}"
            f" MiB, total sent {rs.get('edit Total bytes sent', 0) / MiB:.2f} MiB"
        )
    t = results["tus"]
    ratio = statistics.median(t["ratio"])
    print(
        f"\ntus vs PUT, {big / MiB:.0f} MiB unthrottled, plain HTTP: PUT "
        f"{statistics.median(t['put_mbs']):.0f} MB/s, tus {statistics.median(t['tus_mbs']):.0f}"
        f" MB/s, tus/PUT {ratio:.2f} (goal >= 0.90)  {'ok' if ratio >= 0.9 else 'MISS'}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
