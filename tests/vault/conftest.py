from __future__ import annotations

import pytest

from bastion.accounts.rbac import Role
from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import Workspace
from bastion.vault.credentials import Vault
from bastion.vault.policy import AccessContext

OPS, OTHER = 1, 2


def owner(workspace: int = OPS) -> AccessContext:
    return AccessContext("user:olive", workspace, frozenset({Role.OWNER.value}), request_id="r1")


def viewer(workspace: int = OPS) -> AccessContext:
    return AccessContext("user:vic", workspace, frozenset({Role.VIEWER.value}))


def editor(workspace: int = OPS) -> AccessContext:
    return AccessContext("user:eddie", workspace, frozenset({Role.EDITOR.value}))


def run(workflow: str, workspace: int = OPS) -> AccessContext:
    return AccessContext("run:r-1", workspace, workflow_id=workflow)


@pytest.fixture
async def db(migrated_db: Database) -> Database:
    async with migrated_db.transaction() as session:
        session.add_all(
            [
                Workspace(id=OPS, slug="ops", name="Ops"),
                Workspace(id=OTHER, slug="other", name="Other"),
            ]
        )
    return migrated_db


@pytest.fixture
def audit(db: Database, keyring: Keyring) -> AuditLog:
    return AuditLog(db, keyring)


@pytest.fixture
def vault(db: Database, keyring: Keyring, audit: AuditLog) -> Vault:
    return Vault(db, keyring, audit)
