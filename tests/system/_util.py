"""Helpers shared by the system tests: look at the data dir the way an operator would
(files on the replica volumes, the SQLite database opened read-only), never through
the server's own code."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from serverproc import ServerProcess

VOLUMES = ("1", "2")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def repr_digest(hex_digest: str) -> str:
    return "sha-256=:" + base64.b64encode(bytes.fromhex(hex_digest)).decode() + ":"


def create_owner(
    srv: ServerProcess,
    tenant: str,
    email: str,
    quota: str = "10GiB",
    bandwidth: str | None = None,
    password: str | None = None,
    app_password: bool = False,
) -> tuple[str, str]:
    """A Client and its owner on the server's data dir and database; (tenant id, app
    password or "").

    The very calls that ``allset-server tenant create`` / ``user create`` / ``token
    create`` make (those commands are tested as commands in test_server_cli and the web
    tests), run in this process instead of three ``allset-server`` start-ups of about a
    second each. Like the commands, this works next to the running server, which sees the
    new rows at once. Settings are read with the server's environment."""
    from allset.core.units import parse_rate, parse_size
    from allset.runtime import build_runtime
    from allset.settings import load_settings

    with _environ_lock:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(srv.env)
        try:
            settings = load_settings(srv.data_dir)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    rt = build_runtime(settings)
    try:
        rate = parse_rate(bandwidth) if bandwidth else settings.default_bandwidth
        t = rt.accounts.create_tenant(tenant, parse_size(quota), rate)
        rt.accounts.create_user(tenant, email, "owner", password, actor="operator-cli")
        if not app_password:
            return t["id"], ""
        issued = rt.accounts.create_app_password(email, "app password", actor="operator-cli")
        return t["id"], issued["password"]
    finally:
        rt.close()


_environ_lock = threading.Lock()


def make_account(srv: ServerProcess, tenant: str, email: str) -> tuple[str, str, str]:
    """A Client with an owner and no practical bandwidth limit; (tenant id, email, app password)."""
    tenant_id, password = create_owner(srv, tenant, email, bandwidth="100Gbit", app_password=True)
    return tenant_id, email, password


def restart(srv: ServerProcess) -> None:
    """Start again on the same data dir after a kill. ``ServerProcess.start`` keeps the old
    ``url`` and so stops reading at the first line; forget it so the new port is read."""
    srv.url = ""
    srv.start()


def client(srv: ServerProcess, auth: tuple[str, str], timeout: float = 30.0) -> httpx.Client:
    """``srv.client`` (TLS pinned to the server's certificate) with our own timeout."""
    c = srv.client(auth=auth)
    c.timeout = httpx.Timeout(timeout)
    return c


def volume(srv: ServerProcess, n: str) -> Path:
    return srv.data_dir / "volumes" / n


def chunk_path(srv: ServerProcess, vol: str, tenant_id: str, digest: str) -> Path:
    return volume(srv, vol) / "chunks" / tenant_id / digest[:2] / digest


def chunk_files(srv: ServerProcess) -> dict[str, set[tuple[str, str]]]:
    """Every chunk file on each volume, as {(tenant id, hash)} per volume."""
    out: dict[str, set[tuple[str, str]]] = {}
    for v in VOLUMES:
        found: set[tuple[str, str]] = set()
        root = volume(srv, v) / "chunks"
        if root.is_dir():
            for f in root.glob("*/*/*"):
                if f.is_file():
                    found.add((f.parent.parent.name, f.name))
        out[v] = found
    return out


def temp_files(srv: ServerProcess) -> list[Path]:
    """Writes in progress or abandoned (not the ``*.boot`` markers of live processes)."""
    return [f for v in VOLUMES for f in (volume(srv, v) / "tmp").glob("*") if f.suffix != ".boot"]


def db_query(srv: ServerProcess, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """A read-only query on the server's database, with ``:name`` parameters.

    SQLite (the default, DATA/allset.db) is opened with the URI ``mode=ro``, which never
    writes and so cannot disturb a running server; PostgreSQL (ALLSET_DATABASE_URL) is
    read in a READ ONLY transaction."""
    url = srv.env.get("ALLSET_DATABASE_URL", "")
    if not url:
        uri = f"file:{srv.data_dir / 'allset.db'}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=30)) as con:
            return list(con.execute(sql, params))
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            con.execute(sa.text("SET TRANSACTION READ ONLY"))
            rows = [tuple(r) for r in con.execute(sa.text(sql), params)]
            con.rollback()
            return rows
    finally:
        engine.dispose()


def chunk_rows(srv: ServerProcess) -> dict[tuple[str, str], int]:
    return {
        (t, h): size for t, h, size in db_query(srv, "SELECT tenant_id, hash, size FROM chunks")
    }


def file_chunks(srv: ServerProcess, tenant_id: str, name: str) -> list[tuple[str, int, int]]:
    """(hash, offset, size) of each chunk, in order, of the current version of the live
    file called ``name``."""
    rows = db_query(
        srv,
        'SELECT vc.hash, vc."offset", vc.size FROM nodes n '
        "JOIN version_chunks vc ON vc.version_id = n.version_id "
        "WHERE n.tenant_id = :tenant AND n.name = :name AND n.kind = 'file' "
        "AND n.trashed_at IS NULL ORDER BY vc.seq",
        tenant=tenant_id,
        name=name,
    )
    return [(h, off, size) for h, off, size in rows]


def walk(
    c: httpx.Client, path: str = "/", max_pages: int = 10_000
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every entry under ``path`` (depth first), following ``next`` cursors; bounded."""
    stack = [path]
    pages = 0
    while stack:
        folder = stack.pop()
        after = ""
        while True:
            pages += 1
            assert pages <= max_pages, "listing does not end"
            r = c.get(
                f"/api/v1/tree{folder}",
                params={"after": after, "limit": 1000} if after else {"limit": 1000},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            for e in body["entries"]:
                child = folder.rstrip("/") + "/" + e["name"]
                yield child, e
                if e["type"] == "folder":
                    stack.append(child)
            if not body.get("next"):
                break
            after = body["next"]
