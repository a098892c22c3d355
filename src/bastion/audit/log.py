"""Appending to and reading the audit trail.

Appends are serialized by the database, so two servers and the CLI can write at once
without forking the chain: PostgreSQL takes a transaction-scoped advisory lock, SQLite
write transactions begin IMMEDIATE (db/database.py). The record is written in the
caller's transaction, so an operation and its audit record commit together or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bastion.audit.chain import GENESIS, Event, canonical_details, record_hash
from bastion.crypto.keyring import Keyring, Purpose
from bastion.db import Database
from bastion.db.tables import AuditEvent
from bastion.db.types import utcnow
from bastion.errors import Unavailable

logger = logging.getLogger("bastion.audit")

_PG_CHAIN_LOCK = 0x6261_7374_696F_6E01  # "bastion" + 1: the audit chain's advisory lock
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_INSERT = insert(AuditEvent)
_HEAD = select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
_LIMITS = {"actor": 200, "action": 64, "target": 300, "reason": 500, "client_ip": 64}


class AuditUnavailable(Unavailable):
    """The audit trail cannot be written; in fail-closed mode the operation is refused."""


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


class AuditLog:
    def __init__(self, db: Database, keyring: Keyring, *, fail_closed: bool = False) -> None:
        self.db = db
        self.keyring = keyring
        self.fail_closed = fail_closed
        self._pending: list[tuple[Event, asyncio.Future[int]]] = []
        self._flushing = asyncio.Lock()

    async def append(self, session: AsyncSession, event: Event) -> int:
        """Add `event` inside the caller's write transaction; returns its seq."""
        return (await self.append_many(session, [event]))[-1]

    async def append_many(self, session: AsyncSession, events: Sequence[Event]) -> list[int]:
        if not events:  # an empty INSERT would be one row of defaults
            return []
        if self.db.dialect == "postgresql":
            await session.execute(_PG_LOCK, {"k": _PG_CHAIN_LOCK})
        rows = self._chain((await session.execute(_HEAD)).first(), events)
        # A Core insert: the ORM's unit of work costs more than the write itself here.
        await session.execute(_INSERT, rows)
        return [row["seq"] for row in rows]

    def append_blocking(self, session: Session, event: Event) -> int:
        """append() for Database.write_in_thread: the same chain step, blocking driver."""
        return self.append_many_blocking(session, [event])[-1]

    def append_many_blocking(self, session: Session, events: Sequence[Event]) -> list[int]:
        if not events:
            return []
        if self.db.dialect == "postgresql":
            session.execute(_PG_LOCK, {"k": _PG_CHAIN_LOCK})
        rows = self._chain(session.execute(_HEAD).first(), events)
        session.execute(_INSERT, rows)
        return [int(row["seq"]) for row in rows]

    def _chain(self, head: Row[int, str] | None, events: Sequence[Event]) -> list[dict[str, Any]]:
        """The rows that extend the chain from `head` (seq, hash) by `events`."""
        seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS)
        key = self.keyring.active(Purpose.AUDIT_CHAIN)
        rows = []
        for event in events:
            seq += 1
            row: dict[str, Any] = {
                "seq": seq,
                "time": utcnow(),
                "actor": _clip(event.actor, _LIMITS["actor"]),
                "action": _clip(event.action, _LIMITS["action"]),
                "target": _clip(event.target, _LIMITS["target"]),
                "outcome": event.outcome,
                "reason": _clip(event.reason, _LIMITS["reason"]),
                "client_ip": _clip(event.client_ip, _LIMITS["client_ip"]),
                "request_id": event.request_id[:64],
                "details": canonical_details(event.details),
                "key_id": key.key_id,
                "prev_hash": prev_hash,
            }
            row["hash"] = prev_hash = record_hash(key.key, prev_hash, row)
            rows.append(row)
        return rows

    async def record(self, event: Event) -> int | None:
        """`event` in a transaction of its own (refusals, reads, sign-ins).

        Group commit: callers that arrive while a write is in progress are written
        together by the next one, in one transaction, so concurrent recording costs one
        transaction per batch rather than per record.
        When the trail cannot be written: fail-closed raises AuditUnavailable, so the
        caller refuses what it was about to do; otherwise the loss is logged loudly.
        """
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((event, done))
        async with self._flushing:
            if not done.done():
                batch, self._pending = self._pending, []
                await self._write(batch)
        try:
            return done.result()
        except (SQLAlchemyError, OSError, Unavailable) as exc:
            logger.error("audit record %s lost: %s", event.action, type(exc).__name__)
            if self.fail_closed:
                raise AuditUnavailable("the audit trail cannot be written") from None
            return None

    async def _write(self, batch: list[tuple[Event, asyncio.Future[int]]]) -> None:
        try:
            async with self.db.transaction() as session:
                seqs = await self.append_many(session, [event for event, _ in batch])
        except (SQLAlchemyError, OSError, Unavailable) as exc:
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), seq in zip(batch, seqs, strict=True):
            done.set_result(seq)

    async def events(self, *, after: int = 0, limit: int = 1000) -> Sequence[AuditEvent]:
        async with self.db.session() as session:
            query = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq)
            return (await session.scalars(query.limit(limit))).all()

    async def head(self) -> int:
        return await head_seq(self.db)


async def head_seq(db: Database) -> int:
    """The highest seq in the store (0 when empty)."""
    async with db.session() as session:
        return int(await session.scalar(select(func.max(AuditEvent.seq))) or 0)
