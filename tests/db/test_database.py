from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError

from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.database import sync_url
from bastion.db.tables import User


async def test_migrations_create_the_schema_and_are_idempotent(database_url: str) -> None:
    migrations.upgrade(database_url)
    migrations.upgrade(database_url)
    assert migrations.current_revision(database_url) == migrations.head_revision()
    db = Database(database_url)
    try:
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "users" in tables
        assert "alembic_version" in tables
    finally:
        await db.dispose()


async def test_a_committed_row_is_read_back_with_an_aware_utc_time(database_url: str) -> None:
    migrations.upgrade(database_url)
    db = Database(database_url)
    created = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    try:
        async with db.transaction() as session:
            session.add(User(username="ada", password_hash="x", created_at=created))
        async with db.session() as session:
            user = await session.scalar(select(User).where(User.username == "ada"))
        assert user is not None
        assert user.created_at == created
        assert user.created_at.tzinfo is not None
        assert user.created_at.utcoffset() == timedelta(0)
        assert user.is_admin is False
    finally:
        await db.dispose()


async def test_naive_datetimes_are_refused(database_url: str) -> None:
    migrations.upgrade(database_url)
    db = Database(database_url)
    try:
        with pytest.raises(Exception, match="naive datetime"):
            async with db.transaction() as session:
                session.add(
                    User(username="bob", password_hash="x", created_at=datetime(2026, 1, 1))
                )
        async with db.session() as session:
            assert await session.scalar(select(User).where(User.username == "bob")) is None
    finally:
        await db.dispose()


async def test_a_failed_transaction_leaves_nothing_behind(database_url: str) -> None:
    migrations.upgrade(database_url)
    db = Database(database_url)
    try:
        with pytest.raises(RuntimeError):
            async with db.transaction() as session:
                session.add(User(username="carol", password_hash="x"))
                await session.flush()
                raise RuntimeError("boom")
        async with db.session() as session:
            assert await session.scalar(select(User)) is None
    finally:
        await db.dispose()


async def test_ping_succeeds_on_a_live_database(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.ping()
    finally:
        await db.dispose()


async def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
    finally:
        await db.dispose()


async def test_sqlite_database_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "bastion.db"
    migrations.upgrade(f"sqlite+aiosqlite:///{path}")
    assert sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchone()


async def test_concurrent_writers_on_sqlite_wait_instead_of_failing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    migrations.upgrade(url)
    dbs = [Database(url) for _ in range(4)]

    async def write(db: Database, n: int) -> None:
        for i in range(10):
            async with db.transaction() as session:
                session.add(User(username=f"u{n}-{i}", password_hash="x"))

    try:
        await asyncio.gather(*(write(db, n) for n, db in enumerate(dbs)))
        async with dbs[0].session() as session:
            assert len((await session.scalars(select(User))).all()) == 40
    finally:
        for db in dbs:
            await db.dispose()


def test_servers_starting_together_on_postgresql_migrate_without_racing(
    postgres_url: str,
) -> None:
    # Separate processes, as several `bastion serve` would be.
    code = "import sys; from bastion.db.migrate import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, postgres_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    assert migrations.current_revision(postgres_url) == migrations.head_revision()


async def test_unreachable_postgresql_fails_ping() -> None:
    from tests.services import free_port

    db = Database(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(OperationalError):
            await db.ping()
    finally:
        await db.dispose()


def test_utc_helper_is_aware() -> None:
    from bastion.db.types import utcnow

    assert utcnow().tzinfo == UTC


def test_migrations_build_exactly_the_schema_the_models_describe(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from bastion.db.tables import Base

    migrations.upgrade(database_url)
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
