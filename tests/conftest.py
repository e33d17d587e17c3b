"""Fixtures. Every test that touches the database runs on SQLite AND PostgreSQL: the
``db_url`` fixture is parametrised, and PostgreSQL is a throwaway server this session
starts itself (tests/pg_harness.py), never a system service.

Speed: the in-process ``runtime`` of each test is a *copy* of a data dir (and, on
PostgreSQL, a ``CREATE DATABASE … TEMPLATE`` copy of a database) that ``initialise`` set
up once per session, with the ``alice``/``bob`` accounts the test asks for already created
by the same ``make_account`` as before. Each test still gets its own data dir and
database; only the repeated schema migration and argon2 hashing of identical set-ups is
saved. The browser tests share one Chromium (tests/webhelpers.py)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from allset.core.principal import Principal
from allset.runtime import Runtime, build_runtime, initialise
from allset.server.app import build_app
from allset.settings import load_settings
from pg_harness import PostgresServer
from serverproc import ServerProcess

pytest_plugins = ["webhelpers"]


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C must reach the programs the tests start (``allset sync --watch`` is stopped
    with SIGINT, as a user would). A test run started in the background by a
    non-interactive shell inherits SIGINT *ignored*, and an ignored signal stays ignored
    across exec, so the client never saw it and the test waited 30 s in vain. A signal
    with a handler here is reset to its default in each child."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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


def _settings(data: Path, db_url: str) -> Any:
    return load_settings(data, database_url=db_url or None, gc_grace_seconds=0, log_json=False)


@dataclass
class _Template:
    """An initialised data dir (and PostgreSQL database) with some accounts in it."""

    data_dir: Path
    database: str | None
    accounts: dict[str, Account]


_SEEDED = ("alice", "bob")  # the account fixtures a template can hold
_templates: dict[tuple[str, tuple[str, ...]], _Template] = {}
_template_counter = itertools.count()
_seeded: dict[int, dict[str, Account]] = {}  # id(runtime) -> its template's accounts


def _template(request: pytest.FixtureRequest, backend: str, names: tuple[str, ...]) -> _Template:
    key = (backend, names)
    if key not in _templates:
        n = next(_template_counter)
        data = request.getfixturevalue("tmp_path_factory").mktemp(f"template{n}") / "data"
        database, url = None, ""
        if backend == "postgresql":
            pg: PostgresServer = request.getfixturevalue("postgres")
            database = f"tpl{os.getpid()}_{n}"
            url = pg.create_database(database)
        settings = _settings(data, url)
        initialise(settings)
        rt = build_runtime(settings)
        try:
            accounts = {name: make_account(rt, name=name) for name in names}
        finally:
            rt.close()  # no connection may stay open on a template database
        _templates[key] = _Template(data, database, accounts)
    return _templates[key]


@pytest.fixture
def runtime(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    """A fresh, initialised runtime of this test's own: a copy of a session template (see
    the module docstring). When the test set up ``tmp_path / "data"`` itself before (as
    test_auth's ``first_operator`` does, to see ``initialise`` create the operator), that
    data dir is initialised and used as it is."""
    data = tmp_path / "data"
    settings = _settings(data, db_url)
    seeded: dict[str, Account] = {}
    if data.exists():
        initialise(settings)
    else:
        names = tuple(n for n in _SEEDED if n in request.fixturenames)
        tpl = _template(request, "postgresql" if db_url else "sqlite", names)
        shutil.copytree(tpl.data_dir, data, symlinks=True)
        if tpl.database is not None:
            pg: PostgresServer = request.getfixturevalue("postgres")
            name = sa.make_url(db_url).database
            assert name
            pg.drop_database(name)
            pg.create_database(name, template=tpl.database)
        seeded = tpl.accounts
    rt = build_runtime(settings)
    _seeded[id(rt)] = seeded
    yield rt
    _seeded.pop(id(rt), None)
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


def _seeded_account(rt: Runtime, name: str) -> Account:
    """``make_account(rt, name=name)``, or the same account already made in the runtime's
    template; its principal comes from signing in on this test's own runtime. (Its
    passwords were verified once when the template was made, so the process's argon2
    verification cache, allset.accounts.hashing, may answer for them: a test that needs
    a cold cache makes its own account.)"""
    acct = _seeded.get(id(rt), {}).get(name)
    if acct is None:
        return make_account(rt, name=name)
    principal = rt.accounts.authenticate_basic(acct.email, acct.password, "127.0.0.1")
    return dataclasses.replace(acct, principal=principal)


@pytest.fixture
def alice(runtime: Runtime) -> Account:
    return _seeded_account(runtime, "alice")


@pytest.fixture
def bob(runtime: Runtime) -> Account:
    return _seeded_account(runtime, "bob")


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


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Like ``server``, but one per database for a whole module: for modules whose tests
    each work in a Client of their own (unique names) and look at nothing server-wide, so
    they need no fresh server of their own."""
    env = {"ALLSET_GC_GRACE_SECONDS": "0"}
    pg: PostgresServer | None = None
    name = f"m{os.getpid()}_{next(_db_counter)}"
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        env["ALLSET_DATABASE_URL"] = pg.create_database(name)
    proc = ServerProcess(tmp_path_factory.mktemp("msrv") / "srv", env=env)
    proc.start()
    yield proc
    proc.stop()
    if pg is not None:
        pg.drop_database(name)


@pytest.fixture
def from_ip(client: TestClient) -> Iterator[Any]:
    """``from_ip("198.51.100.7")``: a client of the test's app from another address (one per IP)."""
    made: list[TestClient] = []

    def make(ip: str) -> TestClient:
        c = TestClient(
            client.app,
            base_url="https://testserver",
            client=(ip, 40000),
            raise_server_exceptions=False,
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def later(seconds: float, action: Callable[[], object]) -> threading.Thread:
    """Run ``action`` in ``seconds`` from now, in a thread (join it): the change that
    should wake a long-poll the test is waiting in."""

    def run() -> None:
        time.sleep(seconds)
        action()

    t = threading.Thread(target=run)
    t.start()
    return t


def problem(resp: httpx.Response) -> dict[str, Any]:
    """Assert an RFC 9457 body and return it."""
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == resp.status_code
    assert body["title"] and body["detail"]
    return body
