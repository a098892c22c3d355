"""Group commit of accepted webhook deliveries (SQLite and PostgreSQL): deliveries that
arrive together are written together, replays answer with the original run, and one
delivery that cannot be stored fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import IntegrityError

from bastion.audit.verify import verify
from bastion.db.tables import AuditEvent, Run, Trigger, WebhookDelivery
from bastion.runs.records import Trigger as TriggerKind
from bastion.triggers import deliveries
from bastion.triggers.deliveries import Accepted, store_deliveries
from bastion.triggers.gate import Gate, Origin, RunRequest
from tests.triggers.conftest import Rig


def accepted(rig: Rig, trigger: Trigger, event_id: str | None, n: int = 0) -> Accepted:
    origin = Origin(TriggerKind.WEBHOOK, f"webhook:{trigger.id}", trigger.id, "203.0.113.5")
    run = rig.webhooks.gate.build(rig.workflow, RunRequest({"n": n}), origin)
    return Accepted(run, origin, trigger.id, event_id)


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch of deliveries written, in order."""
    batches: list[int] = []

    def counted(gate: Gate, session: Any, items: Any) -> list[str]:
        batches.append(len(items))
        return store_deliveries(gate, session, items)

    monkeypatch.setattr(deliveries, "store_deliveries", counted)
    return batches


async def test_deliveries_arriving_together_commit_in_one_batch_and_a_replay_in_it_starts_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    writer = rig.webhooks.writer
    before = accepted(rig, trigger, "seen-before")
    assert await writer.store(before) == before.run.id
    batches = count_batches(monkeypatch)
    items = [accepted(rig, trigger, f"evt-{n}", n) for n in range(20)]
    items += [accepted(rig, trigger, "evt-3"), accepted(rig, trigger, "seen-before")]
    items.append(accepted(rig, trigger, None))  # no event id: never de-duplicated
    run_ids = await asyncio.gather(*[writer.store(item) for item in items])
    assert batches == [23]
    assert run_ids[:20] == [item.run.id for item in items[:20]]
    assert run_ids[20] == items[3].run.id  # the replay within the batch
    assert run_ids[21] == before.run.id  # the replay of an earlier delivery
    assert run_ids[22] == items[22].run.id
    assert await rig.count(Run) == 22
    assert await rig.count(WebhookDelivery) == 21
    async with rig.db.session() as session:
        started = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "run.start")
        )
    assert started == 22
    assert (await verify(rig.db, rig.audit.keyring)).ok


async def test_a_delivery_that_cannot_be_stored_fails_alone_and_its_batch_still_commits(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    writer = rig.webhooks.writer
    first = accepted(rig, trigger, "first")
    await writer.store(first)
    batches = count_batches(monkeypatch)
    items = [accepted(rig, trigger, f"evt-{n}", n) for n in range(4)]
    items[2].run.id = first.run.id  # run ids are unique: its insert fails, and its batch
    results = await asyncio.gather(*[writer.store(i) for i in items], return_exceptions=True)
    assert batches == [4, 1, 1, 1, 1]  # together first; after the failure, one by one
    assert results[:2] == [items[0].run.id, items[1].run.id]
    assert isinstance(results[2], IntegrityError)
    assert results[3] == items[3].run.id
    assert await rig.count(Run) == 4
    assert await rig.count(WebhookDelivery) == 4  # evt-2's claim rolled back with its run


def test_the_owners_lookup_walks_the_unique_index_instead_of_scanning() -> None:
    # SQLite's plan (PostgreSQL plans by statistics): a row-value IN on both key columns
    # made it scan the whole table for every batch.
    engine = create_engine("sqlite://")
    WebhookDelivery.__table__.create(engine)  # type: ignore[attr-defined]
    query = deliveries._OWNERS.params(trigger_id="t", event_ids=["a", "b", "c"])
    sql = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        plan = [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    assert any("webhook_deliveries USING" in step for step in plan), plan
    assert not any(step.startswith("SCAN webhook_deliveries") for step in plan), plan
