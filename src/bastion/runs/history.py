"""Reading run history: filtered, newest first, paged by key (run ids sort by time)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from bastion.db import Database
from bastion.db.tables import Run, RunStep
from bastion.errors import NotFound
from bastion.runs.records import id_at


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


@dataclass(frozen=True)
class RunSearch:
    """Runs across the workspaces a caller can see (None: all of them, for admins)."""

    workspaces: tuple[int, ...] | None
    workflow_id: str | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: str | None = None
    limit: int = 50


async def search_runs(db: Database, query: RunSearch) -> Sequence[Run]:
    if query.workspaces is not None and not query.workspaces:
        return []
    statement = select(Run)
    if query.workspaces is not None:
        statement = statement.where(Run.workspace_id.in_(query.workspaces))
    for column, value in (
        (Run.workflow_id, query.workflow_id),
        (Run.status, query.status),
        (Run.trigger, query.trigger),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.since is not None:
        statement = statement.where(Run.id >= id_at(query.since))
    if query.until is not None:
        statement = statement.where(Run.id < id_at(query.until))
    if query.before is not None:
        statement = statement.where(Run.id < query.before)
    async with db.session() as session:
        found = await session.scalars(statement.order_by(Run.id.desc()).limit(query.limit))
        return found.all()


MAX_CHAIN = 25


async def retry_chain(db: Database, run: Run) -> list[Run]:
    """The run's attempts, first to last: its ancestors through `parent_run_id`, itself,
    and the retries that followed it (each bounded, so a corrupt loop cannot spin)."""
    before: list[Run] = []
    after: list[Run] = []
    async with db.session() as session:
        parent_id = run.parent_run_id
        while parent_id is not None and len(before) < MAX_CHAIN:
            parent = await session.get(Run, parent_id)
            if parent is None:
                break
            before.append(parent)
            parent_id = parent.parent_run_id
        current = run.id
        while len(after) < MAX_CHAIN:
            child = await session.scalar(
                select(Run).where(Run.parent_run_id == current).order_by(Run.id).limit(1)
            )
            if child is None:
                break
            after.append(child)
            current = child.id
    return [*reversed(before), run, *after]
