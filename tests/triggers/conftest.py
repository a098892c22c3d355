"""A webhook rig with real Database, AuditLog, Vault and Gate (SQLite and PostgreSQL); the
executor only records what it is handed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import Run, Trigger, WebhookDelivery, Workflow, Workspace
from bastion.execution.dispatcher import Dispatcher
from bastion.runs.ledger import Ledger
from bastion.stores import open_stores
from bastion.triggers.gate import Gate
from bastion.triggers.store import Triggers, WebhookSettings
from bastion.triggers.webhook import Webhooks
from bastion.vault.credentials import Vault
from bastion.vault.secret import Secret
from bastion.workflows import graph as graphs
from bastion.workflows.store import Workflows
from tests.vault.conftest import owner

SECRET = "It's a Secret to Everybody"
GRAPH = {"nodes": [{"id": "only", "type": "set", "params": {"values": {}}}]}


@dataclass
class Recorder:
    """The executor: records what it is handed (running runs is not under test here)."""

    name: str = "recorder"
    submitted: list[str] = field(default_factory=list)

    async def submit(self, run_id: str, workspace_id: int) -> None:
        self.submitted.append(run_id)

    def cancel(self, run_id: str) -> None:
        pass

    async def stop(self) -> None:
        pass


@dataclass
class Rig:
    db: Database
    audit: AuditLog
    webhooks: Webhooks
    triggers: Triggers
    workflow: Workflow
    executor: Recorder

    async def hook(self, name: str = "hook", **settings: Any) -> Trigger:
        return await self.triggers.create(
            self.workflow,
            kind="webhook",
            name=name,
            settings=WebhookSettings(**settings),
            enabled=True,
            version=None,
            actor="user:olive",
        )

    async def count(self, table: type[Run] | type[WebhookDelivery]) -> int:
        async with self.db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
async def rig(migrated_db: Database, keyring: Keyring) -> AsyncIterator[Rig]:
    db = migrated_db
    async with db.transaction() as session:
        session.add(Workspace(id=1, slug="ops", name="Ops"))
    audit = AuditLog(db, keyring)
    vault = Vault(db, keyring, audit)
    await vault.create(owner(), name="hook-secret", kind="secret", fields={"value": Secret(SECRET)})
    workflows = Workflows(db)
    workflow = await workflows.create(1, "wf", "", graphs.parse(GRAPH), "user:olive")
    executor = Recorder()
    dispatcher = Dispatcher(db, Ledger(db), executor, max_input_bytes=64 * 1024)
    triggers = Triggers(db)
    stores = open_stores(None)
    webhooks = Webhooks(Gate(dispatcher, audit), triggers, workflows, vault, stores.limiter, audit)
    yield Rig(db, audit, webhooks, triggers, workflow, executor)
    await stores.aclose()
