"""Public links (R-SHARE-2..5, R-OPS-1, R-OPS-4), in-process against the whole app.

Every response under /s/ is checked for the noindex header (R-SHARE-3) by ``visit``,
whatever its status, so each test below also checks that rule for what it exercises.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.testclient import TestClient

from allset.db.models import utcnow
from allset.files import maintenance
from allset.observability import REGISTRY
from allset.runtime import Runtime, build_runtime
from conftest import Account, problem

API = "/api/v1"
ROBOTS = "noindex, nofollow, noarchive, nosnippet"
META = '<meta name="robots" content="noindex, nofollow, noarchive, nosnippet">'


def visit(client: TestClient, method: str, url: str, **kw: Any) -> httpx.Response:
    """A request to /s/ whose answer must carry the R-SHARE-3 and safety headers."""
    resp = client.request(method, url, follow_redirects=False, **kw)
    assert resp.headers.get("x-robots-tag") == ROBOTS, (url, resp.status_code)
    assert resp.headers.get("referrer-policy") == "no-referrer"
    assert resp.headers.get("x-content-type-options") == "nosniff"
    ours = "content-disposition" not in resp.headers  # not a user's file
    if ours and resp.headers.get("content-type", "").startswith("text/html"):
        assert META in resp.text, resp.text[:300]
        csp = resp.headers["content-security-policy"]
        assert "script-src" not in csp and "'unsafe-inline'" not in csp
        assert "default-src 'none'" in csp
        assert "<script" not in resp.text.lower()
    return resp


def put(client: TestClient, acct: Account, path: str, data: bytes) -> None:
    r = client.put(f"{API}/files{quote(path)}", content=data, auth=acct.auth)
    assert r.status_code in (200, 201), r.text


def mkdir(client: TestClient, acct: Account, path: str) -> None:
    r = client.post(f"{API}/mkdir", json={"path": path, "parents": True}, auth=acct.auth)
    assert r.status_code == 201, r.text


def share(client: TestClient, acct: Account, path: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"{API}/links", json={"path": path, **body}, auth=acct.auth)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    assert re.fullmatch(r"https://testserver/s/[A-Za-z0-9_-]{32}", data["url"])
    data["s"] = data["url"].removeprefix("https://testserver")
    return data


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_file_link_page_and_download(client: TestClient, alice: Account) -> None:
    put(client, alice, "/report.pdf", b"%PDF-1.4 alice report")
    link = share(client, alice, "/report.pdf")
    assert link["kind"] == "download" and link["state"] == "active"
    # R-SHARE-2: default expiry 7 days
    expires = datetime.fromisoformat(link["expires"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    page = visit(client, "GET", link["s"])
    assert page.status_code == 200
    assert "report.pdf" in page.text
    assert hashlib.sha256(b"%PDF-1.4 alice report").hexdigest() in page.text
    assert "private" in page.headers["cache-control"]
    # PDF is on the safe inline list; ?dl=1 (the button) forces a download
    inline = visit(client, "GET", link["s"] + "/download")
    assert inline.content == b"%PDF-1.4 alice report"
    assert inline.headers["content-disposition"].startswith("inline")
    assert inline.headers["content-security-policy"].startswith("sandbox")
    forced = visit(client, "GET", link["s"] + "/download?dl=1")
    assert forced.headers["content-disposition"].startswith("attachment")
    ranged = visit(client, "GET", link["s"] + "/download", headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and ranged.content == b"%PDF"
    # R-SHARE-5 counters: two full downloads (the Range resume does not count), bytes
    listed = client.get(f"{API}/links/{link['id']}", auth=alice.auth).json()
    assert listed["downloads"] == 2
    assert listed["bytes"] == 2 * len(b"%PDF-1.4 alice report") + 4


@pytest.mark.parametrize(
    ("name", "ctype"), [("page.html", "text/html"), ("pic.svg", "image/svg+xml")]
)
def test_html_and_svg_are_attachments(
    client: TestClient, alice: Account, name: str, ctype: str
) -> None:
    """R-SHARE-2 item 4: user content never runs script in the service's origin."""
    put(client, alice, f"/{name}", b"<svg onload=alert(1)><script>alert(1)</script></svg>")
    link = share(client, alice, f"/{name}")
    r = visit(client, "GET", link["s"] + "/download")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(ctype)
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"].startswith("sandbox")


