"""Fixtures. Every test that touches the database runs on SQLite AND PostgreSQL: the
``db_url`` fixture is parametrised, and PostgreSQL is a throwaway server this session
starts itself (tests/pg_harness.py), never a system service."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from allset.core.principal import Principal
from allset.runtime import Runtime, build_runtime, initialise
from allset.server.app import build_app
from allset.settings import load_settings
from pg_harness import PostgresServer
from serverproc import ServerProcess

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""  # the embedded default inside the data dir
        return
    pg: PostgresServer = request.getfixturevalue("postgres")
    name = f"t{os.getpid()}_{next(_db_counter)}"
    url = pg.create_database(name)
    yield url
    pg.drop_database(name)


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    settings = load_settings(
        tmp_path / "data", database_url=db_url or None, gc_grace_seconds=0, log_json=False
    )
    initialise(settings)
    rt = build_runtime(settings)
    yield rt
    rt.close()


@dataclass
class Account:
    """A Client with one owner, as seen from an HTTP client."""

    tenant: str
    tenant_id: str
    email: str
    password: str
    app_password: str
    principal: Principal

    @property
    def auth(self) -> tuple[str, str]:
        return (self.email, self.app_password)


_tenant_counter = itertools.count()


def make_account(rt: Runtime, quota: int = 1 << 30, name: str | None = None) -> Account:
    name = name or f"client{next(_tenant_counter)}"
    t = rt.accounts.create_tenant(name, quota, 12_500_000, contact_email=f"it@{name}.example")
    email = f"owner@{name}.example"
    password = "correct horse battery"
    rt.accounts.create_user(name, email, "owner", password, actor="test")
    issued = rt.accounts.create_app_password(email, "tests", actor="test")
    principal = rt.accounts.authenticate_basic(email, password, "127.0.0.1")
    return Account(name, t["id"], email, password, issued["password"], principal)


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    """The whole ASGI app in-process (lifespan included)."""
    app = build_app(runtime, tls=False)
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def alice(runtime: Runtime) -> Account:
    return make_account(runtime, name="alice")


@pytest.fixture
def bob(runtime: Runtime) -> Account:
    return make_account(runtime, name="bob")


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[ServerProcess]:
    """A real server subprocess over TLS on an ephemeral loopback port, on SQLite and on
    PostgreSQL like every other database test."""
    env = {"ALLSET_GC_GRACE_SECONDS": "0"}
    if db_url:
        env["ALLSET_DATABASE_URL"] = db_url
    proc = ServerProcess(tmp_path / "srv", env=env)
    proc.start()
    yield proc
    proc.stop()


def problem(resp: httpx.Response) -> dict[str, Any]:
    """Assert an RFC 9457 body and return it."""
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == resp.status_code
    assert body["title"] and body["detail"]
    return body
