from __future__ import annotations

import pytest

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database


@pytest.fixture
def db(migrated_db: Database) -> Database:
    return migrated_db


@pytest.fixture
def audit(db: Database, keyring: Keyring) -> AuditLog:
    return AuditLog(db, keyring)
