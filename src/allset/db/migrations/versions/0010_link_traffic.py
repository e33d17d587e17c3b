"""Link traffic per Client and UTC day in the database, shared by every server process

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The day's count was kept in the server's memory until now (lost at a restart):
    # there is nothing to carry over.
    op.create_table(
        "link_traffic",
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_link_traffic_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_link_traffic")),
    )


def downgrade() -> None:
    op.drop_table("link_traffic")
