"""Accepting runs, and making sure every accepted run gets executed.

A run is accepted by committing it as `queued`; only then is it handed to the executor.
If the process dies between the two, or a Celery message is lost, or an executor dies
mid-run, the run is still in the database: recovery scans for queued runs nobody picked
up and running runs whose lease lapsed, and submits them again. Submitting twice is
harmless, because only one executor can claim a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from bastion.db import Database
from bastion.db.tables import Run, Workflow
from bastion.db.types import utcnow
from bastion.runs import records
from bastion.runs.ledger import Ledger
from bastion.runs.records import Status, Trigger

log = logging.getLogger("bastion.execution")
RECOVERY_SECONDS = 2.0
# The accepting executor normally submits at once. Inline, a queued run older than this
# was lost with a process; with Celery, runs legitimately wait in Redis while workers are
# busy, and only a publish lost between commit and broker needs resending.
QUEUED_GRACE = timedelta(seconds=5)
QUEUED_GRACE_BROKERED = timedelta(minutes=10)


class Executor(Protocol):
    name: str

    async def submit(self, run_id: str, workspace_id: int) -> None: ...

    def cancel(self, run_id: str) -> None: ...

    async def stop(self) -> None: ...


class Dispatcher:
    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        executor: Executor,
        *,
        max_input_bytes: int,
        queued_grace: timedelta = QUEUED_GRACE,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.executor = executor
        self.max_input_bytes = max_input_bytes
        self.queued_grace = queued_grace

    def new_run(
        self,
        workflow: Workflow,
        *,
        trigger: Trigger,
        actor: str,
        data: Any,
        version: int | None = None,
        attempt: int = 1,
        parent_run_id: str | None = None,
        trigger_id: str | None = None,
        reason: str = "",
    ) -> Run:
        """A queued run record, not yet stored; InvalidInput when its input is too large."""
        return Run(
            id=records.new_run_id(),
            workspace_id=workflow.workspace_id,
            workflow_id=workflow.id,
            version=version or workflow.current_version,
            trigger=trigger,
            actor=actor,
            status=Status.QUEUED,
            attempt=attempt,
            parent_run_id=parent_run_id,
            input=records.to_json(data, limit=self.max_input_bytes, what="run input"),
            error="",
            queued_at=utcnow(),
            cancel_requested=False,
            trigger_id=trigger_id,
            reason=reason,
            not_before=None,
            failure="",
        )

    async def submit(self, runs: Sequence[Run]) -> None:
        """Hand stored runs to the executor."""
        for run in runs:
            await self.executor.submit(run.id, run.workspace_id)

    async def cancel(self, run_id: str) -> tuple[Run | None, int]:
        """Cancel a run and its pending retries: the run (None if unknown) and how many
        retries were cancelled."""
        run, retries = await self.ledger.write(lambda s: records.request_cancel(s, run_id))
        if run is not None and run.status == Status.RUNNING:
            self.executor.cancel(run_id)
        return run, retries

    async def queue_due(self, now: datetime) -> int:
        """Queue and submit the scheduled retries whose time has come."""
        due = await self.ledger.write(lambda s: records.queue_due(s, now))
        for run_id, workspace_id in due:
            await self.executor.submit(run_id, workspace_id)
        return len(due)

    async def recover_once(self, *, grace: timedelta) -> int:
        """Submit runs nobody is executing; how many were found."""
        async with self.db.session() as session:
            found = await records.orphans(session, utcnow() - grace)
        for run_id, workspace_id in found:
            await self.executor.submit(run_id, workspace_id)
        if found:
            log.info("recovery: %d run(s) submitted again", len(found))
        return len(found)

    async def recover(self) -> None:
        """At start every queued run is an orphan; afterwards, those queued for a while
        (runs the CLI accepted, or whose accepting server died)."""
        await self.recover_once(grace=timedelta(0))
        while True:
            await asyncio.sleep(RECOVERY_SECONDS)
            await self.recover_once(grace=self.queued_grace)
