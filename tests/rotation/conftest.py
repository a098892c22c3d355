from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.rotation.state import RotationStore
from tests.docker_engine import DockerEngine
from tests.services import free_port

_pools = itertools.count()
Replicas = Callable[..., dict[str, int]]


@pytest.fixture
def replicas(docker_engine: DockerEngine) -> Iterator[Replicas]:
    """Creates a pool's replicas (stopped) on the test engine: name -> port; removed after
    the test. Names are unique in the session."""
    made: list[str] = []

    def create(count: int = 3, *, unhealthy: tuple[int, ...] = ()) -> dict[str, int]:
        prefix = f"r{next(_pools)}"
        found = {}
        for n in range(count):
            name, port = f"{prefix}-{'abcdefgh'[n]}", free_port()
            docker_engine.create_replica(name, port, healthy=n not in unhealthy, stop_timeout=1)
            made.append(name)
            found[name] = port
        return found

    yield create
    docker_engine.remove(*made)


@pytest.fixture
async def store(tmp_path: Path, keyring: Keyring) -> AsyncIterator[RotationStore]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    migrations.upgrade(url)
    db = Database(url)
    yield RotationStore(db, AuditLog(db, keyring))
    await db.dispose()
