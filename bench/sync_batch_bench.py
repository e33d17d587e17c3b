"""Prints the rates of the sync client's batch routes on SQLite, in-process (no TLS, no
sockets): 500 x 4 KiB chunks per POST /chunks/batch, 500 one-chunk files per POST
/commit/batch, against the one-at-a-time routes for comparison. Never asserted.

    .venv/bin/python bench/sync_batch_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from allset.runtime import build_runtime, initialise
from allset.server.app import build_app
from allset.settings import load_settings

N = 500


def frames(chunks: list[bytes]) -> bytes:
    return b"".join(hashlib.sha256(c).digest() + len(c).to_bytes(4, "big") + c for c in chunks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(Path(tmp) / "data", log_json=False, log_level="WARNING")
        initialise(settings)
        rt = build_runtime(settings)
        t = rt.accounts.create_tenant("bench", 1 << 40, 10**12, contact_email="it@b.example")
        del t
        rt.accounts.create_user("bench", "o@b.example", "owner", "correct horse battery", "b")
        token = rt.accounts.create_app_password("o@b.example", "bench", actor="b")["password"]
        with TestClient(build_app(rt, tls=False), base_url="https://testserver") as http:
            http.auth = ("o@b.example", token)
            up, commit, single = [], [], []
            for r in range(args.rounds):
                chunks = [os.urandom(4096) for _ in range(N)]
                body = frames(chunks)
                t0 = time.perf_counter()
                resp = http.post("/api/v1/chunks/batch", content=body)
                up.append(N / (time.perf_counter() - t0))
                assert resp.json() == {"received": N, "stored": N}, resp.text
                files = [
                    {
                        "path": f"/r{r}/{i:04}.bin",
                        "sha256": hashlib.sha256(c).hexdigest(),
                        "chunks": [hashlib.sha256(c).hexdigest()],
                        "parents": True,
                        "if_absent": True,
                    }
                    for i, c in enumerate(chunks)
                ]
                t0 = time.perf_counter()
                resp = http.post("/api/v1/commit/batch", json={"files": files})
                commit.append(N / (time.perf_counter() - t0))
                assert {x["status"] for x in resp.json()["results"]} == {201}, resp.text[:500]
                # The same work one file per request, for comparison (fewer files).
                http.post("/api/v1/mkdir", json={"path": f"/s{r}"})
                t0 = time.perf_counter()
                for i, c in enumerate(chunks[:100]):
                    h = hashlib.sha256(c).hexdigest()
                    http.post(
                        "/api/v1/commit",
                        json={"path": f"/s{r}/{i:04}.bin", "sha256": h, "chunks": [h]},
                    )
                single.append(100 / (time.perf_counter() - t0))
        rt.close()

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{xs[0]:,.0f} / {xs[len(xs) // 2]:,.0f} / {xs[-1]:,.0f}"

    print(f"rounds: {args.rounds}; min / median / max")
    print(f"POST /chunks/batch, {N} x 4 KiB, chunks/s: {fmt(up)}")
    print(f"POST /commit/batch, {N} one-chunk files, files/s: {fmt(commit)}")
    print(f"POST /commit one at a time, files/s: {fmt(single)}")


if __name__ == "__main__":
    main()
