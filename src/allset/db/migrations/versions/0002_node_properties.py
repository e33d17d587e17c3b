"""WebDAV dead properties

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_properties",
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_node_properties_node_id_nodes")
        ),
        sa.PrimaryKeyConstraint("node_id", "name", name=op.f("pk_node_properties")),
    )
    op.create_index(
        op.f("ix_node_properties_tenant_id"), "node_properties", ["tenant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_node_properties_tenant_id"), table_name="node_properties")
    op.drop_table("node_properties")