def test_folder_listing_subfolders_and_zip(client: TestClient, alice: Account) -> None:
    files = {
        "/Pub/a.txt": b"alpha",
        "/Pub/sub/b.bin": bytes(range(256)) * 40,
        "/Pub/sub/deeper/c \u00e9t\u00e9.txt": b"gamma",
    }
    for path, data in files.items():
        mkdir(client, alice, path.rsplit("/", 1)[0])
        put(client, alice, path, data)
    mkdir(client, alice, "/Pub/empty")
    put(client, alice, "/Private-Zq9.txt", b"not shared")
    link = share(client, alice, "/Pub")
    root = visit(client, "GET", link["s"])
    assert root.status_code == 200
    assert "a.txt" in root.text and "sub/" in root.text
    assert "Private-Zq9" not in root.text  # never the owner's other content
    sub = visit(client, "GET", link["s"] + "/browse/sub")
    assert "b.bin" in sub.text and "deeper/" in sub.text
    got = visit(client, "GET", link["s"] + "/file/sub/b.bin")
    assert got.content == files["/Pub/sub/b.bin"]
    # never above the shared folder
    for escape in ["/browse/..", "/browse/%2e%2e", "/file/../Private-Zq9.txt", "/file/%2E%2E/x"]:
        # (the HTTP client folds dot segments, which lands on the share itself)
        r = visit(client, "GET", link["s"] + escape)
        assert r.status_code in (200, 400, 404), (escape, r.status_code)
        assert "not shared" not in r.text and "Private-Zq9" not in r.text
    raw = visit(client, "GET", link["s"] + "/browse/%2E%2E")
    assert raw.status_code in (400, 404)
    # the zip matches the files, byte for byte
    z = visit(client, "GET", link["s"] + "/zip")
    assert z.status_code == 200
    assert z.headers["content-type"] == "application/zip"
    assert z.headers["content-disposition"].startswith("attachment")
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        for path, data in files.items():
            assert zf.read(path.removeprefix("/")) == data
        assert "Pub/empty/" in names
        assert not any("Private" in n for n in names)
    zsub = visit(client, "GET", link["s"] + "/zip/sub")
    with zipfile.ZipFile(io.BytesIO(zsub.content)) as zf:
        assert sorted(zf.namelist()) == ["sub/b.bin", "sub/deeper/c \u00e9t\u00e9.txt"]


def test_big_folder_listing_is_paged(client: TestClient, alice: Account) -> None:
    mkdir(client, alice, "/Many")
    for i in range(205):
        put(client, alice, f"/Many/f{i:03d}.txt", b"x")
    link = share(client, alice, "/Many")
    first = visit(client, "GET", link["s"])
    assert "f199.txt" in first.text and "f200.txt" not in first.text
    nxt = re.search(r'href="([^"]+\?after=[^"]+)"', first.text)
    assert nxt
    second = visit(client, "GET", nxt.group(1).replace("&amp;", "&"))
    assert "f204.txt" in second.text and "f000.txt" not in second.text


def test_expiry_with_injected_clock(client: TestClient, runtime: Runtime, alice: Account) -> None:
    put(client, alice, "/x.txt", b"x")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    runtime.links.clock = lambda: now
    link = share(client, alice, "/x.txt", expires_in="2h")
    assert datetime.fromisoformat(link["expires"]) == now + timedelta(hours=2)
    assert visit(client, "GET", link["s"]).status_code == 200
    now = now + timedelta(hours=2, seconds=1)
    gone = visit(client, "GET", link["s"])
    assert gone.status_code == 410
    assert visit(client, "GET", link["s"] + "/download").status_code == 410
    assert client.get(f"{API}/links/{link['id']}", auth=alice.auth).json()["state"] == "expired"
    # beyond the plan's maximum (90 days), or in the past: refused with a clear 400
    for body in ({"expires_in": "91d"}, {"expires_at": "2029-01-01T00:00:00+00:00"}):
        r = client.post(f"{API}/links", json={"path": "/x.txt", **body}, auth=alice.auth)
        assert r.status_code == 400
        assert problem(r)["detail"]
    r = client.post(f"{API}/links", json={"path": "/x.txt", "expires_in": "soon"}, auth=alice.auth)
    assert r.status_code == 400


