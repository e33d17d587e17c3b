"""The migrations build exactly the schema the models describe, on both engines: a
migration written by hand (0009, 0010...) that forgot a column, an index or a type would
otherwise only show when a query failed in production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from allset.accounts.usage import USAGE_DAYS
from allset.db.models import Base
from allset.runtime import Runtime

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
