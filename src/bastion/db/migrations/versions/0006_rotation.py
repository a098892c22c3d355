"""rotation: pools' persisted state, per-replica activations, history of rotations

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _pool_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["pool"],
        ["rotation_pools.name"],
        ondelete="CASCADE",
        name=op.f(f"fk_{table}_pool_rotation_pools"),
    )


def upgrade() -> None:
    op.create_table(
        "rotation_pools",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active_replica", sa.String(128), nullable=True),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("rotation_count", sa.Integer(), nullable=False),
        sa.Column("last_rotation_at", UTCDateTime(), nullable=True),
        sa.Column("next_rotation_at", UTCDateTime(), nullable=True),
        sa.Column("pending_action", sa.String(16), nullable=True),
        sa.Column("pending_by", sa.String(200), nullable=False),
        sa.Column("last_errors", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rotation_pools")),
    )
    op.create_table(
        "rotation_replicas",
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("activations", sa.Integer(), nullable=False),
        sa.Column("last_activated_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False),
        sa.Column("last_error_at", UTCDateTime(), nullable=True),
        _pool_fk("rotation_replicas"),
        sa.PrimaryKeyConstraint("pool", "name", name=op.f("pk_rotation_replicas")),
    )
    op.create_table(
        "rotation_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("strategy", sa.String(24), nullable=False),
        sa.Column("from_replica", sa.String(128), nullable=True),
        sa.Column("to_replica", sa.String(128), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("skipped", sa.Text(), nullable=False),
        sa.Column("error", sa.String(500), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("traffic_seconds", sa.Float(), nullable=True),
        sa.Column("switch_seconds", sa.Float(), nullable=True),
        _pool_fk("rotation_history"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rotation_history")),
    )
    op.create_index("ix_rotation_history_pool_id", "rotation_history", ["pool", "id"])


def downgrade() -> None:
    op.drop_index("ix_rotation_history_pool_id", table_name="rotation_history")
    op.drop_table("rotation_history")
    op.drop_table("rotation_replicas")
    op.drop_table("rotation_pools")