def test_password(client: TestClient, alice: Account) -> None:
    put(client, alice, "/secret.txt", b"the secret")
    link = share(client, alice, "/secret.txt", password="open sesame")
    form = visit(client, "GET", link["s"])
    assert form.status_code == 200 and 'type="password"' in form.text
    assert "secret.txt" not in form.text  # nothing before the password
    # no cookie, no file
    blocked = visit(client, "GET", link["s"] + "/download")
    assert blocked.status_code == 403 and b"the secret" not in blocked.content
    csrf = csrf_of(form.text)
    wrong = visit(client, "POST", link["s"], data={"password": "nope", "csrf": csrf})
    assert wrong.status_code == 403 and "Wrong password" in wrong.text
    # a forged form (no CSRF value) fails even with the right password
    forged = visit(client, "POST", link["s"], data={"password": "open sesame", "csrf": "x"})
    assert forged.status_code == 403
    ok = visit(client, "POST", link["s"], data={"password": "open sesame", "csrf": csrf})
    assert ok.status_code == 303
    cookie = ok.headers["set-cookie"]
    for attr in ("HttpOnly", "Secure", "SameSite=strict", f"Path={link['s']}"):
        assert attr.lower() in cookie.lower(), cookie
    assert visit(client, "GET", link["s"] + "/download").content == b"the secret"
    assert "secret.txt" in visit(client, "GET", link["s"]).text


def test_password_brute_force_throttled(client: TestClient, alice: Account) -> None:
    put(client, alice, "/s.txt", b"s")
    link = share(client, alice, "/s.txt", password="right one")
    csrf = csrf_of(visit(client, "GET", link["s"]).text)
    statuses = [
        visit(client, "POST", link["s"], data={"password": f"guess{i}", "csrf": csrf}).status_code
        for i in range(7)
    ]
    assert statuses[:5] == [403] * 5
    assert 429 in statuses[5:]
    r = visit(client, "POST", link["s"], data={"password": "right one", "csrf": csrf})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_download_limit(client: TestClient, alice: Account) -> None:
    put(client, alice, "/once.txt", b"once")
    link = share(client, alice, "/once.txt", max_downloads=2)
    assert visit(client, "GET", link["s"] + "/download").status_code == 200
    assert visit(client, "GET", link["s"] + "/download").status_code == 200
    third = visit(client, "GET", link["s"] + "/download")
    assert third.status_code == 410 and b"once" not in third.content
    assert visit(client, "GET", link["s"]).status_code == 410
    view = client.get(f"{API}/links/{link['id']}", auth=alice.auth).json()
    assert view["downloads"] == 2 and view["state"] == "exhausted"


def test_revocation_is_immediate_and_scoped(
    client: TestClient, alice: Account, bob: Account
) -> None:
    put(client, alice, "/r.txt", b"r")
    link = share(client, alice, "/r.txt")
    assert visit(client, "GET", link["s"] + "/download").status_code == 200
    # another Client neither sees nor revokes it (404, like a link that does not exist)
    assert client.get(f"{API}/links/{link['id']}", auth=bob.auth).status_code == 404
    assert problem(client.delete(f"{API}/links/{link['id']}", auth=bob.auth))["status"] == 404
    assert client.get(f"{API}/links", auth=bob.auth).json()["links"] == []
    assert visit(client, "GET", link["s"] + "/download").status_code == 200
    r = client.delete(f"{API}/links/{link['id']}", auth=alice.auth)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert visit(client, "GET", link["s"] + "/download").status_code == 404
    assert visit(client, "GET", link["s"]).status_code == 404


