"""Alembic environment: runs on the connection ``Database.migrate`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from allset.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # the alembic CLI, e.g. `alembic revision --autogenerate`
    url = config.attributes.get("connection_url") or config.get_main_option("sqlalchemy.url")
    assert url, "set sqlalchemy.url"
    connection = create_engine(url).connect()

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
