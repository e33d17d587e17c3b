"""change feed index on events (tenant_id, id)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # R-SYNC-1: the feed is "this Client's events after N, by id"; the composite index
    # also serves every query the tenant_id-only index did, so that one goes.
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_tenant_seq", ["tenant_id", "id"], unique=False)
        batch_op.drop_index(batch_op.f("ix_events_tenant_id"))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_tenant_id"), ["tenant_id"], unique=False)
        batch_op.drop_index("ix_events_tenant_seq")
