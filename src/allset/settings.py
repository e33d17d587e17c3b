"""Typed settings, in one place: defaults < ``DATA/allset.toml`` < ``ALLSET_*`` env < flags.

Every component receives a ``Settings``; nothing reads the environment on its own, so a
test can build a server with exactly the settings it means.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from allset.core.errors import InvalidInput
from allset.core.units import parse_rate, parse_size

GiB = 1024**3


@dataclass
class Settings:
    data_dir: Path = field(default_factory=lambda: Path("allset-data"))
    database_url: str = ""  # empty: the embedded SQLite file in the data dir
    host: str = "127.0.0.1"
    port: int = 8443
    plain_http: bool = False  # only behind a TLS-terminating reverse proxy
    workers: int = 1  # server processes sharing the port (server/workers.py)
    tls_cert: str = ""  # empty: DATA/tls/cert.pem, self-signed on first start
    tls_key: str = ""
    volumes: list[str] = field(default_factory=list)  # empty: DATA/volumes/1 and /2
    volume_location: str = "FR"  # R-STORE-5: where the volumes physically are
    allowed_locations: list[str] = field(default_factory=lambda: ["FR"])
    default_quota: int = 10 * GiB
    default_bandwidth: int = parse_rate("100Mbit")  # bytes/s, each direction (R-BW-1)
    retention_days: int = 30  # old versions and trash
    gc_grace_seconds: int = 3600  # unreferenced chunks younger than this are spared
    maintenance_interval_seconds: int = 3600
    login_free_attempts: int = 5  # failures per account+IP before backoff starts
    login_ip_free_attempts: int = 30  # failures per IP (any account) before backoff
    login_max_backoff_seconds: int = 900
    session_lifetime_seconds: int = 14 * 86400
    resumable_expiry_hours: int = 24  # unfinished tus uploads, then their bytes are reclaimed
    upload_max_size: int = 1024 * GiB  # largest single file (tus announces it)
    dav_apple_files: str = "hide"  # macOS ._* and .DS_Store over WebDAV: allow|hide|refuse
    metrics_public: bool = False  # /metrics answers loopback only unless set
    # Invitations (R-SHARE-1) go out through this SMTP server; no host: the API hands the
    # one-time link to the inviting owner or admin instead.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_user: str = ""
    smtp_password: str = ""  # put it in DATA/allset.toml (mode 0600) or ALLSET_SMTP_PASSWORD
    smtp_starttls: bool = True  # upgrade a plain connection with STARTTLS
    smtp_ssl: bool = False  # implicit TLS from the first byte (usually port 465)
    smtp_timeout_seconds: int = 10
    mail_from: str = ""  # e.g. "allset <noreply@example.fr>"
    public_url: str = ""  # how users reach the server, for links in emails; empty: host:port
    invitation_days: int = 7  # an invitation link expires after this
    link_default_days: int = 7  # public links (R-SHARE-2): expiry when none is given
    link_max_days: int = 90  # the longest expiry a Client may choose (its plan's maximum)
    link_bytes_per_day: int = 0  # R-SHARE-5 default threshold per Client; 0 = none
    link_throttled_rate: int = parse_rate("1Mbit")  # link downloads above the threshold
    # Long-polls of the change feed re-read the database this often even when no
    # wake-up came (R-SYNC-1; files.wakeups); 0: the built-in default (1 s).
    feed_recheck_seconds: int = 0
    log_json: bool = True
    log_level: str = "INFO"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'allset.db'}"

    @property
    def volume_paths(self) -> list[Path]:
        if self.volumes:
            return [Path(v) for v in self.volumes]
        return [self.data_dir / "volumes" / "1", self.data_dir / "volumes" / "2"]

    @property
    def run_dir(self) -> Path:
        """State of the running server shared by its processes (control socket, the
        shared tables of ``core.shared_table``); nothing in it needs a backup."""
        return self.data_dir / "run"

    @property
    def control_socket(self) -> Path:
        """The operator's local channel to the running server (``transfers``); a Unix
        socket path must stay under ~100 bytes, hence the fallback in the temp dir."""
        path = self.run_dir.resolve() / "control.sock"
        if len(str(path)) <= 100:
            return path
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"allset-{digest}.sock"

    @property
    def cert_path(self) -> Path:
        return Path(self.tls_cert) if self.tls_cert else self.data_dir / "tls" / "cert.pem"

    @property
    def key_path(self) -> Path:
        return Path(self.tls_key) if self.tls_key else self.data_dir / "tls" / "key.pem"


_SIZES = {"default_quota", "upload_max_size", "link_bytes_per_day"}
_RATES = {"default_bandwidth", "link_throttled_rate"}


def _coerce(name: str, value: Any, kind: Any) -> Any:
    try:
        if name in _SIZES:
            return parse_size(value)
        if name in _RATES:
            return parse_rate(value)
        if kind in (bool, "bool"):
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if kind in (int, "int"):
            return int(value)
        if kind in (Path, "Path"):
            return Path(value)
        if str(kind).startswith("list"):
            if isinstance(value, list):
                return [str(v) for v in value]
            return [v.strip() for v in str(value).split(",") if v.strip()]
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"Setting {name}: cannot read {value!r} ({exc}).") from exc


def load_settings(data_dir: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve the data dir, then layer file, environment and explicit overrides."""
    env = os.environ
    data = Path(data_dir or env.get("ALLSET_DATA") or "allset-data").absolute()
    fields = {f.name: f.type for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    toml_path = data / "allset.toml"
    if toml_path.exists():
        try:
            file_values = tomllib.loads(toml_path.read_text("utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{toml_path}: {exc}; fix the file or remove it.") from exc
        for k, v in file_values.items():
            if k not in fields:
                raise InvalidInput(f"{toml_path}: unknown setting {k!r}.")
            values[k] = _coerce(k, v, fields[k])
    for k, kind in fields.items():
        ev = env.get("ALLSET_" + k.upper())
        if ev is not None and k != "data_dir":
            values[k] = _coerce(k, ev, kind)
    for k, v in overrides.items():
        if v is not None:
            values[k] = _coerce(k, v, fields[k])
    values["data_dir"] = data
    if not 1 <= values.get("workers", 1) <= 64:
        raise InvalidInput(f"Setting workers: {values['workers']} is not between 1 and 64.")
    return Settings(**values)
