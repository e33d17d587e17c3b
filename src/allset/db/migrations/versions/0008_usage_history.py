"""daily usage samples per Client (storage and transfer) for the charts

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPERATOR_KINDS = (
    "tenant.create",
    "tenant.suspend",
    "tenant.resume",
    "tenant.limit",
    "tenant.quota",
    "tenant.link-limit",
    "link.suspend",
    "link.resume",
    "transfers.interrupt",
)


def upgrade() -> None:
    # One row per Client and UTC day: a year of history is 365 small rows per Client.
    op.create_table(
        "usage_days",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_usage_days")),
    )
    # The operator's audit trail (accounts/audit.py) reads the few operator events among
    # millions of file events: a partial index holds only those, so reading the trail is
    # cheap and file changes pay nothing for it. The list must match OPERATOR_KINDS
    # literally (else the query still works, by a scan).
    where = sa.text(f"kind IN ({', '.join(repr(k) for k in OPERATOR_KINDS)})")
    for name, columns in (
        ("ix_events_operator", ["id"]),
        ("ix_events_operator_tenant", ["tenant_id", "id"]),
    ):
        op.create_index(name, "events", columns, sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_events_operator_tenant", table_name="events")
    op.drop_index("ix_events_operator", table_name="events")
    op.drop_table("usage_days")