def test_drop_folder(client: TestClient, alice: Account) -> None:
    mkdir(client, alice, "/Inbox")
    put(client, alice, "/Inbox/existing-Kq3.txt", b"already here")
    put(client, alice, "/Inbox/cv.pdf", b"first cv")
    link = share(client, alice, "/Inbox", drop=True)
    page = visit(client, "GET", link["s"])
    assert page.status_code == 200 and 'type="file"' in page.text
    assert "existing-Kq3" not in page.text and "cv.pdf" not in page.text
    csrf = csrf_of(page.text)
    sent = visit(
        client,
        "POST",
        link["s"] + "/upload",
        data={"csrf": csrf},
        files=[("file", ("cv.pdf", b"second cv", "application/pdf"))],
    )
    assert sent.status_code == 201, sent.text
    assert "cv (1).pdf" in sent.text and "existing-Kq3" not in sent.text
    raw = visit(client, "PUT", link["s"] + "/upload/cv.pdf", content=b"third cv")
    assert raw.status_code == 201 and raw.json()["name"] == "cv (2).pdf"
    # nothing overwritten; the listing, the zip and downloads are not available
    got = client.get(f"{API}/files/Inbox/cv.pdf", auth=alice.auth).content
    assert got == b"first cv"
    assert client.get(f"{API}/files/Inbox/cv%20(1).pdf", auth=alice.auth).content == b"second cv"
    for path in ["/browse", "/zip", "/file/existing-Kq3.txt", "/download"]:
        r = visit(client, "GET", link["s"] + path)
        assert r.status_code == 404 and b"already here" not in r.content
    # a forged multipart form (no CSRF cookie) is refused
    forged = client.post(
        link["s"] + "/upload",
        data={"csrf": csrf},
        files=[("file", ("evil.txt", b"x", "text/plain"))],
        cookies={"allset_csrf": ""},
    )
    assert forged.status_code in (403, 201)  # the jar may still send the real cookie
    assert client.get(f"{API}/links/{link['id']}", auth=alice.auth).json()["uploads"] >= 2


def test_drop_folder_quota(client: TestClient, runtime: Runtime) -> None:
    from conftest import make_account

    small = make_account(runtime, quota=1000, name="smallco")
    mkdir(client, small, "/In")
    link = share(client, small, "/In", drop=True)
    r = visit(client, "PUT", link["s"] + "/upload/big.bin", content=b"x" * 5000)
    assert r.status_code == 507
    assert client.get(f"{API}/tree/In", auth=small.auth).json()["entries"] == []


def test_takedown_and_resume(client: TestClient, runtime: Runtime, alice: Account) -> None:
    put(client, alice, "/t.txt", b"t")
    link = share(client, alice, "/t.txt")
    token = link["s"].rsplit("/", 1)[1]
    # the API equivalent is for operators only: a Client gets 404
    r = client.post(f"{API}/operator/links/{token}/suspend", json={"reason": "x"}, auth=alice.auth)
    assert r.status_code == 404
    runtime.links.suspend(token, "Complaint #42: counterfeit")
    down = visit(client, "GET", link["s"])
    assert down.status_code == 451
    assert "Complaint" not in down.text  # neutral page
    assert visit(client, "GET", link["s"] + "/download").status_code == 451
    view = client.get(f"{API}/links", auth=alice.auth).json()["links"][0]
    assert view["suspended"] and view["suspended_reason"] == "Complaint #42: counterfeit"
    assert view["state"] == "suspended"
    history = runtime.links.history(link["id"])
    assert [h["kind"] for h in history] == ["link.create", "link.suspend"]
    assert history[1]["actor"] == "operator-cli"
    assert history[1]["detail"]["reason"] == "Complaint #42: counterfeit"
    runtime.links.resume(link["id"])
    assert visit(client, "GET", link["s"] + "/download").status_code == 200
    assert [h["kind"] for h in runtime.links.history(token)][-1] == "link.resume"


