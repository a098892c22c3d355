from __future__ import annotations

import base64
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import pytest

from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.logs import configure_logging
from tests.docker_engine import DockerEngine, run_docker_engine
from tests.haproxy import HAProxyServer, run_haproxy
from tests.services import PostgresServer, RedisServer, run_postgres, run_redis

_database_names = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with run_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A real, empty Redis."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private, real Docker engine with the busybox test image (`DockerEngine.image`)."""
    with run_docker_engine() as engine:
        yield engine


@pytest.fixture
def haproxy() -> Iterator[Callable[[Mapping[str, int]], HAProxyServer]]:
    """Starts a real HAProxy in front of servers (name -> loopback port), stopped after
    the test; its servers start disabled."""
    with ExitStack() as stack:
        yield lambda servers: stack.enter_context(run_haproxy(servers))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with run_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on a real PostgreSQL server."""
    return postgres_server.create_database(f"bastion_test_{os.getpid()}_{next(_database_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs against both SQLite and a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def migrated_db(database_url: str) -> AsyncIterator[Database]:
    """An empty database at the newest schema (SQLite and PostgreSQL)."""
    migrations.upgrade(database_url)
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def keyring() -> Keyring:
    """A keyring around a fresh random master key."""
    return Keyring(os.urandom(32))


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Bastion's logging, writing into a temporary directory for this test only."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    path = configure_logging(log_dir=tmp_path / "logs", level="INFO", stream=None)
    yield path
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def base_env(tmp_path: Path, master_key: str) -> dict[str, str]:
    """A minimal valid environment: embedded default in a temporary data dir."""
    return {"BASTION_DATA_DIR": str(tmp_path / "data"), "BASTION_MASTER_KEY": master_key}
