"""The real server process: TLS only (R-SEC-1), first-start output, operator commands,
metrics, and the storage location rule (R-STORE-5)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from serverproc import SERVER, ServerProcess

pytestmark = pytest.mark.system


def _handshake(url: str, version: ssl.TLSVersion) -> str:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    with contextlib_socket(host, int(port)) as raw, ctx.wrap_socket(raw) as tls:
        return str(tls.version())


def contextlib_socket(host: str, port: int) -> socket.socket:
    return socket.create_connection((host, port), timeout=10)


def test_first_start_prints_fingerprint_and_password_once(server: ServerProcess) -> None:
    der = x509.load_pem_x509_certificate(server.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert server.fingerprint.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert server.operator_password and len(server.operator_password) >= 20
    with server.client() as c:  # verifies against the certificate: no verify=False needed
        r = c.post(
            "/api/v1/auth/login",
            json={"email": "operator@localhost", "password": server.operator_password},
        )
        assert r.status_code == 200, r.text
    server.stop()
    server.operator_password = None
    server.start()
    assert server.operator_password is None  # shown once, never again


def test_tls_12_minimum_and_no_plain_http(server: ServerProcess) -> None:
    assert _handshake(server.url, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert _handshake(server.url, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        _handshake(server.url, ssl.TLSVersion.TLSv1_1)
    plain = server.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/healthz", timeout=5)
    with server.client() as c:
        r = c.get("/healthz")
        assert r.json()["status"] == "ok"
        assert r.headers["strict-transport-security"].startswith("max-age=")


def test_operator_commands(server: ServerProcess) -> None:
    t = server.cli_json(
        "tenant",
        "create",
        "acme",
        "--quota",
        "5GiB",
        "--bandwidth",
        "40Mbit",
        "--contact-email",
        "it@acme.fr",
        "--company",
        "ACME SAS",
        "--phone",
        "+33 1 23 45 67 89",
    )
    assert set(t) >= {"id", "name"} and t["name"] == "acme"
    assert t["quota_bytes"] == 5 * 2**30 and t["bandwidth_down"] == 5_000_000
    dup = server.cli("tenant", "create", "acme", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr and "Traceback" not in dup.stderr
    bad = server.cli("tenant", "create", "other", "--quota", "lots", check=False)
    assert bad.returncode == 1 and "10GiB" in bad.stderr and "Traceback" not in bad.stderr
    server.cli(
        "user",
        "create",
        "--tenant",
        "acme",
        "ceo@acme.fr",
        "--role",
        "owner",
        "--password-stdin",
        input="a long enough password\n",
    )
    token = server.cli_json("token", "create", "ceo@acme.fr", "--name", "laptop")["password"]
    shown = server.cli_json("tenant", "show", "acme")
    assert shown["users"] == 1 and shown["phones"] == ["+33 1 23 45 67 89"]
    assert [x["name"] for x in server.cli_json("tenant", "list")] == ["acme"]
    server.cli("tenant", "create", "bureau", "--company", "Études Martin")
    found = server.cli_json("tenant", "list", "--search", "ÉTUDES")  # the console's search
    assert [x["name"] for x in found] == ["bureau"]
    by_mail = server.cli_json("tenant", "list", "--search", "IT@acme.FR")  # contact email
    assert [x["name"] for x in by_mail] == ["acme"]
    assert [x["name"] for x in server.cli_json("tenant", "list", "--search", "ACME")] == ["acme"]
    none = server.cli("tenant", "list", "--search", "nobody")
    assert none.stdout.strip() == "No Client matches 'nobody'."
    limited = server.cli_json("tenant", "limit", "acme", "--bandwidth", "20Mbit")
    assert limited["bandwidth_up"] == 2_500_000
    with server.client(auth=("ceo@acme.fr", token)) as c:
        assert c.put("/api/v1/files/x.txt", content=b"x").status_code == 201
        server.cli("tenant", "suspend", "acme", "--reason", "unpaid invoice")
        r = c.get("/api/v1/files/x.txt")
        assert r.status_code == 403 and r.json()["reason"] == "unpaid invoice"
        server.cli("tenant", "resume", "acme")
        assert c.get("/api/v1/files/x.txt").content == b"x"  # data kept (R-OPS-1)
        with server.client(auth=("ceo@acme.fr", "a long enough password")) as c2:
            assert c2.get("/api/v1/me").json()["email"] == "ceo@acme.fr"
    no_reason = server.cli("tenant", "suspend", "acme", "--reason", " ", check=False)
    assert no_reason.returncode == 1


def test_metrics_and_logs(server: ServerProcess) -> None:
    email, token = server.make_account("metered", "m@metered.fr")
    with server.client(auth=(email, token)) as c:
        c.put("/api/v1/files/a.bin", content=b"a" * 5000)
        c.get("/api/v1/files/a.bin")
        c.get("/api/v1/files/missing")
        text = c.get("/metrics").text
    assert 'allset_storage_used_bytes{tenant="metered"} 5000.0' in text
    assert 'allset_http_requests_total{area="api",method="PUT",status="2xx"}' in text
    assert 'allset_http_requests_total{area="api",method="GET",status="4xx"}' in text
    assert "allset_bytes_received_total" in text and "allset_bytes_sent_total" in text
    log = server.log_path.read_text()
    assert '"path": "/api/v1/files/a.bin"' in log and '"status": 201' in log


def test_plain_http_only_with_flag(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "plain", plain_http=True)
    proc.start()
    try:
        assert proc.url.startswith("http://")
        with proc.client() as c:
            assert c.get("/healthz").status_code == 200
        assert "WARNING" in proc.log_path.read_text()
    finally:
        proc.stop()


def test_refuses_storage_outside_france(tmp_path: Path) -> None:
    data = tmp_path / "us"
    res = subprocess.run(
        [SERVER, "--data", str(data), "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ALLSET_VOLUME_LOCATION": "US"},
    )
    assert res.returncode == 1
    assert "R-STORE-5" in res.stderr and "Traceback" not in res.stderr


def test_maintenance_command_reclaims_what_a_crash_left(server: ServerProcess) -> None:
    """``allset-server maintenance`` beside the running server does what the server's own
    loop does: a chunk file no row references (a write whose commit never came) and an
    abandoned temp file go, on both volumes; a stored file stays readable."""
    server.cli("tenant", "create", "m", "--quota", "1GiB")
    server.cli(
        "user",
        "create",
        "--tenant",
        "m",
        "o@m.fr",
        "--role",
        "owner",
        "--password-stdin",
        input="a long enough password\n",
    )
    with server.client(auth=("o@m.fr", "a long enough password")) as c:
        assert c.put("/api/v1/files/kept.bin", content=b"k" * 5000).status_code == 201
        tenant_id = server.cli_json("tenant", "show", "m")["id"]
        volumes = sorted(server.data_dir.glob("volumes/*"))
        assert len(volumes) == 2
        orphan = hashlib.sha256(b"never committed").hexdigest()
        for v in volumes:
            d = v / "chunks" / tenant_id / orphan[:2]
            d.mkdir(parents=True, exist_ok=True)
            (d / orphan).write_bytes(b"never committed")
            (v / "tmp" / "deadboot-1.tmp").write_bytes(b"half")
        report = server.cli_json("maintenance")
        assert report["orphan_files"] == 1 and report["temp_files"] == 2
        for v in volumes:
            assert not (v / "chunks" / tenant_id / orphan[:2] / orphan).exists()
            assert not (v / "tmp" / "deadboot-1.tmp").exists()
        assert c.get("/api/v1/files/kept.bin").content == b"k" * 5000
        text = server.cli("maintenance").stdout
        assert "removed 0 orphan and 0 temporary files" in text
