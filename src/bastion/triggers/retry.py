"""Retry policies: which failures run again, when, and how often.

A retry is a new run linked to the run it retries (`parent_run_id`), stored as
`scheduled` with its time (`not_before`) in the transaction that records the failure,
so neither a crash nor a restart can lose it; the scheduler queues it when its time
comes. Delays grow exponentially up to a cap; with full jitter the delay is drawn
uniformly below that bound, so clients failing together do not retry together.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.db import Database
from bastion.db.tables import RetryPolicy, Run
from bastion.db.types import utcnow
from bastion.runs import records
from bastion.runs.records import Status, Trigger
from bastion.workflows.errors import Failure

MAX_ATTEMPTS = 100
MAX_DELAY_SECONDS = 7 * 86400.0
DEFAULT_RETRY_ON = (Failure.TIMEOUT, Failure.NETWORK, Failure.HTTP_5XX, Failure.INTERRUPTED)


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(ge=1, le=MAX_ATTEMPTS, description="1: never retry")
    initial_delay_seconds: float = Field(default=10.0, ge=0, le=MAX_DELAY_SECONDS)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay_seconds: float = Field(default=3600.0, ge=0, le=MAX_DELAY_SECONDS)
    jitter: bool = Field(default=True, description="full jitter: a delay drawn below the bound")
    retry_on: list[Failure] = Field(default=list(DEFAULT_RETRY_ON), min_length=1)

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.max_delay_seconds < self.initial_delay_seconds:
            raise ValueError("max_delay_seconds must not be below initial_delay_seconds")
        return self

    def delay(self, attempt: int, rng: random.Random) -> timedelta:
        """The wait before attempt `attempt + 1`, after attempt `attempt` failed."""
        bound = min(
            self.max_delay_seconds,
            self.initial_delay_seconds * self.multiplier ** min(attempt - 1, 64),
        )
        return timedelta(seconds=rng.uniform(0, bound) if self.jitter else bound)

    @classmethod
    def of(cls, row: RetryPolicy) -> RetrySettings:
        return cls(
            max_attempts=row.max_attempts,
            initial_delay_seconds=row.initial_delay_seconds,
            multiplier=row.multiplier,
            max_delay_seconds=row.max_delay_seconds,
            jitter=row.jitter,
            retry_on=json.loads(row.retry_on),
        )


class RetryPolicies:
    """Per-workflow policies: stored, read, removed."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, workflow_id: str) -> RetrySettings | None:
        async with self.db.session() as session:
            row = await session.get(RetryPolicy, workflow_id)
        return None if row is None else RetrySettings.of(row)

    async def put(self, workflow_id: str, settings: RetrySettings, actor: str) -> RetrySettings:
        async with self.db.transaction() as session:
            row = await session.get(RetryPolicy, workflow_id)
            if row is None:
                row = RetryPolicy(workflow_id=workflow_id)
                session.add(row)
            row.max_attempts = settings.max_attempts
            row.initial_delay_seconds = settings.initial_delay_seconds
            row.multiplier = settings.multiplier
            row.max_delay_seconds = settings.max_delay_seconds
            row.jitter = settings.jitter
            row.retry_on = json.dumps(sorted(set(settings.retry_on)))
            row.updated_at = utcnow()
            row.updated_by = actor
        return settings

    async def delete(self, workflow_id: str) -> bool:
        async with self.db.transaction() as session:
            row = await session.get(RetryPolicy, workflow_id)
            if row is not None:
                await session.delete(row)
        return row is not None


class RetryPlanner:
    """The engine's RetryPlanner: runs inside the transaction that records a failure."""

    def __init__(self, audit: AuditLog, rng: random.Random | None = None) -> None:
        self.audit = audit
        self.rng = rng or random.SystemRandom()

    def plan(self, session: Session, run_id: str, failure: str) -> None:
        failed = session.get(Run, run_id)
        if failed is None or failed.cancel_requested:
            return
        row = session.get(RetryPolicy, failed.workflow_id)
        if row is None:
            return
        policy = RetrySettings.of(row)
        if failed.attempt >= policy.max_attempts or failure not in policy.retry_on:
            return
        now = utcnow()
        retry = Run(
            id=records.new_run_id(),
            workspace_id=failed.workspace_id,
            workflow_id=failed.workflow_id,
            version=failed.version,
            trigger=Trigger.RETRY,
            actor="retry-policy",
            status=Status.SCHEDULED,
            attempt=failed.attempt + 1,
            parent_run_id=failed.id,
            input=failed.input,
            error="",
            queued_at=now,
            cancel_requested=False,
            trigger_id=failed.trigger_id,
            reason=f"retry of {failed.id} after {failure}",
            not_before=now + policy.delay(failed.attempt, self.rng),
            failure="",
        )
        records.accept(session, retry)
        self.audit.append_blocking(
            session,
            Event(
                action="run.retry",
                actor="retry-policy",
                target=retry.id,
                reason=retry.reason,
                details={
                    "workspace_id": retry.workspace_id,
                    "workflow_id": retry.workflow_id,
                    "attempt": retry.attempt,
                    "not_before": retry.not_before.isoformat() if retry.not_before else None,
                },
            ),
        )
