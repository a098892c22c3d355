"""Run records and step events: what is stored, and the state changes a run goes through.

queued → running → succeeded | failed | cancelled, plus blocked (a credential it needs is
unhealthy); a retry starts as scheduled and is queued at its time. An executor *claims*
a run with a lease it keeps renewing; a run whose lease lapsed was held by an executor
that died, and the next claim resumes it.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bastion.db.tables import Run, RunStep
from bastion.db.types import utcnow
from bastion.errors import InvalidInput


class Status(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"


FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.BLOCKED})
ACTIVE = frozenset({Status.SCHEDULED, Status.QUEUED, Status.RUNNING})


class Trigger(StrEnum):
    WEBHOOK = "webhook"
    CRON = "cron"
    MANUAL = "manual"
    RETRY = "retry"
    API = "api"


ERROR_LIMIT = 2000


def new_run_id(at: datetime | None = None) -> str:
    """48 bits of milliseconds then 80 random bits: ids sort by time, so they page by key."""
    return _millis(time.time_ns() // 1_000_000 if at is None else _ms(at)) + secrets.token_hex(10)


def id_at(moment: datetime) -> str:
    """The smallest run id made at `moment` or later: run ids start with their creation
    time in milliseconds, so a time range is an id range on an index."""
    return _millis(_ms(moment))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _millis(ms: int) -> str:
    return f"{ms:012x}"


def to_json(value: Any, *, limit: int, what: str) -> str:
    """Compact JSON of `value`, refused when larger than `limit` bytes."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        size = len(text.encode())  # an unpaired surrogate ("\ud800") has no UTF-8 form
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None
    if size > limit:
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
    run_id: str
    workspace_id: int
    workflow_id: str
    version: int
    input: str
    resuming: bool  # it ran before and its executor died
    next_seq: int  # the next step event's number


# Hot-path statements are built once, with bound parameters: building one per call (and
# the ORM's bulk machinery) cost more CPU than SQLite spent executing them.
_runs = cast(Table, Run.__table__)
_INSERT_RUN = insert(_runs)
_DEFAULTED = frozenset(c.key for c in _runs.c if c.default is not None)
_INSERT_STEP = insert(cast(Table, RunStep.__table__))
_CLAIM = (
    update(_runs)
    .where(
        _runs.c.id == bindparam("run_id"),
        (_runs.c.status == Status.QUEUED)
        | ((_runs.c.status == Status.RUNNING) & (_runs.c.lease_expires < bindparam("now"))),
    )
    .values(
        status=Status.RUNNING,
        lease_owner=bindparam("owner"),
        lease_expires=bindparam("expires"),
        started_at=func.coalesce(_runs.c.started_at, bindparam("now")),
    )
    .returning(
        _runs.c.workspace_id,
        _runs.c.workflow_id,
        _runs.c.version,
        _runs.c.input,
        _runs.c.started_at,
    )
)
_FINISH = (
    update(_runs)
    .where(
        _runs.c.id == bindparam("run_id"),
        _runs.c.lease_owner == bindparam("owner"),
        _runs.c.status == Status.RUNNING,
    )
    .values(
        status=bindparam("status"),
        output=bindparam("output"),
        error=bindparam("error"),
        failure=bindparam("failure"),
        finished_at=bindparam("finished_at"),
        lease_owner=None,
        lease_expires=None,
    )
)


def accept(session: Session, run: Run) -> Run:
    """Store a new (transient) run record as it is."""
    accept_many(session, [run])
    return run


def accept_many(session: Session, runs: Sequence[Run]) -> None:
    """Store new (transient) run records: one executemany per shape of row."""
    shapes: dict[frozenset[str], list[dict[str, Any]]] = {}
    for run in runs:
        values = {c.key: getattr(run, c.key) for c in _runs.c}
        # Unset attributes of a transient record are None: leave them to the column defaults.
        row = {k: v for k, v in values.items() if v is not None or k not in _DEFAULTED}
        shapes.setdefault(frozenset(row), []).append(row)
    for rows in shapes.values():
        session.execute(_INSERT_RUN, rows)


