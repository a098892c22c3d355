from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import Run, RunStep, Workflow, Workspace
from bastion.db.types import utcnow
from bastion.execution.checkpoints import open_checkpointer
from bastion.execution.dispatcher import Dispatcher
from bastion.execution.engine import Engine, EngineLimits
from bastion.execution.inline import InlineExecutor
from bastion.execution.sandbox import Sandbox, SandboxLimits
from bastion.runs.ledger import Ledger
from bastion.runs.records import FINISHED, Status, Trigger, new_run_id
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.vault.credentials import Vault
from bastion.workflows import graph as graphs
from bastion.workflows.egress import DEFAULT_DENY, EgressPolicy
from bastion.workflows.nodes.http_request import new_client
from bastion.workflows.store import Workflows

OPS, OTHER = 1, 2


@dataclass
class Harness:
    db: Database
    vault: Vault
    audit: AuditLog
    workflows: Workflows
    engine: Engine
    dispatcher: Dispatcher

    async def workflow(
        self, graph: dict[str, Any], *, name: str = "wf", workspace: int = OPS
    ) -> Workflow:
        return await self.workflows.create(workspace, name, "", graphs.parse(graph), "user:olive")

    async def start(self, workflow: Workflow, data: Any = None) -> Run:
        # Stored without the gate's health guard (`checked`): these tests prove the
        # engine's own checks, as for a credential that turns unhealthy after acceptance.
        gate, origin = Gate(self.dispatcher, self.audit), Origin(Trigger.MANUAL, "user:olive")
        run = gate.build(workflow, RunRequest(data or {}), origin)
        await self.dispatcher.ledger.write(lambda s: gate.store(s, [(run, origin)], checked=True))
        await self.dispatcher.submit([run])
        return run

    async def until(self, done: Callable[[Run], bool], run_id: str, timeout: float = 20.0) -> Run:
        async with asyncio.timeout(timeout):
            while True:
                async with self.db.session() as session:
                    run = await session.get(Run, run_id)
                if run is not None and done(run):
                    return run
                await asyncio.sleep(0.02)

    async def finished(self, run_id: str, timeout: float = 20.0) -> Run:
        return await self.until(lambda run: run.status in FINISHED, run_id, timeout)

    def queued(self, workflow: Workflow, data: Any = None) -> Run:
        """A queued run record, not yet handed to any executor."""
        return Run(
            id=new_run_id(),
            workspace_id=workflow.workspace_id,
            workflow_id=workflow.id,
            version=workflow.current_version,
            trigger=Trigger.MANUAL,
            actor="user:olive",
            status=Status.QUEUED,
            attempt=1,
            input=json.dumps(data or {}),
            error="",
            queued_at=utcnow(),
            cancel_requested=False,
        )

    async def run(self, graph: dict[str, Any], data: Any = None, **kwargs: Any) -> Run:
        return await self.finished(
            (await self.start(await self.workflow(graph, **kwargs), data)).id
        )

    async def steps(self, run_id: str) -> list[RunStep]:
        async with self.db.session() as session:
            found = await session.scalars(
                select(RunStep).where(RunStep.run_id == run_id).order_by(RunStep.seq)
            )
            return list(found)


@pytest.fixture
async def harness(migrated_db: Database, keyring: Keyring) -> AsyncIterator[Harness]:
    db = migrated_db
    async with db.transaction() as session:
        session.add_all(
            [
                Workspace(id=OPS, slug="ops", name="Ops"),
                Workspace(id=OTHER, slug="other", name="Other"),
            ]
        )
    audit = AuditLog(db, keyring)
    vault = Vault(db, keyring, audit)
    ledger = Ledger(db)
    workflows = Workflows(db)
    sandbox = Sandbox(SandboxLimits(cpu_seconds=2, wall_seconds=5, memory_bytes=128 * 2**20))
    async with open_checkpointer(db.url) as checkpointer, new_client() as http:
        engine = Engine(
            ledger=ledger,
            workflows=workflows,
            vault=vault,
            checkpointer=checkpointer,
            egress=EgressPolicy.parse(DEFAULT_DENY, ["127.0.0.1/32"]),
            http=http,
            code=sandbox,
            owner="test-engine",
            limits=EngineLimits(lease=timedelta(seconds=3), max_output_bytes=64 * 1024),
        )
        executor = InlineExecutor(engine, concurrency=16, workspace_concurrency=8)
        dispatcher = Dispatcher(db, ledger, executor, max_input_bytes=64 * 1024)
        leases = asyncio.create_task(engine.keep_leases())
        yield Harness(db, vault, audit, workflows, engine, dispatcher)
        leases.cancel()
        await executor.stop()
