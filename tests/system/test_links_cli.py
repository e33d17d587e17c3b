"""``allset share`` and ``allset-server link`` against a real server over TLS
(R-SHARE-2, R-SHARE-4, R-SHARE-5, R-OPS-4): the Client publishes, lists and revokes;
the operator suspends and resumes a link while the server runs, and it acts at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_client_cli import allset, signed_in

from serverproc import ServerProcess

pytestmark = pytest.mark.system

ROBOTS = "noindex, nofollow, noarchive, nosnippet"


def test_share_create_list_revoke_and_takedown(server: ServerProcess, tmp_path: Path) -> None:
    cfg = signed_in(server, tmp_path, "linkco")
    local = tmp_path / "report.txt"
    local.write_bytes(b"published report")
    assert allset(cfg, "put", str(local), "/report.txt").returncode == 0

    made = allset(cfg, "share", "create", "/report.txt", "--expires", "2d", "--json")
    assert made.returncode == 0, made.stderr
    link = json.loads(made.stdout)
    assert {"id", "url", "expires"} <= set(link)
    assert link["url"].startswith(server.url + "/s/")
    plain = allset(cfg, "share", "create", "/report.txt", "--max-downloads", "3")
    assert plain.returncode == 0 and plain.stdout.strip().startswith(server.url + "/s/")
    pw = allset(cfg, "share", "create", "/report.txt", "--password-stdin", input="pass word\n")
    assert pw.returncode == 0, pw.stderr

    with server.client() as http:
        r = http.get(link["url"] + "/download")
        assert r.status_code == 200 and r.content == b"published report"
        assert r.headers["x-robots-tag"] == ROBOTS
        token = link["url"].rsplit("/", 1)[1]
        # the operator's takedown, from another process, acts on the running server at once
        down = server.cli("link", "suspend", token, "--reason", "Complaint 2026-17")
        assert down.returncode == 0, down.stderr
        r = http.get(link["url"])
        assert r.status_code == 451 and r.headers["x-robots-tag"] == ROBOTS
        listed = json.loads(allset(cfg, "share", "list", "--json").stdout)
        mine = next(x for x in listed if x["id"] == link["id"])
        assert mine["suspended_reason"] == "Complaint 2026-17" and mine["downloads"] == 1
        human = allset(cfg, "share", "list").stdout
        assert "Complaint 2026-17" in human
        ops = server.cli_json("link", "list", "--tenant", "linkco")
        assert {x["id"] for x in ops} >= {link["id"]}
        history = server.cli_json("link", "history", link["id"])
        assert [h["kind"] for h in history] == ["link.create", "link.suspend"]
        assert server.cli("link", "resume", link["id"]).returncode == 0
        assert http.get(link["url"] + "/download").status_code == 200
        # R-SHARE-5 counters through the operator's listing
        ops = server.cli_json("link", "list", "--tenant", "linkco")
        assert next(x for x in ops if x["id"] == link["id"])["bytes"] == 2 * len(
            b"published report"
        )
        # revocation by the Client
        gone = allset(cfg, "share", "revoke", link["id"])
        assert gone.returncode == 0, gone.stderr
        assert http.get(link["url"]).status_code == 404
        missing = allset(cfg, "share", "revoke", "nope")
        assert missing.returncode == 1 and "No link" in missing.stderr
        bad = allset(cfg, "share", "create", "/report.txt", "--expires", "soon")
        assert bad.returncode == 1 and "soon" in bad.stderr
