"""workflows, their immutable versions, runs and run steps

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        ondelete="CASCADE",
        name=op.f(f"fk_{table}_{column}_{target}"),
    )


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _fk("workflows", "workspace_id", "workspaces"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f("uq_workflows_workspace_id_name")),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("graph", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _fk("workflow_versions", "workflow_id", "workflows"),
        sa.PrimaryKeyConstraint("workflow_id", "version", name=op.f("pk_workflow_versions")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("parent_run_id", sa.String(32), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.String(2000), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires", UTCDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        _fk("runs", "workspace_id", "workspaces"),
        _fk("runs", "workflow_id", "workflows"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_status_lease_expires", "runs", ["status", "lease_expires"])
    op.create_index("ix_runs_workspace_id_id", "runs", ["workspace_id", "id"])
    op.create_index("ix_runs_workflow_id_id", "runs", ["workflow_id", "id"])
    op.create_table(
        "run_steps",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("error", sa.String(2000), nullable=False),
        _fk("run_steps", "run_id", "runs"),
        sa.PrimaryKeyConstraint("run_id", "seq", name=op.f("pk_run_steps")),
    )


def downgrade() -> None:
    op.drop_table("run_steps")
    op.drop_index("ix_runs_workflow_id_id", "runs")
    op.drop_index("ix_runs_workspace_id_id", "runs")
    op.drop_index("ix_runs_status_lease_expires", "runs")
    op.drop_table("runs")
    op.drop_table("workflow_versions")
    op.drop_table("workflows")
