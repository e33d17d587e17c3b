"""Profiles: where the Software keeps which server it talks to and how it trusts it.

A profile holds the server URL, the user's email, an **app password** (created at login;
the account password is never stored), and how TLS is verified: the system's CAs, a CA
file the user gave, or a pinned self-signed certificate. Pinning works by fingerprint:
the certificate the server presents is fetched, its SHA-256 compared with the one the user
typed (printed by ``allset-server`` at first start), and that exact certificate is then
the only one trusted — full verification (hostname included), never "verify=False".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from platformdirs import user_config_dir

PROFILE = "profile.json"
PINNED = "server.pem"


class ProfileError(Exception):
    """Something the user must fix; the message says how."""


@dataclass
class Profile:
    url: str
    user: str
    app_password: str
    credential_id: str = ""
    ca_file: str = ""  # empty: the system's certificate authorities

    def client(self, **kw: Any) -> httpx.Client:
        verify: Any = True
        if self.ca_file:
            verify = ssl.create_default_context(cafile=self.ca_file)
        kw.setdefault("timeout", httpx.Timeout(60.0, connect=15.0))
        return httpx.Client(
            base_url=self.url, auth=(self.user, self.app_password), verify=verify, **kw
        )


def config_dir() -> Path:
    return Path(os.environ.get("ALLSET_CONFIG_DIR") or user_config_dir("allset", appauthor=False))


def normalise_fingerprint(text: str) -> str:
    hexdigits = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexdigits):
        raise ProfileError(
            "The fingerprint is a SHA-256: 64 hex digits, with or without colons "
            "(allset-server prints it at its first start)."
        )
    return hexdigits


def fetch_certificate(url: str, timeout: float = 15.0) -> bytes:
    """The DER certificate the server presents (no verification: it is checked next)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProfileError(f"{url!r} is not an https:// URL; allset only talks over TLS.")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ProfileError("The server presented no certificate.")
    return der


def pin_certificate(url: str, fingerprint: str, directory: Path) -> Path:
    expected = normalise_fingerprint(fingerprint)
    der = fetch_certificate(url)
    actual = hashlib.sha256(der).hexdigest()
    if actual != expected:
        raise ProfileError(
            f"The server's certificate has fingerprint {actual}, not {expected}: this may not "
            "be your server (or its certificate changed). Nothing was saved."
        )
    path = directory / PINNED
    path.write_text(ssl.DER_cert_to_PEM_cert(der))
    return path


def save(profile: Profile, directory: Path | None = None) -> Path:
    """Written atomically, readable by the user only (it holds an app password)."""
    directory = directory or config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        directory.chmod(0o700)
    path = directory / PROFILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(profile), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def load(directory: Path | None = None) -> Profile:
    path = (directory or config_dir()) / PROFILE
    try:
        data = json.loads(path.read_text())
        return Profile(**data)
    except FileNotFoundError:
        raise ProfileError("Not signed in: run 'allset login URL --user EMAIL' first.") from None
    except (ValueError, TypeError) as exc:
        raise ProfileError(f"{path} is damaged ({exc}); run 'allset login' again.") from exc
