"""The one path by which every trigger starts runs.

Webhooks, cron schedules, operators (one run or a batch) and retries all end here:
health guard → persist as queued → hand to the executor → audit. The audit record is
written in the transaction that stores the run, so an accepted run and its record
commit together or not at all; authentication and rate limits come before, in each
trigger's own code, because they differ per trigger.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.db.tables import Credential, Run, Workflow, WorkflowVersion
from bastion.errors import NotFound
from bastion.execution.dispatcher import Dispatcher
from bastion.runs import records
from bastion.runs.records import Trigger
from bastion.triggers.errors import DispatchBlocked
from bastion.workflows import templates

T = TypeVar("T")
HEALTH_TTL_SECONDS = 1.0  # how stale a credential's health may be when a run is refused
_NAMES_CACHE = 1024


@dataclass(frozen=True)
class RunRequest:
    data: Any
    version: int | None = None  # None: the workflow's current version
    reason: str = ""


@dataclass(frozen=True)
class Origin:
    """Who or what starts the runs, as run records and the audit trail name it."""

    trigger: Trigger
    actor: str
    trigger_id: str | None = None
    client_ip: str = ""
    request_id: str = ""


class Gate:
    def __init__(self, dispatcher: Dispatcher, audit: AuditLog) -> None:
        self.dispatcher = dispatcher
        self.audit = audit
        self._names: OrderedDict[tuple[str, int], frozenset[str]] = OrderedDict()
        self._health: dict[tuple[int, frozenset[str]], tuple[float, list[str]]] = {}

    # -- the health guard ---------------------------------------------------------------

    def unhealthy_blocking(
        self, session: Session, workspace_id: int, workflow_id: str, version: int
    ) -> list[str]:
        """Names of the credentials `version` references that are unhealthy.

        Versions never change, so the names they reference are cached for good; health
        is cached for a second, so a webhook flood costs no query per request.
        """
        names = self._credential_names(session, workflow_id, version)
        if not names:
            return []
        key = (workspace_id, names)
        cached = self._health.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        unhealthy = sorted(
            session.scalars(
                select(Credential.name).where(
                    Credential.workspace_id == workspace_id,
                    Credential.name.in_(names),
                    Credential.health == "unhealthy",
                )
            )
        )
        if len(self._health) > _NAMES_CACHE:
            self._health.clear()
        self._health[key] = (now + HEALTH_TTL_SECONDS, unhealthy)
        return unhealthy

    def _credential_names(self, session: Session, workflow_id: str, version: int) -> frozenset[str]:
        key = (workflow_id, version)
        names = self._names.get(key)
        if names is None:
            graph = session.scalar(
                select(WorkflowVersion.graph).where(
                    WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version
                )
            )
            if graph is None:
                raise NotFound(f"workflow {workflow_id[:40]!r} has no version {version}")
            nodes = json.loads(graph).get("nodes", [])
            names = frozenset(
                name
                for node in nodes
                for name in templates.credential_names(node.get("params", {}))
            )
            self._names[key] = names
            if len(self._names) > _NAMES_CACHE:
                self._names.popitem(last=False)
        return names

    # -- accepting runs -----------------------------------------------------------------

    def build(self, workflow: Workflow, request: RunRequest, origin: Origin) -> Run:
        """A run record for `request`, checked (input size) but not stored."""
        return self.dispatcher.new_run(
            workflow,
            trigger=origin.trigger,
            actor=origin.actor,
            data=request.data,
            version=request.version,
            trigger_id=origin.trigger_id,
            reason=request.reason,
        )

    def store(
        self, session: Session, runs: Sequence[tuple[Run, Origin]], *, checked: bool = False
    ) -> None:
        """Inside a ledger write: the runs, refused when a credential they use is
        unhealthy (unless the caller `checked` already), and their audit records."""
        for run, _ in [] if checked else runs:
            unhealthy = self.unhealthy_blocking(
                session, run.workspace_id, run.workflow_id, run.version
            )
            if unhealthy:
                raise DispatchBlocked(unhealthy)
        records.accept_many(session, [run for run, _ in runs])
        self.audit.append_many_blocking(session, [_started(run, origin) for run, origin in runs])

    async def start(
        self,
        workflow: Workflow,
        requests: Sequence[RunRequest],
        origin: Origin,
        *,
        also: Callable[[Session, list[Run]], object] | None = None,
    ) -> list[Run]:
        """Accept runs all or none: checked whole before any is stored, durable when this
        returns, then handed to the executor. `also` writes in the same transaction."""
        runs = [self.build(workflow, request, origin) for request in requests]

        def accept(session: Session) -> None:
            self.store(session, [(run, origin) for run in runs])
            if also is not None:
                also(session, runs)

        await self.dispatcher.ledger.write(accept)
        await self.dispatcher.submit(runs)
        return runs


def _started(run: Run, origin: Origin) -> Event:
    return Event(
        action="run.start",
        actor=origin.actor,
        target=run.id,
        reason=run.reason,
        client_ip=origin.client_ip,
        request_id=origin.request_id,
        details={
            "workspace_id": run.workspace_id,
            "workflow_id": run.workflow_id,
            "version": run.version,
            "trigger": origin.trigger,
            "trigger_id": origin.trigger_id,
            "attempt": run.attempt,
        },
    )
