"""Reading run history: filtered, newest first, paged by key (run ids sort by time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from bastion.db import Database
from bastion.db.tables import Run, RunStep
from bastion.errors import NotFound


@dataclass(frozen=True)
class RunFilter:
    workspace_id: int
    workflow_id: str | None = None
    status: str | None = None
    trigger: str | None = None
    before: str | None = None  # a run id: page after it
    limit: int = 50


async def list_runs(db: Database, query: RunFilter) -> Sequence[Run]:
    statement = select(Run).where(Run.workspace_id == query.workspace_id)
    if query.workflow_id is not None:
        statement = statement.where(Run.workflow_id == query.workflow_id)
    if query.status is not None:
        statement = statement.where(Run.status == query.status)
    if query.trigger is not None:
        statement = statement.where(Run.trigger == query.trigger)
    if query.before is not None:
        statement = statement.where(Run.id < query.before)
    async with db.session() as session:
        found = await session.scalars(statement.order_by(Run.id.desc()).limit(query.limit))
        return found.all()


async def get_run(db: Database, run_id: str) -> Run:
    async with db.session() as session:
        run = await session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id[:40]!r}")
    return run


async def steps(db: Database, run_id: str, *, after: int = 0) -> Sequence[RunStep]:
    async with db.session() as session:
        found = await session.scalars(
            select(RunStep)
            .where(RunStep.run_id == run_id, RunStep.seq > after)
            .order_by(RunStep.seq)
        )
        return found.all()