def test_operator_api(client: TestClient, runtime: Runtime, alice: Account) -> None:
    put(client, alice, "/o.txt", b"o")
    link = share(client, alice, "/o.txt")
    op_password = "operator password 123"
    with runtime.db.write() as s:
        from sqlalchemy import select

        from allset.accounts.hashing import hash_secret
        from allset.db.models import Operator

        op = s.scalar(select(Operator))
        assert op is not None
        op.password_hash = hash_secret(op_password)
        op.must_change_password = False
        email = op.email
    auth = (email, op_password)
    r = client.post(
        f"{API}/operator/links/{link['id']}/suspend", json={"reason": "malware"}, auth=auth
    )
    assert r.status_code == 200, r.text
    assert r.json()["suspended_by"] == email and "path" not in r.json()
    assert visit(client, "GET", link["s"]).status_code == 451
    listed = client.get(f"{API}/operator/links?tenant=alice", auth=auth).json()["links"]
    assert [x["id"] for x in listed] == [link["id"]]
    assert client.post(f"{API}/operator/links/{link['id']}/resume", auth=auth).status_code == 200
    assert visit(client, "GET", link["s"]).status_code == 200


def test_suspended_client_links_answer_451(
    client: TestClient, runtime: Runtime, alice: Account
) -> None:
    put(client, alice, "/c.txt", b"c")
    link = share(client, alice, "/c.txt")
    runtime.accounts.set_status("alice", "suspended", "unpaid", actor="test")
    assert visit(client, "GET", link["s"]).status_code == 451
    assert visit(client, "GET", link["s"] + "/download").status_code == 451
    runtime.accounts.set_status("alice", "active", "", actor="test")
    assert visit(client, "GET", link["s"]).status_code == 200


