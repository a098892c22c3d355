"""The async engine and sessions, for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bastion.errors import Unavailable

SQLITE_BUSY_TIMEOUT_MS = 5000
WRITE_OPTION = "bastion_write"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite;
    # the busy timeout turns brief write contention into waiting instead of an error.
    # The timeout first: switching to WAL needs a lock another connection may hold.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Deleted rows are overwritten, not left in free pages: a destroyed credential's
    # wrapped data keys must not be recoverable from the database file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
    # SQLAlchemy issues BEGIN itself (below), instead of the driver's lazy implicit one.
    dbapi_connection.isolation_level = None


def _sqlite_begin(conn: Any) -> None:
    # A write transaction takes the write lock up front. Otherwise a transaction that
    # read first fails outright (SQLITE_BUSY, no waiting) when another writer committed
    # meanwhile; and the audit chain needs its head read under the lock it appends with.
    immediate = conn.get_execution_options().get(WRITE_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Every session ends its transaction itself (commit, or rollback on close), so
        # the pool's own reset would be a second rollback: one more thread hop.
        engine = create_async_engine(url, pool_reset_on_return=None)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Database:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.dialect = self.engine.dialect.name
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Writers of this process queue here instead of
        # in SQLite's busy handler, which sleeps in milliseconds and collapses throughput
        # under contention; other processes still meet the busy handler.
        self._writer = asyncio.Lock() if self.dialect == "sqlite" else None

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back on any exception.

        It is a write transaction from its first statement (SQLite: BEGIN IMMEDIATE).
        """
        async with AsyncExitStack() as stack:
            if self._writer is not None:
                # Bounded like SQLite's own wait: a task that nests write transactions
                # fails loudly instead of waiting on itself for ever.
                try:
                    async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                        await self._writer.acquire()
                except TimeoutError:
                    raise Unavailable("the database is busy: no write lock within 5 s") from None
                stack.callback(self._writer.release)
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            await session.connection(execution_options={WRITE_OPTION: True})
            yield session

    async def ping(self, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
