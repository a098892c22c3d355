"""Run statistics and a live feed of run changes for the console.

`GET /stats/runs`: runs per hour and status. `GET /runs:stream`: a server-sent event per
run that appeared or changed status among the newest runs (and any run seen active), so
the console's lists and charts stay current without reloading.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select
from starlette.responses import StreamingResponse

from bastion.accounts.rbac import Permission, Principal
from bastion.db import Database
from bastion.db.tables import Run
from bastion.db.types import utcnow
from bastion.errors import PermissionDenied
from bastion.runs import stats
from bastion.runs.records import ACTIVE
from bastion.web.api.principals import Requires

router = APIRouter(tags=["runs"])
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
STREAM_SECONDS = 3600.0
WATCHED = 50  # newest runs compared on every poll
MAX_TRACKED = 200  # older runs still followed because they were active


def scope_of(principal: Principal, workspace_id: int | None) -> tuple[int, ...] | None:
    """The workspaces to read: the one asked for (if readable), or every readable one."""
    if workspace_id is None:
        return principal.workspaces(Permission.READ)
    if not principal.can(Permission.READ, workspace_id):
        raise PermissionDenied(f"missing permission {Permission.READ.value}")
    return (workspace_id,)


@router.get("/stats/runs")
async def run_counts(
    principal: SignedIn,
    request: Request,
    hours: Annotated[int, Query(ge=1, le=stats.MAX_HOURS)] = 24,
    workspace_id: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, object]:
    """Runs created per hour, by status, over the last `hours` hours (UTC)."""
    counts = await stats.hourly_counts(
        request.state.services.db, scope_of(principal, workspace_id), utcnow(), hours
    )
    return counts.as_dict()


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "workspace_id": run.workspace_id,
        "workflow_id": run.workflow_id,
        "version": run.version,
        "trigger": run.trigger,
        "actor": run.actor,
        "status": run.status,
        "attempt": run.attempt,
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


async def _snapshot(
    db: Database, scope: tuple[int, ...] | None, tracked: Sequence[str]
) -> list[Run]:
    newest = select(Run).order_by(Run.id.desc()).limit(WATCHED)
    if scope is not None:
        newest = newest.where(Run.workspace_id.in_(scope))
    async with db.session() as session:
        rows = list((await session.scalars(newest)).all())
        known = {run.id for run in rows}
        missing = [run_id for run_id in tracked if run_id not in known]
        if missing:
            rows += (await session.scalars(select(Run).where(Run.id.in_(missing)))).all()
    return rows


async def _changes(request: Request, scope: tuple[int, ...] | None) -> AsyncIterator[str]:
    db = request.state.services.db
    seen: dict[str, str] | None = None
    started = quiet_since = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        tracked = [run_id for run_id, status in (seen or {}).items() if status in ACTIVE]
        rows = await _snapshot(db, scope, tracked[:MAX_TRACKED])
        if seen is None:
            yield "event: ready\ndata: {}\n\n"
        else:
            for run in sorted(rows, key=lambda r: r.id):
                if seen.get(run.id) != run.status:
                    quiet_since = time.monotonic()
                    yield f"event: run\ndata: {json.dumps(run_summary(run))}\n\n"
        seen = {run.id: run.status for run in rows}
        if time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


@router.get("/runs:stream", response_class=StreamingResponse)
async def run_changes(
    principal: SignedIn,
    request: Request,
    workspace_id: Annotated[int | None, Query(ge=1)] = None,
) -> StreamingResponse:
    """`run` events (a run summary) whenever a run appears or changes status."""
    scope = scope_of(principal, workspace_id)
    return StreamingResponse(
        _changes(request, scope),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
