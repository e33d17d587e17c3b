"""The operator console and the usage history, in-process: every /operator page is 404
for a Client's user; actions need the CSRF token, are recorded (who, what, when, why)
and give feedback; a suspended Client's user is told why; transfer bytes and storage
are recorded per day and drawn."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.routing import Mount, Route

from allset.accounts.audit import Audit
from allset.accounts.hashing import hash_secret
from allset.accounts.usage import UsageHistory
from allset.db.models import Operator, Tenant
from allset.runtime import Runtime
from allset.server.auth import SESSION_COOKIE, csrf_token
from allset.server.web.app import WebFront
from allset.server.web.charts import axis
from conftest import Account, make_account

OP_EMAIL, OP_PASSWORD = "operator@localhost", "operator password 2026"


def sign_in(client: TestClient, email: str, password: str) -> str:
    client.get("/login")
    pre = client.cookies.get("__Host-allset-pre")
    r = client.post(
        "/login",
        data={"pre": pre, "email": email, "password": password, "next": "/files/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    token = r.cookies.get(SESSION_COOKIE)
    assert token
    return token


def operator_session(runtime: Runtime, client: TestClient) -> str:
    with runtime.db.write() as s:
        s.execute(update(Operator).values(password_hash=hash_secret(OP_PASSWORD)))
    return sign_in(client, OP_EMAIL, OP_PASSWORD)


def operator_paths(client: TestClient, tenant: str) -> list[tuple[str, str]]:
    """Every (method, path) of the console, read from the router: a new page is
    covered without editing this test."""
    front = next(
        r.app
        for r in client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, Mount) and isinstance(r.app, WebFront)
    )
    found = []
    for r in front.router.routes:
        if isinstance(r, Route) and r.path.startswith("/operator"):
            path = r.path.replace("{name}", tenant).replace("{ref}", "x" * 22)
            found += [(m, path) for m in sorted(r.methods or ()) if m != "HEAD"]
    return found


def test_every_operator_page_is_404_for_a_clients_user(client: TestClient, alice: Account) -> None:
    paths = operator_paths(client, alice.tenant)
    assert len(paths) >= 10
    for method, path in paths:  # nobody signed in: the sign-in page, coming back here
        r = client.request(method, path, follow_redirects=False)
        assert r.status_code in (303, 403), (method, path, r.status_code)
    token = sign_in(client, alice.email, alice.password)
    for method, path in paths:
        data = {"csrf": csrf_token(token), "reason": "x", "rate": "1Mbit"}
        r = client.request(method, path, data=data if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.status_code)
        assert "Console" not in r.text


def test_a_users_posts_to_the_console_change_nothing(
    runtime: Runtime, client: TestClient, alice: Account
) -> None:
    token = sign_in(client, alice.email, alice.password)
    data = {"csrf": csrf_token(token), "reason": "x", "rate": "1Mbit"}
    for action in ("suspend", "bandwidth"):
        assert client.post(f"/operator/clients/alice/{action}", data=data).status_code == 404
    t = runtime.accounts.get_tenant("alice")
    assert t["status"] == "active" and t["bandwidth_up"] == 12_500_000


def test_operator_suspends_throttles_and_the_user_is_told_why(
    runtime: Runtime, client: TestClient, alice: Account
) -> None:
    user = TestClient(client.app, base_url="https://testserver")
    sign_in(user, alice.email, alice.password)
    assert user.get("/files/").status_code == 200

    op = operator_session(runtime, client)
    listing = client.get("/operator?q=ALICE")
    assert listing.status_code == 200 and "/operator/clients/alice" in listing.text
    assert "alice" not in client.get("/operator?q=nomatch").text.split("<main")[1]
    page = client.get("/operator/clients/alice")
    assert page.status_code == 200 and 'data-confirm="' in page.text

    # without the session's CSRF token nothing happens
    forged = client.post("/operator/clients/alice/suspend", data={"reason": "x"})
    assert forged.status_code == 403
    assert runtime.accounts.get_tenant("alice")["status"] == "active"
    # a suspension needs a reason: refused in plain words
    r = client.post("/operator/clients/alice/suspend", data={"csrf": csrf_token(op), "reason": ""})
    assert r.status_code == 200 and "motif" in r.text.lower()
    assert runtime.accounts.get_tenant("alice")["status"] == "active"

    reason = "Unpaid invoice <2026-11>"
    r = client.post(
        "/operator/clients/alice/suspend",
        data={"csrf": csrf_token(op), "reason": reason},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/operator/clients/alice"
    shown = client.get(r.headers["location"])
    assert "Client alice suspendu : Unpaid invoice &lt;2026-11&gt;" in shown.text  # feedback

    # the user's next page says why, escaped; so does the sign-in page
    nxt = user.get("/files/")
    assert nxt.status_code == 403 and "Unpaid invoice &lt;2026-11&gt;" in nxt.text
    assert "Unpaid invoice &lt;2026-11&gt;" in user.get("/login").text
    assert user.get("/", follow_redirects=True).text.count("Unpaid invoice") == 1

    r = client.post(
        "/operator/clients/alice/bandwidth",
        data={"csrf": csrf_token(op), "rate": "8Mbit", "reason": "saturating the link"},
    )
    assert "1.0 Mbit/s" not in r.text and "8.0 Mbit/s" in r.text
    assert runtime.accounts.get_tenant("alice")["bandwidth_down"] == 1_000_000
    bad = client.post(
        "/operator/clients/alice/bandwidth", data={"csrf": csrf_token(op), "rate": "fast"}
    )
    assert bad.status_code == 200 and "Refusé" in bad.text  # plain words, never a 500

    r = client.post("/operator/clients/alice/interrupt", data={"csrf": csrf_token(op)})
    assert "0 transfert(s) interrompu(s)." in r.text  # the registry was reached

    client.post("/operator/clients/alice/resume", data={"csrf": csrf_token(op)})
    assert runtime.accounts.get_tenant("alice")["status"] == "active"
    assert user.get("/files/").status_code == 200

    audit = client.get("/operator/audit").text
    rows = re.findall(r"<code>([a-z.-]+)</code>", audit)
    assert rows[:4] == ["tenant.resume", "transfers.interrupt", "tenant.limit", "tenant.suspend"]
    assert "saturating the link" in audit and OP_EMAIL in audit
    assert client.get("/operator/clients/nobody").status_code == 404


def test_the_clients_list_is_paged_and_searched_in_any_case(
    runtime: Runtime, client: TestClient
) -> None:
    """118 Clients more: pages of 50 by name, links that keep the search, a search that
    folds non-ASCII case ("ÉTUDES" finds "Études"), stale or garbage page numbers."""
    operator_session(runtime, client)
    for i in range(118):
        runtime.accounts.create_tenant(
            f"c{i:03d}",
            quota=1 << 30,
            bandwidth=10**6,
            company="Études Dupont SA" if i % 2 == 0 else f"Firm {i}",
            contact_email=f"boss{i}@c{i:03d}.example",
        )
    everyone = sorted(t["name"] for t in runtime.accounts.list_tenants())
    assert len(everyone) >= 118

    def names(html: str) -> list[str]:
        return re.findall(r'<td><a href="/operator/clients/([^"]+)"', html.split("<main")[1])

    def link(html: str, rel: str) -> str | None:
        m = re.search(rf'<a rel="{rel}" href="([^"]+)"', html)
        return m.group(1).replace("&amp;", "&") if m else None

    pages, html = [], client.get("/operator").text
    for _ in range(10):
        pages.append(names(html))
        nxt = link(html, "next")
        if nxt is None:
            break
        html = client.get(nxt).text
    assert [len(p) for p in pages[:-1]] == [50] * (len(pages) - 1)
    assert [n for p in pages for n in p] == everyone  # every Client once, in order
    assert link(html, "prev") is not None and f"sur {len(everyone)}" in html
    assert names(client.get("/operator?page=999").text) == pages[-1]  # clamped to the last
    for garbage in ("abc", "-1", "0", "1e9", "99999999999999999999"):
        assert names(client.get("/operator", params={"page": garbage}).text) == pages[0]

    students = sorted(f"c{i:03d}" for i in range(0, 118, 2))
    html = client.get("/operator", params={"q": "ÉTUDES dupont"}).text
    assert names(html) == students[:50] and link(html, "prev") is None
    nxt = link(html, "next")
    assert nxt is not None and "q=" in nxt  # the search is kept from page to page
    assert names(client.get(nxt).text) == students[50:]
    assert names(client.get("/operator", params={"q": "BOSS7@C007"}).text) == ["c007"]
    assert names(client.get("/operator", params={"q": "%"}).text) == []


def test_link_takedown_from_the_console(
    runtime: Runtime, client: TestClient, alice: Account
) -> None:
    assert client.put("/api/v1/files/doc.txt", content=b"d", auth=alice.auth).status_code == 201
    made = client.post("/api/v1/links", json={"path": "/doc.txt"}, auth=alice.auth).json()
    token = made["url"].rsplit("/", 1)[1]
    op = operator_session(runtime, client)
    found = client.get("/operator/links", params={"ref": made["url"]})
    assert found.status_code == 200 and made["id"] in found.text
    assert client.get("/operator/links", params={"ref": "nope"}).status_code == 404
    r = client.post(
        f"/operator/links/{made['id']}/suspend",
        data={"csrf": csrf_token(op), "reason": "Complaint 17", "back": "//evil.example"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/operator/links"  # no open redirect
    visitor = TestClient(client.app, base_url="https://testserver")
    assert visitor.get(f"/s/{token}").status_code == 451
    page = client.get("/operator/clients/alice").text
    assert "Complaint 17" in page and "doc.txt" not in page  # R-STORE-6: no file names
    r = client.post(f"/operator/links/{made['id']}/resume", data={"csrf": csrf_token(op)})
    assert "Lien rétabli." in r.text
    assert visitor.get(f"/s/{token}").status_code == 200


def test_usage_history_counts_transfers_and_samples_storage(
    runtime: Runtime, client: TestClient, alice: Account, bob: Account
) -> None:
    body = b"u" * 300_000
    assert client.put("/api/v1/files/u.bin", content=body, auth=alice.auth).status_code == 201
    assert client.get("/api/v1/files/u.bin", auth=alice.auth).content == body
    # counted in memory and already visible, then flushed once
    today = runtime.usage.history(alice.tenant_id, 1)[0]
    assert today.bytes_in >= len(body) and today.bytes_out >= len(body)
    assert runtime.usage.flush() >= 1
    assert runtime.usage.flush() == 0
    runtime.usage.sample_storage()
    days = runtime.usage.history(alice.tenant_id, 7)
    assert len(days) == 7 and days[-1].day == datetime.now(UTC).date()
    assert days[-1].used_bytes == runtime.accounts.get_tenant("alice")["used_bytes"] > 0
    assert days[-1].bytes_in == today.bytes_in  # flushed, not counted twice
    assert runtime.usage.history(bob.tenant_id, 7)[-1].bytes_in == 0  # per Client

    sign_in(client, alice.email, alice.password)
    page = client.get("/usage?days=7")
    assert page.status_code == 200
    assert page.text.count('role="img"') == 2 and page.text.count("<rect") == 7 * 3
    assert "<table" in page.text and "Envois (vers le serveur)" in page.text
    assert client.get("/usage?days=abc").status_code == 200  # garbage: the default period


def test_usage_days_carry_storage_forward_and_survive_a_failed_flush(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = make_account(runtime, name="history")
    clock = {"today": date(2026, 3, 1)}
    usage = UsageHistory(runtime.db, today=lambda: clock["today"])

    def set_used(n: int) -> None:
        with runtime.db.write() as s:
            s.execute(update(Tenant).where(Tenant.id == acc.tenant_id).values(used_bytes=n))

    set_used(1000)
    usage.sample_storage()
    set_used(3000)  # not sampled: today shows it anyway
    usage.meter.add(acc.tenant_id, 10, 20)
    usage.flush()
    clock["today"] = date(2026, 3, 4)  # two days without any sample
    usage.meter.add(acc.tenant_id, 5, 0)

    def broken(rows: object, add_counts: bool) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr(usage, "_upsert", broken)
    with pytest.raises(RuntimeError):
        usage.flush()
    monkeypatch.undo()
    assert usage.flush() == 1  # the counts came back and were written now
    days = usage.history(acc.tenant_id, 5)
    assert [d.day for d in days] == [date(2026, 2, 28) + timedelta(days=i) for i in range(5)]
    assert [d.bytes_in for d in days] == [0, 10, 0, 0, 5]
    assert [d.bytes_out for d in days] == [0, 20, 0, 0, 0]
    assert [d.used_bytes for d in days] == [0, 1000, 1000, 1000, 3000]
    with pytest.raises(Exception, match="between 1 and 366"):
        usage.history(acc.tenant_id, 0)


def test_chart_axis_is_round_and_covers_the_peak() -> None:
    assert axis(0) == ("B", 1, 1.0, 1.0)
    assert axis(3) == ("B", 1, 1.0, 3.0)
    unit, size, step, top = axis(3 * (1 << 30) + 5)
    assert unit == "GiB" and size == 1 << 30 and top * size >= 3 * (1 << 30) + 5
    assert step in (0.5, 1, 2, 2.5) and top / step <= 8


def test_usage_page_is_for_owners_and_admins(runtime: Runtime, client: TestClient) -> None:
    acc = make_account(runtime, name="roles")
    runtime.accounts.create_user("roles", "member@roles.example", "member", "member pass 123", "t")
    sign_in(client, "member@roles.example", "member pass 123")
    page = client.get("/usage")
    assert page.status_code == 403 and "propriétaires et administrateurs" in page.text
    assert 'href="/usage"' not in client.get("/files/").text  # no menu entry either
    sign_in(client, acc.email, acc.password)
    client.cookies.set("allset-lang", "en")
    page = client.get("/usage?days=90")
    assert page.status_code == 200 and page.text.count("<rect") == 90 * 3
    assert "Storage used" in page.text and 'aria-current="true">90 days' in page.text


def test_the_audit_trail_reads_a_partial_index(tmp_path: Path) -> None:
    """Operator events are few among millions of file events: reading the trail must not
    scan the events table (the index's kinds and the query's must stay the same). The plan
    is read on the embedded SQLite, whose planner is deterministic; PostgreSQL gets the
    same partial index from the same migration."""
    from allset.runtime import build_runtime, initialise
    from allset.settings import load_settings

    settings = load_settings(tmp_path / "data", log_json=False)
    initialise(settings)
    runtime = build_runtime(settings)
    try:
        _check_audit_plan(runtime)
    finally:
        runtime.close()


def _check_audit_plan(runtime: Runtime) -> None:
    assert runtime.db.is_sqlite
    with runtime.db.read() as s:
        conn = s.connection()
        for tenant_id in (None, "x" * 22):
            sql = Audit.query(tenant_id).compile(
                conn, compile_kwargs={"literal_binds": True, "render_postcompile": True}
            )
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").fetchall()
            assert "ix_events_operator" in str(plan), plan
