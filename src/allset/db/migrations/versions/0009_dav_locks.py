"""WebDAV locks in the database, shared by every server process

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Locks were kept in each process's memory until now: there is nothing to carry over
    # (a running server's locks end with it, as they always did at a restart).
    op.create_table(
        "dav_locks",
        sa.Column("token", sa.String(length=100), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("root_hash", sa.String(length=32), nullable=False),
        sa.Column("lock_type", sa.String(length=8), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("depth", sa.String(length=10), nullable=False),
        sa.Column("owner", sa.LargeBinary(), nullable=False),
        sa.Column("principal", sa.String(length=320), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_dav_locks_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_dav_locks")),
    )
    # Every WebDAV write asks for the locks on its path and its parents: one probe of
    # this index per path. Maintenance deletes expired locks by the second.
    op.create_index("ix_dav_locks_tenant_root", "dav_locks", ["tenant_id", "root_hash"])
    op.create_index("ix_dav_locks_expires", "dav_locks", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_dav_locks_expires", table_name="dav_locks")
    op.drop_index("ix_dav_locks_tenant_root", table_name="dav_locks")
    op.drop_table("dav_locks")
