"""triggers (webhooks, cron schedules), deliveries, occurrences, retry policies

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bastion.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
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
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trigger_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("not_before", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("failure", sa.String(32), nullable=False, server_default=""))
    op.create_index("ix_runs_status_not_before", "runs", ["status", "not_before"])
    op.create_index("ix_runs_trigger_id_status", "runs", ["trigger_id", "status"])
    op.create_index("ix_runs_parent_run_id", "runs", ["parent_run_id"])
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("next_due_at", UTCDateTime(), nullable=True),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        _fk("triggers", "workspace_id", "workspaces"),
        _fk("triggers", "workflow_id", "workflows"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.UniqueConstraint("workflow_id", "name", name=op.f("uq_triggers_workflow_id_name")),
    )
    op.create_index("ix_triggers_kind_next_fire_at", "triggers", ["kind", "next_fire_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("trigger_id", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        _fk("webhook_deliveries", "trigger_id", "triggers"),
        sa.PrimaryKeyConstraint("trigger_id", "event_id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])
    op.create_table(
        "cron_occurrences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trigger_id", sa.String(32), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("fired_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        _fk("cron_occurrences", "trigger_id", "triggers"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cron_occurrences")),
        sa.UniqueConstraint(
            "trigger_id", "due_at", name=op.f("uq_cron_occurrences_trigger_id_due_at")
        ),
    )
    op.create_table(
        "retry_policies",
        sa.Column("workflow_id", sa.String(32), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("initial_delay_seconds", sa.Float(), nullable=False),
        sa.Column("multiplier", sa.Float(), nullable=False),
        sa.Column("max_delay_seconds", sa.Float(), nullable=False),
        sa.Column("jitter", sa.Boolean(), nullable=False),
        sa.Column("retry_on", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        _fk("retry_policies", "workflow_id", "workflows"),
        sa.PrimaryKeyConstraint("workflow_id", name=op.f("pk_retry_policies")),
    )


def downgrade() -> None:
    op.drop_table("retry_policies")
    op.drop_table("cron_occurrences")
    op.drop_index("ix_webhook_deliveries_received_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_triggers_kind_next_fire_at", table_name="triggers")
    op.drop_table("triggers")
    op.drop_index("ix_runs_parent_run_id", table_name="runs")
    op.drop_index("ix_runs_trigger_id_status", table_name="runs")
    op.drop_index("ix_runs_status_not_before", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("failure")
        batch.drop_column("not_before")
        batch.drop_column("reason")
        batch.drop_column("trigger_id")
