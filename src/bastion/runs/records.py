"""Run records and step events: what is stored, and the state changes a run goes through.

queued → running → succeeded | failed | cancelled, plus blocked (a credential it needs is
unhealthy). An executor *claims* a run with a lease it keeps renewing; a run whose lease
lapsed was held by an executor that died, and the next claim resumes it.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bastion.db.tables import Run, RunStep
from bastion.db.types import utcnow
from bastion.errors import InvalidInput


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"


FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.BLOCKED})


class Trigger(StrEnum):
    WEBHOOK = "webhook"
    CRON = "cron"
    MANUAL = "manual"
    RETRY = "retry"
    API = "api"


ERROR_LIMIT = 2000


def new_run_id() -> str:
    """48 bits of milliseconds then 80 random bits: ids sort by time, so they page by key."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def to_json(value: Any, *, limit: int, what: str) -> str:
    """Compact JSON of `value`, refused when larger than `limit` bytes."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None
    if len(text.encode()) > limit:
        raise InvalidInput(f"{what} exceeds {limit} bytes")
    return text


def truncated_json(value: Any, limit: int) -> str:
    """JSON of a step's output for its event, cut to `limit` bytes (marked as such)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if len(text.encode()) <= limit:
        return text
    head = text.encode()[:limit].decode(errors="ignore")
    return json.dumps({"truncated": True, "bytes": len(text.encode()), "head": head})


def clip(message: str) -> str:
    return message if len(message) <= ERROR_LIMIT else message[: ERROR_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Claim:
    run: Run
    resuming: bool  # it ran before and its executor died
    next_seq: int  # the next step event's number


def insert(session: Session, run: Run) -> Run:
    session.add(run)
    session.flush()
    return run


def claim(session: Session, run_id: str, owner: str, lease: timedelta) -> Claim | None:
    """Take `run_id` if it is queued, or running under a lapsed lease; None otherwise.

    The conditional UPDATE is the arbiter between executors (and duplicate deliveries of
    one Celery task): exactly one of them sees its row change.
    """
    now = utcnow()
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        return None
    lapsed = (
        run.status == Status.RUNNING and run.lease_expires is not None and run.lease_expires < now
    )
    if run.status != Status.QUEUED and not lapsed:
        return None
    changed = session.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.status == run.status,
            Run.lease_owner.is_not_distinct_from(run.lease_owner),
            Run.lease_expires.is_not_distinct_from(run.lease_expires),
        )
        .values(
            status=Status.RUNNING,
            lease_owner=owner,
            lease_expires=now + lease,
            started_at=func.coalesce(Run.started_at, now),
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if changed != 1:
        return None
    session.refresh(run)
    last = session.scalar(select(func.max(RunStep.seq)).where(RunStep.run_id == run_id))
    return Claim(run, lapsed, (last or 0) + 1)


def renew(session: Session, owner: str, run_ids: list[str], lease: timedelta) -> set[str]:
    """Extend the leases `owner` holds; the ids among them whose cancellation was asked."""
    session.execute(
        update(Run)
        .where(Run.id.in_(run_ids), Run.lease_owner == owner, Run.status == Status.RUNNING)
        .values(lease_expires=utcnow() + lease)
        .execution_options(synchronize_session=False)
    )
    return set(
        session.scalars(select(Run.id).where(Run.id.in_(run_ids), Run.cancel_requested.is_(True)))
    )


def finish(
    session: Session,
    run_id: str,
    owner: str,
    status: Status,
    *,
    output: str | None = None,
    error: str = "",
) -> bool:
    """End a run the caller holds. False when it no longer holds it (lease lost)."""
    changed = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.lease_owner == owner, Run.status == Status.RUNNING)
        .values(
            status=status,
            output=output,
            error=clip(error),
            finished_at=utcnow(),
            lease_owner=None,
            lease_expires=None,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    return bool(changed)


def add_step(session: Session, step: RunStep) -> None:
    session.add(step)
    session.flush()


def request_cancel(session: Session, run_id: str) -> Run | None:
    """Ask a run to stop. A queued run is cancelled at once; a running one at its next step."""
    run = session.get(Run, run_id, populate_existing=True)
    if run is None or run.status in FINISHED:
        return run
    if run.status == Status.QUEUED:
        run.status = Status.CANCELLED
        run.finished_at = utcnow()
        run.error = "cancelled before it started"
    else:
        run.cancel_requested = True
    session.flush()
    return run


async def orphans(
    session: AsyncSession, queued_before: datetime, limit: int = 500
) -> list[tuple[str, int]]:
    """Runs nobody is executing: queued for a while (the executor that accepted them died
    or their message was lost), or running under a lapsed lease."""
    now = utcnow()
    rows = (
        await session.execute(
            select(Run.id, Run.workspace_id)
            .where(
                ((Run.status == Status.QUEUED) & (Run.queued_at < queued_before))
                | ((Run.status == Status.RUNNING) & (Run.lease_expires < now))
            )
            .order_by(Run.id)
            .limit(limit)
        )
    ).all()
    return [(run_id, workspace_id) for run_id, workspace_id in rows]
