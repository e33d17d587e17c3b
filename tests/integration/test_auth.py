"""Authentication: HTTP Basic (password or app password), Bearer sessions, revocation,
throttling of guesses (R-SEC-3), lost password (R-SEC-2), suspension (R-OPS-1), how
secrets are stored, and the operator's lack of access to Client data (R-STORE-6).

Client addresses: Starlette's TestClient takes the ASGI ``client`` address as an
argument, so "another IP" is simply a second TestClient on the same app with another
address (``from_ip``); no need to call the façade directly.

Time: the login throttle takes its clock as an attribute; tests that depend on how long
a block lasts freeze it (``frozen_clock``) so that a slow machine cannot unblock early.
"""

from __future__ import annotations

import base64
import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from starlette.testclient import TestClient

from allset.accounts.hashing import NeedsThread
from allset.core.errors import Unauthenticated
from allset.db.models import Base, Credential, Operator, User
from allset.runtime import Runtime, initialise
from allset.settings import load_settings
from conftest import Account, make_account, problem

API = "/api/v1"


# ---- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def first_operator(tmp_path: Path, db_url: str) -> tuple[str, str]:
    """The operator that ``initialise`` creates, with the one-time password it shows once
    (``allset-server init`` prints it). Run before the conftest ``runtime``, whose own
    ``initialise`` then finds everything in place and creates nothing."""
    settings = load_settings(
        tmp_path / "data", database_url=db_url or None, gc_grace_seconds=0, log_json=False
    )
    result = initialise(settings)
    assert result.created
    assert result.operator_password, "initialise must show the first operator's password"
    return result.operator_email, result.operator_password


@pytest.fixture
def runtime(first_operator: tuple[str, str], runtime: Runtime) -> Runtime:
    """The conftest runtime, on the database where ``first_operator`` was created."""
    with runtime.db.read() as s:
        emails = list(s.scalars(select(Operator.email)))
    assert emails == [first_operator[0]], "conftest changed where its runtime lives"
    return runtime


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen_clock(runtime: Runtime) -> Clock:
    clock = Clock()
    runtime.accounts.throttle.clock = clock
    return clock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(c: TestClient, email: str, password: str) -> httpx.Response:
    return c.post(f"{API}/auth/login", json={"email": email, "password": password})


def session(c: TestClient, who: Account) -> str:
    r = login(c, who.email, who.password)
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


def me(c: TestClient, **kw: Any) -> httpx.Response:
    return c.get(f"{API}/me", **kw)


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    body = problem(r)
    assert body["type"].endswith("/unauthenticated")
    assert r.headers["www-authenticate"].startswith("Basic")


def assert_429(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    body = problem(r)
    assert body["type"].endswith("/too-many-attempts")
    wait = int(r.headers["retry-after"])
    assert wait >= 1
    assert body["retry_after"] == wait
    return wait


# ---- the ways to sign in ------------------------------------------------------------------


def test_basic_with_password_and_app_password(client: TestClient, alice: Account) -> None:
    for auth in [
        (alice.email, alice.password),
        (alice.email, alice.app_password),
        (alice.email.upper(), alice.password),  # emails are case-insensitive
        (alice.email.upper(), alice.app_password),
    ]:
        r = me(client, auth=auth)
        assert r.status_code == 200, (auth, r.text)
        assert r.json()["email"] == alice.email
        assert r.json()["kind"] == "user"
        assert r.json()["role"] == "owner"
    # An app password is also accepted as a Bearer token.
    assert me(client, headers=bearer(alice.app_password)).status_code == 200
    # The file routes take the same credentials.
    r = client.put(f"{API}/files/a.txt", content=b"a", auth=(alice.email, alice.password))
    assert r.status_code == 201


def test_wrong_or_missing_credentials(client: TestClient, alice: Account, bob: Account) -> None:
    tampered = alice.app_password[:-1] + ("A" if alice.app_password[-1] != "A" else "B")
    for kw in [
        {},
        {"auth": (alice.email, "wrong password")},
        {"auth": (alice.email, tampered)},
        {"auth": (bob.email, alice.app_password)},  # someone else's app password
        {"auth": ("nobody@nowhere.example", "whatever123")},
        {"auth": (alice.email, "")},
        {"headers": bearer("")},
        {"headers": bearer("ss-" + "x" * 60)},
        {"headers": bearer(tampered)},
        {"headers": {"Authorization": "Basic !!!notbase64"}},
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}},
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}},
        {"headers": {"Authorization": "Digest username=x"}},
        {"headers": {"Authorization": "Basic"}},
    ]:
        assert_401(me(client, **kw))  # type: ignore[arg-type]
    assert_401(client.get(f"{API}/tree/", auth=(alice.email, "wrong password")))
    # The answer is the same whether or not the account exists.
    a = me(client, auth=(alice.email, "wrong password")).json()
    b = me(client, auth=("nobody@nowhere.example", "wrong password")).json()
    assert a == b


