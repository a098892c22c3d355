"""Group commit for accepted webhook deliveries.

A delivery becomes three rows (its event id, its run, the run's audit record). Written one
transaction and one statement each, the database's per-statement cost capped ingress far
below what the HTTP side can take; here the deliveries that arrive while one batch
commits are written together by the next, with one statement per table. A batch that
fails is written again one delivery at a time, so one bad delivery fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from bastion.db.database import insert_new
from bastion.db.tables import Run, WebhookDelivery
from bastion.db.types import utcnow
from bastion.triggers.gate import Gate, Origin

_CHUNK = 200  # keys per owners query: well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class Accepted:
    """A verified delivery's run, not stored yet; `event_id` None: no de-duplication."""

    run: Run
    origin: Origin
    trigger_id: str
    event_id: str | None


class DeliveryWriter:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self._pending: list[tuple[Accepted, asyncio.Future[str]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def store(self, delivery: Accepted) -> str:
        """Durably store the delivery's run; the run id, or the original run's id when the
        event id was seen before (then nothing is stored)."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((delivery, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        # Shielded: a client that hangs up must not cancel the batch its delivery is in.
        return await asyncio.shield(done)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            await self._write(batch)

    async def _write(self, batch: list[tuple[Accepted, asyncio.Future[str]]]) -> None:
        deliveries = [delivery for delivery, _ in batch]
        try:
            run_ids = await self.gate.dispatcher.ledger.write(
                lambda session: store_deliveries(self.gate, session, deliveries)
            )
        except Exception as exc:
            if len(batch) > 1:
                for one in batch:
                    await self._write([one])
                return
            batch[0][1].set_exception(exc)
            return
        for (_, done), run_id in zip(batch, run_ids, strict=True):
            done.set_result(run_id)


def store_deliveries(gate: Gate, session: Session, deliveries: Sequence[Accepted]) -> list[str]:
    """Inside a ledger write: claim the event ids, store the runs of the deliveries seen
    for the first time (health guard and audit records included), and answer each
    delivery with its run id."""
    first: dict[tuple[str, str], Accepted] = {}
    for delivery in deliveries:
        if delivery.event_id is not None:
            first.setdefault((delivery.trigger_id, delivery.event_id), delivery)
    owners = _claim(session, list(first.values()))
    answers: list[str] = []
    fresh: list[Accepted] = []
    for delivery in deliveries:
        if delivery.event_id is None:
            fresh.append(delivery)
            answers.append(delivery.run.id)
            continue
        # A replay (seen before, or earlier in this batch) gets the original run's id,
        # and starts nothing.
        owner = owners[(delivery.trigger_id, delivery.event_id)]
        if owner == delivery.run.id:
            fresh.append(delivery)
        answers.append(owner)
    gate.store(session, [(delivery.run, delivery.origin) for delivery in fresh])
    return answers


def _claim(session: Session, deliveries: list[Accepted]) -> dict[tuple[str, str], str]:
    """Record the event ids not seen before; every event id's run, earlier or new.

    Two statements per batch whatever its size (for one trigger): an executemany that
    skips known ids, and one read of the owners. Concurrent servers on PostgreSQL meet
    at the unique index: the second insert waits for the first's commit, skips, and
    then reads its run.
    """
    if not deliveries:
        return {}
    now = utcnow()
    session.execute(
        _insert_new(session),
        [
            {
                "trigger_id": d.trigger_id,
                "event_id": d.event_id,
                "run_id": d.run.id,
                "received_at": now,
            }
            for d in deliveries
        ],
    )
    # Per trigger, so the lookup is `trigger_id = ? AND event_id IN (...)`, which walks
    # the unique index. A row-value IN on both columns scans the whole table on SQLite,
    # which made every batch cost more as the table grew.
    by_trigger: dict[str, list[str]] = {}
    for d in deliveries:
        by_trigger.setdefault(d.trigger_id, []).append(str(d.event_id))
    owners: dict[tuple[str, str], str] = {}
    for trigger_id, event_ids in by_trigger.items():
        for start in range(0, len(event_ids), _CHUNK):
            rows = session.execute(
                _OWNERS, {"trigger_id": trigger_id, "event_ids": event_ids[start : start + _CHUNK]}
            )
            owners.update({(trigger_id, e): run_id for e, run_id in rows})
    return owners


_OWNERS = select(WebhookDelivery.event_id, WebhookDelivery.run_id).where(
    WebhookDelivery.trigger_id == bindparam("trigger_id"),
    WebhookDelivery.event_id.in_(bindparam("event_ids", expanding=True)),
)
_INSERTS: dict[str, Any] = {}


def _insert_new(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    statement = _INSERTS.get(dialect)
    if statement is None:
        statement = _INSERTS[dialect] = insert_new(
            session, WebhookDelivery, "trigger_id", "event_id"
        )
    return statement
