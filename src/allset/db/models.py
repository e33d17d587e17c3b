"""Tables. Every row that belongs to a Client carries ``tenant_id`` and every query
filters on it (R-STORE-3); ids are 128-bit random strings (``core.ids``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both engines (SQLite stores naive text otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


ID = String(32)


class Tenant(Base):
    """A Client (R-PRIV-1 contact details, R-STORE-8 quota, R-BW-1 bandwidth, R-OPS-1 status)."""

    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    company: Mapped[str] = mapped_column(String(200), default="")
    postal_address: Mapped[str] = mapped_column(Text, default="")
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(320), default="")
    phones: Mapped[list[str]] = mapped_column(JSON, default=list)
    quota_bytes: Mapped[int] = mapped_column(BigInteger)
    used_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    bandwidth_up: Mapped[int] = mapped_column(BigInteger)  # bytes per second
    bandwidth_down: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended
    status_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # R-SHARE-5: bytes per UTC day through public links before they are throttled.
    link_bytes_per_day: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))  # owner | admin | member
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Raising it invalidates every session and app password issued before (R-SEC-2).
    credentials_epoch: Mapped[int] = mapped_column(Integer, default=0)


class Operator(Base):
    """Operator staff, deliberately a separate table: no Client role can become one."""

    __tablename__ = "operators"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    credentials_epoch: Mapped[int] = mapped_column(Integer, default=0)


class Credential(Base):
    """A session or an app password. The secret is kept only as an argon2id hash."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # session | app_password
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True, nullable=True)
    operator_id: Mapped[str | None] = mapped_column(
        ForeignKey("operators.id"), index=True, nullable=True
    )
    tenant_id: Mapped[str | None] = mapped_column(ID, index=True, nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    secret_hash: Mapped[str] = mapped_column(String(200))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_ip: Mapped[str] = mapped_column(String(64), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Node(Base):
    """A file or folder. A trashed node keeps its parent so it can be restored; its
    subtree stays attached to it and so disappears with it."""

    __tablename__ = "nodes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), nullable=True)
    name: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(8))  # file | dir
    version_id: Mapped[str | None] = mapped_column(ID, nullable=True)  # current version
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    mtime: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    trashed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    trashed_path: Mapped[str] = mapped_column(Text, default="")
    trashed_by: Mapped[str] = mapped_column(ID, default="")
    # 'live' rows are unique by (tenant, parent, name); trashed rows may repeat names.
    __table_args__ = (
        Index(
            "uq_nodes_live_name",
            "tenant_id",
            "parent_id",
            "name",
            unique=True,
            sqlite_where=text("trashed_at IS NULL"),
            postgresql_where=text("trashed_at IS NULL"),
        ),
        Index("ix_nodes_parent", "parent_id", "name"),
        Index("ix_nodes_trashed", "tenant_id", "trashed_at"),
    )


class Version(Base):
    """One immutable content of a file: its manifest is in ``version_chunks``."""

    __tablename__ = "versions"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    mtime: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(ID, default="")
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (Index("ix_versions_superseded", "tenant_id", "superseded_at"),)


class Chunk(Base):
    """A stored chunk of one Client. ``size`` counts once against the quota however many
    versions share it (dedup within the Client only, R-STORE-3)."""

    __tablename__ = "chunks"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VersionChunk(Base):
    __tablename__ = "version_chunks"
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ID)
    hash: Mapped[str] = mapped_column(String(64))
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    __table_args__ = (Index("ix_version_chunks_ref", "tenant_id", "hash"),)


class NodeProperty(Base):
    """WebDAV dead properties (PROPPATCH), kept with the node: a move keeps them (same
    node), a copy copies them, a purge deletes them."""

    __tablename__ = "node_properties"
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(1000), primary_key=True)  # Clark notation
    tenant_id: Mapped[str] = mapped_column(ID, index=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)  # the serialised XML element


class ResumableUpload(Base):
    """A tus upload in progress: its bytes so far are in ``DATA/tus/<id>.part`` (fsynced up
    to ``offset``); it counts against the quota until it is committed or expires."""

    __tablename__ = "resumable_uploads"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(ID)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    path: Mapped[str] = mapped_column(Text, default="")  # destination file; "" for a part
    meta: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # Upload-Metadata
    concat: Mapped[str] = mapped_column(String(8), default="")  # "" | partial | final
    parts: Mapped[list[str]] = mapped_column(JSON, default=list)  # a final upload's parts
    state: Mapped[str] = mapped_column(String(8), default="open")  # open | done
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the stored file
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (Index("ix_resumable_tenant_state", "tenant_id", "state"),)