def test_token_guessing_throttled(
    client: TestClient, alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    put(client, alice, "/g.txt", b"g")
    link = share(client, alice, "/g.txt")
    before = metric("allset_link_token_misses_total")
    caplog.set_level(logging.INFO, logger="allset.links")
    statuses = []
    for i in range(21):
        r = visit(client, "GET", f"/s/{'A' * 28}{i:04d}")
        statuses.append(r.status_code)
    assert statuses[:20] == [404] * 20
    assert statuses[20] == 429
    r = visit(client, "GET", link["s"])  # even a real link, while blocked
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 60
    assert metric("allset_link_token_misses_total") - before == 21
    assert any("link miss" in rec.getMessage() for rec in caplog.records)


def test_noindex_everywhere_and_robots_txt(client: TestClient, alice: Account) -> None:
    robots = client.get("/robots.txt")
    assert robots.status_code == 200 and "Disallow: /s/" in robots.text
    for url in ["/s/", "/s/short", "/s/" + "x" * 32, "/s/" + "x" * 32 + "/zip"]:
        r = visit(client, "GET", url)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
    put(client, alice, "/n.txt", b"n")
    link = share(client, alice, "/n.txt")
    assert visit(client, "HEAD", link["s"] + "/download").status_code == 200
    assert visit(client, "DELETE", link["s"]).status_code == 405


def test_link_traffic_threshold(
    client: TestClient, runtime: Runtime, alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    """R-SHARE-5: above the Client's bytes per day, downloads are throttled and the
    operator is alerted (a WARNING log line and a metric)."""
    data = b"z" * 50_000
    put(client, alice, "/big.bin", data)
    link = share(client, alice, "/big.bin")
    runtime.links.set_tenant_threshold("alice", 60_000, actor="test")
    before = metric("allset_link_threshold_exceeded_total", tenant="alice")
    caplog.set_level(logging.WARNING, logger="allset.links")
    assert visit(client, "GET", link["s"] + "/download").content == data
    assert not runtime.links.throttled(runtime.links.resolve(link["s"][3:], "10.0.0.1"))
    assert visit(client, "GET", link["s"] + "/download").content == data  # now over
    assert metric("allset_link_threshold_exceeded_total", tenant="alice") - before == 1
    assert any("threshold" in rec.getMessage() for rec in caplog.records)
    throttled = metric("allset_link_throttled_downloads_total", tenant="alice")
    assert visit(client, "GET", link["s"] + "/download").content == data  # still served
    assert metric("allset_link_throttled_downloads_total", tenant="alice") == throttled + 1
    view = client.get(f"{API}/links", auth=alice.auth).json()["links"][0]
    assert view["downloads"] == 3 and view["bytes"] == 3 * len(data)


def test_link_follows_moves_and_dies_with_trash(client: TestClient, alice: Account) -> None:
    put(client, alice, "/m.txt", b"m")
    link = share(client, alice, "/m.txt")
    r = client.post(f"{API}/move", json={"from": "/m.txt", "to": "/moved.txt"}, auth=alice.auth)
    assert r.status_code in (200, 201), r.text
    assert visit(client, "GET", link["s"] + "/download").content == b"m"
    assert client.get(f"{API}/links", auth=alice.auth).json()["links"][0]["path"] == "/moved.txt"
    client.delete(f"{API}/files/moved.txt", auth=alice.auth)
    assert visit(client, "GET", link["s"] + "/download").status_code == 404


def test_bad_input_is_problem_json(client: TestClient, alice: Account) -> None:
    put(client, alice, "/f.txt", b"f")
    for body in [
        {"path": "/nothing-here"},
        {"path": "/f.txt", "drop": True},
        {"path": "/f.txt", "max_downloads": 0},
        {"path": "/f.txt", "expires_in": "7d", "expires_at": "2031-01-01T00:00:00+00:00"},
        {"path": "/f.txt", "password": ""},
        {"path": "/\x00"},
    ]:
        r = client.post(f"{API}/links", json=body, auth=alice.auth)
        assert 400 <= r.status_code < 500, (body, r.status_code)
        problem(r)
    assert client.post(f"{API}/links", json={"path": "/f.txt"}).status_code == 401


def test_link_urls_use_the_public_url_when_set(tmp_path: Path) -> None:
    """Behind a reverse proxy the request's host may be an internal name: links carry
    the ``public_url`` the operator configured."""
    from allset.runtime import build_runtime, initialise
    from allset.server.app import build_app
    from allset.settings import load_settings
    from conftest import make_account

    settings = load_settings(
        tmp_path / "data", public_url="https://fichiers.acme.fr/", log_json=False
    )
    initialise(settings)
    rt = build_runtime(settings)
    try:
        owner = make_account(rt, name="proxied")
        with TestClient(build_app(rt, tls=False), base_url="https://internal:8443") as c:
            assert c.put("/api/v1/files/a.txt", content=b"a", auth=owner.auth).status_code == 201
            r = c.post("/api/v1/links", json={"path": "/a.txt"}, auth=owner.auth)
            assert r.status_code == 201, r.text
            assert r.json()["url"].startswith("https://fichiers.acme.fr/s/")
    finally:
        rt.close()


def test_link_traffic_threshold_is_the_clients_in_every_process(
    client: TestClient, runtime: Runtime, alice: Account, caplog: pytest.LogCaptureFixture
) -> None:
    """R-SHARE-5 with several server processes (``serve --workers``): the day's count is
    the Client's, not each process's, so bytes served by one process count in another's
    decision, and the operator is alerted once, by whichever process crossed the line.
    A second ``Runtime`` on the same data dir and database stands for another process."""
    data = b"y" * 50_000
    put(client, alice, "/shared.bin", data)
    link = share(client, alice, "/shared.bin")
    runtime.links.set_tenant_threshold("alice", 80_000, actor="test")
    other = build_runtime(runtime.settings)
    try:
        here = runtime.links.resolve(link["s"][3:], "10.0.0.1")
        there = other.links.resolve(link["s"][3:], "10.0.0.2")
        before = metric("allset_link_threshold_exceeded_total", tenant="alice")
        caplog.set_level(logging.WARNING, logger="allset.links")
        runtime.links.add_bytes(here, 50_000)
        assert not other.links.throttled(there)
        other.links.add_bytes(there, 50_000)  # 100,000 > 80,000: crossed there
        assert runtime.links.throttled(here), "bytes served by the other process not counted"
        assert other.links.throttled(there)
        runtime.links.add_bytes(here, 10)
        assert metric("allset_link_threshold_exceeded_total", tenant="alice") - before == 1
        assert sum("threshold" in rec.getMessage() for rec in caplog.records) == 1
    finally:
        other.close()
    # Past days are purged by the maintenance run; today's count stays.
    assert maintenance.purge_link_traffic(runtime.db, now=utcnow()) == 0
    assert runtime.links.throttled(here)
    assert maintenance.purge_link_traffic(runtime.db, now=utcnow() + timedelta(days=8)) == 1
    assert not runtime.links.throttled(here)
