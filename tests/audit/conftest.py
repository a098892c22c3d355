from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(os.urandom(32))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    migrations.upgrade(database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def audit(db: Database, keyring: Keyring) -> AuditLog:
    return AuditLog(db, keyring)