def test_bearer_session_from_login_and_logout(client: TestClient, alice: Account) -> None:
    r = login(client, alice.email, alice.password)
    assert r.status_code == 200, r.text
    body = r.json()
    token, cid = body["token"], body["id"]
    assert token.startswith("ss-")
    assert cid in token
    assert body["expires"]
    r = me(client, headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["email"] == alice.email
    creds = client.get(f"{API}/auth/credentials", headers=bearer(token)).json()["credentials"]
    current = [c for c in creds if c["current"]]
    assert [c["id"] for c in current] == [cid]
    assert current[0]["kind"] == "session"
    # A session token is not a password.
    assert_401(me(client, auth=(alice.email, token)))

    other = session(client, alice)
    r = client.post(f"{API}/auth/logout", headers=bearer(token))
    assert r.status_code == 204
    assert_401(me(client, headers=bearer(token)))
    assert_401(client.post(f"{API}/auth/logout", headers=bearer(token)))
    # Only that session ended.
    assert me(client, headers=bearer(other)).status_code == 200
    assert me(client, auth=alice.auth).status_code == 200
    ids = [
        c["id"]
        for c in client.get(f"{API}/auth/credentials", auth=alice.auth).json()["credentials"]
    ]
    assert cid not in ids
    # Wrong password at login: 401 problem, no token.
    r = login(client, alice.email, "not the password")
    assert_401(r)
    assert "token" not in r.text


def test_revoked_app_password_is_refused(client: TestClient, alice: Account) -> None:
    r = client.post(f"{API}/auth/app-passwords", json={"name": "phone"}, auth=alice.auth)
    assert r.status_code == 201, r.text
    issued = r.json()
    pw, cid = issued["password"], issued["id"]
    assert pw.startswith("ap-")
    assert issued["kind"] == "app_password"
    # Used (and so cached as verified) before being revoked.
    assert me(client, auth=(alice.email, pw)).status_code == 200
    assert me(client, headers=bearer(pw)).status_code == 200
    r = client.delete(f"{API}/auth/credentials/{cid}", auth=alice.auth)
    assert r.status_code == 204
    assert_401(me(client, auth=(alice.email, pw)))
    assert_401(me(client, headers=bearer(pw)))
    r = client.delete(f"{API}/auth/credentials/{cid}", auth=alice.auth)
    assert r.status_code == 404
    problem(r)
    assert me(client, auth=alice.auth).status_code == 200
    # Revoking the very credential one is signed in with works, and takes effect at once.
    own = client.post(f"{API}/auth/app-passwords", json={"name": "self"}, auth=alice.auth).json()
    own_auth = (alice.email, own["password"])
    assert client.delete(f"{API}/auth/credentials/{own['id']}", auth=own_auth).status_code == 204
    assert_401(me(client, auth=own_auth))


# ---- throttling (R-SEC-3) -------------------------------------------------------------------


def test_guesses_throttled_per_account_and_ip(
    client: TestClient, from_ip: Any, alice: Account, bob: Account, frozen_clock: Clock
) -> None:
    alice_session = session(client, alice)
    for _ in range(5):
        assert_401(login(client, alice.email, "wrong guess"))
    # Blocked from this address, even with the right password, on every way in...
    wait = assert_429(login(client, alice.email, alice.password))
    assert_429(me(client, auth=(alice.email, alice.password)))
    assert_429(me(client, auth=alice.auth))  # app passwords through Basic as well
    assert_429(login(client, alice.email.upper(), alice.password))  # any spelling
    # ...but not from another address (there is deliberately no account-wide lock, which
    # would let anyone lock a user out), not for another account from this address, and
    # not for a session already signed in.
    other = from_ip("198.51.100.7")
    r = login(other, alice.email, alice.password)
    assert r.status_code == 200, r.text
    assert me(other, auth=alice.auth).status_code == 200
    assert me(client, auth=bob.auth).status_code == 200
    assert me(client, headers=bearer(alice_session)).status_code == 200

    # The block ends when Retry-After says; the next miss doubles it.
    frozen_clock.now += wait + 0.01
    assert_401(login(client, alice.email, "wrong again"))
    assert assert_429(login(client, alice.email, alice.password)) == 2 * wait
    frozen_clock.now += 2 * wait + 0.01
    # A success clears the account's record for this address.
    assert login(client, alice.email, alice.password).status_code == 200
    for _ in range(4):
        assert_401(login(client, alice.email, "wrong"))
    assert login(client, alice.email, alice.password).status_code == 200


def test_wrong_app_passwords_are_throttled_too(
    client: TestClient, from_ip: Any, bob: Account, frozen_clock: Clock
) -> None:
    fake = "ap-" + secrets.token_urlsafe(16) + secrets.token_urlsafe(24)
    for _ in range(5):
        assert_401(me(client, auth=(bob.email, fake)))
    assert_429(me(client, auth=bob.auth))
    assert me(from_ip("203.0.113.9"), auth=bob.auth).status_code == 200


def test_guesses_throttled_per_ip_across_accounts(
    client: TestClient, runtime: Runtime, from_ip: Any, alice: Account, frozen_clock: Clock
) -> None:
    """30 misses from one address over many accounts block that address for everyone,
    though no single account reached its own limit of 5."""
    guesser = from_ip("192.0.2.10")
    emails = [f"user{i}@guess.example" for i in range(16)]
    misses = 0
    for i in range(10):  # wrong passwords (each verifies an argon2 hash: slow on purpose)
        assert_401(login(guesser, emails[i], "guess"))
        misses += 1
    for i in range(16):  # wrong app passwords
        fake = "ap-" + secrets.token_urlsafe(16) + secrets.token_urlsafe(24)
        assert_401(me(guesser, auth=(emails[i], fake)))
        misses += 1
    for _ in range(4):  # wrong tokens
        assert_401(me(guesser, headers=bearer("ss-" + secrets.token_urlsafe(40))))
        misses += 1
    assert misses == 30
    # Every account is now refused from that address, even with the right password...
    assert_429(login(guesser, alice.email, alice.password))
    assert_429(me(guesser, auth=alice.auth))
    assert_429(me(guesser, headers=bearer(alice.app_password)))
    carol = make_account(runtime, name="carol")
    assert_429(me(guesser, auth=carol.auth))
    # ...and still welcome from anywhere else.
    assert me(client, auth=alice.auth).status_code == 200
    assert me(from_ip("192.0.2.11"), auth=carol.auth).status_code == 200


def test_token_guesses_throttled_per_ip(
    client: TestClient, from_ip: Any, alice: Account, frozen_clock: Clock
) -> None:
    """A Bearer token names no account: its misses count against the address alone, and
    a token guesser is stopped after 5 without blocking passwords from that address."""
    guesser = from_ip("192.0.2.20")
    for _ in range(5):
        assert_401(me(guesser, headers=bearer("ap-" + secrets.token_urlsafe(48))))
    assert_429(me(guesser, headers=bearer(alice.app_password)))
    assert me(guesser, auth=alice.auth).status_code == 200
    assert me(client, headers=bearer(alice.app_password)).status_code == 200


# ---- R-SEC-2, R-OPS-1 ----------------------------------------------------------------------


def test_lost_password_revokes_everything_at_once(
    client: TestClient, runtime: Runtime, from_ip: Any, alice: Account, bob: Account
) -> None:
    extra = client.post(f"{API}/auth/app-passwords", json={"name": "nas"}, auth=alice.auth)
    extra_pw = extra.json()["password"]
    sessions = [session(client, alice), session(client, alice)]
    bob_session = session(client, bob)
    ways: list[dict[str, Any]] = [
        {"auth": (alice.email, alice.password)},
        {"auth": alice.auth},
        {"auth": (alice.email, extra_pw)},
        {"headers": bearer(extra_pw)},
        *({"headers": bearer(s)} for s in sessions),
    ]
    for kw in ways:
        assert me(client, **kw).status_code == 200  # and now cached as verified

    runtime.accounts.report_lost_password(alice.email, actor="test")

    # Each from its own address, so that these misses do not add up to a throttle block.
    addresses = (f"198.51.100.{n}" for n in range(1, 200))
    for kw in ways:
        assert_401(me(from_ip(next(addresses)), **kw))
        assert_401(from_ip(next(addresses)).get(f"{API}/tree/", **kw))
    with runtime.db.read() as s:
        creds = list(s.scalars(select(Credential).where(Credential.user_id == alice.principal.id)))
        assert creds
        assert all(c.revoked_at is not None for c in creds)
        assert s.scalar(select(User.password_hash).where(User.email == alice.email)) is None
    # Other accounts are untouched.
    assert me(client, auth=bob.auth).status_code == 200
    assert me(client, headers=bearer(bob_session)).status_code == 200
    # A new password works; the old credentials stay dead.
    runtime.accounts.set_password(alice.principal.id, "a brand new password")
    assert me(client, auth=(alice.email, "a brand new password")).status_code == 200
    for kw in ways[1:]:
        assert_401(me(from_ip(next(addresses)), **kw))
    fresh = client.post(
        f"{API}/auth/app-passwords",
        json={"name": "new"},
        auth=(alice.email, "a brand new password"),
    ).json()["password"]
    assert me(client, auth=(alice.email, fresh)).status_code == 200


def test_suspended_client_gets_403(
    client: TestClient, runtime: Runtime, alice: Account, bob: Account
) -> None:
    assert client.put(f"{API}/files/kept.txt", content=b"kept", auth=alice.auth).status_code == 201
    alice_session = session(client, alice)
    runtime.accounts.set_status(alice.tenant, "suspended", "invoice unpaid", actor="test")
    for kw in [
        {"auth": alice.auth},
        {"auth": (alice.email, alice.password)},
        {"headers": bearer(alice_session)},
        {"headers": bearer(alice.app_password)},
    ]:
        for method, url in [
            ("GET", f"{API}/me"),
            ("GET", f"{API}/files/kept.txt"),
            ("PUT", f"{API}/files/new.txt"),
            ("GET", f"{API}/tree/"),
            ("GET", f"{API}/trash"),
            ("GET", f"{API}/auth/credentials"),
        ]:
            r = client.request(method, url, content=b"x" if method == "PUT" else None, **kw)  # type: ignore[arg-type]
            assert r.status_code == 403, (kw, method, url, r.text)
            body = problem(r)
            assert body["type"].endswith("/suspended")
            assert body["reason"] == "invoice unpaid"
    r = login(client, alice.email, alice.password)
    assert r.status_code == 403
    assert problem(r)["type"].endswith("/suspended")
    # A wrong password is still just wrong: suspension is not revealed to guessers.
    assert_401(login(client, alice.email, "wrong password"))
    assert_401(me(client, auth=(alice.email, "wrong password")))
    # Other Clients are unaffected; resuming restores everything as it was.
    assert me(client, auth=bob.auth).status_code == 200
    runtime.accounts.set_status(alice.tenant, "active", "", actor="test")
    assert client.get(f"{API}/files/kept.txt", auth=alice.auth).content == b"kept"
    assert me(client, headers=bearer(alice_session)).status_code == 200


# ---- secrets at rest --------------------------------------------------------------------------


def _secret_part(token: str) -> str:
    return token[3 + 22 :]


def test_secrets_stored_only_as_argon2id_hashes(
    client: TestClient,
    runtime: Runtime,
    first_operator: tuple[str, str],
    alice: Account,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    op_email, op_password = first_operator
    token = session(client, alice)
    app_pw = client.post(f"{API}/auth/app-passwords", json={"name": "x"}, auth=alice.auth).json()[
        "password"
    ]
    op_token = login(client, op_email, op_password).json()["token"]
    me(client, auth=(alice.email, alice.password))
    me(client, headers=bearer(token))
    me(client, headers=bearer(op_token))
    plain = {
        "account password": alice.password,
        "operator password": op_password,
        "fixture app password": alice.app_password,
        "fixture app password secret": _secret_part(alice.app_password),
        "app password": app_pw,
        "app password secret": _secret_part(app_pw),
        "session": token,
        "session secret": _secret_part(token),
        "operator session": op_token,
        "operator session secret": _secret_part(op_token),
    }
    hasher = PasswordHasher()
    with runtime.db.read() as s:
        users = list(s.scalars(select(User)))
        assert users
        for u in users:
            assert u.password_hash and u.password_hash.startswith("$argon2id$"), u.password_hash
        assert hasher.verify(
            s.scalar(select(User.password_hash).where(User.email == alice.email)) or "",
            alice.password,
        )
        op_hash = s.scalar(select(Operator.password_hash))
        assert op_hash and op_hash.startswith("$argon2id$")
        assert hasher.verify(op_hash, op_password)
        creds = list(s.scalars(select(Credential)))
        assert len(creds) == 4  # fixture app password, session, app password, operator
        for c in creds:
            assert c.secret_hash.startswith("$argon2id$"), c.secret_hash
        by_id = {c.id: c for c in creds}
        assert hasher.verify(by_id[app_pw[3:25]].secret_hash, _secret_part(app_pw))
        # No column of any table holds a secret in clear (events and logs of use included).
        found = []
        for table in Base.metadata.sorted_tables:
            for row in s.execute(select(table)):
                for col, value in row._mapping.items():
                    text = str(value)
                    found += [
                        (table.name, str(col), what)
                        for what, secret in plain.items()
                        if secret in text
                    ]
        assert not found, found
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert not [what for what, secret in plain.items() if secret in logged]


# ---- the operator (R-STORE-6) ------------------------------------------------------------------


def _fill_body(schema: dict[str, Any], doc: dict[str, Any], values: dict[str, Any]) -> Any:
    ref = schema.get("$ref", "")
    if ref:
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    body = {}
    for name, prop in schema.get("properties", {}).items():
        if name in values:
            body[name] = values[name]
        elif prop.get("type") == "boolean":
            body[name] = False
        else:
            body[name] = values["path"]
    return body


def test_operator_gets_404_on_client_data(
    client: TestClient, first_operator: tuple[str, str], alice: Account
) -> None:
    """Every operation of the files and tree APIs, as listed by the OpenAPI document (so
    later ones are covered too), answers the operator 404 with Alice's real paths and ids,
    and changes nothing."""
    op_email, op_password = first_operator
    auth = alice.auth
    assert client.post(f"{API}/mkdir", json={"path": "/Docs"}, auth=auth).status_code == 201
    for content in (b"v1", b"v2"):
        r = client.put(f"{API}/files/Docs/plan.txt", content=content, auth=auth)
        assert r.status_code == 201
    version = r.json()["version"]
    assert client.put(f"{API}/files/gone.txt", content=b"g", auth=auth).status_code == 201
    assert client.delete(f"{API}/files/gone.txt", auth=auth).status_code == 204
    trash_id = client.get(f"{API}/trash", auth=auth).json()["items"][0]["id"]
    alice_cred = client.get(f"{API}/auth/credentials", auth=auth).json()["credentials"][0]["id"]
    before = [
        client.get(f"{API}/tree/", auth=auth).json(),
        client.get(f"{API}/tree/Docs", auth=auth).json(),
        client.get(f"{API}/trash", auth=auth).json(),
        client.get(f"{API}/versions/Docs/plan.txt", auth=auth).json(),
    ]

    # The operator signs in like anyone, with Basic or a session, and is an operator.
    r = me(client, auth=(op_email, op_password))
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "operator"
    assert "usage" not in r.json()
    op_token = login(client, op_email, op_password).json()["token"]
    assert me(client, headers=bearer(op_token)).json()["kind"] == "operator"

    doc = client.get(f"{API}/openapi.json").json()
    values = {
        "path": "/Docs/plan.txt",
        "from": "/Docs/plan.txt",
        "to": "/Docs/copy.txt",
        "version": version,
        "item_id": trash_id,
        "credential_id": alice_cred,
    }
    probed = 0
    for template, ops in doc["paths"].items():
        for method, op in ops.items():
            if not {"files", "tree"} & set(op.get("tags", [])):
                continue
            urls = []
            if "{path}" in template:
                urls = [
                    template.replace("{path}", p.lstrip("/"))
                    for p in ("/Docs/plan.txt", "/Docs", "/", "/gone.txt")
                ]
            else:
                urls = [template.replace("{item_id}", trash_id)]
            content = op.get("requestBody", {}).get("content", {})
            for url in urls:
                kw: dict[str, Any] = {}
                if "application/json" in content:
                    kw["json"] = _fill_body(content["application/json"]["schema"], doc, values)
                elif content:
                    kw["content"] = b"operator bytes"
                for how in ({"auth": (op_email, op_password)}, {"headers": bearer(op_token)}):
                    r = client.request(method.upper(), API + quote(url), **kw, **how)
                    assert r.status_code == 404, (method, url, kw, r.status_code, r.text)
                    if method != "head":
                        problem(r)
                        assert "plan.txt" not in r.text.replace(url, "")
                        assert version not in r.text
                    probed += 1
    assert probed >= 40
    # Nor can the operator revoke a Client's credential.
    r = client.delete(f"{API}/auth/credentials/{alice_cred}", headers=bearer(op_token))
    assert r.status_code == 404
    after = [
        client.get(f"{API}/tree/", auth=auth).json(),
        client.get(f"{API}/tree/Docs", auth=auth).json(),
        client.get(f"{API}/trash", auth=auth).json(),
        client.get(f"{API}/versions/Docs/plan.txt", auth=auth).json(),
    ]
    assert after == before
    assert client.get(f"{API}/files/Docs/plan.txt", auth=auth).content == b"v2"
    assert me(client, auth=auth).status_code == 200


def test_inline_checks_never_run_argon2_and_record_nothing(runtime: Runtime) -> None:
    """The server checks credentials on its event loop when that is quick (a recent
    verification cached, nothing to write) and in a thread otherwise: asked ``inline``,
    a check that would need argon2 or a write raises ``NeedsThread`` before it records
    anything, and gives exactly the threaded answer once it can be quick."""
    acct = make_account(runtime)  # verified once, here: cached
    accounts, ip = runtime.accounts, "192.0.2.9"
    fresh = accounts.create_app_password(acct.email, "new", actor="test")["password"]
    with pytest.raises(NeedsThread):  # never verified yet
        accounts.authenticate_basic(acct.email, fresh, ip, inline=True)
    with pytest.raises(NeedsThread):  # a wrong secret is never cached: always a thread
        accounts.authenticate_basic(acct.email, fresh[:-2] + "xx", ip, inline=True)
    with pytest.raises(NeedsThread):
        accounts.authenticate_basic(acct.email, "wrong password", ip, inline=True)
    assert accounts.throttle.retry_after(acct.email, ip) == 0  # nothing was recorded
    threaded = accounts.authenticate_basic(acct.email, fresh, ip)
    assert accounts.authenticate_basic(acct.email, fresh, ip, inline=True) == threaded
    assert accounts.authenticate_token(fresh, ip, inline=True) == threaded
    assert accounts.authenticate_basic(acct.email, acct.password, ip, inline=True).id == (
        threaded.id
    )
    # Revocation acts at once inline too: the row is read every time.
    accounts.revoke_credential(threaded, threaded.credential_id)
    with pytest.raises(Unauthenticated):
        accounts.authenticate_token(fresh, ip, inline=True)