class Event(Base):
    """Change feed and audit trail in one append-only table (R-OPS-4, sync)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    tenant_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(400), default="")
    kind: Mapped[str] = mapped_column(String(40))
    node_id: Mapped[str] = mapped_column(ID, default="")
    path: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The change feed reads "this Client's events after id N, in id order" (R-SYNC-1);
    # (tenant_id, id) answers it and MAX(id) per Client from the index alone.
    __table_args__ = (Index("ix_events_tenant_seq", "tenant_id", "id"),)


class Link(Base):
    """A public link ``/s/{token}`` to a file or folder of a Client (R-SHARE-2..5).

    Only the SHA-256 of the token is stored (the token carries 192 random bits, so a
    fast hash cannot be reversed or guessed); ``token_hint`` is its first characters,
    for people to recognise a link in a listing. The link follows its node (a move
    keeps it working); a trashed node makes it answer 404."""

    __tablename__ = "links"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    # No foreign key: purging a node from the trash leaves its links dead (404), not stuck.
    node_id: Mapped[str] = mapped_column(ID, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(8))  # download | drop
    created_by: Mapped[str] = mapped_column(ID)  # a user id (no FK: users may be removed)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    max_downloads: Mapped[int | None] = mapped_column(Integer, nullable=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    bytes_served: Mapped[int] = mapped_column(BigInteger, default=0)
    uploads: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_reason: Mapped[str] = mapped_column(Text, default="")
    suspended_by: Mapped[str] = mapped_column(String(400), default="")


class FolderGrant(Base):
    """A member's access to one folder and everything below it (R-SHARE-1): "read" or
    "write". It names the folder by node id, so it follows the folder through moves and
    is inactive while the folder is in the trash. Owners and admins need none."""

    __tablename__ = "folder_grants"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    node_id: Mapped[str] = mapped_column(ID, index=True)  # no FK: purges delete grants first
    access: Mapped[str] = mapped_column(String(8))  # read | write
    granted_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (
        Index("uq_folder_grants_user_node", "tenant_id", "user_id", "node_id", unique=True),
    )


class Invitation(Base):
    """An invitation into a Client: only the SHA-256 of its one-time token is kept (the
    token carries 256 random bits, so a slow hash would add nothing), it expires, and
    ``accepted_at`` makes it single-use."""

    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PasswordReset(Base):
    """A one-time password reset link (R-SEC-2): only the SHA-256 of its token (256
    random bits) is kept; it expires within the hour and ``used_at`` makes it single-use.
    A newer request for the same user revokes the older ones."""

    __tablename__ = "password_resets"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ip: Mapped[str] = mapped_column(String(64), default="")


class LinkTraffic(Base):
    """Bytes a Client's public links served on one UTC day (R-SHARE-5): the threshold is
    the Client's, so its count is shared by every server process and kept across
    restarts. Rows of past days are purged by the maintenance run."""

    __tablename__ = "link_traffic"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class DavLock(Base):
    """A WebDAV lock (RFC 4918 §6), kept here so that every server process sees it: a
    LOCK taken through one process is honoured by all (server/dav/locks.py). Rows are the
    fields of WsgiDAV's lock dictionary; the Client owns them (R-STORE-3): a lock, its
    token and its path mean something only within one ``tenant_id``.

    ``root`` is WsgiDAV's normalised, percent-encoded reference URL (``/a/b%20c``, no
    trailing slash): up to three times a 4,096-byte path, too long for a PostgreSQL
    B-tree entry, so the index holds ``root_hash`` (its SHA-256, 128 bits) and the code
    compares ``root`` itself too. Every check asks "locks on this path or its parents"
    (a list of hashes) and sometimes "locks below it" (a prefix of ``root`` among the
    Client's few live locks)."""

    __tablename__ = "dav_locks"
    token: Mapped[str] = mapped_column(String(100), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    root: Mapped[str] = mapped_column(Text)
    root_hash: Mapped[str] = mapped_column(String(32))
    lock_type: Mapped[str] = mapped_column(String(8))  # write (the only type, RFC 4918)
    scope: Mapped[str] = mapped_column(String(10))  # exclusive | shared
    depth: Mapped[str] = mapped_column(String(10))  # 0 | infinity
    owner: Mapped[bytes] = mapped_column(LargeBinary)  # the client's <owner> XML, verbatim
    principal: Mapped[str] = mapped_column(String(320))  # the user's email (WsgiDAV's name)
    timeout: Mapped[int] = mapped_column(Integer)  # seconds granted by the last LOCK/refresh
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (
        Index("ix_dav_locks_tenant_root", "tenant_id", "root_hash"),
        Index("ix_dav_locks_expires", "expires_at"),
    )


class Setting(Base):
    """Server-wide facts decided at init (e.g. the installation id)."""

    __tablename__ = "server_settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


__all__ = [
    "Base",
    "Chunk",
    "Credential",
    "DavLock",
    "Event",
    "FolderGrant",
    "Invitation",
    "Link",
    "LinkTraffic",
    "Node",
    "Operator",
    "Setting",
    "Tenant",
    "User",
    "Version",
    "VersionChunk",
    "utcnow",
]
