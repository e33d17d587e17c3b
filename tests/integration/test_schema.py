"""The migrations build exactly the schema the models describe, on both engines: a
migration written by hand (0009, 0010...) that forgot a column, an index or a type would
otherwise only show when a query failed in production."""

from __future__ import annotations

import hashlib
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text

from allset.accounts.usage import USAGE_DAYS
from allset.db.engine import HEAD_REVISION, MIGRATIONS
from allset.db.models import Base
from allset.runtime import Runtime
from allset.tls import ensure_certificate, fingerprint

# Partial indexes for the operator's audit queries: declared in their migration only
# (0008), with a WHERE that SQLAlchemy's model metadata does not compare.
MIGRATION_ONLY_INDEXES = {"ix_events_operator", "ix_events_operator_tenant"}


def test_migrations_match_the_models(runtime: Runtime) -> None:
    models = MetaData()
    for table in [*Base.metadata.tables.values(), USAGE_DAYS]:  # usage history: Core only
        table.to_metadata(models)
    with runtime.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models)
    diff = [d for d in diff if not (d[0] == "remove_index" and d[1].name in MIGRATION_ONLY_INDEXES)]
    assert diff == [], diff


def test_head_revision_is_alembics_and_a_migrated_database_is_left_alone(
    runtime: Runtime,
) -> None:
    """``HEAD_REVISION`` names alembic's head (a new migration must update it, or
    databases would not be migrated); a database at head is not touched by ``migrate``,
    one behind it is brought there."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]
    assert runtime.db.revision() == HEAD_REVISION
    with runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0009'"))
        conn.execute(text("DROP TABLE link_traffic"))
    assert runtime.db.revision() == "0009"
    runtime.db.migrate()  # 0009 -> 0010 again: the table is back
    assert runtime.db.revision() == HEAD_REVISION
    with runtime.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM link_traffic")).scalar() == 0
    runtime.db.migrate()  # at head: nothing to do (no error from re-creating the table)
    assert runtime.db.revision() == HEAD_REVISION


def test_certificate_fingerprint_is_the_der_sha256(tmp_path: Path) -> None:
    """The fingerprint printed and shown (read with the standard library) is the SHA-256
    of the certificate's DER form, as ``cryptography`` encodes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    shown = ensure_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    der = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    assert shown.replace(":", "").lower() == hashlib.sha256(der).hexdigest()
    assert shown == fingerprint((tmp_path / "cert.pem").read_bytes())
    assert ensure_certificate(tmp_path / "cert.pem", tmp_path / "key.pem") == shown  # kept