def claim(session: Session, run_id: str, owner: str, lease: timedelta) -> Claim | None:
    """Take `run_id` if it is queued, or running under a lapsed lease; None otherwise.

    The conditional UPDATE is the arbiter between executors (and duplicate deliveries of
    one Celery task): exactly one of them sees its row change.
    """
    now = utcnow()
    params = {"run_id": run_id, "now": now, "owner": owner, "expires": now + lease}
    row = session.execute(_CLAIM, params).one_or_none()
    if row is None:
        return None
    resuming = row.started_at < now  # it started under an earlier claim
    next_seq = 1
    if resuming:
        last = session.scalar(select(func.max(RunStep.seq)).where(RunStep.run_id == run_id))
        next_seq = (last or 0) + 1
    return Claim(
        run_id, row.workspace_id, row.workflow_id, row.version, row.input, resuming, next_seq
    )


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
    failure: str = "",
) -> bool:
    """End a run the caller holds. False when it no longer holds it (lease lost).

    `failure` classifies a failed run for retry policies (see execution.engine).
    """
    params = {
        "run_id": run_id,
        "owner": owner,
        "status": status,
        "output": output,
        "error": clip(error),
        "failure": failure,
        "finished_at": utcnow(),
    }
    return bool(session.execute(_FINISH, params).rowcount)  # type: ignore[attr-defined]


def add_step(session: Session, step: dict[str, Any]) -> None:
    session.execute(_INSERT_STEP, step)


def request_cancel(session: Session, run_id: str) -> tuple[Run | None, int]:
    """Ask a run to stop, and cancel the retries waiting to follow it (how many).

    A queued or scheduled run is cancelled at once; a running one at its next step.
    """
    run = session.get(Run, run_id, populate_existing=True)
    if run is None:
        return None, 0
    if run.status in (Status.QUEUED, Status.SCHEDULED):
        run.status = Status.CANCELLED
        run.finished_at = utcnow()
        run.error = "cancelled before it started"
    elif run.status == Status.RUNNING:
        run.cancel_requested = True
    retries = _cancel_pending_retries(session, run_id)
    session.flush()
    return run, retries


MAX_RETRY_CHAIN = 100  # a retry policy allows at most 100 attempts


def _cancel_pending_retries(session: Session, run_id: str) -> int:
    """Walk the retries that descend from `run_id` (each links to the run it retries):
    those not started yet are cancelled (how many), a running one is asked to stop, so
    that its failure, if it still fails, plans no further retry."""
    parents, cancelled = [run_id], 0
    waiting = (Status.SCHEDULED, Status.QUEUED)
    for _ in range(MAX_RETRY_CHAIN):
        children = session.execute(
            select(Run.id, Run.status).where(Run.parent_run_id.in_(parents))
        ).all()
        if not children:
            break
        ids = [c.id for c in children]
        cancelled += sum(1 for c in children if c.status in waiting)
        session.execute(
            update(Run)
            .where(Run.id.in_(ids), Run.status.in_(waiting))
            .values(
                status=Status.CANCELLED,
                finished_at=utcnow(),
                error="cancelled with the run it would have retried",
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            update(Run)
            .where(Run.id.in_(ids), Run.status == Status.RUNNING)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        parents = ids
    return cancelled


def queue_due(session: Session, now: datetime, limit: int = 500) -> list[tuple[str, int]]:
    """Scheduled retries whose time has come, queued; (run id, workspace id) of each.

    Only the rows this UPDATE changed are returned: a retry another server queued first
    is neither submitted again nor counted here.
    """
    due = (
        select(Run.id)
        .where(Run.status == Status.SCHEDULED, Run.not_before <= now)
        .order_by(Run.not_before)
        .limit(limit)
        .scalar_subquery()
    )
    queued = session.execute(
        update(Run)
        .where(Run.id.in_(due), Run.status == Status.SCHEDULED)
        .values(status=Status.QUEUED, queued_at=now)
        .returning(Run.id, Run.workspace_id)
        .execution_options(synchronize_session=False)
    ).all()
    return [(run_id, workspace_id) for run_id, workspace_id in queued]


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
