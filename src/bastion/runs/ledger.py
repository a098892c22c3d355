"""Group commit for run records: many small writes, one transaction per batch.

A three-node run makes about six writes (accept, claim, three steps, finish). As separate
transactions they would cap inline throughput at the database's commit rate; here the
writes that arrive while one batch commits go together in the next. When a batch fails,
its writes are tried again one transaction each, so one bad write fails alone instead of
taking its batch down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.db import Database
from bastion.errors import BastionError

T = TypeVar("T")
Write = Callable[[Session], Any]
log = logging.getLogger("bastion.runs")


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[tuple[Write, asyncio.Future[Any] | None]] = []
        self._flushing = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def write(self, work: Callable[[Session], T]) -> T:
        """`work`, committed; its result once the batch holding it has committed."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, done))
        await self._flush_until(done)
        return done.result()

    def post(self, work: Write) -> None:
        """`work`, committed with the next batch; nobody waits for it (step events).

        A later `write` commits after it, so a run's steps are stored before its end.
        """
        self._pending.append((work, None))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_posted())

    async def _flush_posted(self) -> None:
        while self._pending:
            async with self._flushing:
                batch, self._pending = self._pending, []
                if batch:
                    await self._commit(batch)

    async def _flush_until(self, done: asyncio.Future[Any]) -> None:
        async with self._flushing:
            if not done.done():
                batch, self._pending = self._pending, []
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[Any] | None]]) -> None:
        try:
            results = await self.db.write_in_thread(
                lambda session: [work(session) for work, _ in batch]
            )
        except (SQLAlchemyError, OSError, BastionError) as exc:
            if len(batch) > 1:
                for one in batch:
                    await self._commit([one])
                return
            done = batch[0][1]
            if done is None:
                log.error("run record lost: %s", type(exc).__name__)
            else:
                done.set_exception(exc)
            return
        for (_, done), value in zip(batch, results, strict=True):
            if done is not None:
                done.set_result(value)
