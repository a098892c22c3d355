"""The async engine and sessions, for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from bastion.errors import Unavailable

SQLITE_BUSY_TIMEOUT_MS = 5000
WRITE_OPTION = "bastion_write"
T = TypeVar("T")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; foreign keys are off by default in SQLite;
    # the busy timeout turns brief write contention into waiting instead of an error.
    # The timeout first: switching to WAL needs a lock another connection may hold.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # Asking to switch, even to the mode already set, can fail at once with "database is
    # locked" while another connection writes (no busy wait): switch only when needed.
    cursor.execute("PRAGMA journal_mode")
    if str(cursor.fetchone()[0]).lower() != "wal":
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


def sync_url(url: str) -> str:
    """The same database through its blocking driver (Alembic, the one-hop write path)."""
    parsed = make_url(url)
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    return parsed.render_as_string(hide_password=False)


def _sync_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = sqlalchemy.create_engine(sync_url(url), pool_reset_on_return=None)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sqlalchemy.create_engine(sync_url(url), pool_size=4, pool_pre_ping=True)


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


def insert_new(session: Session, entity: Any, *keys: str) -> Any:
    """INSERT … ON CONFLICT (keys) DO NOTHING, in the session's dialect (SQLite and
    PostgreSQL spell it alike): with RETURNING, only the rows actually inserted come back."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(entity).on_conflict_do_nothing(index_elements=list(keys))


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._blocking: Engine | None = None  # made on first use of write_in_thread
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
    async def _write_lock(self) -> AsyncIterator[None]:
        if self._writer is None:
            yield
            return
        # Bounded like SQLite's own wait: a task that nests write transactions fails
        # loudly instead of waiting on itself for ever.
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await self._writer.acquire()
        except TimeoutError:
            raise Unavailable("the database is busy: no write lock within 5 s") from None
        try:
            yield
        finally:
            self._writer.release()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on success and rolls back on any exception.

        It is a write transaction from its first statement (SQLite: BEGIN IMMEDIATE).
        """
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._write_lock())
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            await session.connection(execution_options={WRITE_OPTION: True})
            yield session

    async def write_in_thread(self, work: Callable[[Session], T]) -> T:
        """`work` in one write transaction, run whole on a worker thread.

        For hot paths: the async drivers pay a thread hop (aiosqlite) or an event-loop
        round trip per call, a dozen per transaction; this pays one. `work` must not
        touch the event loop.
        """
        async with self._write_lock():
            return await asyncio.to_thread(self._write_blocking, work)

    def _write_blocking(self, work: Callable[[Session], T]) -> T:
        if self._blocking is None:
            self._blocking = _sync_engine(self.url)
        with Session(self._blocking, expire_on_commit=False) as session, session.begin():
            session.connection(execution_options={WRITE_OPTION: True})
            return work(session)

    async def ping(self, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._blocking is not None:
            self._blocking.dispose()
