"""The composition root: builds every service from ``Settings`` (server and CLI share it)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from allset.accounts.service import Accounts
from allset.accounts.throttle import LoginThrottle, open_table
from allset.accounts.usage import UsageHistory
from allset.blobstore.local import LocalBackend
from allset.blobstore.replicated import RepairEvent, ReplicatedStore
from allset.core.errors import InvalidInput
from allset.core.ids import new_id
from allset.core.shared_table import SharedTable
from allset.db.engine import Database
from allset.db.models import Setting
from allset.files.leases import ChunkLeases
from allset.files.links import LinkService
from allset.files.resumable import Resumables
from allset.files.service import FileService
from allset.files.wakeups import PeerWakeups, directory_for
from allset.observability import CHUNK_REPAIRS
from allset.settings import Settings
from allset.tls import ensure_certificate

log = logging.getLogger("allset.runtime")


def _on_repair(ev: RepairEvent) -> None:
    CHUNK_REPAIRS.labels(ev.replica, ev.problem).inc()


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: ReplicatedStore
    leases: ChunkLeases
    accounts: Accounts
    files: FileService
    resumables: Resumables
    links: LinkService
    usage: UsageHistory
    # Tells the data dir's other processes which Clients a commit changed (every
    # runtime sends; a serving process also joins to hear them): R-SYNC-1 long-polls.
    wakeups: PeerWakeups
    # Tables every process serving this data dir shares (``DATA/run/<name>.shm``).
    shared: dict[str, SharedTable] = field(default_factory=dict)

    def shared_table(self, name: str, opener: Callable[[Path], SharedTable]) -> SharedTable:
        """The data dir's shared table ``name``, opened once by ``opener`` (which knows its
        layout) and closed with the runtime."""
        table = self.shared.get(name)
        if table is None:
            table = self.shared[name] = opener(self.settings.run_dir / f"{name}.shm")
        return table

    def close(self) -> None:
        self.wakeups.close()
        for table in self.shared.values():
            table.close()
        self.shared.clear()
        self.store.close()
        self.db.dispose()


def check_locations(settings: Settings) -> None:
    """R-STORE-5: refuse to run on storage outside the allowed countries."""
    if settings.volume_location.upper() not in [c.upper() for c in settings.allowed_locations]:
        raise InvalidInput(
            f"Storage location {settings.volume_location!r} is not allowed "
            f"(allowed: {', '.join(settings.allowed_locations)}); data must stay in France "
            "(R-STORE-5). Fix volume_location or allowed_locations in allset.toml."
        )


def build_runtime(settings: Settings) -> Runtime:
    check_locations(settings)
    db = Database(settings.db_url)
    replicas = [
        LocalBackend(path, name=f"volume{i + 1}", location=settings.volume_location)
        for i, path in enumerate(settings.volume_paths)
    ]
    store = ReplicatedStore(list(replicas), on_repair=_on_repair)
    leases = ChunkLeases(settings.run_dir / "collect.lock")
    # R-SEC-3, R-SHARE-2: failed sign-ins and link passwords, counted across processes.
    throttles = open_table(settings.run_dir / "throttles.shm")
    accounts = Accounts(
        db,
        LoginThrottle(
            settings.login_free_attempts,
            settings.login_ip_free_attempts,
            settings.login_max_backoff_seconds,
            table=throttles,
        ),
        settings.session_lifetime_seconds,
    )
    files = FileService(db, store, leases, settings.retention_days, settings.feed_recheck_seconds)
    wakeups = PeerWakeups(directory_for(settings.data_dir))
    db.on_commit.append(wakeups.send)  # after files' own (local) notification
    resumables = Resumables(
        files,
        settings.data_dir / "tus",
        timedelta(hours=settings.resumable_expiry_hours),
        settings.upload_max_size,
    )
    links = LinkService(
        files,
        settings.data_dir / "links.key",
        default_days=settings.link_default_days,
        max_days=settings.link_max_days,
        link_bytes_per_day=settings.link_bytes_per_day,
        throttles=throttles,
    )
    return Runtime(
        settings,
        db,
        store,
        leases,
        accounts,
        files,
        resumables,
        links=links,
        usage=UsageHistory(db),
        wakeups=wakeups,
        shared={"throttles": throttles},
    )


@dataclass
class InitResult:
    created: bool
    operator_email: str
    operator_password: str | None
    fingerprint: str


def initialise(settings: Settings) -> InitResult:
    """Idempotent: data dir, database schema, replica volumes, certificate, operator."""
    check_locations(settings)
    data = settings.data_dir
    created = not (data / ".initialised").exists()
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    for path in settings.volume_paths:
        path.mkdir(parents=True, exist_ok=True)
        marker = path / "VOLUME.json"
        if not marker.exists():
            marker.write_text(json.dumps({"id": new_id(), "location": settings.volume_location}))
    db = Database(settings.db_url)
    try:
        db.migrate()
        with db.write() as s:
            if s.scalar(select(Setting.value).where(Setting.key == "installation_id")) is None:
                s.add(Setting(key="installation_id", value=new_id()))
        accounts = Accounts(db, LoginThrottle(), settings.session_lifetime_seconds)
        password = accounts.ensure_operator()
    finally:
        db.dispose()
    fingerprint = ensure_certificate(settings.cert_path, settings.key_path)
    (data / ".initialised").write_text("1\n")
    return InitResult(created, "operator@localhost", password, fingerprint)


def data_dir_ready(data: Path) -> bool:
    return (data / ".initialised").exists()
