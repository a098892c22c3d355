"""Tables. Every change to them comes with an Alembic migration in db/migrations/versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bastion.db.types import UTCDateTime, utcnow

# Deterministic constraint names, so migrations can alter them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[int] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # SHA-256 of the whole token: 256 random bits need no salt or slow hash, and a
    # database leak yields no usable token.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Credential(Base):
    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(500), default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    # JSON: who may use it ({"workspaces", "workflows", "roles"}) and the non-secret
    # settings of its kind (an OAuth2 token URL, client id, scope).
    policy: Mapped[str] = mapped_column(Text)
    settings: Mapped[str] = mapped_column(Text)
    health: Mapped[str] = mapped_column(String(16), default="unknown")
    health_reason: Mapped[str] = mapped_column(String(500), default="")
    health_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rotation_period_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))


class CredentialField(Base):
    """One encrypted field of one version of a credential (an envelope)."""

    __tablename__ = "credential_fields"

    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when a newer version replaces this one: kept for rollback until then.
    retire_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CredentialAlert(Base):
    __tablename__ = "credential_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    credential_id: Mapped[str] = mapped_column(
        ForeignKey("credentials.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(String(500))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class AuditEvent(Base):
    """The append-only, hash-chained audit trail. Rows are never updated or deleted."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    client_ip: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    key_id: Mapped[str] = mapped_column(String(32))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCursor(Base):
    """How far each exporter has delivered: at-least-once across restarts."""

    __tablename__ = "audit_cursors"

    exporter: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))


class WorkflowVersion(Base):
    """An immutable graph: runs pin the version they started on."""

    __tablename__ = "workflow_versions"

    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph: Mapped[str] = mapped_column(Text)  # canonical JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))


class Run(Base):
    """One execution of a workflow version. Ids are time-ordered, so they page by key."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_status_lease_expires", "status", "lease_expires"),
        Index("ix_runs_workspace_id_id", "workspace_id", "id"),
        Index("ix_runs_workflow_id_id", "workflow_id", "id"),
        Index("ix_runs_status_not_before", "status", "not_before"),
        Index("ix_runs_trigger_id_status", "trigger_id", "status"),
        Index("ix_runs_parent_run_id", "parent_run_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    parent_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    input: Mapped[str] = mapped_column(Text)  # JSON, scrubbed by the trigger
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str] = mapped_column(String(2000), default="")
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Which executor holds the run, and until when: a lapsed lease means it died, and
    # another executor may resume the run.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The webhook or schedule that started it; overlap policies look for its active runs.
    trigger_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")  # an operator's, if given
    # A scheduled retry waits until then; the scheduler queues it.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failure: Mapped[str] = mapped_column(String(32), default="")  # the class retry policies match


class RunStep(Base):
    """A finished step of a run: its node, timing, and output truncated to a cap."""

    __tablename__ = "run_steps"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float] = mapped_column(Float)
    output: Mapped[str] = mapped_column(Text)  # JSON, truncated
    error: Mapped[str] = mapped_column(String(2000), default="")


class Trigger(Base):
    """A webhook or a cron schedule of a workflow. Its settings (JSON) name vault
    credentials for secrets, never hold them."""

    __tablename__ = "triggers"
    __table_args__ = (
        UniqueConstraint("workflow_id", "name"),
        Index("ix_triggers_kind_next_fire_at", "kind", "next_fire_at"),
    )

    # Random and unguessable: it is the address of a webhook (/hooks/{id}).
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the current one
    settings: Mapped[str] = mapped_column(Text)
    # Cron: the next occurrence (nominal), and when it fires (plus jitter). NULL when
    # disabled or past the schedule's end.
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """An accepted delivery's event id: a replay returns the same run and starts nothing."""

    __tablename__ = "webhook_deliveries"

    trigger_id: Mapped[str] = mapped_column(
        ForeignKey("triggers.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class CronOccurrence(Base):
    """What became of one occurrence of a schedule: fired (with its run) or skipped (why).

    Unique per schedule and due time: a second server claiming the same occurrence fails.
    """

    __tablename__ = "cron_occurrences"
    __table_args__ = (UniqueConstraint("trigger_id", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(ForeignKey("triggers.id", ondelete="CASCADE"))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16))  # fired | skipped
    reason: Mapped[str] = mapped_column(String(500), default="")
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class RetryPolicy(Base):
    __tablename__ = "retry_policies"

    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), primary_key=True
    )
    max_attempts: Mapped[int] = mapped_column(Integer)
    initial_delay_seconds: Mapped[float] = mapped_column(Float)
    multiplier: Mapped[float] = mapped_column(Float)
    max_delay_seconds: Mapped[float] = mapped_column(Float)
    jitter: Mapped[bool] = mapped_column(Boolean)
    retry_on: Mapped[str] = mapped_column(Text)  # JSON list of failure classes
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class RotationPool(Base):
    """The persisted state of one configured pool of replicas (its settings live in the
    pools file); the controller holding the lease is the only one that acts on it."""

    __tablename__ = "rotation_pools"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="running")  # running|paused|killed
    active_replica: Mapped[str | None] = mapped_column(String(128), nullable=True)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rotation_count: Mapped[int] = mapped_column(Integer, default=0)
    last_rotation_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_rotation_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # An accepted control action the controller has not carried out yet (rotate | kill).
    pending_action: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pending_by: Mapped[str] = mapped_column(String(200), default="")
    last_errors: Mapped[str] = mapped_column(Text, default="[]")  # JSON, newest last, capped
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RotationReplica(Base):
    __tablename__ = "rotation_replicas"

    pool: Mapped[str] = mapped_column(
        ForeignKey("rotation_pools.name", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    activations: Mapped[int] = mapped_column(Integer, default=0)
    last_activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(String(500), default="")
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RotationHistory(Base):
    """One rotation attempt: who switched to whom, which candidates were skipped and why,
    and how long the switch took."""

    __tablename__ = "rotation_history"
    __table_args__ = (Index("ix_rotation_history_pool_id", "pool", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool: Mapped[str] = mapped_column(ForeignKey("rotation_pools.name", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | manual | recovery
    actor: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(24))
    from_replica: Mapped[str | None] = mapped_column(String(128), nullable=True)
    to_replica: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | failed
    skipped: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{replica, reason}]
    error: Mapped[str] = mapped_column(String(500), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Decision -> the new replica in service; new replica healthy -> old one stopped
    # (break_before_make: old one out of service -> new one in service, the gap).
    traffic_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    switch_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
